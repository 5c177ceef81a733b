"""Export RLlib's SAC actor to the numpy artifact of :mod:`jpo.policy.artifact` (torch side).

The actor of RLlib's ``DefaultSACTorchRLModule`` (new API stack) is ``pi_encoder`` (an
MLP over the observation) followed by ``pi`` (an MLP head whose output is the location
and log-std of a squashed Gaussian). Both are plain stacks of ``nn.Linear`` and
activation modules; this module walks them in order and writes each linear layer's
weight and bias with the activation that follows it. Anything else in the stack (a
LayerNorm, a free log-std head) is refused with a PolicyError rather than exported
wrongly.

Checkpoint paths are built from RLlib's ``COMPONENT_*`` constants and modules are loaded
with ``RLModule.from_checkpoint`` (ray/rllib/core/__init__.py, rl_module/rl_module.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jpo.errors import PolicyError
from jpo.policy.artifact import write_artifact

if TYPE_CHECKING:
    from ray.rllib.core.rl_module.rl_module import RLModule

__all__ = [
    "actor_layers",
    "export_checkpoint",
    "export_policy",
    "load_actor_weights",
    "load_module_from_checkpoint",
    "module_checkpoint_path",
]


def module_checkpoint_path(checkpoint_dir: str | os.PathLike[str]) -> Path:
    """Return the default RLModule's folder inside an Algorithm checkpoint."""
    from ray.rllib.core import (
        COMPONENT_LEARNER,
        COMPONENT_LEARNER_GROUP,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
    )

    return (
        Path(checkpoint_dir)
        / COMPONENT_LEARNER_GROUP
        / COMPONENT_LEARNER
        / COMPONENT_RL_MODULE
        / DEFAULT_MODULE_ID
    )


def load_module_from_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> RLModule:
    """Load the trained SAC RLModule (CPU) from an Algorithm checkpoint folder."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = module_checkpoint_path(checkpoint_dir)
    if not path.is_dir():
        raise PolicyError(
            f"{checkpoint_dir} is not an RLlib Algorithm checkpoint ({path} is missing): "
            "pass a folder written by `jpo train` (storage/checkpoints/<name>)"
        )
    try:
        return RLModule.from_checkpoint(path)
    except Exception as err:  # RLlib raises many types here; name the path either way
        raise PolicyError(f"cannot load the RLModule from {path}: {err}") from err


_ACTIVATION_NAMES = {
    "ReLU": "relu",
    "Tanh": "tanh",
    "SiLU": "silu",
    "Sigmoid": "sigmoid",
}


def actor_layers(module: Any) -> tuple[dict[str, np.ndarray], list[dict[str, str]]]:
    """Return the actor's weights (float32, keyed ``l<i>.weight``/``l<i>.bias``) and layers.

    ``module`` is an RLlib SAC torch RLModule (its ``pi_encoder`` and ``pi``).
    """
    import torch
    from torch import nn

    if not hasattr(module, "pi_encoder") or not hasattr(module, "pi"):
        raise PolicyError(
            f"{type(module).__name__} has no pi_encoder/pi: only RLlib's SAC RLModule "
            "(DefaultSACTorchRLModule) can be exported"
        )
    weights: dict[str, np.ndarray] = {}
    layers: list[dict[str, str]] = []
    for part in (module.pi_encoder, module.pi):
        for sub in part.modules():
            if list(sub.children()):
                continue  # a container; its leaves come next, in registration order
            if isinstance(sub, nn.Linear):
                i = len(layers)
                with torch.no_grad():
                    weights[f"l{i}.weight"] = sub.weight.detach().cpu().numpy().astype("f4")
                    bias = sub.bias if sub.bias is not None else torch.zeros(sub.out_features)
                    weights[f"l{i}.bias"] = bias.detach().cpu().numpy().astype("f4")
                layers.append(
                    {"weight": f"l{i}.weight", "bias": f"l{i}.bias", "activation": "linear"}
                )
            elif isinstance(sub, nn.Identity | nn.Dropout):
                continue
            elif isinstance(sub, nn.ELU) and float(sub.alpha) == 1.0:
                _set_activation(layers, "elu", sub)
            elif type(sub).__name__ in _ACTIVATION_NAMES:
                _set_activation(layers, _ACTIVATION_NAMES[type(sub).__name__], sub)
            else:
                raise PolicyError(
                    f"the actor holds a {type(sub).__name__} layer, which the numpy policy "
                    "cannot run: train without it (model.fcnet_use_layernorm false, "
                    "free_log_std false) to export"
                )
    if not layers:
        raise PolicyError("the actor holds no linear layer: nothing to export")
    return weights, layers


def _set_activation(layers: list[dict[str, str]], name: str, sub: Any) -> None:
    if not layers or layers[-1]["activation"] != "linear":
        raise PolicyError(
            f"activation {type(sub).__name__} does not follow a linear layer: "
            "the actor's layout is not the MLP this exporter knows"
        )
    layers[-1]["activation"] = name


def export_policy(
    module: Any,
    out_dir: str | os.PathLike[str],
    *,
    policy_version: int,
    feature_spec_version: str,
    observation_names: Sequence[str],
    action_names: Sequence[str],
    obs_mean: Sequence[float] | None = None,
    obs_std: Sequence[float] | None = None,
    obs_clip: tuple[float, float] = (-1e6, 1e6),
    constraints_sha256: str | None = None,
    learning_rate_follows_batch: float = 0.0,
    training_data: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Write the actor of ``module`` as a :mod:`jpo.policy.artifact` artifact into ``out_dir``."""
    weights, layers = actor_layers(module)
    n = len(observation_names)
    in_width = weights["l0.weight"].shape[1]
    if in_width != n:
        raise PolicyError(f"the actor takes {in_width} inputs but {n} observation names were given")
    action_space = getattr(module, "action_space", None)
    low, high = -1.0, 1.0
    if action_space is not None and getattr(action_space, "low", None) is not None:
        lows, highs = np.unique(action_space.low), np.unique(action_space.high)
        if lows.size != 1 or highs.size != 1:
            raise PolicyError("per-entry action bounds are not supported by the artifact")
        low, high = float(lows[0]), float(highs[0])
    manifest = {
        "policy_version": int(policy_version),
        "feature_spec_version": str(feature_spec_version),
        "observation": {
            "names": list(observation_names),
            "mean": list(obs_mean) if obs_mean is not None else [0.0] * n,
            "std": list(obs_std) if obs_std is not None else [1.0] * n,
            "clip_low": float(obs_clip[0]),
            "clip_high": float(obs_clip[1]),
        },
        "action": {
            "names": list(action_names),
            "low": low,
            "high": high,
            "squash": "tanh",
            "learning_rate_follows_batch": float(learning_rate_follows_batch),
        },
        "network": {"layers": layers},
        "constraints_sha256": constraints_sha256,
        "training_data": dict(training_data or {}),
        "source": dict(source or {}),
    }
    return write_artifact(out_dir, weights, manifest)


def export_checkpoint(
    checkpoint_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], **manifest: Any
) -> Path:
    """Load the RLModule of an Algorithm checkpoint and export its actor to ``out_dir``."""
    module = load_module_from_checkpoint(checkpoint_dir)
    source = dict(manifest.pop("source", None) or {})
    source.setdefault("checkpoint", str(checkpoint_dir))
    return export_policy(module, out_dir, source=source, **manifest)


def load_actor_weights(module: Any, weights: Mapping[str, np.ndarray]) -> None:
    """Copy an artifact's actor weights (``l<i>.weight``/``l<i>.bias``) into ``module``.

    The reverse of :func:`actor_layers`: the i-th ``nn.Linear`` of ``pi_encoder`` then
    ``pi`` takes ``l<i>``. Raises PolicyError when the layouts differ (other widths or
    depth: then the module keeps its own initialization).
    """
    import torch
    from torch import nn

    if not hasattr(module, "pi_encoder") or not hasattr(module, "pi"):
        raise PolicyError(f"{type(module).__name__} has no pi_encoder/pi to load an actor into")
    linears = [
        sub
        for part in (module.pi_encoder, module.pi)
        for sub in part.modules()
        if isinstance(sub, nn.Linear)
    ]
    n_artifact = len([k for k in weights if k.endswith(".weight")])
    if n_artifact != len(linears):
        raise PolicyError(
            f"the artifact has {n_artifact} linear layers, the actor {len(linears)}: "
            "train with the served policy's model.fcnet_hiddens to start from it"
        )
    for i, layer in enumerate(linears):
        w, b = weights[f"l{i}.weight"], weights[f"l{i}.bias"]
        if tuple(w.shape) != tuple(layer.weight.shape) or layer.bias is None:
            raise PolicyError(
                f"layer l{i}: the artifact's weight is {tuple(w.shape)}, the actor's "
                f"{tuple(layer.weight.shape)}: train with the served policy's "
                "model.fcnet_hiddens to start from it"
            )
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
            layer.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
