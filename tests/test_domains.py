"""The domain seam: registry, the one roll-out loop on both domains, Algorithm 1 on EV charging."""

import numpy as np
import pytest

from algorithms.dual import DualConfig, DualConsensus
from algorithms.execute import DualConsensusController, FixedMultipliers, policies_for
from cmarl_env import DemandResponseCore, EnvConfig
from cmarl_env.domains import Domain, domain_of, get_domain, list_domains, register_domain
from cmarl_env.domains.ev_charging.config import EVConfig
from cmarl_env.domains.ev_charging.core import EVChargingCore
from cmarl_env.domains.ev_charging.evaluation import EVRollout
from cmarl_env.domains.ev_charging.references import (
    ClairvoyantLP, LeastLaxityFirst, MultiplierRate, Uncontrolled)
from cmarl_env.evaluation import Controller, Rollout, ServeAll, rollout

SITE_TYPES = ("private", "public", "workplace")


def test_both_domains_registered_and_found_from_their_cores():
    assert {"demand_response", "ev_charging"} <= set(list_domains())
    dr, ev = get_domain("demand_response"), get_domain("ev_charging")
    assert isinstance(dr, Domain) and isinstance(ev, Domain)
    core = DemandResponseCore(EnvConfig(n_agents=4, episode_length=24))
    evc = EVChargingCore(EVConfig(n_agents=4, episode_length=24))
    assert domain_of(core) is dr and domain_of(evc) is ev
    assert dr.action_width(core) == 2 and ev.action_width(evc) == evc.ports
    assert dr.config_type is EnvConfig and ev.config_type is EVConfig
    assert isinstance(dr.build(EnvConfig(n_agents=3, episode_length=24)), dr.core_type)
    assert isinstance(ev.build(EVConfig(n_agents=3, episode_length=24)), ev.core_type)
    assert dr.limit(core, 0) == dr.limit(core, 5) == core.grid_limit and not dr.share_varies
    assert ev.share_varies and ev.type_keys(evc) == list(SITE_TYPES)
    assert ev.type_mask(evc, "public").sum() + ev.type_mask(evc, "private").sum() + ev.type_mask(evc, "workplace").sum() == 4
    step = core.step(np.ones((4, 2)))
    assert dr.global_signal(step.signals) is step.signals.e_grid and dr.share(core, step.signals) == core.share
    np.testing.assert_array_equal(dr.objective(step.signals), -step.signals.r0)
    evs = evc.step(np.ones((4, evc.ports)))
    assert ev.share(evc, evs.signals) * 4 == pytest.approx(evc.limit_at(0))
    np.testing.assert_array_equal(ev.local_signal(evs.signals), evs.signals.unmet)


def test_bad_domain_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown domain 'traffic'; registered domains: demand_response, ev_charging"):
        get_domain("traffic")
    with pytest.raises(ValueError, match="declares no domain.*demand_response, ev_charging"):
        domain_of(object())
    with pytest.raises(ValueError, match="must be 'module:ClassName'"):
        register_domain("traffic", "no_colon")
    with pytest.raises(ValueError, match="unknown site type 'mall'"):
        get_domain("ev_charging").type_mask(EVChargingCore(EVConfig(n_agents=3, episode_length=24)), "mall")


def test_demand_response_rollout_is_its_record():
    core = DemandResponseCore(EnvConfig(n_agents=3, episode_length=24, window=(0, 48)))
    r = rollout(ServeAll(), core, 5, 24)
    assert isinstance(r, Rollout) and r.steps == 24 and r.start_hour == 5
    with pytest.raises(ValueError, match=r"start_hour=40 \+ steps=24 leaves the core's data window \[0, 48\)"):
        rollout(ServeAll(), core, 40, 24)


# ev_rollout's numbers before the seam replaced it (commit 6576578): 12 sites, 48 h, c = 0.6, seed 5,
# the training window's day 3; the generic loop must give the same
class _RandomPorts(Controller):
    name = "random_ports"

    def reset(self, core):
        super().reset(core)
        self.rng = np.random.default_rng(3)

    def act(self, obs):
        return self.rng.random((self.core.n_agents, self.core.ports))


BEFORE = {
    "hourly/llf": (122.40265649167819, 0.0, 0.0, 122.40265649167819, 1.880753810324123e-17, 1.0000000000000007, 0.0, True),
    "hourly/lp": (114.14337932752778, 0.0, 0.0, 114.14337932752778, 1.4105653577430923e-17, 1.0000000000000007, 0.0, True),
    "hourly/random_ports": (118.56358139632405, 141.15029344710902, 9.067580607452355, 151.92697122384214,
                            0.1064820030037811, 2.2833090943064964, 0.1484965032944882, False),
    "hourly/uncontrolled": (142.6256548369086, 0.0, 0.0, 142.6256548369086, 0.1593586979062736, 2.60621797966354, 0.0, False),
    "peak/llf": (126.68191024917928, 0.0, 0.0, 126.68191024917928, 1.3224050228841489e-17, 1.0000000000000004, 0.0, True),
    "peak/lp": (113.32260497095928, 0.0, 0.0, 113.32260497095928, 1.763206697178865e-17, 1.0000000000000004, 0.0, True),
    "peak/random_ports": (118.56358139632405, 141.15029344710902, 9.067580607452355, 151.92697122384214,
                          0.07059368573254134, 1.816104271377137, 0.1484965032944882, False),
    "peak/uncontrolled": (142.6256548369086, 0.0, 0.0, 142.6256548369086, 0.11685055857168103, 1.8522670614072936, 0.0, False),
}
FIELDS = ("energy_cost", "unmet_kwh", "pending_kwh", "total_cost", "overload_ratio", "peak_ratio", "unmet_fraction")


@pytest.mark.parametrize("limit", ["peak", "hourly"])
def test_generic_rollout_on_ev_equals_the_previous_ev_rollout(limit):
    core = EVChargingCore(EVConfig(n_agents=12, episode_length=48, constraint_fraction=0.6, limit=limit))
    for ctl in (Uncontrolled(), LeastLaxityFirst(), ClairvoyantLP(), _RandomPorts()):
        r = rollout(ctl, core, core.window[0] + 3, seed=5)
        assert isinstance(r, EVRollout) and r.steps == 48 and r.start_day == core.window[0] + 3
        m = r.metrics()
        *numbers, feasible = BEFORE[f"{limit}/{ctl.name}"]
        # the LP's numbers depend on the HiGHS version; the others are plain array arithmetic
        rel, abs_ = (1e-6, 1e-9) if ctl.name == "lp" else (1e-12, 1e-15)
        for name, value in zip(FIELDS, numbers):
            assert m[name] == pytest.approx(value, rel=rel, abs=abs_), (ctl.name, name)
        assert m["feasible"] is feasible and m["infeasible"] is (not feasible)
        assert (m["infeasible_reason"] == "") is feasible


def _ev_core(**kw):
    base = dict(n_agents=10, episode_length=72, constraint_fraction=0.5, augment=True)
    return EVChargingCore(EVConfig(**(base | kw)))


def test_algorithm1_runs_on_ev_and_lambda_rises_when_the_limit_binds():
    core = _ev_core()
    policies = {t: MultiplierRate(core) for t in SITE_TYPES}
    free = rollout(FixedMultipliers(0.0, 0.0, policies), core, core.calibration_day, seed=0)
    assert free.overload_ratio > 0.01  # without multipliers the policy overloads the transformer: the limit binds
    ctl = DualConsensusController(None, policies)
    r = rollout(ctl, core, core.calibration_day, seed=0)
    from cmarl_env.domains import get_domain

    assert ctl.dual_config == DualConfig(**get_domain("ev_charging").dual_defaults)  # the EV domain's dual defaults
    assert ctl.dual_config == DualConfig(alpha=0.1, eta=0.13, nu_max=0.0)
    lam = r.traces["lambda_mean"]
    assert lam.shape == (72,) and lam[0] >= 0 and lam.max() > 0.1
    over = r.load > r.limit
    assert over.any() and np.all(np.diff(lam)[over[1:]] >= -1e-12)  # lambda never falls in an hour over the cap
    assert r.overload_ratio < free.overload_ratio
    assert np.all(r.traces["nu"] <= 0.0)  # the local constraint is an inequality: nu keeps its sign
    m = r.metrics()
    assert m["controller"] == "consensus" and "lambda_mean_final" in m and np.isfinite(m["consensus_error_final"])
    # the hourly variant: the share changes every hour and Algorithm 1 reads it per step
    hourly = _ev_core(limit="hourly", constraint_fraction=0.6)
    rh = rollout(DualConsensusController(None, {t: MultiplierRate(hourly) for t in SITE_TYPES}), hourly,
                 hourly.calibration_day, seed=0)
    assert len(set(rh.limit.tolist())) == 2 and rh.traces["lambda_mean"].max() > 0.1


def test_unmet_allowance_lets_nu_rise_again():
    """Unmet energy is never negative: without an allowance nu only falls; with it nu also rises back."""
    falls, rises = [], []
    for allowance in (0.0, 0.005):
        core = _ev_core(unmet_allowance=allowance, episode_length=168)
        ctl = DualConsensusController(None, {t: MultiplierRate(core) for t in SITE_TYPES})
        nu = rollout(ctl, core, core.calibration_day, seed=0).traces["nu"]
        steps = np.diff(nu, axis=0)
        falls.append(bool((steps < 0).any()))
        rises.append(bool((steps > 0).any()))
    assert falls == [True, True] and rises == [False, True]


def test_per_step_share_in_the_dual_update():
    n = 4
    e = np.array([3.0, 1.0, 2.0, 0.5])
    for period in (1, 2):
        dual = DualConsensus(None, DualConfig(alpha=0.05, rounds=0, update_period=period), n=n, share=1.0)
        for s in (2.0, 0.5)[:period]:
            lam, _ = dual.step(e, np.zeros(n), share=s)
        excess = np.mean([e - s for s in (2.0, 0.5)[:period]], axis=0)
        np.testing.assert_allclose(lam, np.clip(0.05 * excess, 0.0, 15.0), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"share must be a finite scalar or an array of shape \(4,\)"):
        DualConsensus(None, DualConfig(rounds=0), n=n, share=1.0).step(e, np.zeros(n), share=np.ones(3))


def test_ev_policies_and_observations_are_checked():
    core = _ev_core()
    # EV ships one policy per site type (algorithms/pretrained/ev): a type without a given policy gets the shipped one
    groups = policies_for(core, {"private": MultiplierRate(core), "public": MultiplierRate(core)})
    assert [len(idx) for idx, _ in groups] == [int(get_domain("ev_charging").type_mask(core, t).sum())
                                               for t in SITE_TYPES]
    plain = EVChargingCore(EVConfig(n_agents=4, episode_length=24))
    with pytest.raises(ValueError, match="needs a core whose observations carry the multipliers"):
        rollout(DualConsensusController(None, {t: (lambda o: o) for t in SITE_TYPES}), plain, plain.calibration_day)
    with pytest.raises(ValueError, match="build the core with augment=True"):
        MultiplierRate(plain)
    with pytest.raises(ValueError, match=r"unmet_allowance=2 is out of range; allowed: \[0.0, 1.0\]"):
        EVConfig(unmet_allowance=2)


# ------------------------------------------------------------------------------------- suites: the domain key
def _suite(scenario: dict, methods=("consensus", "uncontrolled"), **defaults) -> dict:
    return {"name": "t", "defaults": {"scenario": defaults, "seeds": [0], "rollouts": 1},
            "methods": {"consensus": {"kind": "consensus"}, "uncontrolled": {"kind": "serve_all"},
                        "grid_only": {"kind": "grid_only"}, "price_rule": {"kind": "price_rule"}, "mappo": {"kind": "mappo"}, "ippo": {"kind": "ippo"},
                        "lp": {"kind": "lp_oracle"}, "random": {"kind": "random"}},
            "experiments": [{"name": "e", "scenarios": [scenario], "methods": list(methods)}]}


def test_suite_domain_key_bad_values_list_the_known_ones():
    from benchmarks.suite import SuiteError, parse_suite

    with pytest.raises(SuiteError, match=r"experiments\[0\].scenarios\[0\].domain='traffic' is not allowed; "
                                         r"choose one of \['demand_response', 'ev_charging'\]"):
        parse_suite(_suite({"name": "x", "domain": "traffic"}))
    with pytest.raises(SuiteError, match=r"start_day is only allowed with domain='ev_charging'"):
        parse_suite(_suite({"name": "x", "start_day": 3300}, methods=("consensus",)))
    with pytest.raises(SuiteError, match=r"unknown key experiments\[0\].scenarios\[0\].domain_params.battery; "
                                         r"allowed: \['ports'"):
        parse_suite(_suite({"name": "x", "domain": "ev_charging", "domain_params": {"battery": 3}}))
    with pytest.raises(SuiteError, match=r"start_day=3648 \+ 7 days of episode runs past the end of the day window"):
        parse_suite(_suite({"name": "x", "domain": "ev_charging", "start_day": 3648, "steps": 168,
                            "start_jitter": 0}))


def test_methods_refuse_scenarios_of_the_other_domain_with_a_reason():
    from benchmarks.suite import SuiteError, parse_suite

    ev = {"name": "x", "domain": "ev_charging", "steps": 48}
    for kind, why in (("grid_only", "a demand-response reference; scenario domain is 'ev_charging'"),
                      ("price_rule", "a demand-response reference; scenario domain is 'ev_charging'")):
        with pytest.raises(SuiteError, match=f"method '{kind}' \\(kind '{kind}'\\) cannot run scenario 'x': {why}"):
            parse_suite(_suite(ev, methods=(kind,)))
    suite = parse_suite(_suite(ev, methods=("consensus", "uncontrolled", "lp", "random")))
    assert {r.method.kind for r in suite.runs({"x": 0.5})} == {"consensus", "serve_all", "lp_oracle", "random"}


def test_demand_response_scenarios_hash_as_before_the_domain_key():
    """A demand-response scenario's dict (what spec hashes and caches read) has no domain keys; its cache key is the
    one the suite code gave before domains existed (recorded from that commit)."""
    from benchmarks.suite import ScenarioSpec, load_suite

    sc = ScenarioSpec(name="x")
    assert sorted(sc.to_dict()) == ["calibrate", "constraint", "dataset", "demand_scales", "graph", "graph_params",
                                    "label", "n_agents", "name", "record_agents", "seed", "start_hour",
                                    "start_jitter", "steps"]
    assert sc.cache_key() == "d017a75b7817b5a852cb"
    assert all(not s.is_ev and "domain" not in s.to_dict() for s in load_suite("quick").scenarios())


def test_ev_suite_parses_and_its_runs_share_days_and_cars():
    from benchmarks.suite import load_suite

    suite = load_suite("ev")
    scenarios = suite.scenarios()
    assert {s.n_agents for s in scenarios} == {10, 100} and all(s.is_ev and s.calibrated for s in scenarios)
    runs = suite.runs({s.name: 0.5 for s in scenarios})
    assert {r.method.kind for r in runs} == {"consensus", "no_consensus", "serve_all", "rule_based", "random",
                                             "lp_oracle", "ippo", "mappo", "maddpg", "masac", "isac",
                                             "mappo_lagrangian", "networked_pd"}
    sc = scenarios[0]
    days = [sc.rollout_day(h) for h in runs[0].start_hours]
    assert days[0] == sc.start_day and len(set(days)) == 3 and all(r.start_hours == runs[0].start_hours for r in runs)
    assert sc.ev_config(constraint=0.5).seed == sc.rollout_seed(0)  # the cap is calibrated on roll-out 0's cars
    digests = [r.input_digests() for r in runs if r.method.kind == "consensus"][0]
    assert sorted(name for name, _ in digests) == ["ev/private.pt", "ev/public.pt", "ev/workplace.pt"]


def test_ev_suite_runs_end_to_end(tmp_path):
    """A small EV suite through the runner: calibrated binding facts, every method's metrics, the EV leaderboard."""
    import json

    from benchmarks.leaderboard import write_leaderboard
    from benchmarks.runner import run_suite
    from benchmarks.suite import parse_suite

    raw = _suite({"name": "ev10", "domain": "ev_charging", "n_agents": 6, "steps": 48, "constraint": "calibrated",
                  "start_jitter": 96}, methods=("consensus", "uncontrolled", "lp", "random"))
    raw["defaults"]["rollouts"] = 2
    report = run_suite(parse_suite(raw), tmp_path, backend="serial", progress=False)
    assert not report.failed and len(report.completed) == 4
    facts = json.loads((tmp_path / "scenarios" / "ev10.json").read_text())
    assert facts["domain"] == "ev_charging" and facts["lp_frontier"] <= facts["constraint"] < facts["uncontrolled_threshold"]
    m = json.loads((tmp_path / "runs" / "ev10" / "lp" / "seed_0" / "metrics.json").read_text())
    assert json.loads((tmp_path / "runs" / "ev10" / "uncontrolled" / "seed_0" / "config.json").read_text()) == {
        "controller": "uncontrolled"}
    assert m["cost_ratio"] == pytest.approx(1.0, abs=1e-6) and m["overload_ratio"] < 1e-6
    u = json.loads((tmp_path / "runs" / "ev10" / "uncontrolled" / "seed_0" / "metrics.json").read_text())
    assert u["infeasible_fraction"] > 0 and u["unmet_fraction"] == 0
    md = write_leaderboard(tmp_path)["markdown"].read_text()
    assert "| Overload | Unmet |" in md and "Serve-all (no control)" in md
