"""The MARL and constrained baselines on EV charging (through the domain seam), `cmarl run --domain ev_charging`,
and the EV global-constraint variants (peak / hourly / average)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tianshou")

from baselines.marl import BaselineConfig, load_policy, train_baseline  # noqa: E402
from baselines.marl.common import MARLController, ScenarioVectorEnv  # noqa: E402
from cmarl_env.domains.ev_charging import EVChargingCore, EVConfig  # noqa: E402
from cmarl_env.domains.ev_charging.evaluation import GRID_TOLERANCE, EVRollout  # noqa: E402
from cmarl_env.evaluation import rollout  # noqa: E402

KINDS = ("mappo", "maddpg", "masac", "isac", "mappo_lagrangian", "networked_pd")
# 3 sites x 2 ports, 40-hour training episodes on the 2023 split: a few hundred env steps per kind
SMALL = dict(domain="ev_charging", domain_params={"ports": 2}, n_agents=3, epochs=1, num_envs=2, rollout_steps=40,
             episode_length=40, warmup_steps=40, batch_size=32, eval_episodes=2, graph="ring", seed=1)


def small(name: str, **kw) -> BaselineConfig:
    return BaselineConfig(name=name, **(SMALL | {"total_steps": 240} | kw))


def eval_core(**kw) -> EVChargingCore:
    return EVChargingCore(EVConfig(**(dict(n_agents=3, ports=2, split="test", episode_length=48) | kw)))


@pytest.mark.parametrize("name", KINDS)
def test_each_baseline_trains_on_ev_and_rolls_out(name, tmp_path):
    summary = train_baseline(small(name), tmp_path / name)
    assert summary["env_steps"] >= 240
    policy = load_policy(summary["checkpoint"])
    assert policy.domain == "ev_charging" and policy.metadata["action_dim"] == 2
    assert policy.type_scales == ("private", "public", "workplace")
    core = eval_core()
    result = rollout(MARLController(policy), core, core.calibration_day, 48, seed=0)
    assert isinstance(result, EVRollout)
    m = result.metrics()
    for key in ("total_cost", "energy_cost", "overload_ratio", "unmet_fraction", "peak_ratio", "feasible",
                "lagrangian_return_per_agent"):
        assert key in m
    assert np.isfinite(m["total_cost"]) and m["energy_kwh"] > 0
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    assert set(metrics["eval_final"]) >= {"mean_load", "mean_unmet"}
    if name in ("mappo_lagrangian", "networked_pd"):
        assert metrics["multipliers_final"]["dual_updates"] >= 1


def test_fixed_penalty_reward_and_constraint_infos_come_from_the_seam():
    """Fixed penalties: r0 + lambda (L_t/N - load) + nu unmet; learned multipliers: the slot infos carry the judged
    global constraint's cost and limit (``grid_cost``) and the domain's dual local signal (unmet - allowance x
    requested)."""
    cfg = small("mappo", lambda_=0.5, nu=-3.0, domain_params={"ports": 2, "limit": "hourly"})
    env = ScenarioVectorEnv(cfg, "local_global", num_envs=1)
    env.reset()
    ref = EVChargingCore(cfg.core_config())
    ref.set_multipliers(0.5, -3.0)
    ref.reset(seed=cfg.seed * 1009)
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = rng.uniform(size=(3, 2))
        _, rew, _, _, _ = env.step(a)
        s = ref.step(a).signals
        expected = s.r0 + 0.5 * (s.share - s.load) - 3.0 * s.unmet
        np.testing.assert_allclose(rew, expected / cfg.reward_scale, rtol=1e-12)

    for limit in ("hourly", "average"):
        lag = small("mappo_lagrangian", domain_params={"ports": 2, "limit": limit})
        env = ScenarioVectorEnv(lag, "local_global", num_envs=1)
        env.reset()
        ref = EVChargingCore(lag.core_config())
        ref.reset(seed=lag.seed * 1009)
        allowance = ref.config.unmet_allowance
        for _ in range(30):
            a = rng.uniform(size=(3, 2))
            _, rew, _, _, infos = env.step(a)
            s = ref.step(a).signals
            overload = max(s.load.sum() - 3 * s.share, 0.0) / 3
            for j in range(3):
                assert infos[j]["agent"] == j
                if limit == "hourly":   # the judged hourly overload, split equally, limit 1 % of the share
                    assert infos[j]["grid"] == pytest.approx(overload, abs=1e-12)
                    assert infos[j]["grid_limit"] == pytest.approx(GRID_TOLERANCE * s.share)
                else:                   # the overload of the average: the excess over the share, limit 0
                    assert infos[j]["grid"] == pytest.approx(s.load[j] - s.share)
                    assert infos[j]["grid_limit"] == 0.0
                assert infos[j]["r2"] == pytest.approx(s.unmet[j] - allowance * s.requested[j])
            np.testing.assert_allclose(rew, s.r0 / lag.reward_scale, rtol=1e-12)


def test_ev_grid_cost_is_the_hourly_overload_split_equally():
    """With a cap per hour the learned multipliers' grid cost is the judged overload: >= 0, 0 in hours under the
    cap, (sum of loads - L_t) / N over it; its limit is the feasibility tolerance x L_t / N."""
    from baselines.marl.domain import baseline_domain

    adapter = baseline_domain("ev_charging")
    core = EVChargingCore(EVConfig(n_agents=3, ports=2, split="train", episode_length=72, constraint_fraction=0.5))
    core.reset(seed=0)
    over, under = 0, 0
    for t in range(72):
        s = core.step(np.ones((3, 2))).signals          # full power: the cap binds in the busy hours only
        cost, limit = adapter.grid_cost(core, s)
        cap = core.limit_at(t)
        assert cost.shape == (3,) and (cost >= 0).all() and np.all(cost == cost[0])
        np.testing.assert_allclose(limit, GRID_TOLERANCE * cap / 3, rtol=1e-12)
        if s.load.sum() > cap:
            over += 1
            np.testing.assert_allclose(cost, (s.load.sum() - cap) / 3, rtol=1e-9)
        else:
            under += 1
            assert (cost == 0).all()
    assert over > 0 and under > 0


def test_mappo_lagrangian_learns_a_grid_multiplier_on_a_tight_ev_cap(tmp_path):
    """The mean excess over the share is negative on EV (quiet hours cancel peak hours) and kept lambda at 0; on
    the hourly overload a tight cap moves it up from the first dual step."""
    summary = train_baseline(small("mappo_lagrangian", constraint_fraction=0.1), tmp_path / "tight")
    history = json.loads((tmp_path / "tight" / "metrics.json").read_text())["dual_history"]
    assert history[0]["grid_excess"] > 0
    assert summary["multipliers_final"]["lambda_mean"] > 0


def test_dual_step_ascends_on_the_overload_not_the_mean_excess():
    """A constructed batch: 3 agents, one hour over the cap by 3 kWh (cost 1 each) and three quiet hours (cost 0),
    share 1 kWh: the step is on mean(cost - 0.01 x share) > 0, although the mean load is under the share."""
    from baselines.marl.training import build, make_env

    config = small("mappo_lagrangian", dual_lr_grid=2.0)
    alg = build(config, make_env(config)).algorithm
    agent = np.tile(np.arange(3), 4)
    cost = np.repeat([1.0, 0.0, 0.0, 0.0], 3)
    limit = np.full(12, GRID_TOLERANCE * 1.0)
    alg.dual_step(cost, np.zeros(12), agent, limit)
    assert alg.multipliers()["lambda"] == pytest.approx([2.0 * (0.25 - GRID_TOLERANCE)])


def test_same_seed_same_policy(tmp_path):
    a = train_baseline(small("isac"), tmp_path / "a")
    b = train_baseline(small("isac"), tmp_path / "b")
    assert a["eval_final"] == b["eval_final"]
    pa, pb = load_policy(a["checkpoint"]), load_policy(b["checkpoint"])
    for (ka, va), (kb, vb) in zip(pa.actor.state_dict().items(), pb.actor.state_dict().items()):
        assert ka == kb and bool((va == vb).all())


def test_mappo_learns_on_ev(tmp_path):
    """The initial MAPPO actor charges at half power; trained on (0.25, -2) it lowers the Lagrangian cost."""
    summary = train_baseline(small("mappo", total_steps=2400, epochs=2, rollout_steps=40, num_envs=4,
                                   lambda_=0.25, nu=-2.0), tmp_path / "learn")
    assert summary["eval_final"]["lagrangian_return"] > summary["eval_initial"]["lagrangian_return"]


def test_ev_config_errors_name_the_field():
    with pytest.raises(ValueError, match="domain_params.bogus is not allowed"):
        small("mappo", domain_params={"bogus": 1})
    with pytest.raises(ValueError, match="limit='daily' is not allowed; choose one of"):
        small("mappo", domain_params={"limit": "daily"})
    with pytest.raises(ValueError, match="train_window"):
        small("mappo", train_window=(0, 500))
    with pytest.raises(ValueError, match="domain_params=.* is for domain 'ev_charging'"):
        BaselineConfig(name="mappo", domain_params={"ports": 2})
    with pytest.raises(ValueError, match="domain='traffic' is not allowed"):
        BaselineConfig(name="mappo", domain="traffic")
    with pytest.raises(ValueError, match="eval_start_hours"):
        train_baseline(small("isac"), "/nonexistent/never", eval_start_hours=[0])


def test_controller_refuses_a_core_of_another_domain(tmp_path):
    from cmarl_env.core import DemandResponseCore
    from cmarl_env.config import EnvConfig

    policy = load_policy(train_baseline(small("isac", total_steps=40), tmp_path / "x")["checkpoint"])
    with pytest.raises(ValueError, match="trained on domain 'ev_charging'"):
        MARLController(policy).reset(DemandResponseCore(EnvConfig(n_agents=3)))


def test_marl_kinds_accept_ev_scenarios():
    from benchmarks import registry
    from benchmarks.suite import load_suite

    suite = load_suite("ev")
    scenarios = {sc.name: sc for sc in suite.scenarios()}
    for kind in KINDS:
        assert registry.get(kind).check_scenario(scenarios["ev_n10_week"]) is None
    assert scenarios["ev_n10_week_hourly"].domain_params["limit"] == "hourly"
    assert scenarios["ev_n10_week"].domain_params.get("limit", "peak") == "peak"
    budgets = {m.name: m.budget for m in suite.methods.values()} if hasattr(suite, "methods") else {}
    for kind in KINDS:
        if kind in budgets:
            assert budgets[kind] == "short"


# ------------------------------------------------------------------------------------------ limit variants
def _rollout(kind: str, load, limit) -> EVRollout:
    n = len(load)
    return EVRollout("x", 0, 1, np.asarray(load, float), np.asarray(limit, float), np.zeros(n), np.zeros(n), 1.0,
                     0.0, 1.0, limit_kind=kind)


def test_limit_variants_one_verdict():
    """Per-hour caps are judged by the average hourly overload, the average limit by the overload of the average."""
    peak, average = _rollout("peak", [2.0, 0.0], [1.0, 1.0]), _rollout("average", [2.0, 0.0], [1.0, 1.0])
    assert peak.overload_ratio == pytest.approx(0.5) and not peak.feasible
    assert "average overload" in peak.verdict.reason
    assert average.overload_ratio == 0.0 and average.feasible
    over = _rollout("average", [2.5, 0.0], [1.0, 1.0])
    assert over.overload_ratio == pytest.approx(0.25) and "overload of the average load" in over.verdict.reason


@pytest.mark.parametrize("limit", ["peak", "hourly", "average"])
def test_limit_variants_on_the_core(limit):
    from cmarl_env.domains.ev_charging.references import Uncontrolled

    core = EVChargingCore(EVConfig(n_agents=10, limit=limit, constraint_fraction=0.5, episode_length=72))
    m = rollout(Uncontrolled(), core, core.calibration_day, 72, seed=0).metrics()
    assert m["limit"] == limit
    # uncontrolled charging overloads the per-hour caps; its average load stays far below half its peak
    assert (m["overload_ratio"] == 0.0) == (limit == "average")
    expected_profile = EVConfig(limit="hourly").profile if limit == "hourly" else (1.0,) * 24
    assert tuple(core.profile) == expected_profile


def test_bad_limit_value_errors():
    with pytest.raises(ValueError, match=r"limit='daily' is not allowed; choose one of \('peak', 'hourly', 'average'\)"):
        EVConfig(limit="daily")
    with pytest.raises(ValueError, match="limit_profile is only allowed with limit='hourly'"):
        EVConfig(limit="average", limit_profile=(1.0,) * 24)


# -------------------------------------------------------------------------------------------- cmarl run
def test_cmarl_run_ev_smoke(tmp_path, capsys):
    from benchmarks.cli import main

    out = tmp_path / "ev_run"
    assert main(["run", "--domain", "ev_charging", "--agents", "6", "--steps", "24", "--limit", "hourly",
                 "--constraint", "0.6", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "hourly limit" in text and "unmet" in text and "run folder" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["limit"] == "hourly" and metrics["steps"] == 24 and metrics["n_agents"] == 6
    assert "lambda_spread_final" in metrics and "feasible" in metrics
    config = json.loads((out / "config.json").read_text())
    assert config["domain"] == "ev_charging" and config["dual"]["nu_max"] == 0.0
    assert set(config["policies"]) == {"private", "public", "workplace"}
    assert (out / "trajectories.npz").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--domain", "ev_charging", "--double-demand", "1"], "--double-demand: not used by --domain ev_charging"),
    (["--domain", "ev_charging", "--start-hour", "5"], "--start-hour: not used by --domain ev_charging"),
    (["--domain", "ev_charging", "--policy", "1.0=x.pt"], "--policy: not used by --domain ev_charging"),
    (["--limit", "hourly"], "--limit: not used by --domain demand_response"),
    (["--start-day", "3000"], "--start-day: not used by --domain demand_response"),
    (["--domain", "ev_charging", "--limit", "daily"], "limit='daily' is not allowed"),
    (["--domain", "ev_charging", "--split", "2023"], "split='2023' is not allowed"),
])
def test_cmarl_run_refuses_flags_of_the_other_domain(argv, message, tmp_path):
    from benchmarks.cli import main

    with pytest.raises(SystemExit, match=message):
        main(["run", *argv, "--out", str(tmp_path / "bad"), "--no-progress"])


def test_ippo_and_mappo_through_the_ev_runner(tmp_path):
    """IPPO (one PPO per site, and per site category) and MAPPO as suite methods on a small calibrated EV scenario."""
    from benchmarks.runner import run_suite
    from benchmarks.suite import parse_suite

    raw = {"name": "t", "defaults": {"scenario": {"domain": "ev_charging", "n_agents": 3, "steps": 48,
                                                  "constraint": "calibrated", "start_jitter": 48,
                                                  "domain_params": {"ports": 2, "split": "test"}},
                                     "seeds": [0], "rollouts": 2, "oracle": False},
           "methods": {"ippo": {"kind": "ippo", "params": {"total_steps": 160}, "budget": "short"},
                       "ippo_type": {"kind": "ippo", "params": {"total_steps": 160, "sharing": "per_type"},
                                     "budget": "short"},
                       "mappo": {"kind": "mappo", "budget": "short",
                                 "params": {"total_steps": 80, "epochs": 1, "rollout_steps": 40, "num_envs": 2,
                                            "episode_length": 40, "eval_episodes": 1}}},
           "experiments": [{"name": "e", "scenarios": [{"name": "ev3"}], "methods": ["ippo", "ippo_type", "mappo"]}]}
    report = run_suite(parse_suite(raw), tmp_path, backend="serial", progress=False)
    assert not report.failed and len(report.completed) == 3
    for name, detail in (("ippo", "one PPO per site (own seed); fixed penalties (0.25, -2)"),
                         ("ippo_type", "one PPO per site category"), ("mappo", "fixed penalties (0.25, -2)")):
        m = json.loads((tmp_path / "runs" / "ev3" / name / "seed_0" / "metrics.json").read_text())
        assert detail in m["budget_detail"] and m["n_rollouts"] == 2
        assert np.isfinite(m["total_cost"]) and 0.0 <= m["unmet_fraction"] <= 1.0


def test_selected_penalties_are_refused_on_ev(tmp_path):
    """penalties="selected" is demand response's grid-search pair: an EV run fails naming it."""
    from benchmarks.runner import run_suite
    from benchmarks.suite import parse_suite

    raw = {"name": "t", "defaults": {"scenario": {"domain": "ev_charging", "n_agents": 3, "steps": 48,
                                                  "constraint": 0.5, "domain_params": {"ports": 2}}, "seeds": [0]},
           "methods": {"mappo": {"kind": "mappo", "params": {"penalties": "selected"}}},
           "experiments": [{"name": "e", "scenarios": [{"name": "ev3"}], "methods": ["mappo"]}]}
    report = run_suite(parse_suite(raw), tmp_path, backend="serial", progress=False)
    assert report.failed == ["ev3/mappo/seed_0"]
    error = json.loads((tmp_path / "runs" / "ev3" / "mappo" / "seed_0" / "error.json").read_text())
    assert 'penalties="selected"' in json.dumps(error).replace('\\"', '"') and "give lambda_ and nu" in json.dumps(error)
