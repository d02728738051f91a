"""Policy checkpoints: round trip, environment checks, corrupt files, the shipped policies."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from algorithms.policy import (  # noqa: E402
    ActorNet,
    AugmentedPolicy,
    CheckpointError,
    CheckpointMismatchError,
    build_metadata,
    fixed_multiplier_response,
    load_policy,
    load_pretrained,
    obs_norms,
    pretrained_paths,
    save_checkpoint,
)
from cmarl_env.config import EnvConfig  # noqa: E402
from cmarl_env.core import DemandResponseCore, observation_layout  # noqa: E402

LAYOUT = list(observation_layout(True))
DATASET = "citylearn_challenge_2022_phase_all"


def _policy(seed: int = 0, hidden=(16, 16)) -> AugmentedPolicy:
    torch.manual_seed(seed)
    net = ActorNet(len(LAYOUT), hidden)
    with torch.no_grad():  # make the output layer matter (its init is tiny)
        net.mu.weight.normal_(0.0, 1.0)
    meta = build_metadata(
        observation_layout=LAYOUT, lambda_range=(0.0, 15.0), nu_range=(-20.0, 20.0), dataset=DATASET,
        demand_scale=2.0, hidden_sizes=hidden, reward_scale=20.0, train_config={"seed": seed}, train_wall_time_s=1.5,
    )
    return AugmentedPolicy(net, meta)


def _obs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, len(LAYOUT))).astype(np.float32)


def test_round_trip_gives_identical_actions(tmp_path):
    policy = _policy()
    path = save_checkpoint(tmp_path / "p.pt", policy)
    loaded = load_policy(path)
    obs = _obs(5000)
    np.testing.assert_array_equal(policy.act(obs), loaded.act(obs))
    assert loaded.metadata["observation_layout"] == LAYOUT
    assert loaded.metadata["demand_scale"] == 2.0 and loaded.metadata["agent_type"] == "double"
    assert loaded.metadata["reward_scale"] == 20.0
    assert loaded.metadata["train_wall_time_s"] == 1.5
    assert {"python", "cmarl-env", "torch", "tianshou", "numpy"} == set(loaded.metadata["versions"])
    assert loaded.metadata["path"] == str(path)
    # written atomically: no temporary file is left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["p.pt"]


def test_actions_are_deterministic_bounded_and_chunked():
    policy = _policy(3)
    obs = _obs(70_000)
    a = policy.act(obs)
    assert a.shape == (70_000, 2) and a.dtype == np.float32
    assert np.all((a >= 0.0) & (a <= 1.0))
    np.testing.assert_array_equal(a, policy.act(obs, chunk_size=4096))
    np.testing.assert_array_equal(a, policy(obs))
    with pytest.raises(ValueError, match="shape"):
        policy.act(obs[:, :7])


def test_save_accepts_the_bare_network(tmp_path):
    policy = _policy()
    path = save_checkpoint(tmp_path / "sub" / "net.pt", policy.net, policy.metadata)
    np.testing.assert_array_equal(load_policy(path).act(_obs(10)), policy.act(_obs(10)))


@pytest.mark.parametrize(
    "expected, field",
    [
        ({"observation_layout": list(observation_layout(False))}, "observation_layout"),
        ({"observation_layout": LAYOUT[::-1]}, "observation_layout"),
        ({"lambda_range": [0.0, 10.0]}, "lambda_range"),
        ({"nu_range": [-5.0, 5.0]}, "nu_range"),
        ({"dataset": "citylearn_challenge_2022_phase_1"}, "dataset"),
        ({"demand_scale": 1.0}, "demand_scale"),
    ],
)
def test_mismatch_names_the_field_and_both_values(tmp_path, expected, field):
    path = save_checkpoint(tmp_path / "p.pt", _policy())
    with pytest.raises(CheckpointMismatchError) as info:
        load_policy(path, expected)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field
    msg = str(err)
    assert field in msg and str(path) in msg
    assert repr(err.checkpoint_value) in msg and repr(err.env_value) in msg
    assert err.env_value != err.checkpoint_value


def test_expected_read_from_an_environment(tmp_path, dataset):
    path = save_checkpoint(tmp_path / "p.pt", _policy())
    augmented = DemandResponseCore(EnvConfig(augment=True), dataset)
    assert load_policy(path, augmented).obs_dim == 9  # matches: no error
    load_policy(path, EnvConfig(augment=True))
    with pytest.raises(CheckpointMismatchError, match="observation_layout"):
        load_policy(path, DemandResponseCore(EnvConfig(augment=False), dataset))
    with pytest.raises(CheckpointMismatchError, match="nu_range"):
        load_policy(path, EnvConfig(augment=True, nu_range=(-10.0, 10.0)))
    with pytest.raises(CheckpointMismatchError, match="observation_layout"):
        load_policy(path, expected_layout=observation_layout(False))


def test_observation_normalisers_are_fixed_and_a_mismatch_warns(tmp_path, dataset):
    train_core = DemandResponseCore(EnvConfig(augment=True), dataset)
    policy = _policy()
    policy.metadata["obs_norms"] = obs_norms(train_core)
    path = save_checkpoint(tmp_path / "p.pt", policy)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_policy(path, train_core)  # same window: silent
    other = DemandResponseCore(EnvConfig(augment=True, window=(3000, 6000), episode_length=80), dataset)
    assert obs_norms(other) == obs_norms(train_core)  # scales do not depend on the window
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_policy(path, other)
    other.demand_norm *= 1.5  # e.g. another dataset's scales
    with pytest.warns(UserWarning, match="scales observations differently"):
        load_policy(path, other)


def test_corrupt_truncated_and_missing_files_name_the_path(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", _policy())
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError) as info:
            load_policy(bad)
        assert str(bad) in str(info.value)
        assert isinstance(info.value, ValueError)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a cmarl policy checkpoint"):
        load_policy(other)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_policy(tmp_path / "missing.pt")


# ------------------------------------------------------------------ shipped
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_shipped_policies_load_and_act(scale):
    path = pretrained_paths()[scale]
    assert path.is_file() and path.stat().st_size < 500_000
    policy = load_pretrained(scale, {"observation_layout": LAYOUT, "lambda_range": [0.0, 15.0],
                                     "nu_range": [-20.0, 20.0], "dataset": DATASET})
    assert policy.demand_scale == scale
    assert policy.reward_scale is not None and policy.reward_scale > 0
    assert policy.metadata["train_wall_time_s"] > 0
    obs = _obs(1000, seed=int(scale))
    a = policy.act(obs)
    assert a.shape == (1000, 2) and np.isfinite(a).all()
    assert np.all((a >= 0.0) & (a <= 1.0))


def test_shipped_policies_record_their_training():
    """The stored budget is the one of the stored training config (not a free-standing number)."""
    for scale in (1.0, 2.0):
        meta = load_pretrained(scale).metadata
        tc = meta["train_config"]
        assert tc["demand_scale"] == scale and tc["dataset"] == DATASET
        per_iteration = tc["num_envs"] * tc["rollout_steps"]
        assert tc["total_steps"] <= meta["env_steps"] < tc["total_steps"] + tc["epochs"] * per_iteration
        assert 0 < meta["train_wall_time_s"]


@pytest.mark.slow  # measures: trains 1/40 of the shipped budget with the shipped settings
def test_shipped_policies_train_time_within_budget(tmp_path, dataset):
    """Measured, not read back: training with the shipped policy's own config, extrapolated to its env steps,
    fits the 15-minute budget for both agent types (iteration cost is linear in env steps)."""
    from algorithms.train import TrainConfig, train

    total = 0.0
    for scale in (1.0, 2.0):
        meta = load_pretrained(scale).metadata
        tc = dict(meta["train_config"])
        per_iteration = tc["num_envs"] * tc["rollout_steps"]
        tc.update(total_steps=max(per_iteration, meta["env_steps"] // 40), epochs=1, eval_episodes=4,
                  out_dir=str(tmp_path / f"scale{scale:g}"))
        result = train(TrainConfig.from_dict(tc), progress=False, data=dataset)
        total += result.wall_time_s * meta["env_steps"] / result.env_steps
    assert total <= 15 * 60, f"extrapolated training time {total:.0f} s for both agent types"


def test_unknown_agent_type_is_an_error():
    with pytest.raises(ValueError, match="demand_scale=3.0"):
        load_pretrained(3.0)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_shipped_policies_respond_monotonically_to_multipliers(scale, dataset):
    """The augmented policy at fixed (lambda, nu) grid points: the cheap check Algorithm 1 relies on.

    Higher lambda -> less grid use (more postponement where postponing is
    penalised, nu < 0); more negative nu -> more grid use and less
    postponement (r2). At nu >= 0 postponing is free or rewarded, so
    nothing is bought from the grid whatever lambda is.
    """
    lambdas, nus = (0.0, 5.0, 10.0, 15.0), (-20.0, -10.0, 0.0, 10.0)
    rows = fixed_multiplier_response(load_pretrained(scale), lambdas, nus, hours=200, start_hour=100, data=dataset)
    grid = np.array([r["e_grid"] for r in rows]).reshape(len(lambdas), len(nus))
    r2 = np.array([r["r2"] for r in rows]).reshape(len(lambdas), len(nus))
    tol = 0.03 * scale
    # along lambda (down the rows): grid use falls; postponement rises where nu < 0
    assert np.all(np.diff(grid, axis=0) <= tol), grid
    assert np.all(np.diff(r2[:, :2], axis=0) >= -tol), r2
    # along nu (across the columns, nu increasing): grid use falls, postponement rises
    assert np.all(np.diff(grid, axis=1) <= tol), grid
    assert np.all(np.diff(r2, axis=1) >= -tol), r2
    # and strongly: serve nearly everything at nu = -20, nothing from the grid at nu = 10
    mean_demand = float(dataset.demand_kwh[:, 100:300].mean()) * scale
    assert np.all(grid[:, 0] > 0.4 * mean_demand), grid
    assert np.all(np.abs(r2[:, 0]) < 0.05 * mean_demand), r2
    assert np.all(grid[:, -1] < 0.05 * mean_demand), grid
    # (the battery may still serve some: nu > 0 never occurs in execution, where nu = -eta x backlog, and the
    # shipped recipe draws it in 10 % of the training episodes only)
    assert np.all(r2[:, -1] > 0.4 * mean_demand), r2
    # lambda alone switches the grid off at nu = -5 (the dual ascent's lever on the global constraint), as it should
    # once lambda + price exceeds |nu| (postponing for good then costs less than buying); nu = -5 is about what
    # the binding scenarios reach (nu = -0.13 x backlog). The double-demand policy does not yet do it at nu = -10
    # (lambda = 15 still buys there; issue 10's report), so that cell is not asserted.
    rows5 = fixed_multiplier_response(load_pretrained(scale), (0.0, 15.0), (-5.0,), hours=200, start_hour=100,
                                      data=dataset)
    assert rows5[0]["e_grid"] > 0.4 * mean_demand and rows5[1]["e_grid"] < 0.2 * rows5[0]["e_grid"], rows5
