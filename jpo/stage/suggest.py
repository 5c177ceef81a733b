"""The CI stage: read config.ini, ask the policy, guard, validate, write, audit.

:func:`suggest` is the whole of ``jpo suggest`` without the command line, and reads as
its steps, in order (each decision owned by one module):

1. verify the file (:func:`jpo.workload.config_file.check_workload`) — problems: exit 2;
   settle what an interrupted earlier command left (:func:`jpo.stage.transaction.reconcile`;
   a dry run only reports it);
2. telemetry: pull the workload's most recent FINISHED run from Prometheus
   (:mod:`jpo.stage.run_telemetry`; a newer run still running is skipped and named in the
   notes) — no trustworthy data, or no finished run yet: exit 11, file untouched;
3. record the outcome of the previous suggestion if it has none yet
   (:mod:`jpo.stage.feedback`; the audit record's typed schema is :mod:`jpo.stage.record`);
4. rollback / return to the best / recovery (:mod:`jpo.stage.rollback`, the one owner of
   every move made without the policy; exit 0, reason recorded); with ``[incumbent]
   restart_on_shift`` (off by default) a rerun of the best run's
   values that scored below its record is a cluster shift and restarts the runs the best
   is chosen from (:mod:`jpo.stage.incumbent`);
5. features (:func:`jpo.learning.features.build_observation`) and the policy step: the
   action (:mod:`jpo.policy.source`: local artifact or Serve endpoint with fallback)
   mapped through the constraints (trust region, rounding, frozen keys);
6. guards in order (:mod:`jpo.stage.guards`): failed-config memory
   (:mod:`jpo.stage.failure_memory`; a refused repeat of a degraded step is retried once
   with more epochs, :mod:`jpo.stage.retry`), memory guard, hysteresis, the memory again
   on what is left; probes when nothing is left (:mod:`jpo.stage.probe`, off by default)
   — nothing left to change: exit 10;
7. validate; approval above the configured change size (exit 12 without ``--approve``);
8. write atomically and append the audit record, crash-consistently
   (:mod:`jpo.stage.write_audit`, :func:`jpo.stage.transaction.commit_change`).

The file is touched only in step 8, and only with values that passed validation. The
settings are :mod:`jpo.stage.settings` (``configs/suggest.toml``). This module (and
everything it imports at module level) must not import ray or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jpo.errors import ConfigError, ConstraintViolation, PolicyError, TelemetryError
from jpo.stage import run_telemetry
from jpo.stage.result import SuggestOptions, SuggestResult, SuggestStatus
from jpo.stage.rollback import MoveKind
from jpo.stage.settings import SuggestSettings, load_suggest_settings
from jpo.stage.write_audit import DecisionWriter
from jpo.workload.types import Hyperparameters

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from jpo.policy.source import PolicyAnswer, PolicySource
    from jpo.stage.guards import FailedConfig
    from jpo.stage.record import SuggestionRecord
    from jpo.stage.rollback import Move
    from jpo.stage.transaction import StepHook
    from jpo.telemetry.schema import RunSummary
    from jpo.telemetry.sources import MetricSource
    from jpo.workload.config_file import WorkloadFile
    from jpo.workload.constraints import Constraints

__all__ = [
    "SuggestOptions",
    "SuggestResult",
    "SuggestSettings",
    "SuggestStatus",
    "build_policy_source",
    "load_suggest_settings",
    "suggest",
]


# --------------------------------------------------------------------------- the pipeline's state


@dataclass
class _Stage:
    """What the pipeline knows about the workload once its file is verified (step 1)."""

    options: SuggestOptions
    settings: SuggestSettings
    workload: WorkloadFile
    constraints: Constraints
    log_path: Path
    notes: list[str]

    @property
    def current(self) -> Hyperparameters:
        """The values in config.ini now."""
        return self.workload.hyperparameters

    @property
    def on_gpu(self) -> bool:
        """Whether the workload trains on a GPU (``[jpo] device``)."""
        return self.workload.jpo.device == "gpu"

    def result(self, status: SuggestStatus, message: str, **kw: Any) -> SuggestResult:
        """Return a result that writes nothing (no data, waiting, policy unavailable)."""
        return SuggestResult(
            status=status,
            config=self.options.config,
            message=message,
            workload=self.workload.key,
            before=self.current,
            notes=tuple(self.notes),
            **kw,
        )


@dataclass(frozen=True)
class _Run:
    """The latest finished run (step 2)."""

    run_id: str
    table: pa.Table
    summary: RunSummary


# --------------------------------------------------------------------------- steps


def _verify(options: SuggestOptions, settings: SuggestSettings) -> _Stage:
    """Step 1: verify config.ini against the constraints; settle an interrupted command."""
    from jpo.stage import audit
    from jpo.stage.transaction import describe_pending, reconcile
    from jpo.workload.config_file import check_workload
    from jpo.workload.constraints import load_constraints

    path = options.config
    base = load_constraints(options.constraints_path)
    report = check_workload(path, base)
    if not report.ok or report.workload is None:
        lines = "\n".join(f"  {p}" for p in report.problems)
        raise ConfigError(
            f"{path}: {len(report.problems)} problem(s); nothing was written\n{lines}"
        )
    workload = report.workload
    if options.policy_path is not None and not Path(options.policy_path).exists():
        # a wrong --policy is a setup error to stop on, not hidden behind "no telemetry" (11)
        raise PolicyError(
            f"--policy {options.policy_path}: no such policy artifact folder; pass the folder"
            " holding manifest.json (jpo train --export), or leave --policy out for the"
            f" bundled policy; {path} left unchanged"
        )
    log_path = options.log_path or audit.default_audit_path(path)
    stage = _Stage(options, settings, workload, base.for_workload(workload.jpo), log_path, [])
    if options.dry_run:
        describe_pending(path, log_path, workload.key)
    else:
        stage.notes.extend(reconcile(path, log_path, workload.key))
    return stage


def _latest_run(stage: _Stage, metric_source: MetricSource | None) -> _Run | SuggestResult:
    """Step 2: the latest finished run (every telemetry fault, a bad URL included: NO_DATA)."""
    from jpo.telemetry.prometheus import RunStillRunning

    options, key, path = stage.options, stage.workload.key, stage.options.config
    try:
        if metric_source is None:
            metric_source = run_telemetry.prometheus_source(
                options.prometheus_url, options.metrics_path, stage.settings
            )
        choice = metric_source.select_run(key)  # the most recent FINISHED run
        table = metric_source.run_table(key, choice.run_id)
        summary, _, gpu_note = run_telemetry.run_summary(
            metric_source, key, choice.run_id, table, stage.workload.jpo.device
        )
    except RunStillRunning as err:
        return stage.result(SuggestStatus.NO_DATA, f"{path} left unchanged: {err}")
    except TelemetryError as err:
        return stage.result(
            SuggestStatus.NO_DATA,
            f"no trustworthy telemetry for {key.slug()}: {err}; {path} left unchanged",
        )
    stage.notes.extend(n for n in (choice.note() if choice.skipped else "", gpu_note) if n)
    return _Run(choice.run_id, table, summary)


def _feedback(stage: _Stage, run: _Run) -> list[SuggestionRecord]:
    """Step 3: score the previous suggestion's run if pending; return the workload's records."""
    from jpo.stage.feedback import pending_feedback
    from jpo.stage.record import read_suggestions

    records = read_suggestions(stage.log_path, stage.workload.key)
    if stage.options.dry_run:  # a dry run writes nothing, the log included
        return records
    fed = pending_feedback(
        records,
        run.table,
        run.summary,
        run.run_id,
        log_path=stage.log_path,
        # the replay env trains on GPU workloads only (features module docstring)
        history_root=run_telemetry.history_root(stage.options.config, stage.settings)
        if stage.on_gpu
        else None,
        settings=stage.settings,
    )
    if fed is None:
        return records
    stage.notes.append(fed.message)
    return read_suggestions(stage.log_path, stage.workload.key)


def _move(stage: _Stage, move: Move, run: _Run, write: DecisionWriter) -> SuggestResult:
    """Step 4's answer: a rollback, a return to the best, a recovery step, or waiting."""
    path = stage.options.config
    if move.kind is MoveKind.WAIT:
        return stage.result(
            SuggestStatus.UNCHANGED, f"{path}: {move.detail}", after=move.after, run_id=run.run_id
        )
    stage.notes.append(move.why)
    if move.kind is MoveKind.RECOVERY:
        status, verb = SuggestStatus.CHANGED, "updated"
    else:
        status, verb = SuggestStatus.ROLLED_BACK, "rolled back"
    return write(status, f"{verb} {path} {move.detail}", after=move.after, reason=move.why)


def _ask_policy(
    stage: _Stage,
    run: _Run,
    records: Sequence[SuggestionRecord],
    policy_source: PolicySource | None,
    write: DecisionWriter,
) -> PolicyAnswer | SuggestResult:
    """Step 5a: the observation and the policy's answer (POLICY_UNAVAILABLE if none)."""
    from jpo.learning.features import FEATURE_SPEC_VERSION, build_observation, context_from_runs
    from jpo.policy.source import PolicyQuery, PolicyUnavailable

    key, current = stage.workload.key, stage.current
    # the observation's context: the definition the replay env trains with
    history = [r.basis.summary for r in records]
    context = context_from_runs(run.summary, history, framework=key.framework)
    obs = build_observation(run.summary, current, stage.constraints, context)
    write.observation = obs
    source = policy_source or build_policy_source(stage.options, stage.settings)
    query = PolicyQuery(key, current, obs, str(FEATURE_SPEC_VERSION), run.summary)
    try:
        answer = source.answer(query)
    except PolicyUnavailable as err:
        return stage.result(SuggestStatus.POLICY_UNAVAILABLE, f"{err}", run_id=run.run_id)
    stage.notes.extend(answer.notes)
    write.answer = answer
    return answer


def _policy_step(
    constraints: Constraints, current: Hyperparameters, answer: PolicyAnswer
) -> tuple[np.ndarray, Hyperparameters]:
    """Step 5b: the one mapping Serve and evaluation use too (:mod:`jpo.policy.step`)."""
    import numpy as np

    from jpo.policy.step import constrained_step

    mapped = constrained_step(
        constraints,
        current,
        answer.action,
        action_names=answer.action_names,
        learning_rate_follows_batch=answer.learning_rate_follows_batch,
        source=answer.source,
    )
    return np.asarray(mapped.vector, dtype=np.float64), mapped.hyperparameters


def _guard(
    stage: _Stage,
    run: _Run,
    proposed: Hyperparameters,
    vector: np.ndarray,
    answer: PolicyAnswer,
    failures: Sequence[FailedConfig],
) -> Hyperparameters:
    """Step 6: the guards in order; return what is left of the proposal."""
    from jpo.stage.guards import apply_hysteresis, check_failed_configs, memory_guard
    from jpo.stage.retry import retry_with_more_epochs

    settings, current, notes = stage.settings, stage.current, stage.notes
    near = settings.failed_configs.repeat_tolerance
    guard = check_failed_configs(current, proposed, failures, near=near)
    guard = retry_with_more_epochs(
        stage.constraints,
        current,
        proposed,
        [float(v) for v in vector],
        answer.learning_rate_follows_batch,
        guard,
        failures,
        settings.failed_configs,
    )
    notes.extend(guard.notes)
    fraction, total = run_telemetry.memory_inputs(run.table, run.summary)
    guard = memory_guard(
        current,
        guard.hyperparameters,
        observed_fraction=fraction,
        gpu_memory_total_mib=total,
        max_fraction=settings.memory.max_gpu_memory_fraction,
        activation_fraction=settings.memory.activation_fraction,
        memory="GPU memory" if stage.on_gpu else "pod memory",
    )
    notes.extend(guard.notes)
    guard = apply_hysteresis(
        run.summary,
        current,
        guard.hyperparameters,
        min_relative_change=settings.hysteresis.min_relative_change,
        # The roofline gain model reads idle device time as per-step overhead. On a CPU the
        # training loop's overhead is busy CPU time, so it cannot price a CPU job's batch
        # step (digits-mlp at 96 % CPU: predicted +2 %, measured +20-70 %; BENCHMARKS.md).
        min_predicted_gain=settings.hysteresis.min_predicted_gain if stage.on_gpu else None,
    )
    notes.extend(guard.notes)
    if guard.hyperparameters != proposed:
        # The memory and hysteresis guards drop parts of the proposal; what is left can be a
        # remembered configuration that the full proposal was not (e.g. only the learning-
        # rate change of a step survives, and that change is what degraded a run before).
        guard = check_failed_configs(current, guard.hyperparameters, failures, near=near)
        notes.extend(guard.notes)
    return guard.hyperparameters


def _probe(
    stage: _Stage, records: Sequence[SuggestionRecord], failures: Sequence[FailedConfig]
) -> tuple[Hyperparameters, str] | None:
    """Step 6b: a probe (:func:`~jpo.stage.probe.probe_step`) when the guards left nothing."""
    from jpo.stage.probe import probe_step

    if not stage.settings.probe.enabled:
        return None
    ran = [hp for r in records for hp in (r.before, r.ran) if hp]
    probe = probe_step(
        stage.constraints,
        stage.current,
        failures,
        ran,
        lr_factor=stage.settings.probe.lr_factor,
        near=stage.settings.failed_configs.repeat_tolerance,
    )
    if probe is None:
        return None
    stage.notes.append(probe.note)
    return probe.hyperparameters, f"probe: {probe.name}"


def _conclude(
    stage: _Stage, after: Hyperparameters, reason: str, write: DecisionWriter
) -> SuggestResult:
    """Steps 6c-8: keep the values, or validate, ask for approval, write + audit."""
    from jpo.stage.guards import approval_needed

    path, current, notes = stage.options.config, stage.current, stage.notes
    if after == current:
        why = "; ".join(n for n in notes if n.startswith(("hysteresis", "memory", "failed")))
        return write(
            SuggestStatus.UNCHANGED,
            f"{path}: keeping the current values ({why or 'the policy asks for no change'})",
            after=current,
            reason="unchanged: " + (why or "policy asks for no change"),
        )
    try:
        stage.constraints.validate(after, previous=current)
    except ConstraintViolation as err:
        raise ConstraintViolation(f"{path}: suggestion {_fmt(after)} rejected: {err}") from err
    over = approval_needed(current, after, stage.settings.approval.max_relative_change)
    if over and not stage.options.approve:
        return write(
            SuggestStatus.NEEDS_APPROVAL,
            f"{path}: change needs approval (rerun with --approve): " + "; ".join(over),
            after=after,
            reason="needs approval: " + "; ".join(over),
        )
    return write(
        SuggestStatus.CHANGED,
        f"updated {path} from run {write.run_id}",
        after=after,
        reason=reason,
    )


# --------------------------------------------------------------------------- suggest


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
    from jpo.stage import rollback
    from jpo.stage.failure_memory import remembered_failures
    from jpo.stage.guards import predicted_throughput_gain
    from jpo.stage.incumbent import campaign_scores

    settings = settings or load_suggest_settings(options.settings_path)
    stage = _verify(options, settings)  # 1
    run = _latest_run(stage, metric_source)  # 2
    if isinstance(run, SuggestResult):
        return run
    records = _feedback(stage, run)  # 3
    current, constraints = stage.current, stage.constraints
    write = DecisionWriter(
        options,
        stage.workload.key,
        current,
        run.summary,
        run.run_id,
        stage.notes,
        stage.log_path,
        step_hook=step_hook,
    )
    scores = campaign_scores(records, settings.incumbent)
    if scores.shift is not None and scores.shift.run_id == run.run_id:
        stage.notes.append(scores.shift.note())  # the window restarts here (incumbent module)
    scored = scores.runs
    move = rollback.decide(records, current, run.summary, run.run_id, constraints, scored, settings)
    if move is not None:  # 4
        return _move(stage, move, run, write)
    answer = _ask_policy(stage, run, records, policy_source, write)  # 5
    if isinstance(answer, SuggestResult):
        return answer
    vector, write.proposed = _policy_step(constraints, current, answer)
    failures = remembered_failures(
        records, run.table, run.summary, run.run_id, scored, settings, scores.kept_worse
    )
    after = _guard(stage, run, write.proposed, vector, answer, failures)  # 6
    probe = _probe(stage, records, failures) if after == current else None
    after, reason = probe or (after, "policy")
    if stage.on_gpu:
        write.predicted_gain = predicted_throughput_gain(run.summary, current, after)
    return _conclude(stage, after, reason, write)  # 7, 8


# --------------------------------------------------------------------------- helpers


def build_policy_source(options: SuggestOptions, settings: SuggestSettings) -> PolicySource:
    """Return the policy source the flags ask for (endpoint with optional local fallback)."""
    from jpo.policy.source import EndpointPolicySource, FallbackPolicySource, LocalPolicySource

    local = LocalPolicySource(options.policy_path)
    if not options.endpoint:
        return local
    endpoint = EndpointPolicySource(
        options.endpoint,
        timeout_s=settings.endpoint.timeout_s,
        retries=settings.endpoint.retries,
        backoff_s=settings.endpoint.backoff_s,
    )
    allow = settings.fallback.local if options.fallback_local is None else options.fallback_local
    return FallbackPolicySource([endpoint, local] if allow else [endpoint])


def _fmt(hp: Hyperparameters) -> str:
    return ", ".join(f"{k}={v}" for k, v in hp.as_dict().items())
