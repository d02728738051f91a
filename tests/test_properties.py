"""Property-based tests (hypothesis) over configs, start hours, actions and multipliers.

Any input either works and keeps the invariants of the dynamics, or raises ``ValueError``/``TypeError`` with a
one-line message naming the field (or the agent): never another exception, never a silent NaN.

Invariants checked after every step (docs/model.md):

* energy balance per agent: ``B_{t+1} - B_t = d_t - e_bat - e_grid`` (= ``r2``), with ``e_bat, e_grid >= 0`` and
  ``e_bat + e_grid <= d_t + B_t`` (nothing is served twice);
* state of charge in [0, 1], solar to the battery in [0, solar];
* backlog non-negative;
* every observation and signal finite; the episode's hours stay inside the data window.

The examples are derandomised (the same ones on every run) and the database is off: hermetic and repeatable.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the property tests need hypothesis (the [test-base] extra)")

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cmarl_env import EnvConfig  # noqa: E402
from cmarl_env.config import MULTIPLIER_MODES, REWARDS, SPLITS  # noqa: E402
from cmarl_env.core import ActionTypeError, DemandResponseCore, NonFiniteActionError  # noqa: E402

PROPERTY = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much])
TOL = 1e-9

# values of the wrong type for any field: strings (also numeric ones), complex, containers, huge ints, objects
junk = st.one_of(
    st.text(max_size=4), st.sampled_from(["0.3", "7", "", "nan", b"1"]), st.complex_numbers(max_magnitude=10),
    st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([10**400, -(10**400), object(), math.nan, math.inf, -math.inf, True, 1.5]),
).map(lambda v: v)  # one branch where it is combined with valid values (``one_of`` would flatten its branches)
reals = st.floats(allow_nan=True, allow_infinity=True)


def or_junk(valid):
    """``valid`` in four examples of five, a value of a wrong type in the fifth (shrinks towards ``valid``)."""
    return st.integers(0, 4).flatmap(lambda k: junk if k == 4 else valid)
small_reals = st.floats(-3.0, 30.0)

# plausible values of every field (some still out of range) ...
CONFIG_FIELDS = {
    "n_agents": st.integers(-2, 40),
    "dataset": st.just("citylearn_challenge_2022_phase_all"),
    "buildings": st.one_of(st.none(), st.tuples(st.integers(-1, 18)), st.lists(st.integers(0, 17), max_size=3).map(tuple)),
    "demand_scales": st.one_of(st.none(), small_reals, st.lists(small_reals, min_size=1, max_size=8).map(tuple)),
    "constraint_fraction": st.one_of(st.floats(-0.5, 1.5), reals),
    "episode_length": st.one_of(st.integers(-1, 40), st.integers(2900, 9000)),
    "split": st.sampled_from(SPLITS + ("valid",)),
    "window": st.one_of(st.none(), st.tuples(st.integers(-5, 9000), st.integers(-5, 9000)),
                        st.integers(0, 8700).map(lambda a: (a, a + 60))),
    "start_hour": st.one_of(st.none(), st.integers(-5, 9000)),
    "augment": st.booleans(),
    "reward": st.sampled_from(REWARDS + ("money",)),
    "multiplier_mode": st.sampled_from(MULTIPLIER_MODES),
    "lambda_range": st.one_of(st.tuples(small_reals, small_reals), st.tuples(reals, reals)),
    "nu_range": st.tuples(st.floats(-30, 30), st.floats(-30, 30)),
    "initial_soc": st.one_of(st.none(), st.floats(-0.5, 1.5)),
    "seed": st.integers(-1, 2**64),
    "wrap_data": st.booleans(),
}
# ... and, in some examples, one field of the wrong type
corrupted = st.one_of(st.none(), st.tuples(st.sampled_from(sorted(CONFIG_FIELDS)), junk))


def check_step(core: DemandResponseCore, before_backlog: np.ndarray, out) -> None:
    """The invariants of one step (see the module docstring)."""
    s = out.signals
    for name in ("demand", "solar", "solar_to_battery", "e_bat", "e_grid", "backlog", "r0", "r2", "price"):
        assert np.all(np.isfinite(getattr(s, name))), name
    assert np.all(np.isfinite(out.obs)) and np.all(np.isfinite(out.reward)) and np.all(np.isfinite(out.lagrangian))
    scale = 1.0 + np.abs(s.demand) + before_backlog
    assert np.all(s.e_bat >= -TOL) and np.all(s.e_grid >= -TOL)
    assert np.all(s.e_bat + s.e_grid <= s.demand + before_backlog + TOL * scale)
    np.testing.assert_allclose(s.backlog - before_backlog, s.demand - s.e_bat - s.e_grid, rtol=0, atol=1e-9 * scale.max())
    np.testing.assert_allclose(s.r2, s.demand - s.e_bat - s.e_grid, rtol=0, atol=1e-9 * scale.max())
    assert np.all(s.backlog >= -TOL * scale)
    assert np.all(core.soc >= 0.0) and np.all(core.soc <= 1.0 + 1e-6)
    assert np.all(s.solar_to_battery >= -TOL) and np.all(s.solar_to_battery <= s.solar + TOL)


def assert_names(err: BaseException, *names: str) -> None:
    event(f"refused: {type(err).__name__}")
    message = str(err)
    assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {message}"
    assert "\n" not in message.strip(), message
    assert any(n in message for n in names), f"{message!r} names none of {names}"


@pytest.fixture(scope="module")
def core7(dataset):
    return DemandResponseCore(EnvConfig(augment=True, reward="lagrangian"), dataset)


@PROPERTY
@given(kwargs=st.fixed_dictionaries({}, optional=CONFIG_FIELDS), corrupt=corrupted, actions=st.data())
def test_any_config_works_or_names_the_field(dataset, kwargs, corrupt, actions):
    if corrupt is not None:
        kwargs = kwargs | {corrupt[0]: corrupt[1]}
    try:
        config = EnvConfig(**kwargs)
        core = DemandResponseCore(config, dataset)
        core.reset(seed=1)
    except (ValueError, TypeError) as err:
        assert_names(err, *kwargs)
        return
    # the config worked: its episodes keep the invariants and stay inside the window (or wrap, on request)
    event("config works")
    lo, hi = core.window
    start = int(core.start_hour)
    assert lo <= start and (config.wrap_data or start + config.episode_length <= hi)
    for _ in range(min(config.episode_length, 6)):
        a = actions.draw(st.lists(st.tuples(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5)),
                                  min_size=core.n_agents, max_size=core.n_agents))
        backlog = core.backlog.copy()
        check_step(core, backlog, core.step(a))


@PROPERTY
@given(start=or_junk(st.one_of(st.none(), st.integers(-10, 3100), st.integers(0, 2920),
                              st.lists(st.integers(0, 3000), min_size=7, max_size=7),
                              st.lists(st.integers(0, 2920), min_size=7, max_size=7))),
       steps=or_junk(st.one_of(st.none(), st.integers(-1, 3100))),
       seed=or_junk(st.one_of(st.none(), st.integers(-1, 2**63))))
def test_any_reset_works_or_names_the_argument(core7, start, steps, seed):
    try:
        core7.reset(seed=seed, start_hour=start, steps=steps)
    except (ValueError, TypeError) as err:
        assert_names(err, "start_hour", "steps", "seed", "episode length", "episode_length")
        return
    event("reset works")
    length = core7.config.episode_length if steps is None else steps
    assert 0 <= np.min(core7.start_hour) and np.max(core7.start_hour) + length <= 3000


# one action entry: a number of any size or a wrong type
entry = st.integers(0, 3).flatmap(lambda k: [st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2),
                                                st.integers(-(10**400), 10**400), st.one_of(junk, st.none())][k])


@PROPERTY
@given(grid=st.lists(st.tuples(st.floats(-1, 2), st.floats(-1, 2)), min_size=7, max_size=7),
       bad=st.one_of(st.none(), st.tuples(st.integers(0, 6), st.integers(0, 1), entry)),
       as_array=st.booleans(),
       shape=st.integers(0, 4).flatmap(lambda k: st.sampled_from([(2, 7), (7,), (6, 2), (7, 3), (7, 2, 1)]) if k == 4
                                       else st.just((7, 2))))
def test_any_action_works_or_names_the_agent(core7, grid, bad, as_array, shape):
    core7.reset(start_hour=100)
    core7.set_multipliers(3.0, -2.0)
    actions = [list(row) for row in grid]
    if bad is not None:
        i, j, value = bad
        actions[i][j] = value
    if shape != (7, 2):
        actions = np.resize(np.asarray(grid), shape).tolist()
    if as_array:
        try:
            actions = np.asarray(actions)
        except (ValueError, TypeError):
            pass
    soc, backlog, t = core7.soc.copy(), core7.backlog.copy(), core7.t
    try:
        out = core7.step(actions)
    except (NonFiniteActionError, ActionTypeError) as err:
        assert_names(err, "agent")
        assert bad is not None and err.agents == [bad[0]] or as_array and isinstance(err, ActionTypeError)
        assert np.array_equal(core7.soc, soc) and np.array_equal(core7.backlog, backlog) and core7.t == t
        return
    except (ValueError, TypeError) as err:
        assert_names(err, "shape", "actions")
        assert shape != (7, 2) or bad is not None
        assert np.array_equal(core7.soc, soc) and np.array_equal(core7.backlog, backlog) and core7.t == t
        return
    event("step works")
    check_step(core7, backlog, out)
    assert core7.t == t + 1


def multiplier(lo: float, hi: float):
    """Mostly values in [lo, hi] (scalars or one per agent), and values outside it, of other lengths or types."""
    inside = st.one_of(st.floats(lo, hi), st.lists(st.floats(lo, hi), min_size=7, max_size=7))
    other = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(lo - 5, hi + 5),
                      st.lists(st.floats(lo - 5, hi + 5), min_size=7, max_size=7),
                      st.lists(st.floats(lo, hi), min_size=1, max_size=9), st.integers(-(10**400), 10**400))
    return or_junk(st.one_of(st.none(), inside, inside, other))


@PROPERTY
@given(lam=multiplier(0.0, 15.0), nu=multiplier(-20.0, 20.0), actions=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=7,
                                                         max_size=7))
def test_any_multipliers_work_or_name_the_multiplier(core7, lam, nu, actions):
    core7.reset(start_hour=200)
    before = core7.lam.copy(), core7.nu.copy()
    try:
        core7.set_multipliers(lam, nu)
    except (ValueError, TypeError) as err:
        assert_names(err, "lambda", "nu")
        return
    event("multipliers work")
    assert np.all((core7.lam >= 0.0) & (core7.lam <= 15.0)) and np.all((core7.nu >= -20.0) & (core7.nu <= 20.0))
    if lam is None:
        assert np.array_equal(core7.lam, before[0])
    obs = core7.observe()
    assert np.all(np.isfinite(obs)) and np.all((obs[:, 7:] >= 0.0) & (obs[:, 7:] <= 1.0))
    backlog = core7.backlog.copy()
    out = core7.step(actions)
    check_step(core7, backlog, out)
    expected = out.signals.r0 + core7.lam * (core7.share - out.signals.e_grid) + core7.nu * out.signals.r2
    np.testing.assert_allclose(out.lagrangian, expected, rtol=1e-12, atol=1e-12)


@PROPERTY
@given(n=st.integers(1, 60), window=st.integers(0, 8000).map(lambda a: (a, a + 48)), seed=st.integers(0, 10**6),
       steps=st.integers(1, 48), data=st.data())
def test_long_episodes_keep_the_invariants(dataset, n, window, seed, steps, data):
    """Many agents (replaying buildings at offsets beyond the 17 buildings), any start that fits, random actions."""
    core = DemandResponseCore(EnvConfig(n_agents=n, window=window, episode_length=steps, seed=seed,
                                        demand_scales=data.draw(st.floats(0.1, 5.0))), dataset)
    start = data.draw(st.integers(window[0], window[1] - steps))
    core.reset(start_hour=start)
    rng = np.random.default_rng(seed)
    for t in range(steps):
        backlog = core.backlog.copy()
        out = core.step(rng.uniform(-0.2, 1.2, size=(n, 2)))
        check_step(core, backlog, out)
    assert out.truncated
    with pytest.raises(ValueError, match="start_hour"):  # one hour more than the window holds is refused
        core.reset(start_hour=window[1] - steps + 1)
