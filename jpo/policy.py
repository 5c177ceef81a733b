"""The exported policy artifact and its numpy-only runtime (what ``jpo suggest`` runs).

An artifact is a folder with two files, written by :func:`write_artifact` (the torch
side that extracts weights from RLlib lives in :mod:`jpo.policy_export`)::

    <artifact>/
      manifest.json   what the weights mean (schema below), with their sha256
      policy.npz      the actor's weights: plain float32 arrays, no pickle

``manifest.json`` (format version 1):

=========================  ==============================================================
key                        meaning
=========================  ==============================================================
``format_version``         1; a loader refuses formats it does not know
``policy_version``         integer, bumped by every promotion (``jpo train --continuous``)
``feature_spec_version``   :data:`jpo.features.FEATURE_SPEC_VERSION` the policy was trained
                           on; loading refuses a mismatch (the observation would mean
                           something else)
``observation``            ``names`` (in vector order), ``mean``, ``std``, ``clip_low``,
                           ``clip_high``: the network's input is
                           ``clip((obs - mean) / std, clip_low, clip_high)``
``action``                 ``names`` (tunable hyperparameters, one per action entry),
                           ``low``/``high`` (-1, 1), ``squash`` (``"tanh"``): the
                           deterministic action is ``low + (tanh(loc) + 1) / 2 *
                           (high - low)`` where ``loc`` is the first half of the
                           network's output (the second half is the Gaussian's log-std)
                           ``learning_rate_follows_batch`` (0 to 1, default 0): the
                           coupling exponent of the action mapping the policy was trained
                           with (:mod:`jpo.constraints`); CI and Serve apply this value
``network``                ``layers``: list of ``{"weight", "bias", "activation"}``; the
                           names are keys in ``policy.npz``, weights are ``(out, in)``
                           (torch's ``nn.Linear`` layout), activations ``relu``, ``tanh``,
                           ``silu``, ``elu``, ``sigmoid`` or ``linear``
``weights_file``           ``policy.npz``
``weights_sha256``         hex sha256 of ``policy.npz``; loading refuses a mismatch
``constraints_sha256``     :meth:`jpo.constraints.Constraints.sha256` at training time
``training_data``          free-form summary of what it was trained on (workloads, split,
                           runs, env steps, iterations)
``created_at``             ISO-8601 UTC time of export
``source``                 free-form provenance (algorithm, checkpoint path, config)
=========================  ==============================================================

Deterministic action of RLlib's SAC: the actor outputs the location and log-std of a
Gaussian that ``TorchSquashedGaussian`` squashes with tanh into the action bounds; the
deterministic action used here is the squashed location, ``tanh(loc)``, as in Haarnoja et
al. 2018 (arXiv:1801.01290, evaluation with the mean action). Note that RLlib's
``TorchSquashedGaussian.to_deterministic()`` returns the UNsquashed ``loc`` (its
connector then clips it into the bounds); ``tanh(loc)`` is the action the actor was
trained to emit.

This module imports numpy, pydantic and the standard library only: the CI stage must
start fast and never import torch or ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jpo.errors import PolicyError

__all__ = [
    "ACTIVATIONS",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "ActionSpec",
    "LayerSpec",
    "LocalPolicy",
    "NetworkSpec",
    "ObservationSpec",
    "PolicyManifest",
    "file_sha256",
    "latest_artifact",
    "set_latest",
    "write_artifact",
]

FORMAT_VERSION = 1
"""Version of the artifact layout this module reads and writes."""

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "policy.npz"
LATEST_FILE = "LATEST"
"""In a folder of versioned artifacts, a text file naming the current one."""

Activation = Literal["relu", "tanh", "silu", "elu", "sigmoid", "linear"]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.maximum(x, 0.0))


def _silu(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / (1.0 + np.exp(-x)))


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0.0, x, np.expm1(np.minimum(x, 0.0)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _linear(x: np.ndarray) -> np.ndarray:
    return x


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu,
    "tanh": np.tanh,
    "silu": _silu,
    "elu": _elu,
    "sigmoid": _sigmoid,
    "linear": _linear,
}
"""numpy implementations of the activations an exported layer may name."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObservationSpec(_Frozen):
    """Observation names and the normalization applied before the network."""

    names: tuple[str, ...] = Field(min_length=1)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip_low: float = -1e6
    clip_high: float = 1e6

    @model_validator(mode="after")
    def _same_lengths(self) -> ObservationSpec:
        n = len(self.names)
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(
                f"observation.mean ({len(self.mean)}) and observation.std "
                f"({len(self.std)}) must have one entry per name ({n})"
            )
        if any(not s > 0.0 for s in self.std):
            raise ValueError("observation.std entries must be > 0")
        return self


class ActionSpec(_Frozen):
    """What each action entry means and how the network output becomes an action."""

    names: tuple[str, ...] = Field(min_length=1)
    low: float = -1.0
    high: float = 1.0
    squash: Literal["tanh"] = "tanh"
    learning_rate_follows_batch: float = Field(default=0.0, ge=0.0, le=1.0)
    """Coupling exponent the policy was trained with (jpo.constraints; 0 in older artifacts)."""


class LayerSpec(_Frozen):
    """One dense layer: ``activation(x @ weight.T + bias)``."""

    weight: str
    bias: str
    activation: Activation


class NetworkSpec(_Frozen):
    """The actor MLP, input to output."""

    layers: tuple[LayerSpec, ...] = Field(min_length=1)


class PolicyManifest(_Frozen):
    """Contents of ``manifest.json`` (see the module docstring for every key)."""

    format_version: int
    policy_version: int = Field(ge=0)
    feature_spec_version: str
    observation: ObservationSpec
    action: ActionSpec
    network: NetworkSpec
    weights_file: str = WEIGHTS_FILE
    weights_sha256: str
    constraints_sha256: str | None = None
    training_data: dict[str, Any] = Field(default_factory=dict)
    created_at: str
    source: dict[str, Any] = Field(default_factory=dict)


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _current_feature_spec_version() -> str:
    from jpo.features import FEATURE_SPEC_VERSION

    return FEATURE_SPEC_VERSION


def latest_artifact(root: str | os.PathLike[str]) -> Path:
    """Resolve ``root`` to one artifact folder.

    ``root`` may be an artifact folder (it holds ``manifest.json``) or a folder of
    versioned artifacts: then the one named in its ``LATEST`` file, else the
    lexicographically last subfolder holding a manifest (``v000001``, ``v000002``, ...).
    """
    path = Path(root)
    if (path / MANIFEST_FILE).is_file():
        return path
    if path.is_file() and path.name == MANIFEST_FILE:
        return path.parent
    if not path.is_dir():
        raise PolicyError(
            f"policy artifact {path} does not exist: pass the folder that holds "
            f"{MANIFEST_FILE} and {WEIGHTS_FILE} (export one with `jpo train`)"
        )
    pointer = path / LATEST_FILE
    if pointer.is_file():
        target = path / pointer.read_text(encoding="utf-8").strip()
        if (target / MANIFEST_FILE).is_file():
            return target
        raise PolicyError(
            f"{pointer} names {target.name!r}, which holds no {MANIFEST_FILE}: "
            "re-export the policy or fix the pointer"
        )
    candidates = sorted(p for p in path.iterdir() if (p / MANIFEST_FILE).is_file())
    if not candidates:
        raise PolicyError(
            f"{path} holds no policy artifact ({MANIFEST_FILE} + {WEIGHTS_FILE}): "
            "export one with `jpo train` or point at the bundled jpo/data/policy"
        )
    return candidates[-1]


class LocalPolicy:
    """An exported SAC actor evaluated with numpy (deterministic action)."""

    def __init__(self, path: Path, manifest: PolicyManifest, weights: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self._mean = np.asarray(manifest.observation.mean, dtype=np.float64)
        self._std = np.asarray(manifest.observation.std, dtype=np.float64)
        self._layers = [
            (
                weights[layer.weight].astype(np.float64),
                weights[layer.bias].astype(np.float64),
                ACTIVATIONS[layer.activation],
            )
            for layer in manifest.network.layers
        ]

    @property
    def version(self) -> int:
        """The policy version (bumped by each promotion)."""
        return self.manifest.policy_version

    @property
    def observation_names(self) -> tuple[str, ...]:
        """Names of the observation entries, in vector order."""
        return self.manifest.observation.names

    @property
    def action_names(self) -> tuple[str, ...]:
        """The hyperparameter each action entry changes, in vector order."""
        return self.manifest.action.names

    @property
    def learning_rate_follows_batch(self) -> float:
        """Learning-rate/batch coupling of the action mapping the policy was trained with."""
        return self.manifest.action.learning_rate_follows_batch

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        expected_feature_spec_version: str | None = None,
    ) -> LocalPolicy:
        """Load and verify an artifact (folder, its manifest.json, or a versions folder).

        Refuses (PolicyError) an unknown format, a weights file whose sha256 differs from
        the manifest's, and a feature-spec version other than
        ``expected_feature_spec_version`` (default: :data:`jpo.features.FEATURE_SPEC_VERSION`).
        """
        folder = latest_artifact(path)
        manifest_path = folder / MANIFEST_FILE
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise PolicyError(
                f"cannot read policy manifest {manifest_path}: {err}; re-export the policy"
            ) from err
        if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
            found = raw.get("format_version") if isinstance(raw, dict) else None
            raise PolicyError(
                f"{manifest_path}: format_version {found!r} is not {FORMAT_VERSION}, the "
                "format this JPO reads: re-export the policy with this JPO version"
            )
        try:
            manifest = PolicyManifest.model_validate(raw)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise PolicyError(
                f"{manifest_path} is not a valid policy manifest ({problems}); re-export it"
            ) from err

        expected = expected_feature_spec_version or _current_feature_spec_version()
        if manifest.feature_spec_version != expected:
            raise PolicyError(
                f"{manifest_path}: policy was trained on feature spec version "
                f"{manifest.feature_spec_version!r} but this JPO builds observations with "
                f"version {expected!r}: retrain and export a policy with this JPO "
                "(`jpo train`), or install the JPO version the policy was made with"
            )

        weights_path = folder / manifest.weights_file
        if not weights_path.is_file():
            raise PolicyError(
                f"policy weights {weights_path} named by {manifest_path} are missing: "
                "copy the whole artifact folder or re-export it"
            )
        actual = file_sha256(weights_path)
        if actual != manifest.weights_sha256:
            raise PolicyError(
                f"{weights_path}: sha256 {actual} does not match {manifest.weights_sha256} "
                f"in {manifest_path}: the file is corrupt or was changed after export; "
                "re-export the policy or restore both files together"
            )
        try:
            with np.load(weights_path, allow_pickle=False) as npz:
                weights = {name: np.asarray(npz[name]) for name in npz.files}
        except (OSError, ValueError) as err:
            raise PolicyError(f"cannot read policy weights {weights_path}: {err}") from err

        _check_shapes(manifest, weights, manifest_path)
        return cls(folder, manifest, weights)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Return the deterministic action in [low, high]^k for one observation or a batch.

        ``obs`` has shape ``(n,)`` or ``(batch, n)`` with ``n = len(observation_names)``;
        the result has shape ``(k,)`` or ``(batch, k)``.
        """
        x = np.asarray(obs, dtype=np.float64)
        single = x.ndim == 1
        if single:
            x = x[None, :]
        n = len(self.observation_names)
        if x.ndim != 2 or x.shape[1] != n:
            raise PolicyError(
                f"observation of shape {np.shape(obs)} does not fit policy {self.path} "
                f"(expects {n} features: {', '.join(self.observation_names)})"
            )
        if not np.all(np.isfinite(x)):
            raise PolicyError(
                f"observation holds NaN or infinite values; policy {self.path} refuses it"
            )
        spec = self.manifest.observation
        x = np.clip((x - self._mean) / self._std, spec.clip_low, spec.clip_high)
        for weight, bias, activation in self._layers:
            x = activation(x @ weight.T + bias)
        k = len(self.action_names)
        loc = x[:, :k]
        low, high = self.manifest.action.low, self.manifest.action.high
        action = low + (np.tanh(loc) + 1.0) / 2.0 * (high - low)
        action = np.clip(action, low, high)
        return action[0] if single else action


def _check_shapes(manifest: PolicyManifest, weights: Mapping[str, np.ndarray], where: Path) -> None:
    """Check that the layers chain from the observation size to 2 x the action size."""
    width = len(manifest.observation.names)
    for i, layer in enumerate(manifest.network.layers):
        for key in (layer.weight, layer.bias):
            if key not in weights:
                raise PolicyError(
                    f"{where}: layer {i} names array {key!r}, absent from "
                    f"{manifest.weights_file}: re-export the policy"
                )
        w, b = weights[layer.weight], weights[layer.bias]
        if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
            raise PolicyError(
                f"{where}: layer {i} has weight {w.shape} and bias {b.shape}, which do not "
                f"take an input of width {width}: re-export the policy"
            )
        width = w.shape[0]
    k = len(manifest.action.names)
    if width != 2 * k:
        raise PolicyError(
            f"{where}: the network outputs {width} values but a squashed Gaussian over "
            f"{k} actions needs {2 * k} (loc and log-std): re-export the policy"
        )


def write_artifact(
    out_dir: str | os.PathLike[str],
    weights: Mapping[str, np.ndarray],
    manifest: Mapping[str, Any],
) -> Path:
    """Write ``policy.npz`` + ``manifest.json`` into ``out_dir`` and return it.

    ``manifest`` holds every key of :class:`PolicyManifest` except ``format_version``,
    ``weights_file``, ``weights_sha256`` and (optionally) ``created_at``, which are
    filled in here. The folder is assembled next to ``out_dir`` and renamed into place,
    so a reader never sees half an artifact.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes 0700; Serve and CI may run as other users
        weights_path = staging / WEIGHTS_FILE
        arrays = {name: np.ascontiguousarray(arr) for name, arr in weights.items()}
        with weights_path.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        full = {
            **dict(manifest),
            "format_version": FORMAT_VERSION,
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": file_sha256(weights_path),
        }
        full.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            validated = PolicyManifest.model_validate(full)
        except ValidationError as err:
            raise PolicyError(f"refusing to write an invalid manifest to {out}: {err}") from err
        _check_shapes(validated, arrays, out / MANIFEST_FILE)
        text = json.dumps(validated.model_dump(mode="json"), indent=2, sort_keys=True)
        (staging / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def set_latest(root: str | os.PathLike[str], name: str) -> None:
    """Atomically point ``root/LATEST`` at the artifact subfolder ``name``."""
    root_path = Path(root)
    tmp = root_path / f".{LATEST_FILE}.tmp"
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, root_path / LATEST_FILE)
