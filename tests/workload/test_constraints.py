from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jpo.errors import ConfigError, ConstraintViolation
from jpo.workload.config_file import JpoSection
from jpo.workload.constraints import Constraints, ParamLimits, load_constraints
from jpo.workload.types import HYPERPARAMETER_NAMES, Hyperparameters

BASE = Hyperparameters(batch_size=128, learning_rate=0.01, num_layers=18, epochs=30)


@pytest.fixture(scope="module")
def limits() -> Constraints:
    return load_constraints()


def _toml(
    tmp_path: Path,
    coupling: float | None = 1.0,
    humane: bool = True,
    **overrides: dict[str, object],
) -> Path:
    """Write a constraints file like the shipped one; humane=False drops humane rounding."""
    tables: dict[str, dict[str, object]] = {
        "batch_size": {"type": "int", "min": 1, "max": 4096, "scale": "log", "trust_region": 2.0},
        "learning_rate": {
            "type": "float",
            "min": 1e-4,
            "max": 0.1,
            "scale": "log",
            "trust_region": 3.0,
        },
        "num_layers": {"type": "int", "min": 1, "max": 256, "scale": "linear", "trust_region": 1.5},
        "epochs": {"type": "int", "min": 1, "max": 1000, "scale": "linear", "trust_region": 1.5},
    }
    if humane:  # the shipped file's humane values (issue 29)
        tables["batch_size"]["multiple_of"] = 8
        tables["learning_rate"]["significant_digits"] = 3
    for name, upd in overrides.items():
        tables[name] = {**tables[name], **upd}
    lines = []
    for name, t in tables.items():
        lines.append(f"[params.{name}]")
        for k, v in t.items():
            lines.append(f"{k} = {v!r}".replace("'", '"').replace("True", "true"))
    if coupling is not None:  # the shipped file's [action] table
        lines += ["[action]", f"learning_rate_follows_batch = {coupling!r}"]
    p = tmp_path / "constraints.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


# ------------------------------------------------------------------ loading
def test_defaults_follow_the_spec(limits: Constraints) -> None:
    bs, lr, nl, ep = (limits.spec(n) for n in HYPERPARAMETER_NAMES)
    assert (bs.type, bs.min, bs.max, bs.scale, bs.trust_region) == ("int", 1, 4096, "log", 2.0)
    assert (lr.type, lr.min, lr.max, lr.scale) == ("float", 0.0001, 0.1, "log")
    assert (nl.type, nl.min) == ("int", 1) and nl.max < 10_000
    assert (ep.type, ep.min) == ("int", 1) and ep.max < 10_000
    assert limits.tunable == HYPERPARAMETER_NAMES


def test_config_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toml(tmp_path, epochs={"max": 77})
    monkeypatch.setenv("JPO_CONFIG_DIR", str(tmp_path))
    assert load_constraints().spec("epochs").max == 77


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"epochs": {"scale": "cubic"}}, "scale"),
        ({"epochs": {"min": 10, "max": 5}}, "exceeds max"),
        ({"epochs": {"trust_region": 1.0}}, "must be > 1"),
        ({"learning_rate": {"min": 0.0}}, "must be > 0 on a log scale"),
        ({"learning_rate": {"power_of_two": True}}, "power_of_two needs type"),
        ({"batch_size": {"power_of_two": True, "min": 100, "max": 120}}, "no power of two"),
        ({"batch_size": {"power_of_two": True, "trust_region": 1.5}}, "trust_region >= 2"),
        ({"batch_size": {"maximum": 3}}, "unknown key"),
        ({"epochs": {"max": float("inf")}}, "finite"),
    ],
)
def test_bad_constraints_files_are_rejected(
    tmp_path: Path, override: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_constraints(_toml(tmp_path, **override))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_constraints(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[params.epochs\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_constraints(bad)
    partial = tmp_path / "partial.toml"
    partial.write_text(
        '[params.epochs]\ntype="int"\nmin=1\nmax=3\nscale="linear"\ntrust_region=2\n'
    )
    with pytest.raises(ConfigError, match=r"no \[params.batch_size\]"):
        load_constraints(partial)


# ------------------------------------------------------------------ narrowing
def test_for_workload_narrows_and_freezes(limits: Constraints) -> None:
    jpo = JpoSection(
        tunable=("batch_size", "learning_rate"),
        frozen=("num_layers", "epochs"),
        limits={"batch_size": ParamLimits(min=32, max=512, power_of_two=True)},
    )
    narrow = limits.for_workload(jpo)
    assert narrow.tunable == ("batch_size", "learning_rate")
    assert narrow.frozen == ("num_layers", "epochs")
    assert (narrow.spec("batch_size").min, narrow.spec("batch_size").max) == (32, 512)
    assert narrow.spec("batch_size").power_of_two
    assert narrow.sha256() != limits.sha256()
    nxt = narrow.apply_action(BASE, np.array([1.0, 1.0]))
    assert nxt.batch_size == 256 and nxt.num_layers == BASE.num_layers and nxt.epochs == BASE.epochs
    with pytest.raises(ConstraintViolation, match="frozen"):
        narrow.validate(Hyperparameters(128, 0.01, 19, 30), previous=BASE)


@pytest.mark.parametrize(
    ("lim", "message"),
    [
        (ParamLimits(max=8192), "only narrow"),
        (ParamLimits(min=0), "only narrow"),
        (ParamLimits(trust_region=4.0), "widens"),
    ],
)
def test_for_workload_never_widens(limits: Constraints, lim: ParamLimits, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        limits.for_workload(JpoSection(limits={"batch_size": lim}))


def test_power_of_two_cannot_be_switched_off(tmp_path: Path) -> None:
    c = load_constraints(_toml(tmp_path, batch_size={"power_of_two": True}))
    with pytest.raises(ConfigError, match="widen"):
        c.for_workload(JpoSection(limits={"batch_size": ParamLimits(power_of_two=False)}))


# ------------------------------------------------------------------ action mapping
def test_full_actions_reach_the_trust_region_edges(limits: Constraints, tmp_path: Path) -> None:
    raw = load_constraints(_toml(tmp_path, humane=False))  # no humane rounding: exact edges
    up = raw.apply_action(BASE, np.ones(4))
    down = raw.apply_action(BASE, -np.ones(4))
    assert up == Hyperparameters(256, pytest.approx(0.03), 27, 45)
    assert down == Hyperparameters(64, pytest.approx(0.01 / 3), 12, 20)
    assert raw.apply_action(BASE, np.zeros(4)) == BASE
    # the shipped file rounds the learning rate to 3 digits towards the inside of the region
    assert limits.apply_action(BASE, np.ones(4)) == Hyperparameters(256, 0.03, 27, 45)
    assert limits.apply_action(BASE, -np.ones(4)) == Hyperparameters(64, 0.00334, 12, 20)
    assert limits.apply_action(BASE, np.zeros(4)) == BASE


def test_log_scale_float_moves_by_factor_power(limits: Constraints, tmp_path: Path) -> None:
    raw = load_constraints(_toml(tmp_path, humane=False))
    hp = raw.apply_action(BASE, np.array([0.0, 0.5, 0.0, 0.0]))
    assert hp.learning_rate == pytest.approx(0.01 * 3**0.5)
    assert limits.apply_action(BASE, np.array([0.0, 0.5, 0.0, 0.0])).learning_rate == 0.0173


def test_nan_inf_and_huge_entries(limits: Constraints) -> None:
    hp = limits.apply_action(BASE, np.array([np.nan, np.inf, -np.inf, 1e300]))
    assert hp.batch_size == 128 and hp.learning_rate == 0.01 and hp.num_layers == 18
    assert hp.epochs == 45  # 1e300 clips to +1


def test_integer_at_one_can_still_move(limits: Constraints) -> None:
    one = Hyperparameters(1, 0.01, 1, 1)
    up = limits.apply_action(one, np.ones(4))
    assert (up.batch_size, up.num_layers, up.epochs) == (2, 2, 2)
    down = limits.apply_action(one, -np.ones(4))
    assert (down.batch_size, down.num_layers, down.epochs) == (1, 1, 1)


def test_bounds_win_over_the_trust_region(limits: Constraints) -> None:
    top = Hyperparameters(4096, 0.1, 256, 1000)
    assert limits.apply_action(top, np.ones(4)) == top


def test_power_of_two_rounding(tmp_path: Path) -> None:
    c = load_constraints(_toml(tmp_path, batch_size={"power_of_two": True}))
    hp = c.apply_action(Hyperparameters(100, 0.01, 18, 30), np.array([0.1, 0, 0, 0]))
    assert hp.batch_size == 128
    assert c.apply_action(BASE, np.array([0.4, 0, 0, 0])).batch_size == 128
    assert c.apply_action(BASE, np.array([0.6, 0, 0, 0])).batch_size == 256


def test_wrong_action_length(limits: Constraints) -> None:
    with pytest.raises(ConstraintViolation, match="action has 3 entries"):
        limits.apply_action(BASE, np.zeros(3))


def test_current_far_outside_bounds_is_rejected(limits: Constraints) -> None:
    with pytest.raises(ConstraintViolation, match="learning_rate"):
        limits.apply_action(Hyperparameters(128, 5.0, 18, 30), np.zeros(4))


# ------------------------------------------------------------------ clamp / validate
def test_clamp_limits_and_rounds(limits: Constraints, tmp_path: Path) -> None:
    proposed = {"batch_size": 10_000, "learning_rate": -1.0, "epochs": 33.4}
    raw = load_constraints(_toml(tmp_path, humane=False))
    assert raw.clamp(BASE, proposed) == Hyperparameters(256, pytest.approx(0.01 / 3), 18, 33)
    hp = limits.clamp(BASE, proposed)
    assert hp == Hyperparameters(256, 0.00334, 18, 33)  # 3 digits, inside [0.01/3, 0.03]
    assert limits.clamp(BASE, {"learning_rate": math.nan}) == BASE
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        limits.clamp(BASE, {"momentum": 0.9})


def test_validate_names_param_value_bound_and_fix(limits: Constraints) -> None:
    with pytest.raises(ConstraintViolation) as info:
        limits.validate(Hyperparameters(0, 0.5, 18, 30))
    msg = str(info.value)
    assert "batch_size = 0 is below min 1" in msg
    assert "learning_rate = 0.5 is above max 0.1" in msg
    assert "use a value in [0.0001, 0.1]" in msg
    with pytest.raises(ConstraintViolation, match="beyond the trust region"):
        limits.validate(Hyperparameters(1024, 0.01, 18, 30), previous=BASE)
    with pytest.raises(ConstraintViolation, match="not finite"):
        limits.validate(Hyperparameters(128, math.inf, 18, 30))
    limits.validate(BASE, previous=BASE)


def test_absurd_values_are_rejected(limits: Constraints) -> None:
    with pytest.raises(ConstraintViolation, match="epochs"):
        limits.validate(Hyperparameters(128, 0.01, 18, 10**400))


# ------------------------------------------------------------------ vectors
def test_normalize_and_denormalize(limits: Constraints) -> None:
    lo = Hyperparameters(1, 1e-4, 1, 1)
    hi = Hyperparameters(4096, 0.1, 256, 1000)
    assert limits.normalize(lo).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert limits.normalize(hi).tolist() == [1.0, 1.0, 1.0, 1.0]
    x = limits.normalize(BASE)
    assert x.dtype == np.float32
    assert x[0] == pytest.approx(math.log(128) / math.log(4096))  # log scale
    assert limits.denormalize(x) == Hyperparameters(128, pytest.approx(0.01, rel=1e-5), 18, 30)
    assert limits.normalize(Hyperparameters(10**6, 5.0, -3, 10**9)).tolist() == [1, 1, 0, 1]


def test_sample_uniform_is_valid_and_keeps_frozen(limits: Constraints) -> None:
    rng = np.random.default_rng(0)
    narrow = limits.for_workload(JpoSection(tunable=("batch_size",), frozen=("learning_rate",)))
    for _ in range(200):
        limits.validate(limits.sample_uniform(rng))
        hp = narrow.sample_uniform(rng, base=BASE)
        assert (hp.learning_rate, hp.num_layers, hp.epochs) == (0.01, 18, 30)


def test_sha256_is_stable(tmp_path: Path, limits: Constraints) -> None:
    again = load_constraints(_toml(tmp_path))
    assert again.sha256() == limits.sha256() and again == limits
    other = load_constraints(_toml(tmp_path, epochs={"max": 999}))
    assert other.sha256() != limits.sha256()
    uncoupled = load_constraints(_toml(tmp_path, coupling=0.0))
    assert uncoupled.sha256() != limits.sha256()
    # Without an [action] table the coupling is off and the hash is the pre-coupling one.
    assert load_constraints(_toml(tmp_path, coupling=None)).sha256() == uncoupled.sha256()


# ------------------------------------------------------------------ lr follows batch
def test_learning_rate_follows_batch_size(tmp_path: Path) -> None:
    """Linear scaling rule: a batch move drags the lr along before the lr's own entry."""
    coupled = load_constraints(_toml(tmp_path, coupling=1.0, humane=False))
    assert coupled.learning_rate_follows_batch == 1.0
    hp = coupled.apply_action(BASE, np.array([1.0, 0.0, 0.0, 0.0]))  # batch x2, lr entry 0
    assert (hp.batch_size, hp.learning_rate) == (256, pytest.approx(0.02))
    hp = coupled.apply_action(BASE, np.array([-1.0, 0.0, 0.0, 0.0]))
    assert (hp.batch_size, hp.learning_rate) == (64, pytest.approx(0.005))
    # The lr entry then moves from the coupled value, still inside the lr's trust region.
    hp = coupled.apply_action(BASE, np.array([1.0, 1.0, 0.0, 0.0]))
    assert hp.learning_rate == pytest.approx(0.03)  # x2 then towards x3 = the region's edge
    hp = coupled.apply_action(BASE, np.array([1.0, -1.0, 0.0, 0.0]))
    assert hp.learning_rate == pytest.approx(0.01 / 3)
    # The square-root rule, and the override a policy's manifest passes.
    hp = coupled.apply_action(BASE, np.array([1.0, 0.0, 0.0, 0.0]), learning_rate_follows_batch=0.5)
    assert hp.learning_rate == pytest.approx(0.01 * math.sqrt(2))
    off = coupled.apply_action(BASE, np.array([1.0, 0.0, 0.0, 0.0]), learning_rate_follows_batch=0)
    assert (off.batch_size, off.learning_rate) == (256, 0.01)
    # A frozen learning rate is never dragged along; at the lr's upper bound it stays there.
    narrow = coupled.for_workload(JpoSection(tunable=("batch_size",), frozen=("learning_rate",)))
    assert narrow.learning_rate_follows_batch == 1.0
    assert narrow.apply_action(BASE, np.array([1.0])).learning_rate == 0.01
    top = Hyperparameters(128, 0.1, 18, 30)
    assert coupled.apply_action(top, np.array([1.0, 0.0, 0.0, 0.0])).learning_rate == 0.1


@pytest.mark.parametrize("bad", [-0.5, 1.5, "1", True])
def test_learning_rate_follows_batch_is_checked(tmp_path: Path, bad: object) -> None:
    p = _toml(tmp_path, coupling=None)
    p.write_text(p.read_text() + f"[action]\nlearning_rate_follows_batch = {json.dumps(bad)}\n")
    with pytest.raises(ConfigError, match="learning_rate_follows_batch"):
        load_constraints(p)


def test_unknown_action_key_is_rejected(tmp_path: Path) -> None:
    p = _toml(tmp_path, coupling=None)
    p.write_text(p.read_text() + "[action]\nlr_follows = 1.0\n")
    with pytest.raises(ConfigError, match=r"\[action\] must be a table with only"):
        load_constraints(p)


def test_relative_change(limits: Constraints) -> None:
    change = limits.relative_change(BASE, Hyperparameters(256, 0.005, 18, 30))
    assert change == {"batch_size": 1.0, "learning_rate": -0.5, "num_layers": 0.0, "epochs": 0.0}


# ------------------------------------------------------------------ properties
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
ACTIONS = st.lists(
    st.one_of(FLOATS, st.floats(-1, 1), st.sampled_from([1e308, -1e308, 0.0])),
    min_size=4,
    max_size=4,
)
CURRENT = st.builds(
    Hyperparameters,
    batch_size=st.one_of(st.integers(-10, 10_000), st.integers(1, 4096)),
    learning_rate=st.one_of(FLOATS, st.floats(1e-4, 0.1)),
    num_layers=st.one_of(st.integers(-5, 1000), st.integers(1, 256)),
    epochs=st.one_of(st.integers(-5, 10**6), st.integers(1, 1000)),
)
VALID_CURRENT = st.builds(
    Hyperparameters,
    batch_size=st.integers(1, 4096),
    learning_rate=st.floats(1e-4, 0.1),
    num_layers=st.integers(1, 256),
    epochs=st.integers(1, 1000),
)


def _narrowed(limits: Constraints, pow2: bool) -> Constraints:
    return limits.for_workload(
        JpoSection(
            tunable=("batch_size", "learning_rate", "epochs"),
            frozen=("num_layers",),
            limits={"batch_size": ParamLimits(min=8, max=1024, power_of_two=pow2)},
        )
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(current=CURRENT, action=ACTIONS, which=st.sampled_from(["global", "narrow", "pow2"]))
def test_any_action_ends_inside_bounds_and_trust_region_or_is_rejected(
    current: Hyperparameters, action: list[float], which: str
) -> None:
    limits = load_constraints()
    if which != "global":
        limits = _narrowed(limits, which == "pow2")
    vec = np.array(action[: len(limits.tunable)], dtype=np.float64)
    try:
        nxt = limits.apply_action(current, vec)
    except ConstraintViolation:
        return
    limits.validate(nxt, previous=current)  # inside bounds, trust region, frozen unchanged


@settings(max_examples=300, deadline=None)
@given(current=VALID_CURRENT, action=ACTIONS)
def test_valid_current_is_never_rejected(current: Hyperparameters, action: list[float]) -> None:
    limits = load_constraints()
    nxt = limits.apply_action(current, np.array(action))
    limits.validate(nxt, previous=current)
    assert np.all((limits.normalize(nxt) >= 0) & (limits.normalize(nxt) <= 1))


@settings(max_examples=300, deadline=None)
@given(
    current=CURRENT,
    proposed=st.dictionaries(st.sampled_from(HYPERPARAMETER_NAMES), FLOATS, max_size=4),
)
def test_any_clamp_ends_valid_or_is_rejected(
    current: Hyperparameters, proposed: dict[str, float]
) -> None:
    limits = load_constraints()
    try:
        nxt = limits.clamp(current, proposed)
    except ConstraintViolation:
        return
    limits.validate(nxt, previous=current)


def _close(a: Hyperparameters, b: Hyperparameters) -> bool:
    """Equal up to integer rounding at a .5 boundary and float round-off."""
    return (
        abs(a.batch_size - b.batch_size) <= 1
        and abs(a.num_layers - b.num_layers) <= 1
        and abs(a.epochs - b.epochs) <= 1
        and math.isclose(a.learning_rate, b.learning_rate, rel_tol=1e-9)
    )


@settings(max_examples=300, deadline=None)
@given(current=VALID_CURRENT, target=VALID_CURRENT)
def test_action_towards_inverts_apply_action(
    current: Hyperparameters, target: Hyperparameters
) -> None:
    limits = load_constraints()
    action = limits.action_towards(current, target, learning_rate_follows_batch=0.0)
    assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
    moved = limits.apply_action(current, action, learning_rate_follows_batch=0.0)
    assert _close(moved, limits.clamp(current, target.as_dict()))


@pytest.fixture(scope="module")
def raw_limits(tmp_path_factory: pytest.TempPathFactory) -> Constraints:
    """The shipped limits without humane rounding (exact mapping properties)."""
    return load_constraints(_toml(tmp_path_factory.mktemp("raw"), humane=False))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(current=VALID_CURRENT, target=VALID_CURRENT, humane=st.booleans())
def test_action_towards_with_coupling_and_held_learning_rate(
    current: Hyperparameters, target: Hyperparameters, humane: bool, raw_limits: Constraints
) -> None:
    # learning_rate_follows_batch = 1 (linear scaling rule) in both files
    limits = load_constraints() if humane else raw_limits
    action = limits.action_towards(current, target, hold=("learning_rate",))
    assert action[1] == 0.0
    moved = limits.apply_action(current, action)
    lo, hi = current.learning_rate / 3.0, current.learning_rate * 3.0
    follows = current.learning_rate * moved.batch_size / current.batch_size
    follows = min(max(follows, lo, 1e-4), hi, 0.1)
    if not humane or moved.batch_size == current.batch_size:
        assert moved.learning_rate == pytest.approx(follows, rel=1e-9)
    else:  # within one unit of the third significant digit, inside the region
        unit = 10.0 ** (math.floor(math.log10(follows)) - 2)
        assert abs(moved.learning_rate - follows) <= unit * (1 + 1e-9)
        assert max(lo, 1e-4) * (1 - 1e-12) <= moved.learning_rate <= min(hi, 0.1) * (1 + 1e-12)
    tol = 8 if humane else 1  # a +-1 rounding difference may snap to the next multiple of 8
    assert abs(moved.batch_size - limits.clamp(current, target.as_dict()).batch_size) <= tol


def test_action_towards_reaches_a_target_inside_one_step(limits: Constraints) -> None:
    current = Hyperparameters(batch_size=64, learning_rate=0.01, num_layers=10, epochs=10)
    target = Hyperparameters(batch_size=128, learning_rate=0.02, num_layers=12, epochs=8)
    action = limits.action_towards(current, target)
    assert action[0] == pytest.approx(1.0)  # x2 is the batch's whole trust region
    assert action[1] == pytest.approx(0.0)  # the coupling already doubled the learning rate
    assert limits.apply_action(current, action) == target
    far = Hyperparameters(batch_size=4096, learning_rate=0.1, num_layers=200, epochs=1)
    assert limits.action_towards(current, far).tolist() == [1.0, 1.0, 1.0, -1.0]
    with pytest.raises(ConfigError, match="hold: unknown hyperparameter 'depth'"):
        limits.action_towards(current, target, hold=("depth",))


# ------------------------------------------------------------------ humane values (issue 29)
def _three_digits(v: float) -> bool:
    return float(f"{v:.2e}") == v


def _unit(v: float) -> float:
    """One unit of the third significant digit of v."""
    return 10.0 ** (math.floor(math.log10(v)) - 2)


def _between(cur: float, new: float, raw: float) -> bool:
    """new moved from cur towards raw and not past it (or stayed when raw did).

    raw is read at 12 significant digits: 0.09999999999999999 is 0.1 plus float round-off.
    """
    raw = float(f"{raw:.12e}")
    if new == cur and float(f"{cur:.12e}") == raw:  # raw is cur, maybe plus round-off
        return True
    return (cur < new <= raw) or (raw <= new < cur)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(current=VALID_CURRENT, action=ACTIONS)
def test_changed_values_are_humane_on_gpu_workloads(
    current: Hyperparameters, action: list[float], raw_limits: Constraints
) -> None:
    limits = load_constraints()  # GPU is the default device
    nxt = limits.apply_action(current, np.array(action))
    limits.validate(nxt, previous=current)
    raw = raw_limits.apply_action(current, np.array(action))  # the same move, unrounded
    b0, b1, braw = current.batch_size, nxt.batch_size, raw.batch_size
    assert _between(b0, b1, braw) or b1 == b0 == braw, (b0, b1, braw)
    if b1 != b0 and any(m % 8 == 0 and _between(b0, m, braw) for m in range(1, 4097)):
        assert b1 % 8 == 0, (b0, b1, braw)  # a multiple of 8 whenever one lies on the way
    if b1 == b0:  # the batch held: the learning rate made the same move as unrounded
        lr0, lr1, lraw = current.learning_rate, nxt.learning_rate, raw.learning_rate
        assert lr1 == lr0 == lraw or _between(lr0, lr1, lraw), (lr0, lr1, lraw)
        if abs(lraw - lr0) >= _unit(lraw):  # moved by at least one unit of the 3rd digit
            assert _three_digits(lr1), (lr0, lr1, lraw)
    clamped = limits.clamp(current, nxt.as_dict())
    assert clamped == nxt  # a humane value is a fixed point of the constraints


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(current=VALID_CURRENT, target=VALID_CURRENT)
def test_clamp_is_humane_and_keeps_unchanged_values(
    current: Hyperparameters, target: Hyperparameters, raw_limits: Constraints
) -> None:
    limits = load_constraints()
    out = limits.clamp(current, target.as_dict())
    limits.validate(out, previous=current)
    raw = raw_limits.clamp(current, target.as_dict())
    lr0, lr1, lraw = current.learning_rate, out.learning_rate, raw.learning_rate
    assert _between(lr0, lr1, lraw), (lr0, lr1, lraw)
    if abs(lraw - lr0) >= _unit(lraw):  # moved by at least one unit of the 3rd digit
        assert _three_digits(lr1), (lr0, lr1, lraw)
    assert _between(current.batch_size, out.batch_size, raw.batch_size)
    same = limits.clamp(current, current.as_dict())
    assert same == current  # values JPO does not change keep the digits the user wrote


def test_humane_rounding_examples_from_the_issue(limits: Constraints) -> None:
    ugly = Hyperparameters(75, 0.0056778196851100735, 18, 30)
    assert limits.apply_action(ugly, np.zeros(4)) == ugly  # nothing changes: nothing rounded
    hp = limits.apply_action(ugly, np.array([0.1, 0.2, 0.0, 0.0]))
    assert hp.batch_size == 80 and _three_digits(hp.learning_rate)
    # rounded towards the current value: never past what was proposed
    hp = limits.clamp(BASE, {"batch_size": 253, "learning_rate": 0.037021264874651134})
    assert (hp.batch_size, hp.learning_rate) == (248, 0.0300)  # lr clamped to x3, then 3 digits
    hp = limits.clamp(BASE, {"batch_size": 75, "learning_rate": 0.0056778196851100735})
    assert (hp.batch_size, hp.learning_rate) == (80, 0.00568)
    hp = limits.clamp(BASE, {"batch_size": 131, "learning_rate": 0.0123456})
    assert (hp.batch_size, hp.learning_rate) == (131, 0.0123)  # no multiple in (128, 131]


def test_cpu_workloads_and_jpo_overrides_choose_the_batch_rounding(limits: Constraints) -> None:
    cpu = limits.for_workload(JpoSection(device="cpu"))
    assert cpu.spec("batch_size").multiple_of == 1
    assert cpu.clamp(BASE, {"batch_size": 75}).batch_size == 75
    assert cpu.clamp(BASE, {"learning_rate": 0.0123456}).learning_rate == 0.0123  # digits stay
    off = limits.for_workload(
        JpoSection(limits={"batch_size": ParamLimits(multiple_of=1)}, device="gpu")
    )
    assert off.clamp(BASE, {"batch_size": 75}).batch_size == 75
    cpu16 = limits.for_workload(
        JpoSection(limits={"batch_size": ParamLimits(multiple_of=16)}, device="cpu")
    )
    assert cpu16.clamp(BASE, {"batch_size": 75}).batch_size == 80
    assert cpu16.clamp(BASE, {"batch_size": 200}).batch_size == 192
    pow2 = limits.for_workload(JpoSection(limits={"batch_size": ParamLimits(power_of_two=True)}))
    assert pow2.clamp(BASE, {"batch_size": 200}).batch_size == 256  # power of two wins
    assert limits.for_workload(JpoSection(device="gpu")).sha256() == limits.sha256()
    assert cpu.sha256() != limits.sha256()
    with pytest.raises(ConfigError, match="multiple_of applies to integers"):
        limits.for_workload(JpoSection(limits={"learning_rate": ParamLimits(multiple_of=8)}))


def test_no_multiple_in_the_region_falls_back_to_plain_rounding(limits: Constraints) -> None:
    one = Hyperparameters(1, 0.01, 18, 30)
    assert limits.apply_action(one, np.array([1.0, 0, 0, 0])).batch_size == 2
    narrow = limits.for_workload(JpoSection(limits={"batch_size": ParamLimits(min=9, max=15)}))
    assert narrow.clamp(Hyperparameters(12, 0.01, 18, 30), {"batch_size": 14}).batch_size == 14


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"learning_rate": {"multiple_of": 8}}, 'multiple_of needs type = "int"'),
        ({"batch_size": {"significant_digits": 3}}, 'significant_digits needs type = "float"'),
        ({"batch_size": {"multiple_of": 0}}, "use an integer >= 1"),
        ({"learning_rate": {"significant_digits": 40}}, r"in \[0, 15\]"),
    ],
)
def test_bad_humane_settings_are_rejected(
    tmp_path: Path, override: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_constraints(_toml(tmp_path, **override))


def test_shipped_file_states_the_humane_settings(limits: Constraints) -> None:
    assert limits.spec("batch_size").multiple_of == 8
    assert limits.spec("learning_rate").significant_digits == 3
    text = (Path(__file__).parents[2] / "configs" / "constraints.toml").read_text()
    assert "multiple_of = 8" in text and "significant_digits = 3" in text


def test_config_ini_multiple_of_override_is_parsed(limits: Constraints) -> None:
    from jpo.workload.config_file import check_workload_text

    head = "[workload]\ndataset = d\nmodel = m\nframework = pytorch\n[hyperparameters]\n"
    hps = "batch_size = 75\nlearning_rate = 0.01\nnum_layers = 2\nepochs = 3\n"
    text = head + hps + "[jpo]\nbatch_size_multiple_of = 1\n"
    report = check_workload_text(text, "c.ini", limits)
    assert report.ok and report.workload is not None
    eff = limits.for_workload(report.workload.jpo)
    assert eff.clamp(report.workload.hyperparameters, {"batch_size": 77}).batch_size == 77
    bad = check_workload_text(head + hps + "[jpo]\nbatch_size_multiple_of = 2.5\n", "c.ini", limits)
    assert not bad.ok and "batch_size_multiple_of" in str(bad.problems[0].to_dict())
