"""Train the SAC agent with Ray RLlib (new API stack) from ``configs/train.yaml``.

Usage::

    python -m jpo.train --config configs/train.yaml [--resume] [--stop-iters N]
                        [--storage PATH_OR_URI] [--continuous]

and, on a cluster, the same command through ``ray job submit --working-dir . -- ...``
(see docs/ray-jobs.md). Everything tunable lives in the YAML file (:class:`TrainConfig`
documents every key): the env and its config, network sizes, learning rates, the replay
buffer, training intensity, env runners, learners and GPUs per learner, the storage path
(a local folder or any pyarrow filesystem URI such as ``s3://bucket/jpo``), stop
criteria and the export of the trained actor.

Storage layout (``storage.path``)::

    checkpoints/iter_000010/   RLlib Algorithm checkpoint (+ jpo_checkpoint.json marker)
    progress.jsonl             one JSON line of key metrics per training iteration

``--resume`` restores the newest complete checkpoint (one with the marker) into an
Algorithm built from the CURRENT config, so resources may change between runs.

GPUs: ``resources.num_gpus_per_learner: auto`` uses one GPU per learner when
``torch.cuda.is_available()`` in the driver or the Ray cluster reports GPUs, else 0 —
no code change between a laptop and a KubeRay cluster with GPU workers.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, ValidationError

from jpo.errors import ConfigError, JpoError, TrainingError
from jpo.paths import config_path
from jpo.settings import Settings, config_file, read_config

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from ray.rllib.algorithms import Algorithm
    from ray.rllib.algorithms.sac import SACConfig

__all__ = [
    "EnvDescription",
    "Storage",
    "TrainConfig",
    "TrainResult",
    "build_sac_config",
    "describe_env",
    "export_latest",
    "load_train_config",
    "make_env",
    "parse_set_overrides",
    "recorded_run",
    "resolve_learner_resources",
    "train",
]

logger = logging.getLogger("jpo.train.trainer")

ENV_NAME = "jpo-train-env"
"""Name under which the configured env is registered with Ray Tune's env registry."""
CHECKPOINT_MARKER = "jpo_checkpoint.json"
RUN_CONFIG_FILE = "jpo_train_config.json"
"""Beside each checkpoint's marker: the validated config that trained it and the env's
description (observation/action names, data provenance), which ``--export-only`` uses."""


# --------------------------------------------------------------------------- config


class _Section(Settings):
    """A section of train.yaml: frozen, unknown keys are errors (jpo.settings)."""


class EnvSection(_Section):
    """Which Gymnasium env to train on and how to build it."""

    id: str = "jpo/PrometheusReplay-v0"
    """Gymnasium id of the env (registered by ``register_module`` on import)."""
    register_module: str | None = "jpo.sim"
    """Module imported in every process before ``gymnasium.make`` (registers the id)."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Passed as ``gymnasium.make(id, config=...)``; empty: ``gymnasium.make(id)``."""
    eval_config: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``config`` for continuous mode's no-forgetting set (the validation set)."""


class ModelSection(_Section):
    """Sizes of RLlib's default SAC networks (actor and critics share the layout)."""

    fcnet_hiddens: list[int] = Field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the encoders."""
    fcnet_activation: Literal["relu", "tanh", "silu", "elu"] = "relu"
    """Activation of the encoder layers."""
    head_fcnet_hiddens: list[int] = Field(default_factory=list)
    """Hidden widths of the policy and Q heads on top of the encoders."""
    head_fcnet_activation: Literal["relu", "tanh", "silu", "elu"] = "relu"
    """Activation of the head layers."""


class ReplayBufferSection(_Section):
    """RLlib episode replay buffer."""

    type: Literal["EpisodeReplayBuffer", "PrioritizedEpisodeReplayBuffer"] = (
        "PrioritizedEpisodeReplayBuffer"
    )
    """Uniform or prioritized replay."""
    capacity: int = Field(default=100_000, ge=1)
    """Transitions kept."""
    alpha: float = Field(default=0.6, ge=0.0)
    """Prioritization exponent (prioritized buffer only)."""
    beta: float = Field(default=0.4, ge=0.0)
    """Importance-sampling exponent (prioritized buffer only)."""


class SacSection(_Section):
    """SAC hyperparameters (SACConfig.training)."""

    gamma: float = Field(default=0.9, gt=0.0, le=1.0)
    """Discount factor."""
    tau: float = Field(default=0.005, gt=0.0, le=1.0)
    """Polyak factor of the target networks."""
    actor_lr: float = Field(default=3e-4, gt=0.0)
    """Actor learning rate."""
    critic_lr: float = Field(default=3e-4, gt=0.0)
    """Critic learning rate."""
    alpha_lr: float = Field(default=3e-4, gt=0.0)
    """Entropy temperature learning rate."""
    initial_alpha: float = Field(default=1.0, gt=0.0)
    """Initial entropy temperature."""
    target_entropy: float | Literal["auto"] = "auto"
    """Target entropy; auto = -action dimensions."""
    twin_q: bool = True
    """Clipped double Q."""
    n_step: int = Field(default=1, ge=1)
    """N-step returns."""
    train_batch_size_per_learner: int = Field(default=256, ge=1)
    """Replay samples per gradient update and learner."""
    training_intensity: float | None = None
    """Replayed / sampled transitions ratio; None: RLlib's natural value."""
    num_steps_sampled_before_learning_starts: int = Field(default=1000, ge=0)
    """Warm-up env steps before the first update."""
    grad_clip: float | None = None
    """Gradient norm clip; None: off."""
    fast_paths: bool = True
    """Do RLlib's per-transition/per-tensor bookkeeping in bulk (jpo.train.sac_fast: same
    samples, losses and updates, several times faster); False: RLlib's own code."""
    bc_weight: float = Field(default=0.0, ge=0.0)
    """Weight of the behaviour-cloning term towards the oracle teacher (jpo.train.sac_bc); 0: off.
    Needs ``env.config.teacher: true``."""
    critic_warmup_updates: int = Field(default=0, ge=0)
    """Gradient updates at the start of this process during which the actor stays frozen
    (critics and α learn; jpo.train.sac_bc); 0: off. Continuous learning sets it."""
    actor_updates: int | None = Field(default=None, ge=1)
    """Gradient updates of this process after the warm-up in which the actor learns; later
    ones leave it as it is (critics and α learn on; jpo.train.sac_bc). None: no bound.
    Continuous learning sets it (continuous.actor_updates)."""
    anchor_weight: float = Field(default=0.0, ge=0.0)
    """Weight of a distillation term towards ``anchor_policy``'s actions (sac_bc); 0: off."""
    anchor_policy: str | None = None
    """Policy artifact folder the anchor term pulls towards (continuous: the served policy)."""
    replay_buffer: ReplayBufferSection = Field(default_factory=ReplayBufferSection)


class ResourcesSection(_Section):
    """Parallelism and devices."""

    num_env_runners: int = Field(default=0, ge=0)
    """Remote env runner actors (0: sample in the driver)."""
    num_envs_per_env_runner: int = Field(default=1, ge=1)
    """Vectorized envs per runner."""
    num_cpus_per_env_runner: int = Field(default=1, ge=0)
    """CPUs each remote env runner reserves."""
    custom_resources_per_env_runner: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each remote env runner needs: places the runners on the nodes
    that offer them (e.g. ``{env_node: 1}`` with ``ray start --resources '{"env_node": 4}'``
    on the sampling nodes)."""
    rollout_fragment_length: int | Literal["auto"] = "auto"
    """Env steps per runner per sample call."""
    num_learners: int = Field(default=0, ge=0)
    """Remote learner actors (0: learn in the driver)."""
    num_gpus_per_learner: float | Literal["auto"] = "auto"
    """GPUs per learner; auto: 1 if any GPU is visible to the driver or cluster, else 0."""
    torch_threads: int | None = None
    """torch.set_num_threads in the driver; None: torch's default."""
    ray_num_cpus: int | None = None
    """CPUs of a LOCAL Ray started by this process (ignored when joining a cluster)."""
    object_store_memory_mb: int | None = None
    """Object store size of a local Ray, MiB (ignored when joining a cluster)."""


class StorageSection(_Section):
    """Where checkpoints and progress go."""

    path: str = "runs/jpo-sac"
    """Local folder (relative to the working directory) or pyarrow URI (s3://, gs://)."""
    checkpoint_every: int = Field(default=10, ge=1)
    """Save a checkpoint every N iterations (and always at the end)."""
    keep: int = Field(default=3, ge=1)
    """Checkpoints kept; older ones are deleted."""


class StopSection(_Section):
    """Stop when ANY criterion is met (absolute counters, restored runs included)."""

    iterations: int | None = Field(default=100, ge=1)
    """Training iterations (Algorithm.iteration)."""
    env_steps: int | None = Field(default=None, ge=1)
    """Env steps sampled over the run's lifetime."""
    time_s: float | None = Field(default=None, gt=0)
    """Wall seconds in this invocation."""
    episode_return_mean: float | None = None
    """Mean training episode return to reach."""


class ReportingSection(_Section):
    """What one iteration is and how results are smoothed."""

    min_sample_timesteps_per_iteration: int = Field(default=1000, ge=1)
    """At least this many env steps per iteration."""
    min_time_s_per_iteration: float = Field(default=0.0, ge=0.0)
    """At least this many seconds per iteration."""
    metrics_num_episodes_for_smoothing: int = Field(default=20, ge=1)
    """Episodes averaged into episode_return_mean."""
    progress_bar: bool = True
    """Show a rich progress bar when stderr is a terminal."""


class ExportSection(_Section):
    """Export of the trained actor (jpo.policy.artifact artifact) at the end of training."""

    dir: str | None = None
    """Artifact folder to write after training; None: no export."""
    policy_version: int = Field(default=1, ge=0)
    """Version written into the manifest."""


class TrainConfig(_Section):
    """The whole of ``configs/train.yaml``."""

    seed: int | None = 0
    """Seed of RLlib and the envs; None: nondeterministic."""
    env: EnvSection = Field(default_factory=EnvSection)
    model: ModelSection = Field(default_factory=ModelSection)
    sac: SacSection = Field(default_factory=SacSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    stop: StopSection = Field(default_factory=StopSection)
    reporting: ReportingSection = Field(default_factory=ReportingSection)
    export: ExportSection = Field(default_factory=ExportSection)
    continuous: dict[str, Any] = Field(default_factory=dict)
    """Settings of ``--continuous`` (jpo.train.continuous.ContinuousConfig)."""


def load_train_config(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Read and validate a training YAML file (default ``configs/train.yaml``)."""
    cfg_path = config_file("train.yaml", path)
    if not cfg_path.is_file():
        raise ConfigError(
            f"cannot read training config {cfg_path}: no such file; pass --config or set "
            "JPO_CONFIG_DIR to a folder holding train.yaml"
        )
    raw = read_config(cfg_path)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, cfg_path)
    return validate_train_config(raw, cfg_path, overrides)


def validate_train_config(
    raw: Mapping[str, Any],
    where: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Validate a training config mapping; errors name the key (and the --set that made it)."""
    try:
        return TrainConfig.model_validate(dict(raw))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            via = [d for d in (overrides or {}) if key == d or key.startswith(d + ".")]
            how = f" (from --set {via[0]}=...)" if via else ""
            problems.append(f"{key}{how}: {e['msg']}")
        raise ConfigError(f"{where}: {'; '.join(problems)}") from err


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, cfg_path: Path) -> None:
    """Set ``raw[a][b][c] = value`` for ``dotted`` = ``a.b.c`` (sections created as needed)."""
    node = raw
    *parents, leaf = dotted.split(".")
    if not leaf or not all(parents):
        raise ConfigError(f"--set {dotted}: not a dotted key such as sac.actor_lr")
    walked = []
    for key in parents:
        walked.append(key)
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {dotted}: {'.'.join(walked)} in {cfg_path} is a value, not a section; "
                "set it directly or name a key of a section"
            )
        node = child
    node[leaf] = value


def parse_set_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``--set key=value`` items into dotted overrides (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {item!r}: use --set dotted.key=value, e.g. --set stop.iterations=2"
            )
        try:
            out[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: value {text!r} is not valid YAML: {err}") from err
    return out


# --------------------------------------------------------------------------- storage


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats (RLlib reports NaN before the first episode) by None."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


class Storage:
    """Checkpoints and progress under a local folder or a pyarrow filesystem URI."""

    def __init__(self, uri: str):
        import pyarrow.fs as pafs

        self.uri = uri
        if "://" in uri:
            try:
                fs, base = pafs.FileSystem.from_uri(uri)
            except (ValueError, OSError) as err:  # pyarrow.ArrowInvalid is a ValueError
                raise ConfigError(
                    f"storage.path {uri!r} is not a usable pyarrow filesystem URI: {err}"
                ) from err
        else:
            fs, base = pafs.LocalFileSystem(), str(Path(uri).resolve())
        self.fs: pafs.FileSystem = fs
        self.base = base.rstrip("/")
        self.is_local = isinstance(fs, pafs.LocalFileSystem)
        try:
            self.fs.create_dir(self.checkpoints_dir, recursive=True)
        except OSError as err:
            raise TrainingError(f"cannot create {self.checkpoints_dir} ({uri}): {err}") from err

    @property
    def checkpoints_dir(self) -> str:
        """Folder holding one subfolder per checkpoint."""
        return f"{self.base}/checkpoints"

    def checkpoint_path(self, iteration: int) -> str:
        """Path of the checkpoint taken after ``iteration``."""
        return f"{self.checkpoints_dir}/iter_{iteration:06d}"

    def list_checkpoints(self) -> list[str]:
        """Complete checkpoints (with the marker), oldest first."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.checkpoints_dir, allow_not_found=True))
        found = sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith("iter_")
        )
        return [
            p
            for p in found
            if self.fs.get_file_info(f"{p}/{CHECKPOINT_MARKER}").type == pafs.FileType.File
        ]

    def latest_checkpoint(self) -> str | None:
        """Newest complete checkpoint, or None."""
        done = self.list_checkpoints()
        return done[-1] if done else None

    def mark_complete(self, path: str, info: Mapping[str, Any]) -> None:
        """Write the marker that makes ``path`` count as a complete checkpoint."""
        with self.fs.open_output_stream(f"{path}/{CHECKPOINT_MARKER}") as out:
            out.write(json.dumps(dict(info), sort_keys=True).encode())

    def read_marker(self, path: str) -> dict[str, Any]:
        """Read a checkpoint's marker."""
        with self.fs.open_input_stream(f"{path}/{CHECKPOINT_MARKER}") as src:
            return dict(json.loads(src.read().decode()))

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` complete checkpoints."""
        for old in self.list_checkpoints()[:-keep]:
            self.fs.delete_dir(old)

    def append_progress(self, row: Mapping[str, Any]) -> None:
        """Append one JSON line to ``progress.jsonl``."""
        path = f"{self.base}/progress.jsonl"
        line = (json.dumps(jsonable(row), sort_keys=True) + "\n").encode()
        if self.is_local:
            with open(path, "ab") as fh:
                fh.write(line)
            return
        # Object stores cannot append: rewrite (progress files stay small).
        old = b""
        try:
            with self.fs.open_input_stream(path) as src:
                old = src.read()
        except (FileNotFoundError, OSError):
            old = b""
        with self.fs.open_output_stream(path) as out:
            out.write(old + line)

    def local_copy(self, path: str, dest: Path) -> Path:
        """Return a local folder with the contents of ``path`` (copied if remote)."""
        if self.is_local:
            return Path(path)
        import pyarrow.fs as pafs

        dest.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(path, str(dest), source_filesystem=self.fs)
        return dest


# --------------------------------------------------------------------------- env


def make_env(env_section: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Any:
    """Build the configured env (import the registering module, then gymnasium.make)."""
    import gymnasium as gym

    module = env_section.get("register_module")
    if module:
        importlib.import_module(module)
    config = {**dict(env_section.get("config") or {}), **dict(overrides or {})}
    try:
        if config:
            return gym.make(env_section["id"], config=config)
        return gym.make(env_section["id"])
    except gym.error.Error as err:
        raise ConfigError(
            f"env.id {env_section['id']!r} cannot be made ({err}); check env.id and "
            f"env.register_module ({module!r}) in the training config"
        ) from err


def _env_creator(env_section: dict[str, Any]) -> Callable[[Any], Any]:
    # Episode randomness comes from RLlib seeding reset() (config.debugging(seed=...));
    # env.config["seed"] is the replay env's synthetic-history seed and stays as given.
    def create(env_context: Any) -> Any:
        return make_env(env_section)

    return create


@dataclass(frozen=True)
class EnvDescription:
    """What the exported policy's manifest says about its inputs and outputs."""

    observation_names: tuple[str, ...]
    action_names: tuple[str, ...]
    feature_spec_version: str
    constraints_sha256: str | None
    training_data: dict[str, Any] = field(default_factory=dict)
    learning_rate_follows_batch: float = 0.0


def describe_env(cfg: TrainConfig, overrides: Mapping[str, Any] | None = None) -> EnvDescription:
    """Probe one env instance for observation/action names and data provenance."""
    env = make_env(cfg.env.model_dump(), overrides)
    try:
        base = env.unwrapped
        n_obs = int(env.observation_space.shape[0])
        n_act = int(env.action_space.shape[0])
        obs_names = tuple(getattr(base, "observation_names", ()) or ())
        act_names = tuple(getattr(base, "action_names", ()) or ())
        fsv = getattr(base, "feature_spec_version", None)
        sha = None
        coupling = 0.0
        training_data: dict[str, Any] = {"env_id": cfg.env.id}
        env_config = {**cfg.env.config, **dict(overrides or {})}
        if cfg.env.register_module == "jpo.sim":  # the JPO replay env: features + constraints
            from jpo.learning.features import FEATURE_SPEC_VERSION, OBSERVATION_NAMES
            from jpo.workload.constraints import load_constraints
            from jpo.workload.types import HYPERPARAMETER_NAMES

            fsv = fsv or FEATURE_SPEC_VERSION
            obs_names = obs_names or OBSERVATION_NAMES
            constraints = load_constraints(env_config.get("constraints_path") or None)
            sha = constraints.sha256()
            coupling = constraints.learning_rate_follows_batch
            tunable = set(env_config.get("tunable") or constraints.tunable)
            act_names = act_names or tuple(n for n in HYPERPARAMETER_NAMES if n in tunable)
            names = list(getattr(base, "workloads", ()))
            n_random = int(env_config.get("randomized_profiles") or 0)
            training_data.update(
                source=env_config.get("source", "catalog"),
                split=env_config.get("split", "train"),
                # catalog workloads; the synthetic ones are summarized below
                workloads=names[: len(names) - n_random] if n_random else names,
                episode_length=env_config.get("episode_length"),
                history_seed=env_config.get("seed", 0),
            )
            if n_random:
                from jpo.sim.randomization import load_randomization

                seed = int(env_config.get("randomization_seed", -1))
                rs = load_randomization(
                    env_config.get("randomization_path") or None, seed if seed >= 0 else None
                )
                training_data["randomization"] = {
                    "profiles": n_random,
                    "base_split": "train",
                    "config": env_config.get("randomization_path") or "configs/randomization.toml",
                    "seed": rs.seed,
                    "runs_per_profile": rs.runs_per_profile,
                    "input_bound_share": rs.input_bound_share,
                    "spread": {k: dict(v) for k, v in rs.spread.items()},
                }
        else:
            training_data["env_config"] = env_config
        if len(obs_names) != n_obs:
            obs_names = tuple(f"obs_{i}" for i in range(n_obs))
        if len(act_names) != n_act:
            act_names = tuple(f"action_{i}" for i in range(n_act))
        return EnvDescription(
            observation_names=obs_names,
            action_names=act_names,
            feature_spec_version=str(fsv if fsv is not None else f"env:{cfg.env.id}"),
            constraints_sha256=sha,
            training_data=training_data,
            learning_rate_follows_batch=coupling,
        )
    finally:
        env.close()


# --------------------------------------------------------------------------- RLlib


def resolve_learner_resources(
    resources: ResourcesSection, *, cluster_gpus: float, local_cuda: bool
) -> tuple[int, float]:
    """Return (num_learners, num_gpus_per_learner) after resolving ``auto``.

    With GPUs only on other nodes (a CPU head of a KubeRay cluster), a driver-local
    learner could not use them, so ``auto`` then asks for one remote learner.
    """
    learners = resources.num_learners
    gpus = resources.num_gpus_per_learner
    if gpus == "auto":
        gpus = 1.0 if (local_cuda or cluster_gpus > 0) else 0.0
        if gpus and learners == 0 and not local_cuda:
            learners = 1
    return learners, float(gpus)


def _callbacks_class() -> type:
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class RewardComponentsCallback(RLlibCallback):
        """Log the env's reward components per step (info["reward"], a RewardBreakdown)."""

        def on_algorithm_init(self, *, algorithm: Any, **_: Any) -> None:
            """With the BC term on, make the replay buffer keep the teacher's actions."""
            from jpo.train.sac_bc import BC_WEIGHT_KEY

            weight = algorithm.config.learner_config_dict.get(BC_WEIGHT_KEY, 0.0)
            buffer = getattr(algorithm, "local_replay_buffer", None)
            if weight > 0 and buffer is not None:
                from jpo.train.sac_bc import keep_infos_in_samples

                keep_infos_in_samples(buffer)

        def on_episode_step(self, *, episode: Any, metrics_logger: Any = None, **_: Any) -> None:
            if metrics_logger is None:
                return
            try:
                info = episode.get_infos(-1)
            except (IndexError, KeyError):
                return
            if not isinstance(info, Mapping):
                return
            components = info.get("reward_components", info.get("reward"))
            if dataclasses.is_dataclass(components) and not isinstance(components, type):
                components = dataclasses.asdict(components)
            if not isinstance(components, Mapping):
                return
            for name, value in components.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    metrics_logger.log_value(("reward", str(name)), float(value), window=1000)

    return RewardComponentsCallback


def build_sac_config(
    cfg: TrainConfig, *, num_learners: int, num_gpus_per_learner: float
) -> SACConfig:
    """Translate the validated config into RLlib's SACConfig (new API stack)."""
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    env_section = cfg.env.model_dump()
    env_section["seed"] = cfg.seed
    register_env(ENV_NAME, _env_creator(env_section))
    rb = cfg.sac.replay_buffer
    replay: dict[str, Any] = {"type": rb.type, "capacity": rb.capacity}
    if rb.type == "PrioritizedEpisodeReplayBuffer":
        replay.update(alpha=rb.alpha, beta=rb.beta)
    from jpo.train.sac_fast import FAST_PATH_KEYS, FastSAC, FastSACTorchLearner

    learner_config: dict[str, Any] = dict.fromkeys(FAST_PATH_KEYS, cfg.sac.fast_paths)
    config = (
        SACConfig(algo_class=FastSAC)
        .environment(ENV_NAME)
        .env_runners(
            num_env_runners=cfg.resources.num_env_runners,
            num_envs_per_env_runner=cfg.resources.num_envs_per_env_runner,
            rollout_fragment_length=cfg.resources.rollout_fragment_length,
            num_cpus_per_env_runner=cfg.resources.num_cpus_per_env_runner,
            custom_resources_per_env_runner=dict(cfg.resources.custom_resources_per_env_runner),
        )
        .learners(num_learners=num_learners, num_gpus_per_learner=num_gpus_per_learner)
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=list(cfg.model.fcnet_hiddens),
                fcnet_activation=cfg.model.fcnet_activation,
                head_fcnet_hiddens=list(cfg.model.head_fcnet_hiddens),
                head_fcnet_activation=cfg.model.head_fcnet_activation,
            )
        )
        .training(
            gamma=cfg.sac.gamma,
            tau=cfg.sac.tau,
            actor_lr=cfg.sac.actor_lr,
            critic_lr=cfg.sac.critic_lr,
            alpha_lr=cfg.sac.alpha_lr,
            initial_alpha=cfg.sac.initial_alpha,
            target_entropy=cfg.sac.target_entropy,
            twin_q=cfg.sac.twin_q,
            n_step=cfg.sac.n_step,
            train_batch_size_per_learner=cfg.sac.train_batch_size_per_learner,
            training_intensity=cfg.sac.training_intensity,
            num_steps_sampled_before_learning_starts=cfg.sac.num_steps_sampled_before_learning_starts,
            grad_clip=cfg.sac.grad_clip,
            replay_buffer_config=replay,
        )
        .reporting(
            min_sample_timesteps_per_iteration=cfg.reporting.min_sample_timesteps_per_iteration,
            min_time_s_per_iteration=cfg.reporting.min_time_s_per_iteration,
            metrics_num_episodes_for_smoothing=cfg.reporting.metrics_num_episodes_for_smoothing,
        )
        .callbacks(_callbacks_class())
        .learners(learner_class=FastSACTorchLearner, learner_config_dict=learner_config)
    )
    if cfg.sac.bc_weight > 0 and not cfg.env.config.get("teacher"):
        raise ConfigError(
            f"sac.bc_weight = {cfg.sac.bc_weight} needs the teacher's actions: set "
            "env.config.teacher: true (configs/env.toml documents it), or bc_weight: 0"
        )
    if cfg.sac.anchor_weight > 0 and not cfg.sac.anchor_policy:
        raise ConfigError(
            f"sac.anchor_weight = {cfg.sac.anchor_weight} needs sac.anchor_policy (a policy "
            "artifact folder, e.g. jpo/data/policy), or anchor_weight: 0"
        )
    if (
        cfg.sac.bc_weight > 0
        or cfg.sac.anchor_weight > 0
        or cfg.sac.critic_warmup_updates
        or cfg.sac.actor_updates is not None
    ):
        config = _with_jpo_learner(config, cfg.sac, learner_config)
    if cfg.seed is not None:
        config = config.debugging(seed=cfg.seed)
    return config


def _with_jpo_learner(
    config: SACConfig, sac: SacSection, learner_config: dict[str, Any]
) -> SACConfig:
    """Use jpo.train.sac_bc's learner (BC term, critic warm-up, actor-update bound, anchor)."""
    from jpo.train.sac_bc import (
        ACTOR_UPDATES_KEY,
        ANCHOR_POLICY_KEY,
        ANCHOR_WEIGHT_KEY,
        BC_WEIGHT_KEY,
        CRITIC_WARMUP_KEY,
        BCSACTorchLearner,
        TeacherActionsToBatch,
    )

    extra: dict[str, Any] = {
        **learner_config,  # the fast paths' switches (jpo.train.sac_fast)
        BC_WEIGHT_KEY: sac.bc_weight,
        CRITIC_WARMUP_KEY: sac.critic_warmup_updates,
        ANCHOR_WEIGHT_KEY: sac.anchor_weight,
    }
    if sac.actor_updates is not None:
        extra[ACTOR_UPDATES_KEY] = sac.actor_updates
    if sac.anchor_policy:
        extra[ANCHOR_POLICY_KEY] = str(Path(sac.anchor_policy).resolve())
    kwargs: dict[str, Any] = {"learner_class": BCSACTorchLearner, "learner_config_dict": extra}
    if sac.bc_weight > 0:
        kwargs["learner_connector"] = lambda _obs_space, _act_space: TeacherActionsToBatch()
    return config.learners(**kwargs)


def _init_ray(cfg: TrainConfig) -> None:
    import ray

    from jpo.console import is_quiet, quiet_libraries

    quiet_libraries()  # Ray configures its loggers on import: silence them again under -q
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit` (or pointed at a cluster): join it as it is.
        ray.init(log_to_driver=True)
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if is_quiet():
        kwargs["logging_level"] = logging.ERROR
    if cfg.resources.ray_num_cpus is not None:
        kwargs["num_cpus"] = cfg.resources.ray_num_cpus
    if cfg.resources.object_store_memory_mb is not None:
        kwargs["object_store_memory"] = cfg.resources.object_store_memory_mb * 1024 * 1024
    ray.init(**kwargs)


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def _local_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _get(result: Mapping[str, Any], *path: str, default: float = math.nan) -> float:
    node: Any = result
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    try:
        return float(node)
    except (TypeError, ValueError):
        return default


def summarize_result(result: Mapping[str, Any], batch_size: int | None = None) -> dict[str, Any]:
    """Pick the figures worth logging from one ``Algorithm.train()`` result.

    ``batch_size`` (per learner) turns RLlib's trained-transition count into updates.
    """
    learner = (result.get("learners") or {}).get("default_policy", {})
    row: dict[str, Any] = {
        "iteration": int(_get(result, "training_iteration", default=0)),
        "env_steps": int(_get(result, "env_runners", "num_env_steps_sampled_lifetime", default=0)),
        "episode_return_mean": _get(result, "env_runners", "episode_return_mean"),
        "episode_len_mean": _get(result, "env_runners", "episode_len_mean"),
        "num_episodes_lifetime": _get(result, "env_runners", "num_episodes_lifetime"),
        "updates_lifetime": _get(
            result, "learners", "__all_modules__", "num_env_steps_trained_lifetime"
        ),
        "time_this_iter_s": _get(result, "time_this_iter_s"),
        "time_total_s": _get(result, "time_total_s"),
    }
    if batch_size and math.isfinite(row["updates_lifetime"]):
        row["updates_lifetime"] = row["updates_lifetime"] / batch_size  # gradient updates
    for key in (
        "qf_loss",
        "policy_loss",
        "bc_loss",
        "alpha_loss",
        "alpha_value",
        "qf_mean",
        "td_error_mean",
    ):
        if key in learner:
            row[f"learner/{key}"] = _get(learner, key)
    for name, value in ((result.get("env_runners") or {}).get("reward") or {}).items():
        row[f"reward/{name}"] = _get({"v": value}, "v")
    return row


def _format_row(row: Mapping[str, Any]) -> str:
    parts = [
        f"iter {row['iteration']}",
        f"steps {row['env_steps']}",
        f"return {row['episode_return_mean']:.4g}",
    ]
    parts += [
        f"{k.split('/', 1)[1]} {v:.4g}"
        for k, v in row.items()
        if k.startswith(("reward/", "learner/")) and isinstance(v, float) and math.isfinite(v)
    ]
    return " | ".join(parts)


@dataclass(frozen=True)
class TrainResult:
    """What a training invocation produced."""

    iterations: int
    env_steps: int
    checkpoint: str | None
    last: dict[str, Any]
    exported: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _should_stop(cfg: StopSection, row: Mapping[str, Any], elapsed: float) -> str | None:
    if cfg.iterations is not None and row["iteration"] >= cfg.iterations:
        return f"stop.iterations={cfg.iterations} reached"
    if cfg.env_steps is not None and row["env_steps"] >= cfg.env_steps:
        return f"stop.env_steps={cfg.env_steps} reached"
    if cfg.time_s is not None and elapsed >= cfg.time_s:
        return f"stop.time_s={cfg.time_s} reached"
    ret = row.get("episode_return_mean", math.nan)
    if (
        cfg.episode_return_mean is not None
        and math.isfinite(ret)
        and ret >= cfg.episode_return_mean
    ):
        return f"stop.episode_return_mean={cfg.episode_return_mean} reached"
    return None


def _save(
    algo: Algorithm,
    storage: Storage,
    cfg: TrainConfig,
    row: Mapping[str, Any],
    run: Mapping[str, Any] | None = None,
) -> str:
    path = storage.checkpoint_path(int(row["iteration"]))
    try:
        algo.save_to_path(path, filesystem=storage.fs)
        if run is not None:
            with storage.fs.open_output_stream(f"{path}/{RUN_CONFIG_FILE}") as out:
                out.write(json.dumps(run, indent=1, sort_keys=True, default=str).encode())
        storage.mark_complete(
            path,
            {
                "iteration": int(row["iteration"]),
                "env_steps": int(row["env_steps"]),
                "episode_return_mean": row["episode_return_mean"],
                "saved_at": time.time(),
            },
        )
    except OSError as err:
        raise TrainingError(f"cannot write checkpoint {path} ({storage.uri}): {err}") from err
    storage.prune(cfg.storage.keep)
    logger.info("checkpoint %s", path)
    return path


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    stop_iterations: int | None = None,
    storage_path: str | None = None,
    export_dir: str | os.PathLike[str] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    shutdown_ray: bool = False,
    init_actor: str | os.PathLike[str] | None = None,
    init_actor_on_resume: bool = False,
) -> TrainResult:
    """Build SAC from ``cfg``, optionally resume, train until a stop criterion, checkpoint.

    ``stop_iterations`` and ``storage_path`` override ``stop.iterations`` and
    ``storage.path``; ``export_dir`` overrides ``export.dir``. ``init_actor``: a
    jpo.policy.artifact artifact whose actor weights start a fresh run (and, with
    ``init_actor_on_resume``, a resumed one too: its critics, α and optimizer states come
    from the checkpoint, its actor from the artifact).
    """
    if stop_iterations is not None:
        cfg = cfg.model_copy(
            update={"stop": cfg.stop.model_copy(update={"iterations": stop_iterations})}
        )
    storage = Storage(storage_path or cfg.storage.path)
    if cfg.resources.torch_threads:
        import torch

        torch.set_num_threads(cfg.resources.torch_threads)
    _init_ray(cfg)
    num_learners, gpus = resolve_learner_resources(
        cfg.resources, cluster_gpus=_cluster_gpus(), local_cuda=_local_cuda()
    )
    logger.info(
        "phase 1/3 setup: learners %d, GPUs per learner %g, env runners %d; building the "
        "env (replays%s)",
        num_learners,
        gpus,
        cfg.resources.num_env_runners,
        ", oracle search of the teacher" if cfg.env.config.get("teacher") else "",
    )
    t0 = time.monotonic()
    desc = describe_env(cfg)  # builds (and caches) the replays and the teacher first
    run = {"config": cfg.model_dump(mode="json"), "env": dataclasses.asdict(desc)}
    logger.info(
        "phase 2/3 RLlib: building SAC (env ready after %.1f s: %d observations, %d actions)",
        time.monotonic() - t0,
        len(desc.observation_names),
        len(desc.action_names),
    )
    try:
        algo = build_sac_config(
            cfg, num_learners=num_learners, num_gpus_per_learner=gpus
        ).build_algo()
    except JpoError:
        raise
    except Exception as err:
        raise TrainingError(f"cannot build RLlib SAC from the training config: {err}") from err

    checkpoint: str | None = None
    history: list[dict[str, Any]] = []
    try:
        if resume:
            latest = storage.latest_checkpoint()
            if latest is None:
                logger.info("--resume: no checkpoint under %s yet, starting fresh", storage.uri)
            else:
                algo.restore_from_path(latest, filesystem=storage.fs)
                logger.info("resumed from %s (iteration %d)", latest, algo.iteration)
                checkpoint = latest
        if init_actor is not None and (checkpoint is None or init_actor_on_resume):
            _start_from_policy(algo, init_actor)
        run["placement"] = _placement(algo)
        row: dict[str, Any] = {
            "iteration": algo.iteration,
            "env_steps": 0,
            "episode_return_mean": math.nan,
        }
        start = time.monotonic()
        logger.info(
            "phase 3/3 training: from iteration %d until %s",
            algo.iteration,
            _stop_text(cfg.stop),
        )
        if _should_stop(cfg.stop, row, 0.0) is None:
            row, checkpoint = _loop(algo, cfg, storage, start, history, on_result, checkpoint, run)
        out = export_dir or cfg.export.dir
        exported = None
        if out is not None and checkpoint is not None:
            exported = export_latest(cfg, storage, out, checkpoint=checkpoint)
        return TrainResult(
            iterations=int(row["iteration"]),
            env_steps=int(row["env_steps"]),
            checkpoint=checkpoint,
            last=row,
            exported=exported,
            history=history,
        )
    finally:
        algo.stop()
        if shutdown_ray:
            import ray

            ray.shutdown()


def _loop(
    algo: Algorithm,
    cfg: TrainConfig,
    storage: Storage,
    start: float,
    history: list[dict[str, Any]],
    on_result: Callable[[dict[str, Any]], None] | None,
    checkpoint: str | None,
    run: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = cfg.stop.iterations
    show = cfg.reporting.progress_bar and sys.stderr.isatty()
    progress = Progress(
        TextColumn("[bold]SAC"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        disable=not show,
        transient=False,
    )
    row: dict[str, Any] = {}
    saved_at = -1
    with progress:
        task = progress.add_task("", total=total, completed=algo.iteration)
        while True:
            try:
                result = algo.train()
            except Exception as err:
                raise TrainingError(
                    f"RLlib training iteration {algo.iteration + 1} failed: {err}"
                ) from err
            row = summarize_result(result, cfg.sac.train_batch_size_per_learner)
            history.append(row)
            storage.append_progress(row)
            logger.info(_format_row(row))
            progress.update(
                task,
                completed=row["iteration"],
                description=f"return {row['episode_return_mean']:.4g}  steps {row['env_steps']}",
            )
            if on_result is not None:
                on_result(row)
            reason = _should_stop(cfg.stop, row, time.monotonic() - start)
            if reason is not None or row["iteration"] % cfg.storage.checkpoint_every == 0:
                checkpoint = _save(algo, storage, cfg, row, run)
                saved_at = row["iteration"]
            if reason is not None:
                logger.info("stopping: %s", reason)
                break
    if saved_at != row.get("iteration"):
        checkpoint = _save(algo, storage, cfg, row, run)
    return row, checkpoint


def _placement(algo: Algorithm) -> dict[str, Any]:
    """Return (and log) the Ray node of the driver and of each remote env runner."""
    import ray

    driver = ray.get_runtime_context().get_node_id()
    runners: list[str] = []
    group = algo.env_runner_group
    if group is not None and group.num_remote_env_runners() > 0:
        runners = [
            str(n)
            for n in group.foreach_env_runner(
                lambda _runner: ray.get_runtime_context().get_node_id(),
                local_env_runner=False,
            )
        ]
    logger.info(
        "placement: driver (local learner) on node %s; %d remote env runners on nodes %s",
        driver[:12],
        len(runners),
        sorted({n[:12] for n in runners}) or "-",
    )
    return {"driver_node": driver, "env_runner_nodes": runners}


def _stop_text(stop: StopSection) -> str:
    """Say the stop criteria in one phrase (for the progress log)."""
    parts = [f"{k}={v}" for k, v in stop.model_dump().items() if v is not None]
    return "stop." + " or stop.".join(parts) if parts else "interrupted"


def _start_from_policy(algo: Algorithm, artifact: str | os.PathLike[str]) -> None:
    """Load a jpo.policy.artifact artifact's actor into the learner(s) and sync the env runners."""
    import numpy as np

    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.export import load_actor_weights

    policy = LocalPolicy.load(artifact)
    obs = policy.manifest.observation
    if any(m != 0.0 for m in obs.mean) or any(v != 1.0 for v in obs.std):
        logger.warning("%s normalizes its inputs: not used as the start", policy.path)
        return
    with np.load(policy.path / policy.manifest.weights_file) as npz:
        weights = {k: np.asarray(npz[k]) for k in npz.files}

    def load(learner: Any, _: Any = None) -> None:
        from ray.rllib.core import DEFAULT_MODULE_ID

        load_actor_weights(learner.module[DEFAULT_MODULE_ID], weights)

    learners, runners = algo.learner_group, algo.env_runner_group
    if learners is None or runners is None:
        return
    try:
        for call in learners.foreach_learner(load):
            call.get()  # raises what the learner raised (remote learners included)
    except Exception as err:  # PolicyError, or the actor error wrapping it
        logger.warning("not starting from %s: %s", policy.path, err)
        return
    runners.sync_weights(from_worker_or_learner_group=learners, inference_only=True)
    logger.info("actor starts from policy v%d (%s)", policy.version, policy.path)


def recorded_run(storage: Storage, checkpoint: str) -> dict[str, Any] | None:
    """Return what :data:`RUN_CONFIG_FILE` of ``checkpoint`` recorded, or None (older runs)."""
    import pyarrow.fs as pafs

    path = f"{checkpoint}/{RUN_CONFIG_FILE}"
    if storage.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with storage.fs.open_input_stream(path) as src:
        return dict(json.loads(src.read().decode()))


def export_latest(
    cfg: TrainConfig,
    storage: Storage,
    out_dir: str | os.PathLike[str],
    *,
    checkpoint: str | None = None,
    policy_version: int | None = None,
    extra_training_data: Mapping[str, Any] | None = None,
) -> Path:
    """Export the actor of ``checkpoint`` (default: the latest) as a jpo.policy.artifact artifact.

    The manifest describes the run that made the checkpoint: its recorded config and env
    description (:data:`RUN_CONFIG_FILE`) win over ``cfg``; ``cfg`` is used only for
    checkpoints written before runs were recorded.
    """
    from jpo.policy.export import export_checkpoint

    ckpt = checkpoint or storage.latest_checkpoint()
    if ckpt is None:
        raise TrainingError(f"no checkpoint under {storage.uri} to export: train first")
    recorded = recorded_run(storage, ckpt)
    if recorded is not None:
        cfg = validate_train_config(recorded["config"], f"{ckpt}/{RUN_CONFIG_FILE}")
        env = dict(recorded["env"])
        for key in ("observation_names", "action_names"):
            env[key] = tuple(env[key])
        desc = EnvDescription(**env)
    else:
        logger.warning(
            "%s records no training config (%s): describing it from the given config",
            ckpt,
            RUN_CONFIG_FILE,
        )
        desc = describe_env(cfg)
    marker = storage.read_marker(ckpt)
    training_data = {
        **desc.training_data,
        "iterations": marker.get("iteration"),
        "env_steps": marker.get("env_steps"),
        "episode_return_mean": marker.get("episode_return_mean"),
        **dict(extra_training_data or {}),
    }
    bc: dict[str, Any] = {}
    if cfg.sac.bc_weight > 0:  # SAC + the oracle teacher's behaviour-cloning term
        from jpo.sim.replay_env import EnvConfig

        hold = cfg.env.config.get("teacher_hold", EnvConfig.teacher_hold)
        bc = {"bc_weight": cfg.sac.bc_weight, "teacher_hold": list(hold)}
    with tempfile.TemporaryDirectory(prefix="jpo-ckpt-") as tmp:
        local = storage.local_copy(ckpt, Path(tmp) / "ckpt")
        path = export_checkpoint(
            local,
            out_dir,
            policy_version=cfg.export.policy_version if policy_version is None else policy_version,
            feature_spec_version=desc.feature_spec_version,
            observation_names=desc.observation_names,
            action_names=desc.action_names,
            constraints_sha256=desc.constraints_sha256,
            learning_rate_follows_batch=desc.learning_rate_follows_batch,
            training_data=training_data,
            source={"algorithm": "rllib-sac", "checkpoint": ckpt, "seed": cfg.seed, **bc},
        )
    logger.info("exported policy to %s", path)
    return path


def __getattr__(name: str) -> Path:
    """Resolve ``DEFAULT_CONFIG_PATH`` when read (``$JPO_CONFIG_DIR`` may change)."""
    if name == "DEFAULT_CONFIG_PATH":
        return config_path("train.yaml")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # the entry point is the package (jpo/train/command.py)
    sys.exit("run `python -m jpo.train` (or `jpo train`); jpo.train.trainer is its library")
