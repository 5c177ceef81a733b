"""The workload file ``config.ini``: read it, check it, report every problem with its line.

Layout (SPEC §2)::

    [workload]
    dataset = cifar10          ; Kubernetes label values: <= 63 chars of [A-Za-z0-9_.-],
    model = resnet18           ; starting and ending with a letter or digit
    framework = pytorch        ; one of configs/workload_schema.toml known_frameworks

    [hyperparameters]
    batch_size = 128           ; int
    learning_rate = 0.01       ; float
    num_layers = 18            ; int
    epochs = 30                ; int

    [jpo]                      ; optional
    tune = batch_size, learning_rate      ; parameters JPO may change (default: all)
    freeze = epochs                       ; parameters JPO must keep
    batch_size_min = 32                   ; <name>_min / _max / _trust_region narrow the
    batch_size_max = 512                  ; global limits of configs/constraints.toml
    batch_size_power_of_two = true        ; round batch_size to powers of two
    batch_size_multiple_of = 1            ; humane rounding (constraints.toml: 8 on GPU)
    device = cpu                          ; trains without a GPU (default: gpu)

Reading never writes. ``configparser`` runs with ``interpolation=None`` (a ``%`` is just a
character) and a default section nobody can name (``[DEFAULT]`` is an ordinary, unknown
section rather than one that silently feeds keys into every other section). Keys are
case-insensitive as in configparser; section names are case-sensitive.
"""

from __future__ import annotations

import configparser
import math
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field

from jpo.errors import ConfigError
from jpo.settings import Settings, config_file, load_settings
from jpo.workload.constraints import Constraints, load_constraints
from jpo.workload.types import (
    DEVICES,
    HYPERPARAMETER_NAMES,
    Device,
    Hyperparameters,
    JpoSection,
    ParamLimits,
    WorkloadKey,
)

__all__ = [
    "CheckReport",
    "JpoSection",
    "Problem",
    "WorkloadFile",
    "check_workload",
    "check_workload_text",
    "load_workload_schema",
    "parse_workload_text",
    "read_workload",
]

WORKLOAD_SECTION = "workload"
HP_SECTION = "hyperparameters"
JPO_SECTION = "jpo"
WORKLOAD_KEYS = ("dataset", "model", "framework")
_INT_TYPES = {"batch_size": True, "learning_rate": False, "num_layers": True, "epochs": True}
_LIMIT_SUFFIXES = ("_min", "_max", "_trust_region", "_power_of_two", "_multiple_of")
_NO_DEFAULT = "\x00jpo-no-default-section"

_INT_RE = re.compile(r"[+-]?[0-9]{1,30}")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,5})?")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")
_SECTCRE = configparser.ConfigParser.SECTCRE
_OPTCRE = configparser.ConfigParser.OPTCRE


@dataclass(frozen=True, slots=True)
class WorkloadSchema:
    """What a config.ini may contain besides hyperparameter ranges (workload_schema.toml)."""

    known_frameworks: tuple[str, ...]
    max_file_bytes: int
    label_value_max_length: int


class _SchemaFile(Settings):
    """The whole of workload_schema.toml."""

    known_frameworks: tuple[str, ...]
    max_file_bytes: int = Field(gt=0)
    label_value_max_length: int = Field(gt=0)


@lru_cache(maxsize=8)
def _load_schema_cached(path: str) -> WorkloadSchema:
    raw = load_settings(_SchemaFile, "workload_schema.toml", path)
    return WorkloadSchema(
        known_frameworks=tuple(f.lower() for f in raw.known_frameworks),
        max_file_bytes=raw.max_file_bytes,
        label_value_max_length=raw.label_value_max_length,
    )


def load_workload_schema(path: str | os.PathLike[str] | None = None) -> WorkloadSchema:
    """Load ``workload_schema.toml`` (default: from the configs folder)."""
    return _load_schema_cached(str(config_file("workload_schema.toml", path)))


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a workload file, with where it is and how to fix it."""

    file: str
    line: int | None
    section: str | None
    key: str | None
    message: str
    fix: str

    def location(self) -> str:
        """Return ``file:line`` (or just the file when the line is unknown)."""
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        where = f"[{self.section}]" if self.section else ""
        if self.key:
            where = f"{where} {self.key}".strip()
        head = f"{self.location()}: {where}: " if where else f"{self.location()}: "
        return f"{head}{self.message} (fix: {self.fix})"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "file": self.file,
            "line": self.line,
            "section": self.section,
            "key": self.key,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class WorkloadFile:
    """A checked workload file: its identity, hyperparameters and ``[jpo]`` settings."""

    path: Path
    key: WorkloadKey
    hyperparameters: Hyperparameters
    jpo: JpoSection
    lines: Mapping[tuple[str, str], int] = field(default_factory=dict, repr=False)

    def line_of(self, section: str, key: str | None = None) -> int:
        """Return the 1-based line of a key (or section header); 0 when absent."""
        return self.lines.get((section, (key or "").lower()), 0)


@dataclass(frozen=True)
class CheckReport:
    """Everything ``jpo check`` found: problems make the file invalid, warnings do not."""

    path: str
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...] = ()
    workload: WorkloadFile | None = None

    @property
    def ok(self) -> bool:
        """True when the file has no problems."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the ``jpo check --json`` output)."""
        wl = self.workload
        return {
            "file": self.path,
            "valid": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [w.to_dict() for w in self.warnings],
            "workload": None
            if wl is None
            else {
                "dataset": wl.key.dataset,
                "model": wl.key.model,
                "framework": wl.key.framework,
                "hyperparameters": wl.hyperparameters.as_dict(),
                "tunable": list(wl.jpo.tunable),
                "frozen": list(wl.jpo.frozen),
                "device": wl.jpo.device,
            },
        }


# --------------------------------------------------------------------------- scanning
@dataclass
class _Scan:
    lines: dict[tuple[str, str], int]
    problems: list[Problem]


def _strip_comments(line: str) -> str:
    """Return a line without comments, exactly as configparser (3.11) strips them."""
    if line.strip().startswith(("#", ";")):
        return ""
    comment_start = len(line)
    for prefix in (";", "#"):
        idx = line.find(prefix)
        while idx != -1:
            if idx == 0 or line[idx - 1].isspace():
                comment_start = min(comment_start, idx)
                break
            idx = line.find(prefix, idx + 1)
    return line[:comment_start].strip()


def _scan_lines(text: str, file: str) -> _Scan:
    """Map (section, key) to line numbers and find duplicate sections/keys (all of them).

    Mirrors configparser's line logic (comment stripping, continuation lines by indent,
    empty or comment lines ending a value, SECTCRE/OPTCRE) so that the line found for a key
    is the line configparser read its value from; safe_write edits that line.
    """
    lines: dict[tuple[str, str], int] = {}
    problems: list[Problem] = []
    section: str | None = None
    optname: str | None = None
    indent_level = sys.maxsize
    for no, raw in enumerate(text.splitlines(), start=1):
        value = _strip_comments(raw)
        if not value:
            indent_level = sys.maxsize  # empty_lines_in_values=False: ends a value
            continue
        cur_indent = len(raw) - len(raw.lstrip())
        if section is not None and optname and cur_indent > indent_level:
            continue  # continuation line of a multi-line value
        indent_level = cur_indent
        m = _SECTCRE.match(value)
        if m:
            section = m.group("header")
            optname = None
            if (section, "") in lines:
                problems.append(
                    Problem(
                        file,
                        no,
                        section,
                        None,
                        f"duplicate section [{section}] (first at line {lines[(section, '')]})",
                        "merge the two sections into one",
                    )
                )
            else:
                lines[(section, "")] = no
            continue
        if section is None:
            continue  # configparser reports MissingSectionHeaderError
        m = _OPTCRE.match(value)
        if not m:
            continue  # configparser reports a ParsingError
        key = m.group("option").rstrip().lower()
        optname = key
        if (section, key) in lines:
            problems.append(
                Problem(
                    file,
                    no,
                    section,
                    key,
                    f"duplicate key {key!r} (first at line {lines[(section, key)]})",
                    "keep one of the two lines",
                )
            )
        else:
            lines[(section, key)] = no
    return _Scan(lines, problems)


def _parser() -> configparser.ConfigParser:
    return configparser.ConfigParser(
        interpolation=None,
        strict=False,  # duplicates are reported (all of them) by _scan_lines
        default_section=_NO_DEFAULT,
        inline_comment_prefixes=(";", "#"),
        comment_prefixes=("#", ";"),
        empty_lines_in_values=False,
    )


def _short(text: str, limit: int = 40) -> str:
    """Return repr(text), shortened for messages when long (huge values stay readable)."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def _is_label(value: str, max_len: int) -> bool:
    return len(value) <= max_len and _LABEL_RE.fullmatch(value) is not None


def _parse_number(name: str, raw: str) -> tuple[float | int | None, str | None, str | None]:
    """Return (value, problem, fix) for one hyperparameter's text."""
    text = raw.strip()
    is_int = _INT_TYPES[name]
    kind = "an integer" if is_int else "a number"
    low = text.lower()
    if low in {"nan", "+nan", "-nan"} or "nan" in low:
        return None, f"{name} = {_short(text)} is not a number (NaN)", f"write {kind}"
    if "inf" in low:
        return (
            None,
            f"{name} = {_short(text)} is infinite",
            f"write a finite {kind.split(maxsplit=1)[1]}",
        )
    if not text:
        return None, f"{name} is empty", f"write {kind}"
    if is_int:
        if _INT_RE.fullmatch(text):
            return int(text), None, None
        if _FLOAT_RE.fullmatch(text):
            try:
                f = float(text)
            except (ValueError, OverflowError):
                f = math.nan
            if math.isfinite(f) and f == math.floor(f) and abs(f) < 1e30:
                return (
                    None,
                    f"{name} = {_short(text)} must be written as an integer",
                    f"write {int(f)}",
                )
            if not math.isfinite(f):
                return (
                    None,
                    f"{name} = {_short(text)} is too large to be finite",
                    "write a sane integer",
                )
            return None, f"{name} = {_short(text)} is not an integer", f"write e.g. {round(f)}"
        if re.fullmatch(r"[+-]?[0-9_]+", text):
            return None, f"{name} = {_short(text)} is not a plain integer", "write digits only"
        return None, f"{name} = {_short(text)} is not an integer", f"write {kind}"
    if _FLOAT_RE.fullmatch(text):
        f = float(text)
        if not math.isfinite(f):
            return None, f"{name} = {_short(text)} overflows to infinity", "write a finite number"
        return f, None, None
    return None, f"{name} = {_short(text)} is not a number", "write a decimal number such as 0.01"


def _parse_bool(text: str) -> bool | None:
    low = text.strip().lower()
    if low in {"true", "yes", "on", "1"}:
        return True
    if low in {"false", "no", "off", "0"}:
        return False
    return None


def _split_names(text: str) -> list[str]:
    return [t.strip().lower() for t in re.split(r"[,\s]+", text) if t.strip()]


# --------------------------------------------------------------------------- analysis
@dataclass
class _Analysis:
    problems: list[Problem]
    warnings: list[Problem]
    workload: WorkloadFile | None


def _read_bytes(path: Path, schema: WorkloadSchema) -> tuple[bytes | None, Problem | None]:
    """Read a workload file's bytes, refusing anything that is not a small regular file."""
    file = str(path)

    def prob(msg: str, fix: str) -> tuple[None, Problem]:
        return None, Problem(file, None, None, None, msg, fix)

    try:
        st = path.stat()
    except FileNotFoundError:
        return prob("file not found", "pass the path of the workload's config.ini")
    except PermissionError:
        return prob("file cannot be read (permission denied)", "make it readable (chmod u+r)")
    except OSError as err:
        return prob(f"file cannot be read: {err.strerror or err}", "pass a readable file")
    if stat.S_ISDIR(st.st_mode):
        return prob("is a directory, not a file", "pass the config.ini inside it")
    if not stat.S_ISREG(st.st_mode):
        return prob("is not a regular file (device, pipe or socket)", "pass a regular file")
    if st.st_size > schema.max_file_bytes:
        return prob(
            f"file is too large ({st.st_size} bytes > {schema.max_file_bytes}); "
            "this is not a workload config",
            "pass the workload's config.ini (a few hundred bytes)",
        )
    try:
        with path.open("rb") as fh:
            data = fh.read(schema.max_file_bytes + 1)
    except PermissionError:
        return prob("file cannot be read (permission denied)", "make it readable (chmod u+r)")
    except OSError as err:
        return prob(f"file cannot be read: {err.strerror or err}", "pass a readable file")
    if len(data) > schema.max_file_bytes:
        return prob(
            f"file is too large (> {schema.max_file_bytes} bytes)",
            "pass the workload's config.ini",
        )
    return data, None


def _decode(data: bytes, file: str) -> tuple[str | None, Problem | None]:
    """Decode UTF-8 (a leading BOM is accepted); name the line of the first bad byte."""
    if not data.strip():
        return None, Problem(
            file,
            None,
            None,
            None,
            "file is empty",
            "write [workload] and [hyperparameters] sections (see examples/workload/config.ini)",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return None, Problem(
            file,
            line,
            None,
            None,
            f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})",
            "save the file as UTF-8",
        )
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        return None, Problem(
            file, line, None, None, "contains NUL bytes (binary data)", "save it as plain text"
        )
    return text, None


@dataclass
class _Collector:
    """Problems and warnings of one file, each placed on the line of its section/key."""

    file: str
    lines: Mapping[tuple[str, str], int]
    problems: list[Problem]
    warnings: list[Problem] = field(default_factory=list)

    def _line(self, section: str | None, key: str | None) -> int | None:
        return self.lines.get((section or "", (key or "").lower())) if section else None

    def add(self, section: str | None, key: str | None, msg: str, fix: str) -> None:
        """Record a problem (on the key's line, else the section header's)."""
        line = self._line(section, key)
        if line is None and section:
            line = self.lines.get((section, ""))
        self.problems.append(Problem(self.file, line, section, key, msg, fix))

    def warn(self, section: str | None, key: str | None, msg: str, fix: str) -> None:
        """Record a warning (on the key's line)."""
        self.warnings.append(Problem(self.file, self._line(section, key), section, key, msg, fix))


def _parse_ini(text: str, file: str) -> tuple[configparser.ConfigParser | None, list[Problem]]:
    """Parse the INI text; on a syntax error return None and the problems, one per line."""
    cp = _parser()
    try:
        cp.read_string(text, source=file)
    except configparser.MissingSectionHeaderError as err:
        msg = f"line {err.lineno} comes before any [section] header: {_short(err.line.strip())}"
        return None, [Problem(file, err.lineno, None, None, msg, "start the file with [workload]")]
    except configparser.ParsingError as err:
        text_lines = text.splitlines()
        problems = []
        for lineno, _line in err.errors:
            bad_line = text_lines[lineno - 1] if 0 < lineno <= len(text_lines) else ""
            problems.append(
                Problem(
                    file,
                    lineno,
                    None,
                    None,
                    f"cannot parse line {lineno}: {_short(bad_line.strip())} is not `key = value`",
                    "write `key = value` lines under a [section] header",
                )
            )
        return None, problems
    except configparser.Error as err:
        return None, [Problem(file, None, None, None, f"cannot parse: {err}", "fix the syntax")]
    return cp, []


def _check_section_names(cp: configparser.ConfigParser, out: _Collector) -> None:
    """Flag misspelt known sections as problems and unknown sections as warnings."""
    known = (WORKLOAD_SECTION, HP_SECTION, JPO_SECTION)
    for sec_name in cp.sections():
        if sec_name in known:
            continue
        hint = next((s for s in known if s == sec_name.lower().strip()), None)
        if hint is not None:
            out.add(
                sec_name, None, f"section [{sec_name}] is not [{hint}]", f"rename it to [{hint}]"
            )
        else:
            msg = f"unknown section [{sec_name}] (ignored by JPO)"
            out.warn(sec_name, None, msg, "ignore if intended")


def _workload_value_problem(k: str, v: str, schema: WorkloadSchema) -> tuple[str, str] | None:
    """Return (message, fix) when a [workload] value is unusable, else None."""
    if not v:
        return f"{k} is empty", f"set {k} to a name such as a label value"
    if not _is_label(v, schema.label_value_max_length):
        return (
            f"{k} = {_short(v)} is not a valid Kubernetes label value",
            f"use at most {schema.label_value_max_length} characters of letters, "
            "digits, '-', '_', '.', starting and ending with a letter or digit",
        )
    if k == "framework" and v.lower() not in schema.known_frameworks:
        return (
            f"unknown framework {_short(v)}",
            f"use one of {', '.join(schema.known_frameworks)} (configs/workload_schema.toml)",
        )
    return None


def _check_workload(
    cp: configparser.ConfigParser, out: _Collector, schema: WorkloadSchema
) -> dict[str, str]:
    """Return the [workload] labels that are usable; record the others."""
    key_values: dict[str, str] = {}
    if not cp.has_section(WORKLOAD_SECTION):
        out.add(
            None,
            None,
            "missing section [workload]",
            "add [workload] with dataset, model, framework",
        )
        return key_values
    sec = cp[WORKLOAD_SECTION]
    for k in WORKLOAD_KEYS:
        if k not in sec:
            out.add(WORKLOAD_SECTION, None, f"missing key {k!r} in [workload]", f"add `{k} = ...`")
            continue
        v = sec[k].strip()
        problem = _workload_value_problem(k, v, schema)
        if problem is not None:
            out.add(WORKLOAD_SECTION, k, *problem)
            continue
        key_values[k] = v
    for k in sec:
        if k not in WORKLOAD_KEYS:
            out.warn(WORKLOAD_SECTION, k, f"unknown key {k!r} in [workload] (ignored)", "ignore")
    return key_values


def _check_hyperparameters(
    cp: configparser.ConfigParser, out: _Collector
) -> dict[str, float | int]:
    """Return the [hyperparameters] values that parse; record the others."""
    hp_values: dict[str, float | int] = {}
    if not cp.has_section(HP_SECTION):
        out.add(
            None,
            None,
            "missing section [hyperparameters]",
            f"add [hyperparameters] with {', '.join(HYPERPARAMETER_NAMES)}",
        )
        return hp_values
    sec = cp[HP_SECTION]
    for name in HYPERPARAMETER_NAMES:
        if name not in sec:
            missing = f"missing key {name!r} in [hyperparameters]"
            out.add(HP_SECTION, None, missing, f"add `{name} = ...`")
            continue
        value, msg, fix = _parse_number(name, sec[name])
        if msg is not None:
            out.add(HP_SECTION, name, msg, fix or "fix the value")
            continue
        assert value is not None
        hp_values[name] = value
    for k in sec:
        if k not in HYPERPARAMETER_NAMES:
            out.warn(HP_SECTION, k, f"{k!r} is not tuned by JPO (kept as is)", "ignore if intended")
    return hp_values


@dataclass
class _JpoDraft:
    """The [jpo] section as read so far (``ok``: no problem found in it)."""

    tune: list[str] | None = None
    freeze: list[str] = field(default_factory=list)
    raw_limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: Device = "gpu"
    ok: bool = True


def _jpo_names(k: str, v: str, draft: _JpoDraft) -> tuple[str, str] | None:
    """Read ``tune`` / ``freeze``; return (message, fix) for unknown names."""
    names = _split_names(v)
    bad = [n for n in names if n not in HYPERPARAMETER_NAMES]
    if bad:
        return (
            f"{k} names unknown parameter(s) {', '.join(map(repr, bad))}",
            f"use names from {', '.join(HYPERPARAMETER_NAMES)}",
        )
    if k == "tune":
        draft.tune = names
    else:
        draft.freeze = names
    return None


def _jpo_device(v: str, draft: _JpoDraft) -> tuple[str, str] | None:
    """Read ``device``; return (message, fix) when it is not gpu or cpu."""
    text = v.strip().lower()
    if text not in DEVICES:
        return (
            f"device = {_short(v)} is not one of {', '.join(DEVICES)}",
            "write gpu (the default) or cpu (a workload that trains without a GPU)",
        )
    draft.device = "cpu" if text == "cpu" else "gpu"
    return None


def _limit_value(k: str, suffix: str, v: str) -> tuple[Any, tuple[str, str] | None]:
    """Parse one ``<param><suffix>`` override; return (value, None) or (None, problem)."""
    if suffix == "_power_of_two":
        b = _parse_bool(v)
        if b is None:
            return None, (f"{k} = {_short(v)} is not true/false", "write true or false")
        return b, None
    text = v.strip()
    if suffix == "_multiple_of":
        if not text.isdigit() or int(text) < 1:
            return None, (
                f"{k} = {_short(text)} is not a whole number >= 1",
                "write e.g. 8 (round to multiples of 8) or 1 (no rounding)",
            )
        return int(text), None
    num: float | None = None
    if _FLOAT_RE.fullmatch(text) and "nan" not in text.lower():
        num = float(text)
    if num is None or not math.isfinite(num):
        return None, (f"{k} = {_short(text)} is not a finite number", "write a number")
    return num, None


def _jpo_limit(k: str, v: str, draft: _JpoDraft) -> tuple[str, str] | None:
    """Read a ``<param>_min/_max/...`` override; return (message, fix) if it is bad."""
    suffix = next((s for s in _LIMIT_SUFFIXES if k.endswith(s)), None)
    pname = k[: -len(suffix)] if suffix else ""
    if suffix is None or pname not in HYPERPARAMETER_NAMES:
        return (
            f"unknown key {k!r} in [jpo]",
            "use tune, freeze, device, or "
            "<param>_min/_max/_trust_region/_power_of_two/_multiple_of",
        )
    value, problem = _limit_value(k, suffix, v)
    if problem is None:
        draft.raw_limits.setdefault(pname, {})[suffix[1:]] = value
    return problem


def _check_jpo(cp: configparser.ConfigParser, out: _Collector) -> tuple[JpoSection, bool]:
    """Return the [jpo] section (defaults when absent) and whether it had no problem."""
    if not cp.has_section(JPO_SECTION):
        return JpoSection(source=out.file), True
    draft = _JpoDraft()
    for k, v in cp[JPO_SECTION].items():
        if k in ("tune", "freeze"):
            problem = _jpo_names(k, v, draft)
        elif k == "device":
            problem = _jpo_device(v, draft)
        else:
            problem = _jpo_limit(k, v, draft)
        if problem is not None:
            draft.ok = False
            out.add(JPO_SECTION, k, *problem)
    overlap = [n for n in draft.freeze if draft.tune is not None and n in draft.tune]
    if overlap:
        draft.ok = False
        out.add(
            JPO_SECTION,
            "freeze",
            f"{', '.join(overlap)} both tuned and frozen",
            "list each parameter in tune or in freeze, not both",
        )
    base = draft.tune if draft.tune is not None else list(HYPERPARAMETER_NAMES)
    tunable = tuple(n for n in HYPERPARAMETER_NAMES if n in base and n not in draft.freeze)
    frozen = tuple(n for n in HYPERPARAMETER_NAMES if n not in tunable)
    limits = {n: ParamLimits(**d) for n, d in draft.raw_limits.items()}
    jpo = JpoSection(
        tunable=tunable, frozen=frozen, limits=limits, source=out.file, device=draft.device
    )
    return jpo, draft.ok


def _narrowed(
    constraints: Constraints, jpo: JpoSection, jpo_ok: bool, out: _Collector
) -> Constraints:
    """Return the constraints narrowed by [jpo]; record each override that would widen them."""
    bad_limits = False
    for pname, lim in jpo.limits.items():
        try:
            constraints.for_workload(JpoSection(limits={pname: lim}, source=out.file))
        except ConfigError as err:
            bad_limits = True
            key = next(
                (
                    f"{pname}{s}"
                    for s in _LIMIT_SUFFIXES
                    if (JPO_SECTION, f"{pname}{s}") in out.lines
                ),
                None,
            )
            msg = str(err).split("[jpo]: ", 1)[-1]
            out.add(JPO_SECTION, key, msg, "a workload may only narrow configs/constraints.toml")
    if not bad_limits and jpo_ok and jpo.limits:
        return constraints.for_workload(jpo)
    return constraints


def _check_ranges(
    constraints: Constraints | None,
    jpo: JpoSection,
    jpo_ok: bool,
    hp_values: Mapping[str, float | int],
    out: _Collector,
) -> None:
    """Record every hyperparameter outside the (narrowed) constraints."""
    if constraints is None:
        return
    effective = _narrowed(constraints, jpo, jpo_ok, out)
    for name, value in hp_values.items():
        msg = effective.value_problem(name, value)
        if msg is not None:
            out.add(
                HP_SECTION, name, msg, f"change {name}; the limits come from {constraints.source}"
            )


def _analyse_text(
    text: str,
    file: str,
    constraints: Constraints | None,
    schema: WorkloadSchema,
) -> _Analysis:
    """Check the text of a workload file; collect every problem."""
    scan = _scan_lines(text, file)
    out = _Collector(file, scan.lines, list(scan.problems))
    cp, syntax = _parse_ini(text, file)
    if cp is None:
        return _Analysis([*out.problems, *syntax], out.warnings, None)
    _check_section_names(cp, out)
    key_values = _check_workload(cp, out, schema)
    hp_values = _check_hyperparameters(cp, out)
    jpo, jpo_ok = _check_jpo(cp, out)
    _check_ranges(constraints, jpo, jpo_ok, hp_values, out)
    wl: WorkloadFile | None = None
    if not out.problems:
        wl = WorkloadFile(
            path=Path(file),
            key=WorkloadKey(**key_values),
            hyperparameters=Hyperparameters.from_mapping(hp_values),
            jpo=jpo,
            lines=dict(scan.lines),
        )
    return _Analysis(out.problems, out.warnings, wl)


def check_workload_text(
    text: str,
    file: str = "<text>",
    constraints: Constraints | None = None,
) -> CheckReport:
    """Check a workload file's text (as :func:`check_workload` does for a path)."""
    schema = load_workload_schema()
    a = _analyse_text(text, file, constraints, schema)
    return CheckReport(file, tuple(a.problems), tuple(a.warnings), a.workload)


def check_workload(
    path: str | os.PathLike[str],
    constraints: Constraints | None = None,
    *,
    use_default_constraints: bool = True,
) -> CheckReport:
    """Check a workload file and return every problem found; never writes anything.

    ``constraints`` defaults to ``configs/constraints.toml`` (pass
    ``use_default_constraints=False`` to check structure and types only).
    """
    p = Path(path)
    file = str(path)
    schema = load_workload_schema()
    if constraints is None and use_default_constraints:
        constraints = load_constraints()
    data, prob = _read_bytes(p, schema)
    if prob is not None or data is None:
        return CheckReport(file, (prob,) if prob else ())
    text, prob = _decode(data, file)
    if prob is not None or text is None:
        return CheckReport(file, (prob,) if prob else ())
    a = _analyse_text(text, file, constraints, schema)
    wl = a.workload
    return CheckReport(file, tuple(a.problems), tuple(a.warnings), wl)


def _raise_for(report: CheckReport) -> None:
    n = len(report.problems)
    head = f"{report.path}: {n} problem{'s' if n != 1 else ''}: "
    raise ConfigError(head + "; ".join(str(p) for p in report.problems))


def parse_workload_text(
    text: str, file: str = "<text>", constraints: Constraints | None = None
) -> WorkloadFile:
    """Parse a workload file's text; raise ConfigError listing every problem."""
    report = check_workload_text(text, file, constraints)
    if not report.ok or report.workload is None:
        _raise_for(report)
    assert report.workload is not None
    return report.workload


def read_workload(
    path: str | os.PathLike[str], constraints: Constraints | None = None
) -> WorkloadFile:
    """Read and check a workload file.

    Checks structure, types, finiteness, labels, framework and value ranges (against
    ``constraints``, default ``configs/constraints.toml`` narrowed by the file's ``[jpo]``).

    Raises:
        ConfigError: listing every problem, each with file:line, key and fix.
    """
    report = check_workload(path, constraints)
    if not report.ok or report.workload is None:
        _raise_for(report)
    assert report.workload is not None
    return report.workload
