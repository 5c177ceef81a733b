"""The exported policy artifact and its numpy-only runtime (what ``jpo suggest`` runs).

An artifact is a folder with two files, written by :func:`write_artifact` (the torch
side that extracts weights from RLlib lives in :mod:`jpo.policy.export`)::

    <artifact>/
      manifest.json   what the weights mean (schema below), with their sha256
      policy.npz      the actor's weights: plain float32 arrays, no pickle

``manifest.json`` (format version 2):

=========================  ==============================================================
key                        meaning
=========================  ==============================================================
``format_version``         2 (an integer, not ``true``); a loader refuses formats it does
                           not know. Format 1 had no ``artifact_sha256``: re-seal it
                           (:func:`reseal_artifact`) after checking its weights
``policy_version``         positive integer, bumped by every promotion
                           (``jpo train --continuous``)
``feature_spec_version``   :data:`jpo.learning.features.FEATURE_SPEC_VERSION` the policy was trained
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
                           with (:mod:`jpo.workload.constraints`); CI and Serve apply this value
``network``                ``layers``: list of ``{"weight", "bias", "activation"}``; the
                           names are keys in ``policy.npz``, weights are ``(out, in)``
                           (torch's ``nn.Linear`` layout), activations ``relu``, ``tanh``,
                           ``silu``, ``elu``, ``sigmoid`` or ``linear``
``weights_file``           ``policy.npz``: a plain file name inside the artifact folder
``weights_sha256``         hex sha256 of ``policy.npz``; loading refuses a mismatch
``artifact_sha256``        hex sha256 of the canonical JSON of every OTHER key (sorted
                           keys, no spaces): it covers the manifest and, through
                           ``weights_sha256``, the weights; loading refuses a mismatch
``constraints_sha256``     :meth:`jpo.workload.constraints.Constraints.sha256` at training time
``training_data``          free-form summary of what it was trained on (workloads, split,
                           runs, env steps, iterations)
``created_at``             ISO-8601 UTC time of export
``source``                 free-form provenance (algorithm, checkpoint path, config)
=========================  ==============================================================

Integrity (what :meth:`LocalPolicy.load` checks, each before the next read; limits in
``configs/policy.toml``):

1. paths: ``LATEST`` must name a plain subfolder, ``weights_file`` a plain file name; each,
   and ``manifest.json`` itself, must resolve (symlinks followed) inside the artifact's
   folder, else it is refused before the target is opened;
2. sizes: ``manifest.json`` and ``policy.npz`` are capped in bytes, the manifest's JSON
   nesting depth is capped (no ``RecursionError``), and every npz member's declared shape
   and dtype are read from its header and capped before the array is allocated;
3. the seal: ``artifact_sha256`` over the manifest, then ``weights_sha256`` over the
   weights;
4. every field: strict integers for the versions, finite normalization with ``std`` in
   ``[min_std, max_std]`` and ``|mean| <= max_abs_mean``, finite action bounds with
   ``low < high``, unique action names; for an artifact of the running feature spec also
   the observation names in :data:`jpo.learning.features.OBSERVATION_NAMES` order, action names
   known hyperparameters in :data:`jpo.workload.types.HYPERPARAMETER_NAMES` order, and action
   bounds inside [-1, 1] (the constraints' action space).

The seal is a checksum, not a signature: it detects corruption and edits made without
re-sealing, not a forger who recomputes it; the field checks bound what even a re-sealed
manifest can do. A truncated or malformed npz is a clean PolicyError.

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
import math
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)

from jpo.errors import PolicyError
from jpo.safe_json import loads_bounded
from jpo.settings import Settings, load_settings

__all__ = [
    "ACTIVATIONS",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "ActionSpec",
    "ArtifactLimits",
    "LayerSpec",
    "LocalPolicy",
    "NetworkSpec",
    "ObservationSpec",
    "PolicyManifest",
    "file_sha256",
    "latest_artifact",
    "load_artifact_limits",
    "manifest_seal",
    "reseal_artifact",
    "set_latest",
    "write_artifact",
]

FORMAT_VERSION = 2
"""Version of the artifact layout this module reads and writes (2: ``artifact_sha256``)."""

SEAL_KEY = "artifact_sha256"
"""Manifest key of the checksum over every other manifest key (see the module docstring)."""

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


@dataclass(frozen=True, slots=True)
class ArtifactLimits:
    """Size limits and sanity bounds of an artifact (``configs/policy.toml``, commented)."""

    max_manifest_bytes: int = 1 << 20
    max_json_depth: int = 32
    max_weights_bytes: int = 256 << 20
    max_arrays: int = 64
    max_array_elements: int = 64 << 20
    max_abs_mean: float = 1e4
    min_std: float = 1e-6
    max_std: float = 1e6
    max_abs_clip: float = 1e6


_DEFAULT_LIMITS = ArtifactLimits()


class _LimitsTable(Settings):
    """``[limits]`` of policy.toml."""

    max_manifest_bytes: int = _DEFAULT_LIMITS.max_manifest_bytes
    max_json_depth: int = _DEFAULT_LIMITS.max_json_depth
    max_weights_bytes: int = _DEFAULT_LIMITS.max_weights_bytes
    max_arrays: int = _DEFAULT_LIMITS.max_arrays
    max_array_elements: int = _DEFAULT_LIMITS.max_array_elements


class _NormalizationTable(Settings):
    """``[normalization]`` of policy.toml."""

    max_abs_mean: float = _DEFAULT_LIMITS.max_abs_mean
    min_std: float = _DEFAULT_LIMITS.min_std
    max_std: float = _DEFAULT_LIMITS.max_std
    max_abs_clip: float = _DEFAULT_LIMITS.max_abs_clip


class _PolicySettingsFile(Settings):
    """The whole of policy.toml."""

    limits: _LimitsTable = _LimitsTable()
    normalization: _NormalizationTable = _NormalizationTable()


def load_artifact_limits(path: str | os.PathLike[str] | None = None) -> ArtifactLimits:
    """Read ``configs/policy.toml`` (or ``path``); the defaults when the default file is absent."""
    raw = load_settings(_PolicySettingsFile, "policy.toml", path, missing_ok=True)
    return ArtifactLimits(**raw.limits.model_dump(), **raw.normalization.model_dump())


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObservationSpec(_Frozen):
    """Observation names and the normalization applied before the network."""

    names: tuple[str, ...] = Field(min_length=1)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip_low: float = Field(default=-1e6, allow_inf_nan=False)
    clip_high: float = Field(default=1e6, allow_inf_nan=False)

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
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ValueError("observation.mean and observation.std must be finite")
        if not self.clip_low < self.clip_high:
            raise ValueError("observation.clip_low must be below clip_high")
        if len(set(self.names)) != n:
            raise ValueError("observation.names must be unique")
        return self


class ActionSpec(_Frozen):
    """What each action entry means and how the network output becomes an action."""

    names: tuple[str, ...] = Field(min_length=1)
    low: float = Field(default=-1.0, allow_inf_nan=False)
    high: float = Field(default=1.0, allow_inf_nan=False)
    squash: Literal["tanh"] = "tanh"
    learning_rate_follows_batch: float = Field(default=0.0, ge=0.0, le=1.0)
    """Coupling exponent the policy was trained with (see Constraints; 0 in older artifacts)."""

    @model_validator(mode="after")
    def _sane(self) -> ActionSpec:
        if not self.low < self.high:
            raise ValueError(f"action.low ({self.low}) must be below action.high ({self.high})")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"action.names {list(self.names)} must be unique")
        return self


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

    format_version: StrictInt
    policy_version: StrictInt = Field(ge=1)
    feature_spec_version: str
    observation: ObservationSpec
    action: ActionSpec
    network: NetworkSpec
    weights_file: str = WEIGHTS_FILE
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    artifact_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
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
    from jpo.learning.features import FEATURE_SPEC_VERSION

    return FEATURE_SPEC_VERSION


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    """Return the bytes the seal covers: every key but the seal, sorted, no spaces."""
    body = {k: v for k, v in manifest.items() if k != SEAL_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def manifest_seal(manifest: Mapping[str, Any]) -> str:
    """Return the ``artifact_sha256`` of a manifest (sha256 of its canonical JSON)."""
    return hashlib.sha256(_canonical(manifest)).hexdigest()


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` resolves (symlinks followed) to ``folder`` or below it."""
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _plain_name(name: str) -> bool:
    """True for a single path component: no separator, not absolute, not ``.``/``..``."""
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and not Path(name).is_absolute()
        and Path(name).name == name
    )


def _latest_pointer(path: Path) -> Path:
    """Resolve ``path/LATEST`` to a subfolder of ``path``, refusing any path that leaves it."""
    pointer = path / LATEST_FILE
    if not _inside(pointer, path) or pointer.stat().st_size > 4096:
        raise PolicyError(
            f"{pointer} is a link out of {path} or larger than 4 KiB: it must be a small text "
            "file naming one subfolder (`jpo train --continuous` writes it)"
        )
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyError(f"cannot read {pointer}: {err}; fix or delete the pointer") from err
    target = path / name
    if not _plain_name(name) or not _inside(target, path):
        raise PolicyError(
            f"{pointer} names {name[:200]!r}, which is not a subfolder of {path} (absolute "
            "paths, `..` and links out of the folder are refused): point it at one version "
            "folder, e.g. v000003"
        )
    if (target / MANIFEST_FILE).is_file():
        return target
    raise PolicyError(
        f"{pointer} names {name!r}, which holds no {MANIFEST_FILE}: "
        "re-export the policy or fix the pointer"
    )


def latest_artifact(root: str | os.PathLike[str]) -> Path:
    """Resolve ``root`` to one artifact folder.

    ``root`` may be an artifact folder (it holds ``manifest.json``) or a folder of
    versioned artifacts: then the one named in its ``LATEST`` file, else the
    lexicographically last subfolder holding a manifest (``v000001``, ``v000002``, ...).
    A ``LATEST`` naming anything outside ``root`` (absolute, ``..``, a link out) is
    refused before the target is read.
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
    if (path / LATEST_FILE).is_file():
        return _latest_pointer(path)
    candidates = sorted(
        p for p in path.iterdir() if _inside(p, path) and (p / MANIFEST_FILE).is_file()
    )
    if not candidates:
        raise PolicyError(
            f"{path} holds no policy artifact ({MANIFEST_FILE} + {WEIGHTS_FILE}): "
            "export one with `jpo train` or point at the bundled jpo/data/policy"
        )
    return candidates[-1]


def _read_capped(path: Path, folder: Path, cap: int, what: str) -> bytes:
    """Read a file of the artifact after checking it stays in ``folder`` and its size."""
    if not _inside(path, folder):
        raise PolicyError(
            f"{path} ({what}) resolves outside the artifact folder {folder}: links out of "
            "the folder are refused; copy the real file into it"
        )
    try:
        size = path.stat().st_size
        if size > cap:
            raise PolicyError(
                f"{path} ({what}) is {size} bytes, over the {cap}-byte limit "
                "(configs/policy.toml [limits]): re-export the policy"
            )
        with path.open("rb") as fh:
            data = fh.read(cap + 1)
    except OSError as err:
        raise PolicyError(f"cannot read {what} {path}: {err}; re-export the policy") from err
    if len(data) > cap:
        raise PolicyError(f"{path} ({what}) grew past the {cap}-byte limit while being read")
    return data


def _parse_manifest(path: Path, folder: Path, limits: ArtifactLimits) -> dict[str, Any]:
    """Read, depth-check, parse and unseal manifest.json (raw dict; fields not yet checked)."""
    data = _read_capped(path, folder, limits.max_manifest_bytes, "policy manifest")
    try:
        raw = loads_bounded(data.decode("utf-8"), max_depth=limits.max_json_depth)
    except (UnicodeDecodeError, ValueError) as err:  # JsonDepthError included
        raise PolicyError(
            f"cannot read policy manifest {path}: {err}; re-export the policy"
        ) from err
    found = raw.get("format_version") if isinstance(raw, dict) else None
    if type(found) is not int or found != FORMAT_VERSION:
        hint = (
            " (format 1 had no artifact_sha256: re-seal it with "
            "`python -m jpo.policy reseal FOLDER` after checking its weights)"
            if type(found) is int and found == 1
            else ""
        )
        raise PolicyError(
            f"{path}: format_version {found!r} is not {FORMAT_VERSION}, the format this JPO "
            f"reads{hint}: re-export the policy with this JPO version"
        )
    assert isinstance(raw, dict)
    seal = raw.get(SEAL_KEY)
    try:
        actual = manifest_seal(raw)
    except (TypeError, ValueError) as err:
        raise PolicyError(f"{path}: cannot compute its checksum ({err}); re-export it") from err
    if seal != actual:
        raise PolicyError(
            f"{path}: {SEAL_KEY} {str(seal)[:64]!r} does not match the manifest's content "
            f"(sha256 {actual}): the manifest is corrupt or was edited after export; "
            "re-export the policy or restore the artifact folder as exported"
        )
    return raw


def _check_normalization(manifest: PolicyManifest, where: Path, limits: ArtifactLimits) -> None:
    """Refuse normalization constants that would blow up or erase the observation."""
    obs = manifest.observation
    for i, (mean, std) in enumerate(zip(obs.mean, obs.std, strict=True)):
        if abs(mean) > limits.max_abs_mean or not limits.min_std <= std <= limits.max_std:
            raise PolicyError(
                f"{where}: observation {obs.names[i]!r} has mean {mean:g} and std {std:g}; "
                f"allowed |mean| <= {limits.max_abs_mean:g} and std in "
                f"[{limits.min_std:g}, {limits.max_std:g}] (configs/policy.toml "
                "[normalization]): the manifest is corrupt or forged; re-export the policy"
            )
    if max(abs(obs.clip_low), abs(obs.clip_high)) > limits.max_abs_clip:
        raise PolicyError(
            f"{where}: observation clip [{obs.clip_low:g}, {obs.clip_high:g}] exceeds "
            f"+-{limits.max_abs_clip:g} (configs/policy.toml): re-export the policy"
        )


def _check_spec(
    manifest: PolicyManifest,
    where: Path,
    observation_names: Sequence[str],
    action_names: Sequence[str],
) -> None:
    """Check names, order and bounds against the feature spec and hyperparameters JPO runs."""
    got = tuple(manifest.observation.names)
    if got != tuple(observation_names):
        diff = next(
            (i for i, (a, b) in enumerate(zip(got, observation_names, strict=False)) if a != b),
            min(len(got), len(observation_names)),
        )
        raise PolicyError(
            f"{where}: observation.names differ from this JPO's feature spec at entry {diff} "
            f"({len(got)} names, {len(observation_names)} expected): the policy would read "
            "the wrong features; re-export it from a checkpoint trained with this JPO"
        )
    names = tuple(manifest.action.names)
    unknown = [n for n in names if n not in action_names]
    if unknown:
        raise PolicyError(
            f"{where}: action.names {unknown} are not tunable hyperparameters "
            f"({', '.join(action_names)}): re-export the policy"
        )
    order = [action_names.index(n) for n in names]
    if order != sorted(order):
        raise PolicyError(
            f"{where}: action.names {list(names)} are out of order (expected the order "
            f"{', '.join(action_names)}): swapped names would move the wrong "
            "hyperparameter; re-export the policy"
        )
    low, high = manifest.action.low, manifest.action.high
    if low < -1.0 or high > 1.0:
        raise PolicyError(
            f"{where}: action bounds [{low:g}, {high:g}] leave [-1, 1], the constraints' "
            "action space: re-export the policy"
        )


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Return (shape, dtype) from an .npy member's header without reading its data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _load_weights(path: Path, limits: ArtifactLimits) -> dict[str, np.ndarray]:
    """Load the npz's float arrays, checking count, dtype and declared size first."""
    arrays: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_arrays:
                raise PolicyError(
                    f"{path} holds {len(infos)} arrays, over the limit of {limits.max_arrays} "
                    "(configs/policy.toml): re-export the policy"
                )
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename!r} is not an .npy array")
                with zf.open(info) as fh:
                    shape, dtype = _npy_header(fh)
                elements = math.prod(shape)
                total += elements
                if dtype.kind != "f" or dtype.hasobject or total > limits.max_array_elements:
                    raise PolicyError(
                        f"{path}: array {info.filename[:-4]!r} declares {dtype} of shape "
                        f"{shape}: only float arrays of at most {limits.max_array_elements} "
                        "elements in all (configs/policy.toml) are read; re-export the policy"
                    )
                with zf.open(info) as fh:
                    arrays[info.filename[:-4]] = np.lib.format.read_array(fh, allow_pickle=False)
    except PolicyError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as err:
        raise PolicyError(
            f"cannot read policy weights {path}: truncated or not an npz ({err}); re-export "
            "the policy"
        ) from err
    except (ValueError, KeyError, TypeError, NotImplementedError) as err:
        raise PolicyError(f"cannot read policy weights {path}: {err}; re-export it") from err
    return arrays


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
        limits: ArtifactLimits | None = None,
    ) -> LocalPolicy:
        """Load and verify an artifact (folder, its manifest.json, or a versions folder).

        Refuses (PolicyError) every failure listed in the module docstring ("Integrity"):
        a path leaving the folder, a file or array over the limits, an unknown format, a
        broken seal or weights checksum, an insane field, and a feature-spec version other
        than ``expected_feature_spec_version`` (default:
        :data:`jpo.learning.features.FEATURE_SPEC_VERSION`). Names, order and action bounds are
        checked against this JPO's spec when the artifact claims the running version.
        """
        limits = limits or load_artifact_limits()
        folder = latest_artifact(path)
        manifest_path = folder / MANIFEST_FILE
        raw = _parse_manifest(manifest_path, folder, limits)
        try:
            manifest = PolicyManifest.model_validate(raw)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise PolicyError(
                f"{manifest_path} is not a valid policy manifest ({problems[:500]}); re-export it"
            ) from err

        current = _current_feature_spec_version()
        expected = expected_feature_spec_version or current
        if manifest.feature_spec_version != expected:
            raise PolicyError(
                f"{manifest_path}: policy was trained on feature spec version "
                f"{manifest.feature_spec_version!r} but this JPO builds observations with "
                f"version {expected!r}: retrain and export a policy with this JPO "
                "(`jpo train`), or install the JPO version the policy was made with"
            )
        _check_normalization(manifest, manifest_path, limits)
        if expected == current:
            from jpo.learning.features import OBSERVATION_NAMES
            from jpo.workload.types import HYPERPARAMETER_NAMES

            _check_spec(manifest, manifest_path, OBSERVATION_NAMES, HYPERPARAMETER_NAMES)

        weights_path = _weights_path(folder, manifest, manifest_path)
        data = _read_capped(weights_path, folder, limits.max_weights_bytes, "policy weights")
        actual = hashlib.sha256(data).hexdigest()
        if actual != manifest.weights_sha256:
            raise PolicyError(
                f"{weights_path}: sha256 {actual} does not match {manifest.weights_sha256} "
                f"in {manifest_path}: the file is corrupt or was changed after export; "
                "re-export the policy or restore both files together"
            )
        weights = _load_weights(weights_path, limits)
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


def _weights_path(folder: Path, manifest: PolicyManifest, manifest_path: Path) -> Path:
    """Return the weights file, refusing a name that is not a plain file in ``folder``."""
    name = manifest.weights_file
    path = folder / name
    if not _plain_name(name) or not _inside(path, folder):
        raise PolicyError(
            f"{manifest_path}: weights_file {name[:200]!r} is not a file name inside "
            f"{folder} (absolute paths, `..` and links out of the folder are refused): "
            f"use {WEIGHTS_FILE!r} and keep the weights in the artifact folder"
        )
    if not path.is_file():
        raise PolicyError(
            f"policy weights {path} named by {manifest_path} are missing: "
            "copy the whole artifact folder or re-export it"
        )
    return path


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
    ``weights_file``, ``weights_sha256``, ``artifact_sha256`` and (optionally)
    ``created_at``, which are filled in here. The folder is assembled next to
    ``out_dir`` and renamed into place, so a reader never sees half an artifact.
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
            **{k: v for k, v in manifest.items() if k != SEAL_KEY},
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
        sealed = validated.model_dump(mode="json", exclude={SEAL_KEY})
        sealed[SEAL_KEY] = manifest_seal(sealed)
        text = json.dumps(sealed, indent=2, sort_keys=True)
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


def reseal_artifact(folder: str | os.PathLike[str]) -> Path:
    """Upgrade a format-1 artifact to format 2 in place: same weights, manifest sealed.

    Refuses (PolicyError) weights whose sha256 differs from the manifest's: only an
    artifact that still matches its export is re-sealed.
    """
    path = Path(folder)
    manifest_path = path / MANIFEST_FILE
    raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    weights = path / str(raw.get("weights_file", WEIGHTS_FILE))
    if not _plain_name(weights.name) or file_sha256(weights) != raw.get("weights_sha256"):
        raise PolicyError(f"{weights}: does not match weights_sha256 in {manifest_path}")
    raw["format_version"] = FORMAT_VERSION
    raw.pop(SEAL_KEY, None)
    validated = PolicyManifest.model_validate(raw).model_dump(mode="json", exclude={SEAL_KEY})
    validated[SEAL_KEY] = manifest_seal(validated)
    tmp = path / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(validated, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    return path
