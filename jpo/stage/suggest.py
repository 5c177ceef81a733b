"""The CI stage: read config.ini, ask the policy, guard, validate, write, audit.

:func:`suggest` is the whole of ``jpo suggest`` without the command line. Its steps, in
order (each owned by one module):

1. verify the file (:func:`jpo.workload.config_file.check_workload`) — problems: exit 2;
2. pull the workload's most recent FINISHED run from Prometheus (:mod:`jpo.telemetry.sources`;
   a newer run still running is skipped and named in the notes) — no trustworthy data,
   or no finished run yet: exit 11, file untouched;
3. record the outcome of the previous suggestion if it has none yet (:mod:`jpo.stage.feedback`);
4. roll back to the last known-good values if that outcome degraded validation loss
   beyond tolerance or failed (exit 0, reason recorded); if the latest run failed (OOM,
   divergence) and no known-good values exist, step down what the failure points at
   instead (:func:`jpo.stage.feedback.recovery_step`; exit 0, reason recorded); if it trained
   but scored below the campaign's best known-good run (or drifted in val loss from the
   campaign's reference run), return to the best run's values, one trust-region step at
   a time (:mod:`jpo.stage.incumbent`; exit 0, reason recorded);
5. features (:func:`jpo.learning.features.build_observation`) and the action
   (:mod:`jpo.policy.source`: local artifact or Serve endpoint with fallback);
6. optionally scale the action by what earlier steps earned (:mod:`jpo.stage.stepping`, off by
   default), then map it through the constraints (trust region, rounding, frozen keys);
7. guards (:mod:`jpo.stage.guards`): failed-config memory (failed, rolled-back degraded and
   lower-scoring configurations, and near repeats of them; a refused repeat of a degraded
   step is retried once with more epochs), memory guard, hysteresis —
   nothing left to change: exit 10;
8. validate; approval above the configured change size (exit 12 without ``--approve``);
9. write atomically and append the audit record, crash-consistently
   (:func:`jpo.stage.transaction.commit_change`; the protocol is documented there).

The file is touched only in step 9, and only with values that passed validation. Before
step 2 an interrupted earlier command is settled (:func:`jpo.stage.transaction.reconcile`; a
dry run only reports it). This module (and everything it imports at module level) must
not import ray or torch.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jpo.errors import (
    ConfigError,
    ConstraintViolation,
    ExitCode,
    TelemetryError,
)
from jpo.paths import config_path
from jpo.workload.types import HYPERPARAMETER_NAMES, Device, Hyperparameters, WorkloadKey

if TYPE_CHECKING:
    import pyarrow as pa

    from jpo.policy.source import PolicySource
    from jpo.stage.incumbent import IncumbentSettings
    from jpo.stage.stepping import StepSettings
    from jpo.stage.transaction import StepHook
    from jpo.telemetry.schema import RunSummary
    from jpo.telemetry.sources import MetricSource
    from jpo.workload.constraints import Constraints

__all__ = [
    "SuggestOptions",
    "SuggestResult",
    "SuggestSettings",
    "SuggestStatus",
    "load_suggest_settings",
    "suggest",
]

SETTINGS_PATH = config_path("suggest.toml")
PROMETHEUS_ENV = "JPO_PROMETHEUS_URL"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class SuggestSettings:
    """The CI stage's tunable numbers (``configs/suggest.toml``; comments there)."""

    prometheus_url: str = "http://127.0.0.1:9090"
    endpoint_timeout_s: float = 2.0
    endpoint_retries: int = 1
    endpoint_backoff_s: float = 0.2
    fallback_local: bool = True
    min_relative_change: float = 0.05
    min_predicted_gain: float = 0.02
    max_gpu_memory_fraction: float = 0.90
    activation_fraction: float = 1.0
    approval_max_relative_change: float = 1.0
    val_loss_tolerance: float = 0.05
    recover_failures: bool = True
    remember_degraded: bool = True
    repeat_tolerance: float = 0.05
    backtrack_halvings: int = 0
    retry_more_epochs: bool = True
    step_initial: float = 1.0
    step_expand: float = 1.0
    step_shrink: float = 1.0
    step_min_scale: float = 1.0
    step_max_scale: float = 1.0
    incumbent_enabled: bool = True
    incumbent_margin: float = 0.05
    incumbent_window: int = 20
    incumbent_remember_worse: bool = True
    incumbent_val_loss_tolerance: float = 1.0
    probe_enabled: bool = False
    probe_lr_factor: float = 2.0
    history_root: str = ".jpo/history"

    @property
    def step(self) -> StepSettings:
        """Return the step-adaptation settings (:class:`jpo.stage.stepping.StepSettings`)."""
        from jpo.stage.stepping import StepSettings

        return StepSettings(
            self.step_initial,
            self.step_expand,
            self.step_shrink,
            self.step_min_scale,
            self.step_max_scale,
        )

    @property
    def incumbent(self) -> IncumbentSettings:
        """Return the return-to-the-best settings (:class:`~IncumbentSettings`)."""
        from jpo.stage.incumbent import IncumbentSettings

        return IncumbentSettings(
            self.incumbent_enabled,
            self.incumbent_margin,
            self.incumbent_window,
            self.incumbent_remember_worse,
            self.incumbent_val_loss_tolerance,
        )


_SETTING_KEYS: dict[tuple[str, str], str] = {
    ("telemetry", "prometheus_url"): "prometheus_url",
    ("endpoint", "timeout_s"): "endpoint_timeout_s",
    ("endpoint", "retries"): "endpoint_retries",
    ("endpoint", "backoff_s"): "endpoint_backoff_s",
    ("fallback", "local"): "fallback_local",
    ("hysteresis", "min_relative_change"): "min_relative_change",
    ("hysteresis", "min_predicted_gain"): "min_predicted_gain",
    ("memory", "max_gpu_memory_fraction"): "max_gpu_memory_fraction",
    ("memory", "activation_fraction"): "activation_fraction",
    ("approval", "max_relative_change"): "approval_max_relative_change",
    ("rollback", "val_loss_tolerance"): "val_loss_tolerance",
    ("rollback", "recover_failures"): "recover_failures",
    ("failed_configs", "remember_degraded"): "remember_degraded",
    ("failed_configs", "repeat_tolerance"): "repeat_tolerance",
    ("failed_configs", "backtrack_halvings"): "backtrack_halvings",
    ("failed_configs", "retry_more_epochs"): "retry_more_epochs",
    ("step", "initial"): "step_initial",
    ("step", "expand"): "step_expand",
    ("step", "shrink"): "step_shrink",
    ("step", "min_scale"): "step_min_scale",
    ("step", "max_scale"): "step_max_scale",
    ("incumbent", "enabled"): "incumbent_enabled",
    ("incumbent", "margin"): "incumbent_margin",
    ("incumbent", "window"): "incumbent_window",
    ("incumbent", "remember_worse"): "incumbent_remember_worse",
    ("incumbent", "val_loss_tolerance"): "incumbent_val_loss_tolerance",
    ("probe", "enabled"): "probe_enabled",
    ("probe", "lr_factor"): "probe_lr_factor",
    ("paths", "history_root"): "history_root",
}


def load_suggest_settings(path: str | Path | None = None) -> SuggestSettings:
    """Load ``configs/suggest.toml`` (or ``path``); unknown keys and bad types are errors."""
    where = Path(path) if path is not None else SETTINGS_PATH
    if path is None and not where.is_file():
        return SuggestSettings()
    try:
        raw = tomllib.loads(where.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{where}: cannot read suggest settings ({err})") from err
    defaults = SuggestSettings()
    values: dict[str, Any] = {}
    for section, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for key, value in table.items():
            attr = _SETTING_KEYS.get((section, key))
            if attr is None:
                raise ConfigError(f"{where}: unknown key [{section}] {key}; see the defaults file")
            want = type(getattr(defaults, attr))
            ok = isinstance(value, want) or (want is float and isinstance(value, int))
            if not ok or isinstance(value, bool) != (want is bool):
                raise ConfigError(
                    f"{where}: [{section}] {key} = {value!r} must be a {want.__name__}"
                )
            if want in (float, int) and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{where}: [{section}] {key} must be a finite number >= 0")
            values[attr] = want(value)
    settings = replace(defaults, **values)
    step = settings.step
    if not 0 < step.min_scale <= step.max_scale or min(step.initial, step.expand, step.shrink) <= 0:
        raise ConfigError(
            f"{where}: [step] needs 0 < min_scale <= max_scale and initial, expand, shrink > 0 "
            f"(got {step}); set all to 1.0 to switch step adaptation off"
        )
    return settings


# --------------------------------------------------------------------------- results


class SuggestStatus(StrEnum):
    """What ``jpo suggest`` decided; each maps to one documented exit code."""

    CHANGED = "changed"
    ROLLED_BACK = "rolled_back"
    DRY_RUN = "dry_run"
    UNCHANGED = "unchanged"
    NO_DATA = "no_data"
    NEEDS_APPROVAL = "needs_approval"
    POLICY_UNAVAILABLE = "policy_unavailable"


_EXIT: dict[SuggestStatus, ExitCode] = {
    SuggestStatus.CHANGED: ExitCode.OK,
    SuggestStatus.ROLLED_BACK: ExitCode.OK,
    SuggestStatus.DRY_RUN: ExitCode.OK,
    SuggestStatus.UNCHANGED: ExitCode.UNCHANGED_BY_CHOICE,
    SuggestStatus.NO_DATA: ExitCode.UNCHANGED_NO_DATA,
    SuggestStatus.NEEDS_APPROVAL: ExitCode.NEEDS_APPROVAL,
    SuggestStatus.POLICY_UNAVAILABLE: ExitCode.POLICY,
}


@dataclass(frozen=True, slots=True)
class SuggestOptions:
    """Inputs of one ``jpo suggest`` (the command-line flags)."""

    config: Path
    prometheus_url: str | None = None
    endpoint: str | None = None
    policy_path: Path | None = None
    fallback_local: bool | None = None
    dry_run: bool = False
    approve: bool = False
    log_path: Path | None = None
    settings_path: Path | None = None
    constraints_path: Path | None = None
    metrics_path: Path | None = None


@dataclass(frozen=True, slots=True)
class SuggestResult:
    """What ``jpo suggest`` did, for the console, ``--json`` and tests."""

    status: SuggestStatus
    config: Path
    message: str
    workload: WorkloadKey | None = None
    before: Hyperparameters | None = None
    after: Hyperparameters | None = None
    proposed: Hyperparameters | None = None
    action: tuple[float, ...] = ()
    policy_version: str = ""
    policy_source: str = ""
    predicted_gain: float | None = None
    run_id: str = ""
    suggestion_id: str = ""
    notes: tuple[str, ...] = field(default=())
    written: bool = False

    @property
    def exit_code(self) -> ExitCode:
        """The documented exit code of this outcome."""
        return _EXIT[self.status]

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``jpo suggest --json``)."""

        def hp(value: Hyperparameters | None) -> dict[str, Any] | None:
            return None if value is None else value.as_dict()

        return {
            "status": self.status.value,
            "exit_code": int(self.exit_code),
            "config": str(self.config),
            "message": self.message,
            "workload": None if self.workload is None else self.workload.slug(),
            "before": hp(self.before),
            "after": hp(self.after),
            "proposed": hp(self.proposed),
            "action": list(self.action),
            "policy_version": self.policy_version,
            "policy_source": self.policy_source,
            "predicted_gain": self.predicted_gain,
            "run_id": self.run_id,
            "suggestion_id": self.suggestion_id,
            "notes": list(self.notes),
            "written": self.written,
        }

    def diff(self) -> list[tuple[str, Any, Any]]:
        """Return (name, before, after) for every parameter that changes."""
        if self.before is None or self.after is None:
            return []
        old, new = self.before.as_dict(), self.after.as_dict()
        return [(n, old[n], new[n]) for n in HYPERPARAMETER_NAMES if old[n] != new[n]]


# --------------------------------------------------------------------------- helpers


def resolve_under(config: Path, value: str | Path) -> Path:
    """Return ``value`` as a path, relative to ``config``'s folder when not absolute."""
    path = Path(value)
    return path if path.is_absolute() else config.resolve().parent / path


def build_policy_source(options: SuggestOptions, settings: SuggestSettings) -> PolicySource:
    """Return the policy source the flags ask for (endpoint with optional local fallback)."""
    from jpo.policy.source import EndpointPolicySource, FallbackPolicySource, LocalPolicySource

    local = LocalPolicySource(options.policy_path)
    if not options.endpoint:
        return local
    endpoint = EndpointPolicySource(
        options.endpoint,
        timeout_s=settings.endpoint_timeout_s,
        retries=settings.endpoint_retries,
        backoff_s=settings.endpoint_backoff_s,
    )
    allow = settings.fallback_local if options.fallback_local is None else options.fallback_local
    return FallbackPolicySource([endpoint, local] if allow else [endpoint])


def _context(summary: RunSummary, key: WorkloadKey, history: Sequence[Any]) -> Any:
    """Build the observation's WorkloadContext from the audit history and this run.

    :func:`jpo.learning.features.context_from_runs` (the definition the replay env trains with):
    baseline throughput = median over the runs earlier suggestions were based on plus
    this run; best loss = the lowest final loss of any of them that did not fail.
    """
    from jpo.learning.features import context_from_runs

    return context_from_runs(summary, history, framework=key.framework)


def _memory_inputs(table: pa.Table, summary: RunSummary) -> tuple[float | None, float | None]:
    """Return (peak GPU-memory fraction, GPU memory total MiB) of a run, or Nones."""
    import numpy as np

    metric = np.asarray(table.column("metric").to_pylist(), dtype=object)
    value = table.column("value").to_numpy()
    totals = value[(metric == "gpu_mem_total_mib") & np.isfinite(value)]
    total = float(totals.max()) if totals.size else None
    fraction = summary.gpu_mem_util_p95
    if total is None and not (fraction > 0):
        return None, None
    return fraction, total


# --------------------------------------------------------------------------- pipeline


def prometheus_source(
    url: str | None, metrics_path: Path | None, settings: SuggestSettings
) -> MetricSource:
    """Return the CI stage's Prometheus source (URL: given, $JPO_PROMETHEUS_URL, settings).

    The metric catalog is ``metrics_path`` when given, else configs/metrics.toml.
    """
    from jpo.telemetry.promql import load_catalog
    from jpo.telemetry.sources import PrometheusSource

    url = url or os.environ.get(PROMETHEUS_ENV) or settings.prometheus_url
    return PrometheusSource.from_url(url, load_catalog(metrics_path) if metrics_path else None)


def run_summary(
    metric_source: MetricSource,
    key: WorkloadKey,
    run_id: str,
    table: pa.Table,
    device: Device,
) -> tuple[RunSummary, int, str]:
    """Return (summary, GPUs, note) of a run; the note is set when 1 GPU is only a default.

    A GPU workload's count comes from its pods' ``nvidia_com_gpu`` limits (``[gpus]`` in
    configs/metrics.toml) and GPU-hours are the run's duration times it; a cpu-device
    workload (``[jpo] device = cpu``) counts its pod as its one device.
    """
    from jpo.learning.features import MissingMetricError, summarize_run

    if device == "cpu":
        return summarize_run(table, device="cpu"), 1, ""
    gpus = metric_source.run_gpus(key, run_id)
    try:
        summary = summarize_run(table, gpus=gpus or 1)
    except MissingMetricError as err:
        if gpus is None and err.metric in ("gpu_util", "gpu_mem_util"):
            # No DCGM series and no GPU limit: most likely a CPU-only workload.
            raise MissingMetricError(
                f"{err}; its pods have no nvidia_com_gpu limit either: if the workload "
                "trains without a GPU, add `device = cpu` to the [jpo] section of its "
                "config.ini (README, CPU workloads)",
                metric=err.metric,
            ) from err
        raise
    if gpus is not None:
        return summary, gpus, ""
    note = (
        f"GPU count of run {run_id!r} unknown (no kube_pod_container_resource_limits"
        '{resource="nvidia_com_gpu"} for its pods, see [gpus] in configs/metrics.toml): '
        "gpu_hours assume 1 GPU"
    )
    return summary, 1, note


def suggest(
    options: SuggestOptions,
    *,
    metric_source: MetricSource | None = None,
    policy_source: PolicySource | None = None,
    settings: SuggestSettings | None = None,
    step_hook: StepHook | None = None,
) -> SuggestResult:
    """Run the CI stage once (see the module docstring); raise JpoError on bad input.

    ``step_hook`` is passed to :func:`jpo.stage.transaction.commit_change` (fault injection).

    Raises:
        ConfigError: the config file (or a settings file) is invalid (exit 2).
        ConstraintViolation: the final values fail validation (exit 3).
        WriteError: writing the file or the log failed; the original is intact.
    """
    import numpy as np

    from jpo.learning.features import (
        FEATURE_SPEC_VERSION,
        build_observation,
    )
    from jpo.policy.source import PolicyQuery, PolicyUnavailable
    from jpo.policy.step import constrained_step
    from jpo.stage import audit
    from jpo.stage.feedback import (
        RECOVERY_STEPS,
        pending_feedback,
        record_outcome,
        recovery_step,
        run_outcome_is_bad,
    )
    from jpo.stage.guards import (
        FailedConfig,
        apply_hysteresis,
        approval_needed,
        check_failed_configs,
        memory_guard,
        predicted_throughput_gain,
    )
    from jpo.stage.incumbent import lower_than_incumbent, scored_runs, step_towards, worse_runs
    from jpo.stage.stepping import step_state
    from jpo.workload.config_file import check_workload
    from jpo.workload.constraints import load_constraints

    settings = settings or load_suggest_settings(options.settings_path)
    path = options.config
    base = load_constraints(options.constraints_path)
    report = check_workload(path, base)
    if not report.ok or report.workload is None:
        lines = "\n".join(f"  {p}" for p in report.problems)
        raise ConfigError(
            f"{path}: {len(report.problems)} problem(s); nothing was written\n{lines}"
        )
    workload = report.workload
    key = workload.key
    current = workload.hyperparameters
    constraints = base.for_workload(workload.jpo)
    log_path = options.log_path or audit.default_audit_path(path)
    history_root = resolve_under(path, settings.history_root)
    notes: list[str] = []

    def result(status: SuggestStatus, message: str, **kw: Any) -> SuggestResult:
        return SuggestResult(
            status=status,
            config=path,
            message=message,
            workload=key,
            before=current,
            notes=tuple(notes),
            **kw,
        )

    on_gpu = workload.jpo.device == "gpu"

    # 1b. settle what an interrupted command left (a dry run only reports it)
    from jpo.stage.transaction import describe_pending, reconcile

    if options.dry_run:
        describe_pending(path, log_path, key)
    else:
        notes.extend(reconcile(path, log_path, key))

    # 2. telemetry of the latest run (every telemetry fault, a malformed URL included: 11)
    from jpo.telemetry.prometheus import RunStillRunning

    try:
        if metric_source is None:
            metric_source = prometheus_source(
                options.prometheus_url, options.metrics_path, settings
            )
        choice = metric_source.select_run(key)  # the most recent FINISHED run
        run_id = choice.run_id
        table = metric_source.run_table(key, run_id)
        summary, _, gpu_note = run_summary(metric_source, key, run_id, table, workload.jpo.device)
    except RunStillRunning as err:
        return result(SuggestStatus.NO_DATA, f"{path} left unchanged: {err}")
    except TelemetryError as err:
        return result(
            SuggestStatus.NO_DATA,
            f"no trustworthy telemetry for {key.slug()}: {err}; {path} left unchanged",
        )
    if choice.skipped:
        notes.append(choice.note())
    if gpu_note:
        notes.append(gpu_note)

    # 3. outcome of the previous suggestion, if still pending
    records = [r for r in audit.read_log(log_path).records if _record_key(r) == key]
    fed = None
    if not options.dry_run:  # a dry run writes nothing, the log included
        fed = pending_feedback(
            records,
            table,
            summary,
            run_id,
            log_path=log_path,
            # the replay env trains on GPU workloads only (features module docstring)
            history_root=history_root if on_gpu else None,
            settings=settings,
        )
    if fed is not None:
        notes.append(fed.message)
        records = [r for r in audit.read_log(log_path).records if _record_key(r) == key]

    # 4. rollback; or wait for a run with the values last written
    last = records[-1] if records else None
    decide = _Decider(options, key, current, summary, run_id, notes, log_path)
    decide.step_hook = step_hook
    bad = run_outcome_is_bad(last, settings) if last is not None else None
    if last is not None and bad is not None and _record_applied(last) == current:
        good = _last_known_good(records)
        if good is not None and good != current:
            constraints.validate(good)
            notes.append(f"rollback: {bad}")
            return decide(
                SuggestStatus.ROLLED_BACK,
                f"rolled back {path} to the last known-good values ({bad})",
                after=good,
                reason=f"rollback: {bad}",
            )
    scored = scored_runs(records, settings.incumbent)
    if last is not None and _record_applied(last) == current:
        newest = record_outcome(last) or {}
        lower = lower_than_incumbent(scored, str(newest.get("run_id") or ""), settings.incumbent)
        if lower is not None:
            best, latest, how = lower
            back = step_towards(constraints, current, best.hyperparameters)
            constraints.validate(back, previous=current)
            reach = "back to" if back == best.hyperparameters else "one trust-region step towards"
            why = (
                f"run {latest.run_id} ({how}) is not kept; {reach} the best known-good run "
                f"{best.run_id} (configs/suggest.toml [incumbent])"
            )
            notes.append(f"rollback: {why}")
            return decide(
                SuggestStatus.ROLLED_BACK,
                f"rolled back {path} ({why})",
                after=back,
                reason=f"rollback: {why}",
            )
    if last is not None and last.changed and _record_run_id(last) == run_id:
        return result(
            SuggestStatus.UNCHANGED,
            f"{path}: the latest run {run_id} predates the values written by suggestion "
            f"{last.suggestion_id}; run the workload with them before suggesting again",
            after=current,
            run_id=run_id,
        )

    # 4b. a failed run with nothing to roll back to: recovery step
    if settings.recover_failures and summary.failure in RECOVERY_STEPS:
        # The run with the current values failed and nothing known-good is left to roll
        # back to (the defaults failed too): step down what the failure points at,
        # rather than ask a policy that was never shown this case.
        recovery = recovery_step(constraints, current, summary.failure)
        if recovery is not None:
            after, moved = recovery
            constraints.validate(after, previous=current)
            why = (
                f"recovery: run {run_id} failed ({summary.failure}) and there are no "
                f"known-good values to roll back to; {moved} one trust-region step down"
            )
            notes.append(why)
            return decide(
                SuggestStatus.CHANGED,
                f"updated {path} after failed run {run_id} ({why})",
                after=after,
                reason=why,
            )

    # 5. features and action
    history = [_record_summary(r) for r in records]
    context = _context(summary, key, history)
    obs = build_observation(summary, current, constraints, context)
    decide.observation = obs
    source = policy_source or build_policy_source(options, settings)
    query = PolicyQuery(key, current, obs, str(FEATURE_SPEC_VERSION), summary)
    try:
        answer = source.answer(query)
    except PolicyUnavailable as err:
        return result(SuggestStatus.POLICY_UNAVAILABLE, f"{err}", run_id=run_id)
    notes.extend(answer.notes)
    decide.answer = answer

    # 6. step adaptation, constraints: the one mapping Serve and evaluation use too
    step = step_state(records, settings.step)
    mapped = constrained_step(
        constraints,
        current,
        answer.action,
        action_names=answer.action_names,
        learning_rate_follows_batch=answer.learning_rate_follows_batch,
        source=answer.source,
        adjust=step.apply if step.scale != 1.0 else None,
    )
    if step.scale != 1.0:
        notes.append(
            f"step x{step.scale:.2f} ({step.hits} earlier change(s) paid off, "
            f"{step.misses} did not; configs/suggest.toml [step])"
        )
    vector, proposed = list(mapped.vector), mapped.hyperparameters
    decide.proposed = proposed

    # 7. guards
    failures = _failed_configs(
        records, table, summary, run_id, include_degraded=settings.remember_degraded
    ) + tuple(
        FailedConfig(
            r.hyperparameters,
            "worse" if r.holds_quality(settings.incumbent) else "drifted",
            r.run_id,
        )
        for r in worse_runs(scored, settings.incumbent)
    )
    near = settings.repeat_tolerance
    guard = check_failed_configs(current, proposed, failures, near=near)
    notes.extend(guard.notes)
    halving = 0
    while guard.hyperparameters == current != proposed and halving < settings.backtrack_halvings:
        halving += 1  # the same direction, a shorter step: clear of the remembered configs?
        shorter = constraints.apply_action(
            current,
            np.asarray(vector, dtype=np.float64) * 0.5**halving,
            learning_rate_follows_batch=answer.learning_rate_follows_batch,
        )
        if shorter == current:
            break
        guard = check_failed_configs(current, shorter, failures, near=near)
        if guard.hyperparameters != current:
            notes.append(f"failed-config memory: step halved {halving} time(s) to clear it")
    if (
        settings.retry_more_epochs
        and guard.hyperparameters == current != proposed
        and "epochs" in constraints.tunable
        and check_failed_configs(
            current,
            proposed,
            [f for f in failures if f.failure in ("degraded", "drifted")],
            near=near,
        ).hyperparameters
        == current
    ):
        # The step degraded validation loss before: retry it with more training (epochs
        # one trust-region step up), the standard remedy for a loss that has not converged.
        longer = list(vector)
        longer[constraints.tunable.index("epochs")] = 1.0
        retry = constraints.apply_action(
            current,
            np.asarray(longer, dtype=np.float64),
            learning_rate_follows_batch=answer.learning_rate_follows_batch,
        )
        retried = check_failed_configs(current, retry, failures, near=near)
        if retried.hyperparameters != current:
            guard = retried
            notes.append("failed-config memory: the degraded step retried with more epochs")
    after = guard.hyperparameters
    fraction, total = _memory_inputs(table, summary)
    guard = memory_guard(
        current,
        after,
        observed_fraction=fraction,
        gpu_memory_total_mib=total,
        max_fraction=settings.max_gpu_memory_fraction,
        activation_fraction=settings.activation_fraction,
        memory="GPU memory" if on_gpu else "pod memory",
    )
    notes.extend(guard.notes)
    after = guard.hyperparameters
    guard = apply_hysteresis(
        summary,
        current,
        after,
        min_relative_change=settings.min_relative_change,
        # The roofline gain model reads idle device time as per-step overhead. On a CPU the
        # training loop's overhead is busy CPU time, so it cannot price a CPU job's batch
        # step (digits-mlp at 96 % CPU: predicted +2 %, measured +20-70 %; BENCHMARKS.md).
        min_predicted_gain=settings.min_predicted_gain if on_gpu else None,
    )
    notes.extend(guard.notes)
    after = guard.hyperparameters
    if after != proposed:
        # The memory and hysteresis guards drop parts of the proposal; what is left can be a
        # remembered configuration that the full proposal was not (e.g. only the learning-
        # rate change of a step survives, and that change is what degraded a run before).
        guard = check_failed_configs(current, after, failures, near=near)
        notes.extend(guard.notes)
        after = guard.hyperparameters
    reason = "policy"
    if after == current and settings.probe_enabled:
        probe = _probe(constraints, current, failures, records, settings)
        if probe is not None:
            after, reason = probe.hyperparameters, f"probe: {probe.name}"
            notes.append(probe.note)
    decide.predicted_gain = predicted_throughput_gain(summary, current, after) if on_gpu else None
    if after == current:
        why = "; ".join(n for n in notes if n.startswith(("hysteresis", "memory", "failed")))
        return decide(
            SuggestStatus.UNCHANGED,
            f"{path}: keeping the current values ({why or 'the policy asks for no change'})",
            after=current,
            reason="unchanged: " + (why or "policy asks for no change"),
        )

    # 8. validate, approval
    try:
        constraints.validate(after, previous=current)
    except ConstraintViolation as err:
        raise ConstraintViolation(f"{path}: suggestion {_fmt(after)} rejected: {err}") from err
    over = approval_needed(current, after, settings.approval_max_relative_change)
    if over and not options.approve:
        return decide(
            SuggestStatus.NEEDS_APPROVAL,
            f"{path}: change needs approval (rerun with --approve): " + "; ".join(over),
            after=after,
            reason="needs approval: " + "; ".join(over),
        )

    # 9. write + audit
    return decide(
        SuggestStatus.CHANGED, f"updated {path} from run {run_id}", after=after, reason=reason
    )


def _probe(
    constraints: Constraints,
    current: Hyperparameters,
    failures: Sequence[Any],
    records: Sequence[Any],
    settings: SuggestSettings,
) -> Any:
    """Return the CI stage's probe (:func:`~jpo.stage.probe.probe_step`) over the log's runs."""
    from jpo.stage.feedback import outcome_hyperparameters, record_before
    from jpo.stage.probe import probe_step

    ran = [hp for r in records for hp in (record_before(r), outcome_hyperparameters(r)) if hp]
    return probe_step(
        constraints,
        current,
        failures,
        ran,
        lr_factor=settings.probe_lr_factor,
        near=settings.repeat_tolerance,
    )


class _Decider:
    """Ends a suggestion: writes the file (CHANGED/ROLLED_BACK) and the audit record.

    --dry-run writes neither (and reports DRY_RUN for what would have been written).
    """

    def __init__(
        self,
        options: SuggestOptions,
        key: WorkloadKey,
        current: Hyperparameters,
        summary: RunSummary,
        run_id: str,
        notes: list[str],
        log_path: Path,
    ):
        self.options = options
        self.key = key
        self.current = current
        self.summary = summary
        self.run_id = run_id
        self.notes = notes
        self.log_path = log_path
        self.answer: Any = None
        self.observation: Any = None
        self.proposed: Hyperparameters | None = None
        self.predicted_gain: float | None = None
        self.step_hook: StepHook | None = None

    def __call__(
        self, status: SuggestStatus, message: str, *, after: Hyperparameters, reason: str
    ) -> SuggestResult:
        from jpo.stage import audit
        from jpo.stage.feedback import summary_dict
        from jpo.stage.transaction import commit_change

        path = self.options.config
        answer = self.answer
        write = status in (SuggestStatus.CHANGED, SuggestStatus.ROLLED_BACK)
        if self.options.dry_run:
            if write:
                status, message = SuggestStatus.DRY_RUN, f"dry run: {path} not written"
            write = False
        record = audit.AuditRecord.for_change(
            self.key,
            self.current,
            after,
            reason,
            telemetry={
                "run_id": self.run_id,
                "summary": summary_dict(self.summary),
                "action": None if answer is None else list(answer.action),
                "action_names": None
                if answer is None or answer.action_names is None
                else list(answer.action_names),
                "predicted_gain": self.predicted_gain,
                "notes": list(self.notes),
            },
            features=[] if self.observation is None else [float(x) for x in self.observation],
            policy_version="" if answer is None else str(answer.version),
            source="" if answer is None else answer.source,
            config_path=str(path.resolve()),
            changed=write,
        )
        if write:  # config.ini and its record, crash-consistently (jpo.stage.transaction)
            done = commit_change(
                path, after, record, self.log_path, expected=self.current, step=self.step_hook
            )
            write = done.written
            self.notes.extend(done.notes)
        elif not self.options.dry_run:
            audit.append_record(self.log_path, record)
        return SuggestResult(
            status=status,
            config=path,
            message=message,
            workload=self.key,
            before=self.current,
            after=after,
            proposed=self.proposed,
            action=() if answer is None else answer.action,
            policy_version="" if answer is None else str(answer.version),
            policy_source="" if answer is None else answer.source,
            predicted_gain=self.predicted_gain,
            run_id=self.run_id,
            suggestion_id="" if self.options.dry_run else str(record.suggestion_id),
            notes=tuple(self.notes),
            written=write,
        )


def _fmt(hp: Hyperparameters) -> str:
    return ", ".join(f"{k}={v}" for k, v in hp.as_dict().items())


def _record_key(record: Any) -> WorkloadKey:
    from jpo.stage.feedback import record_key

    return record_key(record)


def _record_applied(record: Any) -> Hyperparameters | None:
    from jpo.stage.feedback import record_applied

    return record_applied(record)


def _record_run_id(record: Any) -> str:
    from jpo.stage.feedback import record_run_id

    return record_run_id(record)


def _record_summary(record: Any) -> RunSummary | None:
    from jpo.stage.feedback import record_summary

    return record_summary(record)


def _last_known_good(records: Sequence[Any]) -> Hyperparameters | None:
    from jpo.stage.feedback import last_known_good

    return last_known_good(records)


def _failed_configs(
    records: Sequence[Any], table: Any, summary: Any, run_id: str, *, include_degraded: bool
) -> Any:
    from jpo.stage.feedback import failed_configs

    return failed_configs(records, table, summary, run_id, include_degraded=include_degraded)
