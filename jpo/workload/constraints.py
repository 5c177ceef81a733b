"""Hard limits on hyperparameters: load, narrow per workload, map actions, clamp, validate.

The limits live in ``configs/constraints.toml`` (SPEC §3): per hyperparameter its type,
inclusive range, scale (log or linear), optional power-of-two rounding and a trust region
(the largest change one suggestion may make, as a factor ``f > 1``).

Trust region rule (documented in the TOML as well):

* floats: the next value lies in ``[current / f, current * f]``;
* integers: in ``[min(current - 1, ceil(current / f)), max(current + 1, floor(current * f))]``
  so that an integer can always move by at least one step (a value at 1 can become 2).

An action entry ``a`` in [-1, 1] moves a value from ``current`` towards the edge of the
allowed region (trust region intersected with the bounds) in its direction:
``a = +1`` reaches the upper edge, ``a = -1`` the lower one, ``a = 0`` keeps the value.
Log-scale parameters interpolate in log space (so away from the bounds a float moves to
``current * f**a`` exactly), linear ones in linear space.

Learning rate follows batch size (``[action] learning_rate_follows_batch = c``; Goyal et
al., 2017, linear scaling rule; Smith & Le, 2018): when the action changes the batch size
from ``B`` to ``B'``, the learning rate's action entry moves it from
``current * (B' / B)**c`` (clamped into its region) instead of from ``current``; ``c = 0``
turns this off. The learning rate's trust region and bounds are unchanged, so a coupled
move is clamped like any other. An exported policy records the ``c`` it was trained with
(``action.learning_rate_follows_batch`` in its manifest) and is always applied with it.

NaN or infinite action entries count as 0 (no change); entries outside [-1, 1] are
clipped. Integers are then rounded half up, power-of-two parameters go to the nearest
power of two (in log space) inside the region, and the result is validated. Everything
on the hot path is plain Python floats over precomputed tuples: the Gymnasium env calls
:meth:`Constraints.apply_action` and :meth:`Constraints.normalize` thousands of times per
second.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from pydantic import Field

from jpo.errors import ConfigError, ConstraintViolation
from jpo.paths import config_dir
from jpo.settings import Settings, config_file, load_settings
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters, JpoSection, ParamLimits

__all__ = [
    "Constraints",
    "ParamLimits",
    "ParamSpec",
    "config_dir",
    "load_constraints",
]

_ACTION_KEYS = {"learning_rate_follows_batch"}
_BATCH, _LR = HYPERPARAMETER_NAMES.index("batch_size"), HYPERPARAMETER_NAMES.index("learning_rate")
_REL_TOL = 1e-9  # float comparisons in validate(): tolerate rounding of cur * f**a


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """Limits of one hyperparameter (one ``[params.<name>]`` table of constraints.toml)."""

    name: str
    type: Literal["int", "float"]
    min: float
    max: float
    scale: Literal["log", "linear"]
    power_of_two: bool
    trust_region: float
    multiple_of: int = 1
    significant_digits: int = 0


def _float(v: float) -> float:
    """Return float(v), with ints too large for a float read as +/-inf."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _show(v: object) -> str:
    """Return repr(v), shortened when huge (10**400 must not flood a message)."""
    r = repr(v)
    return r if len(r) <= 40 else f"{r[:20]}...({len(r)} digits)"


def _is_pow2(v: float) -> bool:
    iv = int(v)
    return iv == v and iv >= 1 and (iv & (iv - 1)) == 0


def _pow2_in(lo: float, hi: float) -> list[int]:
    """Return the powers of two in [lo, hi] (lo >= 1 assumed by the caller's bounds)."""
    out = []
    p = 1
    while p <= hi:
        if p >= lo:
            out.append(p)
        p *= 2
    return out


def _check_spec(spec: ParamSpec, where: str) -> None:
    """Raise ConfigError if a ParamSpec is internally inconsistent."""
    name = spec.name
    if spec.type not in ("int", "float"):
        raise ConfigError(f'{where}: {name}.type = {spec.type!r}; use "int" or "float"')
    if spec.scale not in ("log", "linear"):
        raise ConfigError(f'{where}: {name}.scale = {spec.scale!r}; use "log" or "linear"')
    for field in ("min", "max", "trust_region"):
        v = getattr(spec, field)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{where}: {name}.{field} = {v!r} must be a finite number")
    if spec.min > spec.max:
        raise ConfigError(
            f"{where}: {name}.min = {spec.min} exceeds max = {spec.max}; swap or fix them"
        )
    if spec.scale == "log" and spec.min <= 0:
        raise ConfigError(f"{where}: {name}.min = {spec.min} must be > 0 on a log scale; raise min")
    if spec.type == "int" and spec.min < 0:
        raise ConfigError(f"{where}: {name}.min = {spec.min} must be >= 0 for an int")
    if spec.trust_region <= 1.0:
        raise ConfigError(
            f"{where}: {name}.trust_region = {spec.trust_region} must be > 1 "
            "(it is a factor: the value may move to current/f .. current*f)"
        )
    _check_humane(spec, where)
    if spec.power_of_two:
        if spec.type != "int":
            raise ConfigError(f'{where}: {name}.power_of_two needs type = "int"')
        if spec.trust_region < 2.0:
            raise ConfigError(
                f"{where}: {name}.power_of_two needs trust_region >= 2 "
                f"(got {spec.trust_region}), otherwise no power of two may be reachable"
            )
        if not _pow2_in(max(spec.min, 1), spec.max):
            raise ConfigError(
                f"{where}: {name} bounds [{spec.min}, {spec.max}] contain no power of two; "
                "widen them or drop power_of_two"
            )


def _check_humane(spec: ParamSpec, where: str) -> None:
    """Raise ConfigError unless multiple_of / significant_digits fit the parameter's type."""
    name, mult, digits = spec.name, spec.multiple_of, spec.significant_digits
    if isinstance(mult, bool) or not isinstance(mult, int) or mult < 1:
        raise ConfigError(f"{where}: {name}.multiple_of = {mult!r}; use an integer >= 1 (1 = off)")
    if mult > 1 and spec.type != "int":
        raise ConfigError(f'{where}: {name}.multiple_of needs type = "int"; remove it')
    if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 15:
        raise ConfigError(
            f"{where}: {name}.significant_digits = {digits!r}; use an integer in [0, 15] (0 = off)"
        )
    if digits and spec.type != "float":
        raise ConfigError(f'{where}: {name}.significant_digits needs type = "float"; remove it')


def _round_sig(v: float, digits: int, direction: int = 0) -> float:
    """Return v rounded to ``digits`` significant digits (0: nearest, +1: up, -1: down).

    v is first rounded to 12 significant digits, so values that differ only by float
    round-off (``x * 3 / 3``) round alike.
    """
    v12 = float(f"{v:.12e}")
    text = f"{v12:.{digits - 1}e}"
    q = float(text)
    if direction == 0:
        return q
    step = 10.0 ** (int(text.split("e")[1]) - digits + 1)
    if direction > 0 and q < v12:
        q = float(f"{q + step:.{digits - 1}e}")
    elif direction < 0 and q > v12:
        q = float(f"{q - step:.{digits - 1}e}")
    return q


def _humane_float(v: float, cur: float, digits: int, lo: float, hi: float) -> float:
    """Return v at ``digits`` significant digits, rounded towards ``cur`` (never past v).

    A value that moves keeps its direction and never goes beyond what was proposed, so
    the trust region and the bounds hold as they did; a move smaller than one unit of the
    last digit gets one more digit (0.01231 from 0.0123), as many as it needs. ``cur == v`` (a value
    built from nothing, e.g. :meth:`Constraints.denormalize`) rounds to the nearest.
    """
    if not v > 0.0 or not math.isfinite(v):
        return v
    if cur == v or not math.isfinite(cur):
        q = _round_sig(v, digits)
        return q if lo <= q <= hi else v
    v12 = float(f"{v:.12e}")  # float round-off (0.09999999999999999) is not a value
    if v12 == float(f"{cur:.12e}") and lo <= cur <= hi:  # cur plus round-off is no move
        return cur
    up = v > cur
    for d in range(digits, 13):  # a move smaller than one unit: one more digit, and so on
        q = _round_sig(v, d, -1 if up else +1)
        if ((cur < q <= v12) if up else (v12 <= q < cur)) and lo <= q <= hi:
            return q
    return v


def _humane_int(r: float, cur: float, m: int, lo: float, hi: float) -> float:
    """Return r as a multiple of m, rounded towards ``cur`` (never past r); r if none."""
    if r == cur or not math.isfinite(cur):  # built from nothing: the nearest multiple
        down = math.floor(r / m) * m
        cands = [c for c in (down + m, down) if c >= 1 and lo <= c <= hi]
        return float(min(cands, key=lambda c: abs(c - r))) if cands else r
    if r > cur:
        c = math.floor(r / m) * m
        ok = c > cur
    else:
        c = math.ceil(r / m) * m
        ok = c < cur
    return float(c) if ok and c >= 1 and lo <= c <= hi else r


def _check_specs(specs: Mapping[str, ParamSpec], tunable: Sequence[str], source: str) -> None:
    """Raise ConfigError unless every parameter has consistent limits and tunable is known."""
    missing = [n for n in HYPERPARAMETER_NAMES if n not in specs]
    if missing:
        raise ConfigError(
            f"{source}: no [params.{missing[0]}] table; every one of "
            f"{', '.join(HYPERPARAMETER_NAMES)} needs limits"
        )
    for n, s in specs.items():
        if n not in HYPERPARAMETER_NAMES:
            raise ConfigError(
                f"{source}: unknown parameter [params.{n}]; known: "
                f"{', '.join(HYPERPARAMETER_NAMES)}"
            )
        _check_spec(s, source)
    unknown = [n for n in tunable if n not in HYPERPARAMETER_NAMES]
    if unknown:
        raise ConfigError(f"{source}: unknown tunable parameter {unknown[0]!r}")


def _limits_sha256(
    specs: Mapping[str, ParamSpec], tunable: Sequence[str], lr_follows_batch: float
) -> str:
    """Return the hash of effective limits, tunable set and coupling (audit, manifests)."""
    payload: dict[str, Any] = {
        "params": {n: _spec_payload(specs[n]) for n in HYPERPARAMETER_NAMES},
        "tunable": list(tunable),
    }
    if lr_follows_batch:  # absent when off: hashes of older files stay valid
        payload["learning_rate_follows_batch"] = lr_follows_batch
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class Constraints:
    """Effective limits for one workload (immutable); see the module docstring."""

    __slots__ = (
        "_digits",
        "_frozen_idx",
        "_hi",
        "_ihi",
        "_ilo",
        "_is_int",
        "_is_log",
        "_lo",
        "_log_lo",
        "_log_span",
        "_lr_follows_batch",
        "_mult",
        "_pow2",
        "_sha",
        "_source",
        "_span",
        "_specs",
        "_tr",
        "_tunable",
        "_tunable_idx",
    )

    def __init__(
        self,
        specs: Mapping[str, ParamSpec],
        tunable: Sequence[str] = HYPERPARAMETER_NAMES,
        *,
        source: str = "<memory>",
        learning_rate_follows_batch: float = 0.0,
    ) -> None:
        _check_specs(specs, tunable, source)
        self._lr_follows_batch = _check_coupling(learning_rate_follows_batch, source)
        self._source = source
        self._specs: dict[str, ParamSpec] = {n: specs[n] for n in HYPERPARAMETER_NAMES}
        self._tunable: tuple[str, ...] = tuple(n for n in HYPERPARAMETER_NAMES if n in tunable)
        self._tunable_idx = tuple(HYPERPARAMETER_NAMES.index(n) for n in self._tunable)
        self._frozen_idx = tuple(
            i for i, n in enumerate(HYPERPARAMETER_NAMES) if n not in self._tunable
        )
        sp = [self._specs[n] for n in HYPERPARAMETER_NAMES]
        self._lo = tuple(float(s.min) for s in sp)
        self._hi = tuple(float(s.max) for s in sp)
        self._ilo = tuple(float(math.ceil(s.min)) for s in sp)  # integer bounds
        self._ihi = tuple(float(math.floor(s.max)) for s in sp)
        self._span = tuple(h - lo for lo, h in zip(self._lo, self._hi, strict=True))
        self._is_log = tuple(s.scale == "log" for s in sp)
        self._log_lo = tuple(math.log(s.min) if s.scale == "log" else 0.0 for s in sp)
        self._log_span = tuple(
            (math.log(s.max) - math.log(s.min)) if s.scale == "log" else 0.0 for s in sp
        )
        self._is_int = tuple(s.type == "int" for s in sp)
        self._pow2 = tuple(bool(s.power_of_two) for s in sp)
        self._tr = tuple(float(s.trust_region) for s in sp)
        self._mult = tuple(int(s.multiple_of) for s in sp)
        self._digits = tuple(int(s.significant_digits) for s in sp)
        self._sha = _limits_sha256(self._specs, self._tunable, self._lr_follows_batch)

    # ----------------------------------------------------------------- introspection
    @property
    def tunable(self) -> tuple[str, ...]:
        """Parameters an action may change, in HYPERPARAMETER_NAMES order."""
        return self._tunable

    @property
    def frozen(self) -> tuple[str, ...]:
        """Parameters kept at their current value (not tunable)."""
        return tuple(HYPERPARAMETER_NAMES[i] for i in self._frozen_idx)

    @property
    def params(self) -> Mapping[str, ParamSpec]:
        """The effective limits per parameter, in HYPERPARAMETER_NAMES order."""
        return dict(self._specs)

    @property
    def source(self) -> str:
        """Where these limits came from (file path, plus narrowing note)."""
        return self._source

    @property
    def learning_rate_follows_batch(self) -> float:
        """Exponent c of the learning-rate/batch-size coupling (module docstring; 0 = off)."""
        return self._lr_follows_batch

    def spec(self, name: str) -> ParamSpec:
        """Return the limits of one parameter."""
        return self._specs[name]

    def sha256(self) -> str:
        """Return a hash of the effective limits and tunable set (for audit and manifests)."""
        return self._sha

    def __repr__(self) -> str:
        return f"Constraints(source={self._source!r}, tunable={self._tunable})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Constraints) and other._sha == self._sha

    def __hash__(self) -> int:
        return hash(self._sha)

    # ----------------------------------------------------------------- narrowing
    def for_workload(self, jpo: JpoSection | None) -> Constraints:
        """Return these limits narrowed by a workload's ``[jpo]`` section (never widened).

        Raises:
            ConfigError: an override would widen a limit or is inconsistent.
        """
        if jpo is None:
            return self
        where = f"{getattr(jpo, 'source', 'config.ini')} [jpo]"
        specs = dict(self._specs)
        for name, lim in jpo.limits.items():
            if name not in specs:
                raise ConfigError(f"{where}: unknown parameter {name!r} in a limit override")
            specs[name] = _narrow(specs[name], lim, where)
        if getattr(jpo, "device", "gpu") != "gpu":  # multiples of 8 are a GPU habit
            for name, spec in specs.items():
                own = jpo.limits.get(name)
                if spec.multiple_of > 1 and (own is None or own.multiple_of is None):
                    specs[name] = replace(spec, multiple_of=1)
        tunable = tuple(n for n in jpo.tunable if n in self._tunable)
        return Constraints(
            specs,
            tunable,
            source=f"{self._source} narrowed by {where}",
            learning_rate_follows_batch=self._lr_follows_batch,
        )

    # ----------------------------------------------------------------- core mapping
    def _region(self, i: int, cur: float) -> tuple[float, float]:
        """Return the allowed [lo, hi] for parameter i given its current value."""
        # Conditionals instead of min()/max(): this runs ~40k times/s inside the env.
        f = self._tr[i]
        if self._is_int[i]:
            a = cur - 1.0
            b = float(math.ceil(cur / f))
            lo = a if a < b else b
            a = cur + 1.0
            b = float(math.floor(cur * f))
            hi = a if a > b else b
            blo = self._ilo[i]
            bhi = self._ihi[i]
        else:
            lo = cur / f
            hi = cur * f
            blo = self._lo[i]
            bhi = self._hi[i]
        return (lo if lo > blo else blo), (hi if hi < bhi else bhi)

    def _empty_region(self, i: int, cur: float) -> ConstraintViolation:
        name = HYPERPARAMETER_NAMES[i]
        return ConstraintViolation(
            f"{name}: current value {cur!r} cannot reach the bounds "
            f"[{self._lo[i]:g}, {self._hi[i]:g}] within one trust-region step "
            f"(x{self._tr[i]:g}); fix config.ini by hand (run `jpo check`)"
        )

    @staticmethod
    def _coupled_start(
        i: int,
        cur: float,
        out: list[float],
        vals: list[float],
        lo: float,
        hi: float,
        coupling: float,
    ) -> float:
        """Where parameter i's move starts: the learning rate follows the settled batch."""
        if i != _LR or not coupling or out[_BATCH] == vals[_BATCH] or vals[_BATCH] <= 0.0:
            return cur
        start = cur * (out[_BATCH] / vals[_BATCH]) ** coupling
        return lo if start < lo else (hi if start > hi else start)

    def _settle(
        self, i: int, cur: float, target: float, lo: float, hi: float, *, keep: bool = True
    ) -> float:
        """Clamp target into [lo, hi], round integers, snap powers of two, humane rounding.

        Humane rounding (``multiple_of``, ``significant_digits``) applies to a value that
        changes, towards its current value (never past the proposed one); with ``keep`` a
        value that ends where it started stays as it is. ``keep=False`` (a value built
        from nothing, :meth:`denormalize`) rounds to the nearest humane value.
        """
        if target != target:  # NaN: keep current (clamped)
            target = cur
        v = lo if target < lo else (hi if target > hi else target)
        if not self._is_int[i]:
            digits = self._digits[i]
            if not digits or (keep and v == cur):
                return v
            return _humane_float(v, cur if keep else v, digits, lo, hi)
        if self._pow2[i]:
            cands = _pow2_in(lo, hi)
            if not cands:
                name = HYPERPARAMETER_NAMES[i]
                raise ConstraintViolation(
                    f"{name}: no power of two in the allowed range [{lo:g}, {hi:g}] "
                    f"around current {cur!r}; set {name} in config.ini to a power of two"
                )
            lv = math.log2(v) if v > 0 else -math.inf
            return float(min(cands, key=lambda p: abs(math.log2(p) - lv)))
        r = float(math.floor(v + 0.5))
        r = lo if r < lo else (hi if r > hi else r)
        m = self._mult[i]
        if m <= 1 or (keep and r == cur):
            return r
        return _humane_int(r, cur if keep else r, m, lo, hi)

    def _build(self, vals: list[float]) -> Hyperparameters:
        return Hyperparameters(
            batch_size=int(vals[0]),
            learning_rate=float(vals[1]),
            num_layers=int(vals[2]),
            epochs=int(vals[3]),
        )

    @staticmethod
    def _values(hp: Hyperparameters) -> list[float]:
        return [
            _float(hp.batch_size),
            _float(hp.learning_rate),
            _float(hp.num_layers),
            _float(hp.epochs),
        ]

    def apply_action(
        self,
        current: Hyperparameters,
        action: np.ndarray,
        *,
        learning_rate_follows_batch: float | None = None,
    ) -> Hyperparameters:
        """Map an action in [-1, 1]^len(tunable) to the next hyperparameters.

        ``learning_rate_follows_batch`` overrides these limits' coupling exponent (a
        policy is applied with the one it was trained with).

        Raises:
            ConstraintViolation: wrong action length, or current values that cannot be
                brought inside the bounds within one trust-region step.
        """
        acts = np.asarray(action, dtype=np.float64).ravel().tolist()
        if len(acts) != len(self._tunable_idx):
            raise ConstraintViolation(
                f"action has {len(acts)} entries but {len(self._tunable_idx)} parameters are "
                f"tunable ({', '.join(self._tunable)}); the policy does not match these "
                "constraints"
            )
        coupling = (
            self._lr_follows_batch
            if learning_rate_follows_batch is None
            else _check_coupling(learning_rate_follows_batch, "learning_rate_follows_batch")
        )
        vals = self._values(current)
        out = list(vals)
        # HYPERPARAMETER_NAMES order: batch size is settled before the learning rate reads it.
        for a, i in zip(acts, self._tunable_idx, strict=True):
            cur = vals[i]
            if not math.isfinite(cur):
                raise ConstraintViolation(
                    f"{HYPERPARAMETER_NAMES[i]}: current value {cur!r} is not finite; "
                    "fix config.ini (run `jpo check`)"
                )
            lo, hi = self._region(i, cur)
            if lo > hi:
                raise self._empty_region(i, cur)
            if not math.isfinite(a):
                a = 0.0
            elif a > 1.0:
                a = 1.0
            elif a < -1.0:
                a = -1.0
            start = self._coupled_start(i, cur, out, vals, lo, hi, coupling)
            edge = hi if a >= 0.0 else lo
            if self._is_log[i] and start > 0.0 and edge > 0.0:
                target = start * (edge / start) ** abs(a)
            else:
                target = start + abs(a) * (edge - start)
            out[i] = self._settle(i, cur, target, lo, hi)
        hp = self._build(out)
        self._check_bounds(out)
        return hp

    def action_towards(
        self,
        current: Hyperparameters,
        target: Hyperparameters,
        *,
        learning_rate_follows_batch: float | None = None,
        hold: Sequence[str] = (),
    ) -> np.ndarray:
        """Return the action that moves ``current`` as far towards ``target`` as one step may.

        The inverse of :meth:`apply_action`: ``apply_action(current, action)`` equals
        ``clamp(current, target)`` up to integer rounding, and with the coupling, when the
        target's learning rate lies inside the coupled step's region. Entries of ``hold``
        get action 0: their parameter keeps its current value, or, for the learning rate,
        only follows the batch size through the coupling.
        """
        coupling = (
            self._lr_follows_batch
            if learning_rate_follows_batch is None
            else _check_coupling(learning_rate_follows_batch, "learning_rate_follows_batch")
        )
        unknown = [n for n in hold if n not in HYPERPARAMETER_NAMES]
        if unknown:
            raise ConfigError(
                f"hold: unknown hyperparameter {unknown[0]!r}; known: "
                f"{', '.join(HYPERPARAMETER_NAMES)}"
            )
        vals, goal = self._values(current), self._values(target)
        out = list(vals)
        acts: list[float] = []
        for i in self._tunable_idx:
            cur = vals[i]
            lo, hi = self._region(i, cur)
            if lo > hi:
                raise self._empty_region(i, cur)
            start = self._coupled_start(i, cur, out, vals, lo, hi, coupling)
            t = goal[i]
            t = lo if t < lo else (hi if t > hi else t)
            edge = hi if t >= start else lo
            a = 0.0
            if HYPERPARAMETER_NAMES[i] not in hold and edge != start:
                if self._is_log[i] and start > 0.0 and t > 0.0:
                    a = math.log(t / start) / math.log(edge / start)
                else:
                    a = (t - start) / (edge - start)
                a = (1.0 if a > 1.0 else (0.0 if a < 0.0 else a)) * (1.0 if edge == hi else -1.0)
            if self._is_log[i] and start > 0.0 and edge > 0.0:
                moved = start * (edge / start) ** abs(a)
            else:
                moved = start + abs(a) * (edge - start)
            out[i] = self._settle(i, cur, moved, lo, hi)
            acts.append(a)
        return np.asarray(acts, dtype=np.float64)

    def clamp(self, current: Hyperparameters, proposed: Mapping[str, float]) -> Hyperparameters:
        """Clamp proposed values into bounds and trust region; round; keep frozen params.

        Missing or non-tunable names keep their current value; NaN keeps the current value;
        +/-Inf goes to the edge of the allowed region.

        Raises:
            ConstraintViolation: the current value cannot reach the bounds in one step.
            ConfigError: a proposed name is not a hyperparameter.
        """
        for k in proposed:
            if k not in HYPERPARAMETER_NAMES:
                raise ConfigError(
                    f"unknown hyperparameter {k!r}; known: {', '.join(HYPERPARAMETER_NAMES)}"
                )
        vals = self._values(current)
        out = list(vals)
        for i in self._tunable_idx:
            name = HYPERPARAMETER_NAMES[i]
            if name not in proposed:
                continue
            cur = vals[i]
            if not math.isfinite(cur):
                raise ConstraintViolation(
                    f"{name}: current value {cur!r} is not finite; fix config.ini"
                )
            lo, hi = self._region(i, cur)
            if lo > hi:
                raise self._empty_region(i, cur)
            try:
                target = float(proposed[name])
            except (TypeError, ValueError, OverflowError) as err:
                raise ConstraintViolation(
                    f"{name}: proposed value {proposed[name]!r} is not a number"
                ) from err
            out[i] = self._settle(i, cur, target, lo, hi)
        self._check_bounds(out)
        return self._build(out)

    def _check_bounds(self, vals: list[float]) -> None:
        for i, v in enumerate(vals):
            if not (self._lo[i] <= v <= self._hi[i]):
                self.validate(self._build_lenient(vals))
                return

    def _build_lenient(self, vals: list[float]) -> Hyperparameters:
        def _int(v: float) -> Any:
            return int(v) if math.isfinite(v) and v == int(v) else v

        return Hyperparameters(
            batch_size=_int(vals[0]),
            learning_rate=vals[1],
            num_layers=_int(vals[2]),
            epochs=_int(vals[3]),
        )

    # ----------------------------------------------------------------- validation
    def value_problem(self, name: str, value: float) -> str | None:
        """Return why one value breaks its own limits (type, finite, bounds, power of two)."""
        spec = self._specs[name]
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            return f"{name} = {_show(value)} is not a number; write a {spec.type}"
        v = _float(value)
        if not math.isfinite(v):
            return (
                f"{name} = {_show(value)} is not finite; "
                f"use a value in [{spec.min:g}, {spec.max:g}]"
            )
        if spec.type == "int" and v != math.floor(v):
            return f"{name} = {_show(value)} must be an integer; e.g. {math.floor(v + 0.5)}"
        if v < spec.min or v > spec.max:
            bound = f"below min {spec.min:g}" if v < spec.min else f"above max {spec.max:g}"
            return (
                f"{name} = {_show(value)} is {bound}; use a value in [{spec.min:g}, {spec.max:g}]"
            )
        if spec.power_of_two and not _is_pow2(v):
            p = min(_pow2_in(spec.min, spec.max), key=lambda p: abs(math.log2(p / v)))
            return f"{name} = {_show(value)} must be a power of two; e.g. {p}"
        return None

    def violations(self, hp: Hyperparameters, previous: Hyperparameters | None = None) -> list[str]:
        """Return one message per violated limit (empty when hp is valid)."""
        problems: list[str] = []
        prev_vals = self._values(previous) if previous is not None else None
        for i, name in enumerate(HYPERPARAMETER_NAMES):
            raw = getattr(hp, name)
            msg = self.value_problem(name, raw)
            if msg is not None:
                problems.append(msg)
                continue
            if prev_vals is None:
                continue
            v = _float(raw)
            cur = prev_vals[i]
            if name not in self._tunable:
                if v != cur:
                    problems.append(
                        f"{name} is frozen at {cur:g} but changed to {_show(raw)}; "
                        "keep it unchanged"
                    )
                continue
            if not math.isfinite(cur):
                continue
            lo, hi = self._region(i, cur)
            tol = _REL_TOL * max(abs(lo), abs(hi), 1e-300)
            if v < lo - tol or v > hi + tol:
                problems.append(
                    f"{name} changed from {cur:g} to {_show(raw)}, beyond the trust region "
                    f"[{lo:g}, {hi:g}] (factor {self._tr[i]:g}); move it in smaller steps"
                )
        return problems

    def validate(self, hp: Hyperparameters, previous: Hyperparameters | None = None) -> None:
        """Raise ConstraintViolation listing every violated limit (bounds, type, trust region).

        Raises:
            ConstraintViolation: hp breaks a limit; the message names param, value, bound, fix.
        """
        problems = self.violations(hp, previous)
        if problems:
            err = ConstraintViolation(f"{self._source}: " + "; ".join(problems))
            err.problems = problems  # type: ignore[attr-defined]
            raise err

    # ----------------------------------------------------------------- vectors
    def normalize(self, hp: Hyperparameters) -> np.ndarray:
        """Return each parameter mapped into [0, 1] (log scale where configured), float32.

        Uses these constraints' bounds; use the global (un-narrowed) constraints for
        policy observations so the meaning of a value does not vary between workloads.
        """
        vals = (hp.batch_size, hp.learning_rate, hp.num_layers, hp.epochs)
        out = [0.0, 0.0, 0.0, 0.0]
        for i in range(4):
            v = _float(vals[i])
            if self._is_log[i]:
                span = self._log_span[i]
                x = (math.log(v) - self._log_lo[i]) / span if span > 0 and v > 0 else 0.0
            else:
                span = self._span[i]
                x = (v - self._lo[i]) / span if span > 0 else 0.0
            out[i] = 0.0 if x != x or x < 0.0 else (1.0 if x > 1.0 else x)
        return np.array(out, dtype=np.float32)

    def denormalize(self, x: Sequence[float] | np.ndarray) -> Hyperparameters:
        """Map a [0, 1]^4 vector back to hyperparameters (rounded, inside bounds)."""
        xs = np.asarray(x, dtype=np.float64).ravel().tolist()
        if len(xs) != len(HYPERPARAMETER_NAMES):
            raise ConstraintViolation(
                f"expected {len(HYPERPARAMETER_NAMES)} normalized values, got {len(xs)}"
            )
        out = []
        for i, u in enumerate(xs):
            u = 0.0 if not math.isfinite(u) else min(max(u, 0.0), 1.0)
            if self._is_log[i]:
                v = math.exp(self._log_lo[i] + u * self._log_span[i])
            else:
                v = self._lo[i] + u * self._span[i]
            lo, hi = self._lo[i], self._hi[i]
            if self._is_int[i]:
                lo, hi = float(math.ceil(lo)), float(math.floor(hi))
            out.append(self._settle(i, v, v, lo, hi, keep=False))
        return self._build(out)

    def sample_uniform(
        self, rng: np.random.Generator, base: Hyperparameters | None = None
    ) -> Hyperparameters:
        """Draw a configuration uniformly in normalized space (log-uniform on log scales).

        Parameters that are not tunable keep ``base``'s value when ``base`` is given.
        """
        hp = self.denormalize(rng.random(len(HYPERPARAMETER_NAMES)))
        if base is None or not self._frozen_idx:
            return hp
        vals = self._values(hp)
        bvals = self._values(base)
        for i in self._frozen_idx:
            vals[i] = bvals[i]
        return self._build(vals)

    def relative_change(self, old: Hyperparameters, new: Hyperparameters) -> dict[str, float]:
        """Return ``new / old - 1`` per parameter (0 when equal; inf when old is 0)."""
        out: dict[str, float] = {}
        for name in HYPERPARAMETER_NAMES:
            o = _float(getattr(old, name))
            n = _float(getattr(new, name))
            if n == o:
                out[name] = 0.0
            elif o == 0.0:
                out[name] = math.inf
            else:
                out[name] = n / o - 1.0
        return out


def _narrow(base: ParamSpec, lim: ParamLimits, where: str) -> ParamSpec:
    """Return ``base`` narrowed by one parameter's ``[jpo]`` overrides (never widened)."""
    name = base.name
    new_min = base.min if lim.min is None else float(lim.min)
    new_max = base.max if lim.max is None else float(lim.max)
    new_tr = base.trust_region if lim.trust_region is None else float(lim.trust_region)
    if new_min < base.min or new_min > base.max:
        raise ConfigError(
            f"{where}: {name}_min = {new_min:g} is outside the global range "
            f"[{base.min:g}, {base.max:g}]; a workload may only narrow it"
        )
    if new_max > base.max or new_max < base.min:
        raise ConfigError(
            f"{where}: {name}_max = {new_max:g} is outside the global range "
            f"[{base.min:g}, {base.max:g}]; a workload may only narrow it"
        )
    if new_tr > base.trust_region:
        raise ConfigError(
            f"{where}: {name}_trust_region = {new_tr:g} widens the global "
            f"{base.trust_region:g}; use a value in (1, {base.trust_region:g}]"
        )
    pow2 = base.power_of_two
    if lim.power_of_two is not None:
        if base.power_of_two and not lim.power_of_two:
            raise ConfigError(
                f"{where}: {name}_power_of_two = false would widen the global "
                "power_of_two = true; remove the override"
            )
        pow2 = bool(lim.power_of_two)
    mult = base.multiple_of if lim.multiple_of is None else lim.multiple_of
    if lim.multiple_of is not None and base.type != "int":
        raise ConfigError(f"{where}: {name}_multiple_of applies to integers only; remove it")
    if isinstance(mult, bool) or not isinstance(mult, int) or mult < 1:
        raise ConfigError(
            f"{where}: {name}_multiple_of = {mult!r}; use an integer >= 1 (1 = no rounding)"
        )
    return replace(
        base, min=new_min, max=new_max, power_of_two=pow2, trust_region=new_tr, multiple_of=mult
    )


def _spec_payload(spec: ParamSpec) -> dict[str, Any]:
    """Return a spec as a dict for hashing; humane rounding only when on (old hashes stay)."""
    out = asdict(spec)
    if spec.multiple_of == 1:
        del out["multiple_of"]
    if spec.significant_digits == 0:
        del out["significant_digits"]
    return out


def _check_coupling(value: object, where: str) -> float:
    """Return the coupling exponent as a float, or raise ConfigError unless in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"{where}: learning_rate_follows_batch = {value!r}; use a number in [0, 1] "
            "(1 = linear scaling rule, 0.5 = square-root rule, 0 = off)"
        )
    return float(value)


class _ParamTable(Settings):
    """One ``[params.<name>]`` table; values are checked by ``_check_spec`` (its messages)."""

    type: Any
    min: Any
    max: Any
    scale: Any
    trust_region: Any
    power_of_two: Any = False
    multiple_of: Any = 1
    significant_digits: Any = 0


class _ConstraintsFile(Settings):
    """The whole of constraints.toml: ``[params.*]`` and ``[action]``."""

    params: dict[str, _ParamTable]
    action: Any = Field(default_factory=dict)


def _spec_from_table(name: str, table: _ParamTable, where: str) -> ParamSpec:
    """Return one parameter's limits (its values are checked by the Constraints)."""
    if not isinstance(table.power_of_two, bool):
        raise ConfigError(f"{where}: [params.{name}] power_of_two must be true or false")
    return ParamSpec(name=name, **table.model_dump())


def _action_coupling(action: Any, where: str) -> float:
    """Return ``[action] learning_rate_follows_batch`` (0 when absent), checked."""
    if not isinstance(action, dict) or set(action) - _ACTION_KEYS:
        raise ConfigError(
            f"{where}: [action] must be a table with only {sorted(_ACTION_KEYS)}; see "
            "configs/constraints.toml"
        )
    return _check_coupling(action.get("learning_rate_follows_batch", 0.0), f"{where} [action]")


def load_constraints(path: str | os.PathLike[str] | None = None) -> Constraints:
    """Load limits from a TOML file (default: ``constraints.toml`` in :func:`config_dir`).

    Raises:
        ConfigError: the file is missing, not TOML, or its limits are inconsistent.
    """
    p = config_file("constraints.toml", path)
    raw = load_settings(_ConstraintsFile, "constraints.toml", p)
    specs = {name: _spec_from_table(name, t, str(p)) for name, t in raw.params.items()}
    return Constraints(
        specs,
        HYPERPARAMETER_NAMES,
        source=str(p),
        learning_rate_follows_batch=_action_coupling(raw.action, str(p)),
    )
