"""One exception hierarchy for JPO, and the process exit code each error maps to.

Every message names the file, key, line or URL at fault and what would fix it. The CLI
maps exception types to exit codes in one place (:func:`exit_code_for`).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (docs/user-guide.md, "Exit codes")."""

    OK = 0  # success; for `jpo suggest`: config.ini changed
    INTERNAL = 1  # unexpected error (a bug): run again with --debug and report it
    INVALID_INPUT = 2  # bad config.ini, bad profile, bad arguments; nothing was written
    VALIDATION_FAILED = 3  # a suggestion failed the constraints; nothing was written
    TELEMETRY = 4  # Prometheus unreachable or its data untrustworthy (non-suggest commands)
    POLICY = 5  # policy artifact or endpoint unusable
    TRAINING = 6  # training or Ray job failed
    WRITE_FAILED = 7  # config.ini, backup, audit log or history not written; originals intact
    AUTH_FAILED = 8  # a Serve endpoint or Prometheus refused the credentials (401/403)
    UNCHANGED_BY_CHOICE = 10  # `jpo suggest`: policy/hysteresis kept the current values
    UNCHANGED_NO_DATA = 11  # `jpo suggest`: no trustworthy telemetry, file untouched
    NEEDS_APPROVAL = 12  # `jpo suggest`: change larger than allowed without --approve


class JpoError(Exception):
    """Root of every error JPO raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigError(JpoError):
    """A user-supplied file or argument is invalid (config.ini, TOML, YAML, profile)."""

    exit_code = ExitCode.INVALID_INPUT


class ConstraintViolation(JpoError):
    """A hyperparameter set violates the constraints and must not reach disk."""

    exit_code = ExitCode.VALIDATION_FAILED


class WriteError(JpoError):
    """Writing config.ini, a backup or the audit log failed; the original is intact."""

    exit_code = ExitCode.WRITE_FAILED


class TelemetryError(JpoError):
    """Prometheus data could not be fetched or cannot be trusted."""

    exit_code = ExitCode.TELEMETRY


class NoTrustworthyTelemetry(TelemetryError):
    """The CI stage (``jpo suggest``, ``jpo feedback``) could not trust its telemetry.

    Every telemetry fault of the CI stage (unreachable, timeout, malformed URL or answer,
    non-numeric or missing samples, no finished run) maps to one code: config.ini is
    unchanged and a pipeline carries on (docs/user-guide.md, "Exit codes").
    """

    exit_code = ExitCode.UNCHANGED_NO_DATA


class AuthFailed(JpoError):
    """A server refused JPO's credentials (HTTP 401/403); never hidden by a fallback."""

    exit_code = ExitCode.AUTH_FAILED


class PolicyError(JpoError):
    """A policy artifact or Serve endpoint is missing, corrupt or incompatible."""

    exit_code = ExitCode.POLICY


class PolicyAuthError(PolicyError, AuthFailed):
    """The Serve endpoint answered 401/403: wrong or missing ``JPO_SERVE_TOKEN``."""

    exit_code = ExitCode.AUTH_FAILED


class TrainingError(JpoError):
    """Training, checkpointing or a Ray job failed."""

    exit_code = ExitCode.TRAINING


CARRY_ON_CODES: frozenset[ExitCode] = frozenset(
    {ExitCode.OK, ExitCode.UNCHANGED_BY_CHOICE, ExitCode.UNCHANGED_NO_DATA}
)
"""Codes after which a pipeline may continue its build: config.ini is valid as it stands
(changed by JPO, or left as it was). Every other code means "stop" (user guide, "Exit codes");
12 stops for a person's approval."""


def exit_code_for(err: BaseException) -> ExitCode:
    """Return the documented exit code for an exception."""
    if isinstance(err, JpoError):
        return err.exit_code
    return ExitCode.INTERNAL
