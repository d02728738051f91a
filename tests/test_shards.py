"""Distributed execution on Ray (algorithms/shards.py): bit-identical to the single-process run with faults off."""

import argparse
import math

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from algorithms import run_cli  # noqa: E402
from algorithms.dual import DualConfig  # noqa: E402
from algorithms.execute import ExecutionConfig, build_graph, run_execution  # noqa: E402
from algorithms.shards import (_batched_act, exchange_plan, link_up, local_matrix, partition, run_sharded,  # noqa: E402
                               shard_sums, sum_tree, tree_pieces, tree_sum)
from cmarl_env import graphs  # noqa: E402

TIMING = ("wall_time_s", "seconds_per_step", "agent_steps_per_s")


@pytest.fixture(scope="module")
def ray_local():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def assert_identical(a, b):
    for key, value in a.metrics.items():
        if key in TIMING:
            continue
        other = b.metrics[key]
        assert value == other or (isinstance(value, float) and math.isnan(value) and math.isnan(other)), key
    assert a.trajectories.keys() == b.trajectories.keys()
    for key, value in a.trajectories.items():
        assert np.array_equal(value, b.trajectories[key], equal_nan=True), key
    facts = {k: v for k, v in b.facts.items() if k != "sharding"}
    assert facts == a.facts


# ---------------------------------------------------------------- pure pieces
def test_partition_and_errors():
    assert partition(7, 1).tolist() == [0, 7]
    assert partition(7, 4).tolist() == [0, 1, 3, 5, 7]
    for bad in (0, 8, -1, 2.5, True):
        with pytest.raises(ValueError, match="shards="):
            partition(7, bad)


@pytest.mark.parametrize("seed", range(3))
def test_sum_tree_reproduces_numpy_sum(seed):
    rng = np.random.default_rng(seed)
    for n in (1, 7, 40, 129, 1000, 4097, 250_001):
        x = rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 4, n)
        for k in (1, 2, 3, 4, 7):
            if k > n:
                continue
            bounds = partition(n, k)
            tree = sum_tree(n, bounds[1:-1].tolist())
            leaf_sums, raw_parts = {}, {}
            raw_nodes = []

            def collect(t):
                if t[0] == "node":
                    collect(t[1]), collect(t[2])
                elif t[0] == "raw":
                    raw_nodes.append(t[1])

            collect(tree)
            for s in range(k):
                lo, hi = int(bounds[s]), int(bounds[s + 1])
                leaves, raws = tree_pieces(tree, lo, hi)
                sums, pieces = shard_sums(x[lo:hi], lo, leaves, raws)
                leaf_sums.update(zip(leaves, sums))
                for (a, _), piece in zip(raws, pieces):
                    start = max(r for r in raw_nodes if r <= a)
                    raw_parts.setdefault(start, []).append(piece)
            assert tree_sum(tree, leaf_sums, raw_parts) == np.sum(x), (n, k)


@pytest.mark.parametrize("graph, weights", [("two_clusters", "random_walk"), ("small_world", "metropolis"),
                                            ("erdos_renyi", "random_walk")])
def test_local_rows_equal_the_global_product(graph, weights):
    n = 300
    _, walk = build_graph(graph, {}, n, 0)
    W = graphs.consensus_matrix(walk, n, weights)
    x = np.random.default_rng(1).uniform(0, 15, n)
    full = W @ x
    bounds = partition(n, 3)
    plans, facts = exchange_plan(W, bounds)
    assert facts["cut_edges"] > 0 and facts["boundary_values"] > 0
    for plan in plans:
        local = np.concatenate([x[plan.lo:plan.hi], x[plan.halo]])
        assert np.array_equal((local_matrix(W, plan) @ local)[: plan.hi - plan.lo], full[plan.lo:plan.hi])
        for d, sent in plan.send.items():  # what a shard sends is what the other receives
            assert np.array_equal(plans[d].recv[plan.index], sent)


def test_cut_link_state_is_shared_by_both_ends():
    lo, hi = np.array([0, 3, 5]), np.array([9, 4, 8])
    a = link_up(lo, hi, 10, hour=7, seed=3, q=0.5)
    assert np.array_equal(a, link_up(lo, hi, 10, hour=7, seed=3, q=0.5))
    many = link_up(np.zeros(20_000, np.int64), np.arange(20_000), 20_000, hour=1, seed=0, q=0.3)
    assert abs(many.mean() - 0.3) < 0.02


def test_small_batches_are_rebuilt_at_their_size():
    """A torch row's last bits depend on the batch size below 4 rows: a shard's rows of a 2-agent type come out
    as in the single-process batch of 2."""
    from algorithms.policy import load_pretrained

    policy = load_pretrained(2.0)
    obs = np.random.default_rng(0).uniform(0, 1, (2, policy.obs_dim)).astype(np.float32)
    whole = np.asarray(policy.act(obs), dtype=np.float64)
    for rank in (0, 1):
        part = _batched_act(policy.act, obs[rank:rank + 1], rank, 2)
        assert np.array_equal(part, whole[rank:rank + 1])


# ---------------------------------------------------------------- on Ray
@pytest.mark.parametrize("shards", [1, 2, 4])
def test_bit_identical_7_agents(ray_local, dataset, shards):
    config = ExecutionConfig(n_agents=7, steps=24)
    assert_identical(run_execution(config, data=dataset), run_sharded(config, shards, data=dataset))


@pytest.mark.parametrize("shards", [2, pytest.param(1, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_bit_identical_40_agents_metropolis_two_rounds(ray_local, dataset, shards):
    config = ExecutionConfig(n_agents=40, graph="small_world", steps=24, dual=DualConfig(rounds=2, weights="metropolis"))
    result = run_sharded(config, shards, data=dataset)
    assert_identical(run_execution(config, data=dataset), result)
    sh = result.facts["sharding"]
    assert sh["shards"] == shards and (sh["cut_edges"] > 0) == (shards > 1) and 0 <= sh["exchange_share"] <= 1


@pytest.mark.slow
def test_bit_identical_update_period_and_partial_diagnostics(ray_local, dataset):
    config = ExecutionConfig(n_agents=40, graph="ring", steps=24, dual=DualConfig(update_period=3))
    ref = run_execution(config, data=dataset)
    assert_identical(ref, run_sharded(config, 4, data=dataset))
    partial = run_sharded(config, 2, data=dataset, diagnostics="partial")
    assert np.array_equal(partial.trajectories["lambda"], ref.trajectories["lambda"])
    assert np.allclose(partial.trajectories["consensus_error"], ref.trajectories["consensus_error"], rtol=1e-9, atol=1e-12)


def test_faults_on_cross_shard_messages(ray_local, dataset):
    """Every message lost (drop mode) is no consensus; a fixed delay draws nothing and stays bit-identical."""
    lost = run_sharded(ExecutionConfig(n_agents=40, steps=12, dual=DualConfig(message_loss=1.0, loss_mode="drop")),
                       2, data=dataset)
    alone = run_execution(ExecutionConfig(n_agents=40, steps=12, dual=DualConfig(rounds=0)), data=dataset)
    assert np.array_equal(lost.trajectories["lambda"], alone.trajectories["lambda"])
    assert lost.facts["communication"]["delivered_fraction"] == 0.0
    delayed = ExecutionConfig(n_agents=40, steps=12, dual=DualConfig(delay=2))
    assert np.array_equal(run_sharded(delayed, 2, data=dataset).trajectories["lambda"],
                          run_execution(delayed, data=dataset).trajectories["lambda"])


def test_graph_redraw_is_refused(dataset):
    config = ExecutionConfig(n_agents=7, graph="erdos_renyi", steps=4, dual=DualConfig(graph_redraw=2))
    with pytest.raises(ValueError, match="graph_redraw=2 is not supported with shards"):
        run_sharded(config, 2, data=dataset)


# ---------------------------------------------------------------- CLI
def _args(*argv):
    parser = argparse.ArgumentParser()
    run_cli.configure(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv, message", [
    (("--shards", "0"), "--shards 0 is out of range; allowed 1..7"),
    (("--shards", "8"), "--shards 8 is out of range; allowed 1..7"),
    (("--address", "auto"), "--address 'auto' needs --shards K"),
    (("--shards", "2", "--graph-redraw", "3"), "--graph-redraw 3 is not supported with --shards"),
])
def test_cli_refuses_bad_values(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        run_cli.run(_args("--agents", "7", "--steps", "2", "--out", str(tmp_path / "run"), *argv))


def test_cli_unreachable_address(tmp_path):
    with pytest.raises(SystemExit, match="cannot reach the Ray cluster at address='127.0.0.1:1'"):
        run_cli.run(_args("--agents", "7", "--steps", "2", "--shards", "2", "--address", "127.0.0.1:1",
                          "--out", str(tmp_path / "run")))
