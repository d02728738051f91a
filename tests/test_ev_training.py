"""State-augmented training on EV charging (issue 15): the EV batched view, TrainConfig's domain, the shipped EV
policies (algorithms/pretrained/ev) and their response to the price."""

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tianshou")

from algorithms.policy import (  # noqa: E402
    EVPolicy, ev_policy_fn, ev_pretrained_paths, load_ev_pretrained, load_policy, load_pretrained)
from algorithms.train import EV_FIELDS, TrainConfig, train  # noqa: E402
from cmarl_env.domains.ev_charging.config import SITE_TYPES, EVConfig  # noqa: E402
from cmarl_env.domains.ev_charging.core import EVChargingCore  # noqa: E402
from cmarl_env.views import EV_SIGNAL_KEYS, EVBatchedEnv  # noqa: E402

torch.set_num_threads(1)


def _ev_train_config(tmp_path, **kw) -> TrainConfig:
    values = dict(domain="ev_charging", site_type="public", num_envs=128, total_steps=128 * 24 * 60, epochs=3,
                  rollout_steps=24, episode_length=24, gamma=0.98, batch_size=1024, update_repeats=4, lr=1e-3,
                  init_backlog_hours=0.0, random_soc=False, multiplier_sampling="skewed", raw_multipliers=True,
                  reward_normalization="multipliers", reward_shaping="shortfall_potential", eval_episodes=32,
                  out_dir=str(tmp_path / "ev_run"))
    values.update(kw)
    return TrainConfig(**values)


# ------------------------------------------------------------------------------------------- the view
def test_ev_batched_env_steps_one_site_type_and_resets_together():
    env = EVBatchedEnv(EVConfig(augment=True, multiplier_mode="sampled", reward="lagrangian", episode_length=6),
                       num_envs=8, site_type="workplace")
    assert env.core.n_agents == 8 and set(env.core.site_category.tolist()) == {2}
    assert env.single_action_space.shape == (env.core.ports,)
    obs, infos = env.reset(seed=3)
    assert obs.shape == (8, env.core.obs_dim) and set(EV_SIGNAL_KEYS) <= set(infos)
    lam, nu = env.core.lam.copy(), env.core.nu.copy()
    for t in range(6):
        obs, reward, term, trunc, infos = env.step(np.ones((8, env.core.ports)))
        assert not term.any() and trunc.all() == (t == 5)
    np.testing.assert_array_equal(infos["final_info"]["lambda"], lam)  # the finished episode's multipliers
    assert not np.array_equal(env.core.lam, lam) and not np.array_equal(env.core.nu, nu)  # redrawn on reset
    with pytest.raises(ValueError, match=r"site_type='garage' is not a site category; allowed: \('private'"):
        EVBatchedEnv(num_envs=2, site_type="garage")


def test_shortfall_becomes_the_unmet_energy_of_the_departing_cars():
    """The potential of the EV shaping: what can no longer be delivered is unmet at departure whatever the actions."""
    env = EVBatchedEnv(EVConfig(episode_length=48), num_envs=16, site_type="public")
    env.reset(seed=0)
    unmet = shortfall_gone = 0.0
    for _ in range(48):
        before = env.shortfall()
        _, _, _, _, infos = env.step(np.zeros((16, env.core.ports)))  # never charge: every car leaves short
        assert np.all(infos["unmet"] >= 0) and np.all(before >= 0)
        unmet += infos["unmet"].sum()
        shortfall_gone += (before - infos["shortfall"]).clip(min=0).sum()
    assert unmet > 0 and shortfall_gone > 0


# ------------------------------------------------------------------------------------------ the config
def test_train_config_domain_is_validated_and_demand_response_reads_as_before():
    with pytest.raises(ValueError, match=r"domain='traffic' is not allowed; choose one of \['demand_response', "
                                         r"'ev_charging'\]"):
        TrainConfig(domain="traffic")
    with pytest.raises(ValueError, match=r"site_type='garage' is not an EV site category; allowed: \['private'"):
        TrainConfig(domain="ev_charging", site_type="garage")
    with pytest.raises(ValueError, match="reward_shaping='shortfall_potential' is for domain 'ev_charging'"):
        TrainConfig(reward_shaping="shortfall_potential")
    with pytest.raises(ValueError, match="imitation_steps=5 is for domain 'ev_charging' only"):
        TrainConfig(imitation_steps=5)
    dr = TrainConfig().to_dict()
    assert not set(EV_FIELDS) & set(dr)  # a demand-response config (and its checkpoints) reads as before
    ev = TrainConfig(domain="ev_charging", site_type="private", ports=2)
    assert TrainConfig.from_dict(ev.to_dict()) == ev
    assert ev.env_config().site_types == ("private",) and ev.env_config().ports == 2 and ev.agent_type == "private"


def test_cmarl_train_cli_takes_the_domain_flags(tmp_path):
    from algorithms.train_cli import config_from_args, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--domain", "ev_charging", "--site-type", "workplace", "--config",
                              "algorithms/pretrained/ev/recipe.json", "--steps", "1000"])
    config = config_from_args(args)
    assert config.domain == "ev_charging" and config.site_type == "workplace" and config.total_steps == 1000
    assert config.out_dir == "runs/train_ev_workplace_seed0" and config.imitation_steps > 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--domain", "traffic"])


# -------------------------------------------------------------------------------------------- training
def test_short_ev_training_improves_its_lagrangian_return(tmp_path):
    """PPO from a random actor (no imitation) on the public sites: the Lagrangian return on fixed evaluation
    episodes (days, cars, multipliers) rises."""
    result = train(_ev_train_config(tmp_path), progress=False)
    assert result.eval_return_final > result.eval_return_initial
    assert (result.run_dir / "policy.pt").is_file()
    policy = load_policy(result.checkpoint)
    assert policy.metadata["domain"] == "ev_charging" and policy.metadata["site_type"] == "public"
    assert policy.net.act_dim == 4 and policy.metadata["obs_norms"]["price_norm"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------- shipped policies
def _plugged_observations(site_type: str):
    core = EVChargingCore(EVConfig(n_agents=60, episode_length=48, augment=True, site_types=(site_type,),
                                   split="test"))
    core.reset(seed=1, start_day=core.calibration_day)
    rows = []
    for _ in range(36):
        obs = core.observe()
        rows.append(obs[(obs[:, 4::4][:, :core.ports] > 0).any(axis=1)])
        core.step(np.full((core.n_agents, core.ports), 0.5))
    return core, np.concatenate(rows)


@pytest.mark.parametrize("site_type", SITE_TYPES)
def test_shipped_ev_policies_load_and_a_higher_price_lowers_the_charging_rate(site_type):
    assert set(ev_pretrained_paths()) == set(SITE_TYPES)
    core, obs = _plugged_observations(site_type)
    policy = load_ev_pretrained(site_type, expected=core)
    assert isinstance(policy, EVPolicy) and policy.metadata["site_type"] == site_type
    assert policy.price_factor == pytest.approx(core.price_norm / 0.5)
    assert isinstance(load_pretrained(site_type, expected=core), EVPolicy)  # the seam's key loads it too
    core.set_multipliers(0.0, -2.0)
    obs[:, -2:] = core.observe()[: 1, -2:]  # lambda = 0, nu = -2 (a site that has left some energy unmet)
    plugged = obs[:, 4::4][:, :core.ports] > 0
    rates = []
    for price in (0.05, 0.15, 0.40):  # EUR/kWh; everything else fixed
        x = obs.copy()
        x[:, 0] = price / core.price_norm
        rates.append(float(policy.act(x)[plugged].mean()))
    assert rates[0] > rates[1] > rates[2], rates
    np.testing.assert_allclose(ev_policy_fn(policy, core)(obs), policy.act(obs))


def test_ev_checkpoints_are_checked_against_the_core():
    from algorithms.policy import CheckpointMismatchError

    core = EVChargingCore(EVConfig(n_agents=3, ports=2, episode_length=24, augment=True))
    with pytest.raises(CheckpointMismatchError, match="observation_layout"):
        load_ev_pretrained("public", expected=core)
    with pytest.raises(ValueError, match=r"site_type='garage' has no shipped EV policy; allowed: \['private'"):
        load_ev_pretrained("garage")


# ------------------------------------------------------------------------------- the recipe's EV levers
def test_ev_sampling_box_unmet_value_and_floor_are_validated_and_ev_only():
    from algorithms.train import multiplier_sampler

    ev = TrainConfig(domain="ev_charging", multiplier_sampling="skewed", lambda_sample_max=2.0, nu_sample_min=-8.0,
                     unmet_value=1.0, reward_shaping="shortfall_potential", imitation_floor=True)
    assert TrainConfig.from_dict(ev.to_dict()) == ev
    lam, nu = multiplier_sampler(ev)(np.random.default_rng(0), 10_000, (0.0, 15.0), (-20.0, 20.0))
    assert 0.0 <= lam.min() and lam.max() <= 2.0 and -8.0 <= nu.min() and nu.max() <= 0.0
    assert lam.max() > 1.5 and nu.min() < -6.0  # the wide draws cover the box
    with pytest.raises(ValueError, match="lambda_sample_max=2.0 is for domain 'ev_charging' only"):
        TrainConfig(lambda_sample_max=2.0)
    with pytest.raises(ValueError, match="unmet_value=1.0 needs reward_shaping='shortfall_potential'"):
        TrainConfig(domain="ev_charging", unmet_value=1.0)
    with pytest.raises(ValueError, match="nu_sample_min"):
        TrainConfig(domain="ev_charging", nu_sample_min=1.0)


def test_unmet_value_charges_unmet_energy_in_the_shaped_reward():
    """With unmet_value v the shaped reward of a step also carries -v x unmet and the potential v x shortfall: never
    charging costs more than without it."""
    from algorithms.train import TianshouBatchedEnv

    def returns(value):
        env = EVBatchedEnv(EVConfig(augment=True, multiplier_mode="sampled", reward="lagrangian", episode_length=24),
                           num_envs=16, site_type="public")
        wrapped = TianshouBatchedEnv(env, 1.0, seed=0, shaping_gamma=0.98, unmet_value=value)
        wrapped.reset()
        total = np.zeros(16)
        for _ in range(24):
            _, r, _, _, _ = wrapped.step(np.zeros((16, env.core.ports)))
            total += r
        return total

    base, valued = returns(0.0), returns(0.5)
    assert valued.mean() < base.mean() - 1e-3


def test_floored_teacher_charges_at_least_the_minimum_rate():
    from algorithms.policy import ev_minimum_rates
    from algorithms.train import _MinimumRateFloor
    from cmarl_env.domains.ev_charging.core import TIME_NORM_H
    from cmarl_env.domains.ev_charging.references import MultiplierRate

    core, obs = _plugged_observations("public")
    core.set_multipliers(5.0, 0.0)  # a high lambda: MultiplierRate alone charges below the minimum rate
    obs[:, -2:] = core.observe()[:1, -2:]
    spec = {"ports": core.ports, "first": 4, "energy_norm": core.energy_norm, "time_norm": TIME_NORM_H,
            "charger_kw": core.config.charger_kw}
    u = np.minimum(ev_minimum_rates(torch.as_tensor(obs, dtype=torch.float64), spec).numpy(), 1.0)
    plain, floored = MultiplierRate(core)(obs), _MinimumRateFloor(MultiplierRate(core), core)(obs)
    assert np.all(floored >= u - 1e-6) and np.all(floored >= plain) and np.any(plain < u - 1e-3)
