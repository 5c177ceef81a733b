"""Workload response model: what a training run does, given its hyperparameters.

One model serves three users: the replay env (counterfactual runs, via the fast analytic
:func:`predict`), the simulated Kubernetes workloads (per-scrape time series, via
:func:`simulate_run`), and the oracle. Every constant is a per-workload profile value
loaded from ``configs/workloads/<name>.toml`` (see :mod:`envs.profiles`), or a cluster
condition from ``configs/cluster.toml``; none is a magic number here.

Which published measurements the catalog profiles reproduce, and what the model does not
represent: docs/SIMULATOR.md (checked by tests/sim/test_grounding.py).

Relations used, with their sources (see ../shared/SPEC.md, appendix):

- **Parameters and memory** (mixed-precision/Adam accounting, Rajbhandari et al., 2020,
  "ZeRO", §3.1): weights + gradients + Adam moments in fp32 take about
  ``bytes_per_param`` = 16 bytes per parameter. Parameters grow with depth:
  ``N = params_fixed + params_per_layer * L``. Activations kept for the backward pass
  grow with the per-device batch times the depth:
  ``act = activation_bytes_per_sample_per_layer * B_dev * L`` (Chen et al., 2016,
  "Training Deep Nets with Sublinear Memory Cost", §2). GPU memory = runtime overhead
  (CUDA context, workspaces) + ``bytes_per_param * N`` + act. A run fails with OOM when
  that is strictly above the device limit; host memory (base + prefetch buffers per
  sample) above the pod's memory limit is an OOM kill too.
- **Step time and GPU utilization** (roofline view, Williams et al., 2009; the
  "fixed overhead + per-sample compute" step model of Shallue et al., 2019, §3):
  ``t_gpu = step_overhead_s + busy`` with
  ``busy = B_dev * (gpu_s_per_sample_fixed + gpu_s_per_sample_per_layer * L)
  + optimizer_s_per_param * N``. GPU utilization is the busy fraction ``busy / t_step``:
  it rises with batch size and saturates; throughput ``B / t_step`` saturates with it.
- **Input pipeline** (Murray et al., 2021, "tf.data", §2; Mohan et al., 2021, "Analyzing
  and Mitigating Data Stalls in DNN Training"): the pipeline prepares the next batch on
  the CPU while the GPU works on the current one, so ``t_step = max(t_gpu, t_cpu)`` with
  ``t_cpu = B * cpu_s_per_sample / pipeline_cores``. When ``t_cpu > t_gpu`` the job is
  CPU-bound and GPU utilization falls.
- **Co-tenant contention** (Xiao et al., 2018, "Gandiva"; Jeon et al., 2019, "Analysis of
  Large-Scale Multi-Tenant GPU Clusters"): co-tenants steal a share ``c`` of the node's
  CPU (``pipeline_cores = (cpu_cores - trainer_cpu_cores) * (1 - c)``) and, through
  shared PCIe/NVLink/memory bandwidth, a part ``gpu_contention_share * c`` of the GPU's
  speed. ``c`` varies over time (a sinusoid of ``contention_amplitude`` and
  ``contention_period_s`` plus jitter in :func:`simulate_run`).
- **Critical batch size** (McCandlish et al., 2018, "An Empirical Model of Large-Batch
  Training", eq. 2.11): examples needed to reach a loss ``E = E_min (1 + B / B_noise)``;
  so the epochs needed to converge are ``e_conv(B) = epochs_min * (1 + B / B_noise)``.
  Below ``B_noise`` a bigger batch costs almost no extra epochs (and saves steps); far
  above it, it only burns compute.
- **Learning-rate scaling** (Goyal et al., 2017, linear scaling rule; McCandlish et al.,
  2018, eq. 2.6; Smith & Le, 2018, noise scale ≈ lr·N/B): the best learning rate is
  ``lr_best(B) = lr_max * B / (B + B_noise)``: proportional to ``B`` below ``B_noise``,
  flat above it. ``lr_max`` follows from the profile's best lr at a reference batch.
  With ``r = lr / lr_best(B)``: below the sweet spot progress per step shrinks in
  proportion to ``r`` (``e_conv / r``); above it the gradient noise raises the loss floor
  by a factor ``1 + lr_noise_penalty * ln(r)^2``; beyond ``divergence_factor`` training
  diverges (within the first epoch, sooner the larger ``r``).
- **Loss floor vs. size** (Kaplan et al., 2020, "Scaling Laws for Neural Language
  Models", eq. 1.1): ``L_floor(N) = irreducible_loss + (n_c / N)^alpha``: more layers lower
  the floor with diminishing returns.
- **Convergence then overfitting** (exponential approach to the floor; overfitting
  grows with model size relative to data, Kaplan et al., 2020, eq. 1.5): the validation
  loss after ``e`` epochs is ``floor + (initial - floor) * exp(-k e / e_conv)
  + overfit_rate * (N / N_default)^overfit_params_exponent * max(0, e - e_conv)``, with
  ``k = ln(20)`` so that ``e_conv`` is by definition the epoch count reaching 95 % of the
  way to the floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ConfigDict, Field

from jpo.errors import ConfigError
from jpo.paths import config_path
from jpo.settings import Settings, config_file, read_config, validate_settings
from jpo.telemetry.schema import HISTORY_SCHEMA, RUN_STATUS_CODES, RunSummary
from jpo.workload.types import Hyperparameters, WorkloadKey

CONVERGENCE_RATE = math.log(20.0)
"""k in exp(-k e / e_conv): by definition e_conv reaches 95 % of the way to the floor."""

P95_SINE = math.sin(0.45 * math.pi)
"""95th percentile of sin(theta) for uniform theta: where a sinusoidal contention's p95 lies."""

MIB = 1024.0 * 1024.0
STATUS_CODE = {name: code for code, name in RUN_STATUS_CODES.items()}


# --------------------------------------------------------------------------- profile


@dataclass(frozen=True, slots=True)
class PodLimits:
    """Resource limits of the training pod (kube-state-metrics limits, DCGM device)."""

    cpu_cores: float
    memory_bytes: float
    gpu_memory_mib: float
    gpus: int
    gpu_model: str


# (section, key, kind) of every profile field; kind: "str", "split", "pos" (> 0),
# "nonneg" (>= 0), "int" (integer >= 1), "frac" (0..1).
PROFILE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("workload", "name", "str"),
    ("workload", "dataset", "str"),
    ("workload", "model", "str"),
    ("workload", "framework", "str"),
    ("workload", "split", "split"),
    ("workload", "description", "str"),
    ("workload", "task", "str"),
    ("workload", "input", "str"),
    ("workload", "bottleneck", "str"),
    ("defaults", "batch_size", "int"),
    ("defaults", "learning_rate", "pos"),
    ("defaults", "num_layers", "int"),
    ("defaults", "epochs", "int"),
    ("limits", "cpu_cores", "pos"),
    ("limits", "memory_bytes", "pos"),
    ("limits", "gpu_memory_mib", "pos"),
    ("limits", "gpus", "int"),
    ("limits", "gpu_model", "str"),
    ("memory", "params_fixed", "nonneg"),
    ("memory", "params_per_layer", "pos"),
    ("memory", "bytes_per_param", "pos"),
    ("memory", "activation_bytes_per_sample_per_layer", "pos"),
    ("memory", "gpu_runtime_overhead_mib", "nonneg"),
    ("memory", "host_base_bytes", "pos"),
    ("memory", "host_bytes_per_sample", "nonneg"),
    ("compute", "gpu_s_per_sample_fixed", "nonneg"),
    ("compute", "gpu_s_per_sample_per_layer", "pos"),
    ("compute", "optimizer_s_per_param", "nonneg"),
    ("compute", "step_overhead_s", "pos"),
    ("compute", "cpu_s_per_sample", "nonneg"),
    ("compute", "trainer_cpu_cores", "pos"),
    ("compute", "startup_s", "nonneg"),
    ("optimization", "b_noise", "pos"),
    ("optimization", "reference_batch_size", "pos"),
    ("optimization", "reference_learning_rate", "pos"),
    ("optimization", "divergence_factor", "pos"),
    ("optimization", "lr_noise_penalty", "nonneg"),
    ("loss", "initial_loss", "pos"),
    ("loss", "irreducible_loss", "nonneg"),
    ("loss", "n_c", "pos"),
    ("loss", "alpha", "pos"),
    ("loss", "dataset_size", "pos"),
    ("loss", "epochs_min", "pos"),
    ("loss", "overfit_rate", "nonneg"),
    ("loss", "overfit_params_exponent", "nonneg"),
)


@dataclass(frozen=True, slots=True)
class WorkloadProfile:
    """A workload's identity, defaults, pod limits and response-model constants.

    Loaded from ``configs/workloads/<name>.toml``; see that folder's files for the meaning
    and unit of every field (each carries a comment).
    """

    name: str
    dataset: str
    model: str
    framework: str
    split: str
    description: str
    task: str
    input: str
    bottleneck: str
    defaults: Hyperparameters
    limits: PodLimits
    params_fixed: float
    params_per_layer: float
    bytes_per_param: float
    activation_bytes_per_sample_per_layer: float
    gpu_runtime_overhead_mib: float
    host_base_bytes: float
    host_bytes_per_sample: float
    gpu_s_per_sample_fixed: float
    gpu_s_per_sample_per_layer: float
    optimizer_s_per_param: float
    step_overhead_s: float
    cpu_s_per_sample: float
    trainer_cpu_cores: float
    startup_s: float
    b_noise: float
    reference_batch_size: float
    reference_learning_rate: float
    divergence_factor: float
    lr_noise_penalty: float
    initial_loss: float
    irreducible_loss: float
    n_c: float
    alpha: float
    dataset_size: float
    epochs_min: float
    overfit_rate: float
    overfit_params_exponent: float
    source: str = ""
    # derived constants, precomputed once so that predict() stays a few float ops
    lr_max: float = field(default=0.0, compare=False, repr=False)
    params_default: float = field(default=0.0, compare=False, repr=False)

    def __post_init__(self) -> None:
        ref_b = self.reference_batch_size
        lr_max = self.reference_learning_rate * (ref_b + self.b_noise) / ref_b
        object.__setattr__(self, "lr_max", lr_max)
        n_default = self.params_fixed + self.params_per_layer * self.defaults.num_layers
        object.__setattr__(self, "params_default", n_default)

    @property
    def key(self) -> WorkloadKey:
        """Return the workload key (dataset, model, framework) pods are labelled with."""
        return WorkloadKey(self.dataset, self.model, self.framework)

    def params(self, num_layers: int) -> float:
        """Return the parameter count N at ``num_layers``."""
        return self.params_fixed + self.params_per_layer * num_layers

    def best_learning_rate(self, batch_size: float) -> float:
        """Return lr_best(B) = lr_max·B/(B + B_noise) (Goyal 2017; McCandlish 2018)."""
        return self.lr_max * batch_size / (batch_size + self.b_noise)

    def gpu_memory_mib(self, hp: Hyperparameters) -> float:
        """Return the GPU memory (MiB per device) a run with ``hp`` needs."""
        b_dev = hp.batch_size / self.limits.gpus
        n = self.params(hp.num_layers)
        act = self.activation_bytes_per_sample_per_layer * b_dev * hp.num_layers
        return self.gpu_runtime_overhead_mib + (self.bytes_per_param * n + act) / MIB

    def host_memory_bytes(self, hp: Hyperparameters) -> float:
        """Return the host memory working set (bytes) of a run with ``hp``."""
        return self.host_base_bytes + self.host_bytes_per_sample * hp.batch_size

    def as_toml_dict(self) -> dict[str, dict[str, Any]]:
        """Return the profile as the nested mapping its TOML file holds."""
        out: dict[str, dict[str, Any]] = {}
        for section, key, _kind in PROFILE_FIELDS:
            if section == "defaults":
                value = getattr(self.defaults, key)
            elif section == "limits":
                value = getattr(self.limits, key)
            else:
                value = getattr(self, key)
            out.setdefault(section, {})[key] = value
        return out


def _check_value(path: str, section: str, key: str, kind: str, value: Any) -> Any:
    where = f"{path}: [{section}] {key}"
    if kind in ("str", "split"):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
        if kind == "split" and value not in ("train", "holdout"):
            raise ConfigError(f"{where} must be 'train' or 'holdout', got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    if kind == "int":
        if int(value) != value or value < 1:
            raise ConfigError(f"{where} must be an integer >= 1, got {value!r}")
        return int(value)
    if kind == "pos" and value <= 0:
        raise ConfigError(f"{where} must be > 0, got {value!r}: use a positive value")
    if kind == "nonneg" and value < 0:
        raise ConfigError(f"{where} must be >= 0, got {value!r}: negative values are invalid")
    return float(value)


def profile_from_dict(data: dict[str, Any], source: str = "<dict>") -> WorkloadProfile:
    """Validate a profile mapping (as in the TOML file) and build the profile.

    Raises:
        ConfigError: naming ``source`` and the section/key that is missing or invalid.
    """
    values: dict[tuple[str, str], Any] = {}
    for section, key, kind in PROFILE_FIELDS:
        table = data.get(section)
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: missing section [{section}] (needs key {key!r})")
        if key not in table:
            raise ConfigError(f"{source}: missing key {key!r} in section [{section}]")
        values[(section, key)] = _check_value(source, section, key, kind, table[key])
    known = {(s, k) for s, k, _ in PROFILE_FIELDS}
    for section, table in data.items():
        if isinstance(table, dict):
            for key in table:
                if (section, key) not in known:
                    raise ConfigError(
                        f"{source}: unknown key {key!r} in section [{section}] (typo?)"
                    )
    if values[("compute", "trainer_cpu_cores")] >= values[("limits", "cpu_cores")]:
        raise ConfigError(f"{source}: [compute] trainer_cpu_cores must be below [limits] cpu_cores")
    defaults = Hyperparameters(
        batch_size=values[("defaults", "batch_size")],
        learning_rate=values[("defaults", "learning_rate")],
        num_layers=values[("defaults", "num_layers")],
        epochs=values[("defaults", "epochs")],
    )
    limits = PodLimits(
        cpu_cores=values[("limits", "cpu_cores")],
        memory_bytes=values[("limits", "memory_bytes")],
        gpu_memory_mib=values[("limits", "gpu_memory_mib")],
        gpus=values[("limits", "gpus")],
        gpu_model=values[("limits", "gpu_model")],
    )
    flat = {k: v for (s, k), v in values.items() if s not in ("defaults", "limits")}
    return WorkloadProfile(defaults=defaults, limits=limits, source=source, **flat)


def load_profile(name_or_path: str | Path) -> WorkloadProfile:
    """Load one profile: a catalog name (``cifar10-resnet18``) or a path to a TOML file.

    Raises:
        ConfigError: unknown name, unreadable file, bad TOML, or a missing/invalid key.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        workloads = config_path("workloads")
        path = workloads / f"{name_or_path}.toml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in workloads.glob("*.toml")))
            raise ConfigError(f"unknown workload profile {name_or_path!r}; known: {known}")
    # Profiles keep their own format (profile_from_dict checks every field and names it).
    return profile_from_dict(read_config(path), source=str(path))


def load_catalog(directory: str | Path | None = None) -> dict[str, WorkloadProfile]:
    """Load every ``*.toml`` profile in ``directory`` (default configs/workloads), by name."""
    folder = Path(directory) if directory is not None else config_path("workloads")
    catalog: dict[str, WorkloadProfile] = {}
    for path in sorted(folder.glob("*.toml")):
        profile = load_profile(path)
        if profile.name in catalog:
            raise ConfigError(f"{path}: duplicate workload name {profile.name!r}")
        catalog[profile.name] = profile
    if not catalog:
        raise ConfigError(f"{folder}: no workload profiles (*.toml) found")
    return catalog


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class ClusterConditions:
    """What the cluster does to a run: co-tenant contention over time and noise.

    The field defaults are the neutral, noise-free cluster; typical values live in
    ``configs/cluster.toml`` (:func:`load_conditions`).
    """

    contention: float = 0.0
    """Mean share of capacity co-tenants steal (0..max_contention)."""
    contention_amplitude: float = 0.0
    """Amplitude of the contention's slow sinusoidal variation."""
    contention_period_s: float = 3600.0
    """Period of that variation, seconds."""
    contention_jitter: float = 0.0
    """Standard deviation of per-scrape contention noise."""
    gpu_contention_share: float = 0.0
    """Part of the contention that also slows the GPU (shared bus/bandwidth)."""
    max_contention: float = 0.9
    """Upper clip of the instantaneous contention."""
    noise: float = 0.0
    """Relative measurement noise (std) of utilization and throughput samples."""
    loss_noise: float = 0.0
    """Relative run-to-run noise (std) of validation losses."""


_NEUTRAL = ClusterConditions()


class _ConditionsTable(Settings):
    """``[conditions]`` of cluster.toml: numbers >= 0; shares <= 1; a period > 0."""

    model_config = ConfigDict(strict=True)
    contention: float = Field(default=_NEUTRAL.contention, ge=0, le=1)
    contention_amplitude: float = Field(default=_NEUTRAL.contention_amplitude, ge=0)
    contention_period_s: float = Field(default=_NEUTRAL.contention_period_s, gt=0)
    contention_jitter: float = Field(default=_NEUTRAL.contention_jitter, ge=0)
    gpu_contention_share: float = Field(default=_NEUTRAL.gpu_contention_share, ge=0, le=1)
    max_contention: float = Field(default=_NEUTRAL.max_contention, ge=0, le=1)
    noise: float = Field(default=_NEUTRAL.noise, ge=0)
    loss_noise: float = Field(default=_NEUTRAL.loss_noise, ge=0)


def load_conditions(path: str | Path | None = None, **overrides: float) -> ClusterConditions:
    """Load the cluster conditions (default ``configs/cluster.toml``), with overrides."""
    file = config_file("cluster.toml", path)
    table = read_config(file).get("conditions")
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: missing section [conditions]")
    values = validate_settings(_ConditionsTable, {**table, **overrides}, file, "conditions")
    return ClusterConditions(**values.model_dump())


# --------------------------------------------------------------------------- predict


def _steady(
    p: WorkloadProfile, b: float, n_layers: int, c: float, gpu_share: float
) -> tuple[float, float, float, float]:
    """Steady-state (throughput, gpu_util, cpu_util, t_step) at contention ``c`` (scalar)."""
    lim = p.limits
    b_dev = b / lim.gpus
    n = p.params_fixed + p.params_per_layer * n_layers
    busy = b_dev * (p.gpu_s_per_sample_fixed + p.gpu_s_per_sample_per_layer * n_layers)
    busy = (busy + p.optimizer_s_per_param * n) / (1.0 - c * gpu_share)
    t_gpu = p.step_overhead_s + busy
    pipeline_cores = (lim.cpu_cores - p.trainer_cpu_cores) * (1.0 - c)
    cpu_work = b * p.cpu_s_per_sample
    t_cpu = cpu_work / pipeline_cores
    t_step = t_gpu if t_gpu > t_cpu else t_cpu
    cpu_used = p.trainer_cpu_cores + cpu_work / t_step
    return b / t_step, busy / t_step, cpu_used / lim.cpu_cores, t_step


def _steady_arrays(
    p: WorkloadProfile, b: float, n_layers: int, c: np.ndarray, gpu_share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorized :func:`_steady` over a contention array: (throughput, gpu, cpu util)."""
    lim = p.limits
    b_dev = b / lim.gpus
    n = p.params_fixed + p.params_per_layer * n_layers
    busy0 = b_dev * (p.gpu_s_per_sample_fixed + p.gpu_s_per_sample_per_layer * n_layers)
    busy = (busy0 + p.optimizer_s_per_param * n) / (1.0 - c * gpu_share)
    t_gpu = p.step_overhead_s + busy
    cpu_work = b * p.cpu_s_per_sample
    t_cpu = cpu_work / ((lim.cpu_cores - p.trainer_cpu_cores) * (1.0 - c))
    t_step = np.maximum(t_gpu, t_cpu)
    cpu_used = p.trainer_cpu_cores + cpu_work / t_step
    return b / t_step, busy / t_step, cpu_used / lim.cpu_cores


def lr_ratio(profile: WorkloadProfile, hp: Hyperparameters) -> float:
    """Return r = lr / lr_best(B): 1 is the sweet spot, > divergence_factor diverges."""
    return hp.learning_rate * (hp.batch_size + profile.b_noise) / (profile.lr_max * hp.batch_size)


def val_loss_curve(profile: WorkloadProfile, hp: Hyperparameters, epochs: float) -> float:
    """Return the validation loss after ``epochs`` epochs (no divergence check, no noise)."""
    p = profile
    n = p.params_fixed + p.params_per_layer * hp.num_layers
    floor = p.irreducible_loss + (p.n_c / n) ** p.alpha
    r = lr_ratio(p, hp)
    e_conv = p.epochs_min * (1.0 + hp.batch_size / p.b_noise)
    if r < 1.0:
        e_conv /= r
    else:
        lnr = math.log(r)
        floor *= 1.0 + p.lr_noise_penalty * lnr * lnr
    loss = floor + (p.initial_loss - floor) * math.exp(-CONVERGENCE_RATE * epochs / e_conv)
    if epochs > e_conv:
        ratio = n / p.params_default
        loss += p.overfit_rate * ratio**p.overfit_params_exponent * (epochs - e_conv)
    return float(loss)


def predict(
    profile: WorkloadProfile, hp: Hyperparameters, conditions: ClusterConditions
) -> RunSummary:
    """Predict one run's summary analytically: fast, deterministic, no time series.

    Utilization means are time-weighted over the whole run (start-up included) at the
    mean contention; p95s take the steady state at the sinusoid's 95th-percentile
    contention. Failed runs get the partial values of their short life: an OOM dies in
    its first step (throughput 0, loss = initial loss), a divergence within the first
    epoch (loss = initial loss).
    """
    p = profile
    lim = p.limits
    b = hp.batch_size
    n_layers = hp.num_layers
    share = conditions.gpu_contention_share
    c_max = conditions.max_contention
    c = conditions.contention
    c = c_max if c > c_max else c
    thr, gpu_u, cpu_u, t_step = _steady(p, b, n_layers, c, share)
    n = p.params_fixed + p.params_per_layer * n_layers
    gpu_mem = (
        p.gpu_runtime_overhead_mib
        + (
            p.bytes_per_param * n
            + p.activation_bytes_per_sample_per_layer * (b / lim.gpus) * n_layers
        )
        / MIB
    )
    host_mem = p.host_base_bytes + p.host_bytes_per_sample * b
    startup = p.startup_s
    startup_cpu = p.trainer_cpu_cores / lim.cpu_cores
    base_mem_u = p.host_base_bytes / lim.memory_bytes
    overhead_mem_u = p.gpu_runtime_overhead_mib / lim.gpu_memory_mib
    mem_u = host_mem / lim.memory_bytes
    gmem_u = gpu_mem / lim.gpu_memory_mib

    if gpu_mem > lim.gpu_memory_mib or host_mem > lim.memory_bytes:
        # OOM in the first forward pass: start-up, one step's allocation, then killed.
        dur = startup + t_step
        w = t_step / dur
        gmem_u = gmem_u if gmem_u < 1.0 else 1.0
        mem_u = mem_u if mem_u < 1.0 else 1.0
        return RunSummary(
            cpu_util_mean=startup_cpu * (1 - w) + cpu_u * w,
            cpu_util_p95=cpu_u if w > 0.05 else startup_cpu,
            mem_util_mean=base_mem_u * (1 - w) + mem_u * w,
            mem_util_p95=mem_u if w > 0.05 else base_mem_u,
            gpu_util_mean=gpu_u * w,
            gpu_util_p95=gpu_u if w > 0.05 else 0.0,
            gpu_mem_util_mean=overhead_mem_u * (1 - w) + gmem_u * w,
            gpu_mem_util_p95=gmem_u if w > 0.05 else overhead_mem_u,
            throughput=0.0,
            final_val_loss=p.initial_loss,
            duration_s=dur,
            gpu_hours=dur * lim.gpus / 3600.0,
            failure="oom",
        )

    r = hp.learning_rate * (b + p.b_noise) / (p.lr_max * b)
    failure = "none"
    epochs: float = hp.epochs
    if r > p.divergence_factor:
        failure = "diverged"
        first = 1.0 if hp.epochs > 1 else float(hp.epochs)
        epochs = first * p.divergence_factor / r
        final_loss = p.initial_loss
    else:
        final_loss = val_loss_curve(p, hp, epochs)
    train_time = epochs * p.dataset_size / thr
    dur = startup + train_time
    w = train_time / dur
    amp = conditions.contention_amplitude * P95_SINE
    if amp > 0.0:
        lo = c - amp
        lo = 0.0 if lo < 0.0 else lo
        hi = c + amp
        hi = c_max if hi > c_max else hi
        _, g_lo, u_lo, _ = _steady(p, b, n_layers, lo, share)
        _, g_hi, u_hi, _ = _steady(p, b, n_layers, hi, share)
        gpu_p95 = g_lo if g_lo > g_hi else g_hi
        cpu_p95 = u_lo if u_lo > u_hi else u_hi
    else:
        gpu_p95, cpu_p95 = gpu_u, cpu_u
    big = w > 0.05
    return RunSummary(
        cpu_util_mean=startup_cpu * (1 - w) + cpu_u * w,
        cpu_util_p95=cpu_p95 if big else startup_cpu,
        mem_util_mean=base_mem_u * (1 - w) + mem_u * w,
        mem_util_p95=mem_u if big else base_mem_u,
        gpu_util_mean=gpu_u * w,
        gpu_util_p95=gpu_p95 if big else 0.0,
        gpu_mem_util_mean=overhead_mem_u * (1 - w) + gmem_u * w,
        gpu_mem_util_p95=gmem_u if big else overhead_mem_u,
        throughput=thr * w,
        final_val_loss=final_loss,
        duration_s=dur,
        gpu_hours=dur * lim.gpus / 3600.0,
        failure=failure,  # type: ignore[arg-type]
    )


def conditions_from_run(
    profile: WorkloadProfile,
    hp: Hyperparameters,
    summary: RunSummary,
    base: ClusterConditions | None = None,
) -> ClusterConditions:
    """Infer the mean contention a recorded run experienced from its throughput.

    The predicted throughput falls monotonically with contention, so a bisection finds
    the contention that reproduces the recording; the other fields come from ``base``
    (default: the neutral conditions). Failed runs carry no throughput signal: ``base``
    is returned unchanged.
    """
    cond = base if base is not None else ClusterConditions()
    if summary.failure != "none" or summary.throughput <= 0.0:
        return cond
    lo, hi = 0.0, cond.max_contention
    if predict(profile, hp, replace(cond, contention=lo)).throughput <= summary.throughput:
        return replace(cond, contention=0.0)
    if predict(profile, hp, replace(cond, contention=hi)).throughput >= summary.throughput:
        return replace(cond, contention=hi)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if predict(profile, hp, replace(cond, contention=mid)).throughput > summary.throughput:
            lo = mid
        else:
            hi = mid
    return replace(cond, contention=0.5 * (lo + hi))


# --------------------------------------------------------------------------- simulate


@dataclass(frozen=True)
class SimulatedRun:
    """One simulated execution: its history rows, its summary and its raw arrays.

    ``series`` maps each canonical metric name (jpo.telemetry.schema.METRICS) to a float array
    aligned with ``times_s`` (seconds since the epoch, one entry per scrape).
    """

    table: pa.Table
    summary: RunSummary
    profile: WorkloadProfile
    hp: Hyperparameters
    run_id: str
    times_s: np.ndarray
    series: dict[str, np.ndarray]


def _contention_series(
    cond: ClusterConditions, t: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    phase = rng.uniform(0.0, 2.0 * math.pi)
    c = cond.contention + cond.contention_amplitude * np.sin(
        2.0 * math.pi * t / cond.contention_period_s + phase
    )
    if cond.contention_jitter > 0:
        c = c + rng.normal(0.0, cond.contention_jitter, size=t.shape)
    return np.clip(c, 0.0, cond.max_contention)


def simulate_run(
    profile: WorkloadProfile,
    hp: Hyperparameters,
    conditions: ClusterConditions,
    *,
    rng: np.random.Generator,
    run_id: str,
    start: float,
    scrape_interval_s: float = 15.0,
) -> SimulatedRun:
    """Simulate one run as per-scrape series (time-varying contention, noise).

    ``start`` is the run's start, in seconds since the epoch. The summary is computed from
    the series (means and p95 over scrapes) and agrees with :func:`predict` up to noise
    and the time variation of contention. Deterministic for a given ``rng`` state.
    """
    p = profile
    lim = p.limits
    b = hp.batch_size
    dt = float(scrape_interval_s)
    pred = predict(p, hp, conditions)
    n = p.params(hp.num_layers)
    gpu_mem = min(p.gpu_memory_mib(hp), lim.gpu_memory_mib)
    host_mem = min(p.host_memory_bytes(hp), lim.memory_bytes)
    startup_cpu = p.trainer_cpu_cores / lim.cpu_cores

    # Progress through training at the contention of each scrape.
    if pred.failure == "oom":
        target_samples = 0.0
    elif pred.failure == "diverged":
        r = lr_ratio(p, hp)
        first = 1.0 if hp.epochs > 1 else float(hp.epochs)
        target_samples = first * p.divergence_factor / r * p.dataset_size
    else:
        target_samples = hp.epochs * p.dataset_size
    slowest = predict(p, hp, replace(conditions, contention=conditions.max_contention))
    horizon = max(slowest.duration_s, pred.duration_s) * 1.05 + 2 * dt
    t_rel = np.arange(0.0, horizon + dt, dt)
    c = _contention_series(conditions, start + t_rel, rng)
    thr, gpu_u, cpu_u = _steady_arrays(p, b, hp.num_layers, c, conditions.gpu_contention_share)
    training = t_rel > p.startup_s
    # samples done by each scrape: integrate throughput over the training part of each step
    frac = np.clip((t_rel - p.startup_s) / dt, 0.0, 1.0)
    frac[1:] = np.clip(t_rel[1:] - np.maximum(t_rel[:-1], p.startup_s), 0.0, dt) / dt
    frac[0] = 0.0
    done = np.cumsum(thr * frac * dt)
    if target_samples > 0:
        end_idx = int(np.searchsorted(done, target_samples))
        # time at which the target is reached, interpolated inside the last interval
        prev = done[end_idx - 1] if end_idx > 0 else 0.0
        step_t = (target_samples - prev) / max(thr[end_idx], 1e-12)
        t_end = (t_rel[end_idx - 1] if end_idx > 0 else p.startup_s) + step_t
        t_end = max(t_end, p.startup_s + step_t)
    else:
        t_end = (
            p.startup_s
            + _steady(p, b, hp.num_layers, conditions.contention, conditions.gpu_contention_share)[
                3
            ]
        )
    # the pod's last scrape is the first scrape at or after the end of training
    t_last = math.ceil(t_end / dt - 1e-9) * dt
    t_rel = np.append(t_rel[t_rel < t_last], t_last)
    k = t_rel.size
    c, thr, gpu_u, cpu_u, training = c[:k], thr[:k], gpu_u[:k], cpu_u[:k], training[:k].copy()
    training[-1] = True
    done = np.minimum(np.append(done[: k - 1], target_samples), target_samples)

    noise = conditions.noise

    def noisy(x: np.ndarray) -> np.ndarray:
        if noise <= 0:
            return x
        return x * (1.0 + rng.normal(0.0, noise, size=x.shape))

    s_gpu = np.clip(noisy(np.where(training, gpu_u, 0.0)), 0.0, 1.0)
    s_cpu = np.clip(noisy(np.where(training, cpu_u, startup_cpu)), 0.0, 1.0)
    s_thr = np.maximum(noisy(np.where(training, thr, 0.0)), 0.0)
    mem_bytes = np.where(training, host_mem, p.host_base_bytes)
    s_mem = np.clip(noisy(mem_bytes / lim.memory_bytes), 0.0, 1.0)
    fb_used = np.where(training, gpu_mem, p.gpu_runtime_overhead_mib)
    fb_used = np.minimum(np.round(noisy(fb_used)), lim.gpu_memory_mib)
    if pred.failure == "oom":
        s_thr[:] = 0.0
        fb_used[-1] = min(round(p.gpu_memory_mib(hp)), lim.gpu_memory_mib)
        if p.host_memory_bytes(hp) > lim.memory_bytes:
            s_mem[-1] = 1.0

    # Validation loss: initial loss until the first epoch completes, then per epoch.
    epoch = np.floor(done / p.dataset_size + 1e-9)
    loss_noise = conditions.loss_noise
    max_epoch = int(epoch[-1]) if pred.failure == "none" else 0
    curve = np.array([p.initial_loss] + [val_loss_curve(p, hp, e) for e in range(1, max_epoch + 1)])
    if loss_noise > 0:
        curve[1:] *= 1.0 + rng.normal(0.0, loss_noise, size=max_epoch)
    val = curve[np.minimum(epoch.astype(np.int64), max_epoch)]
    status = np.zeros(k)
    status[-1] = STATUS_CODE[pred.failure if pred.failure != "none" else "ok"]

    series: dict[str, np.ndarray] = {
        "cpu_util": s_cpu,
        "mem_util": s_mem,
        "gpu_util": s_gpu,
        "gpu_mem_util": fb_used / lim.gpu_memory_mib,
        "gpu_mem_used_mib": fb_used,
        "gpu_mem_total_mib": np.full(k, float(lim.gpu_memory_mib)),
        "throughput": s_thr,
        "samples_total": done,
        "val_loss": val,
        "epoch": epoch,
        "elapsed_s": t_rel.copy(),  # the workload's own clock: simulated seconds since start
        "run_status": status,
        "hp_batch_size": np.full(k, float(hp.batch_size)),
        "hp_learning_rate": np.full(k, float(hp.learning_rate)),
        "hp_num_layers": np.full(k, float(hp.num_layers)),
        "hp_epochs": np.full(k, float(hp.epochs)),
    }
    times = start + t_rel
    duration = float(t_rel[-1])
    summary = RunSummary(
        cpu_util_mean=float(s_cpu.mean()),
        cpu_util_p95=float(np.percentile(s_cpu, 95)),
        mem_util_mean=float(s_mem.mean()),
        mem_util_p95=float(np.percentile(s_mem, 95)),
        gpu_util_mean=float(s_gpu.mean()),
        gpu_util_p95=float(np.percentile(s_gpu, 95)),
        gpu_mem_util_mean=float(series["gpu_mem_util"].mean()),
        gpu_mem_util_p95=float(np.percentile(series["gpu_mem_util"], 95)),
        throughput=float(done[-1] / duration) if duration > 0 else 0.0,
        final_val_loss=float(val[-1]),
        duration_s=duration,
        gpu_hours=duration * lim.gpus / 3600.0,
        failure=pred.failure,
    )
    del n
    table = history_table(p.key, run_id, times, series)
    return SimulatedRun(table, summary, p, hp, run_id, times, series)


def history_table(
    key: WorkloadKey, run_id: str, times_s: np.ndarray, series: dict[str, np.ndarray]
) -> pa.Table:
    """Build the long HISTORY_SCHEMA table of one run from aligned metric arrays."""
    k = times_s.size
    names = list(series)
    m = len(names)
    ts_ms = np.tile(np.round(times_s * 1000.0).astype(np.int64), m)
    values = np.concatenate([np.asarray(series[name], dtype=np.float64) for name in names])
    metric_idx = np.repeat(np.arange(m, dtype=np.int32), k)
    zeros = np.zeros(k * m, dtype=np.int32)

    def const(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(zeros, pa.array([value])).cast(pa.string())

    return pa.Table.from_arrays(
        [
            pa.array(ts_ms, type=pa.int64()).cast(HISTORY_SCHEMA.field("timestamp").type),
            const(key.dataset),
            const(key.model),
            const(key.framework),
            const(run_id),
            pa.DictionaryArray.from_arrays(metric_idx, pa.array(names)).cast(pa.string()),
            pa.array(values, type=pa.float64()),
        ],
        schema=HISTORY_SCHEMA,
    )
