"""Communication models of Algorithm 1 (algorithms/comm.py): hand-computed effects on small graphs, bit-identity
with every fault off, the run folder and the `cmarl run` flags."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms.comm import CommNetwork, JointConnectivity, quantization_step, quantize
from algorithms.dual import DualConfig, DualConsensus, consensus
from algorithms.execute import ExecutionConfig, run_execution
from cmarl_env import graphs

GOLDEN = Path(__file__).parent / "data" / "comm_off_golden.npz"
PAIR = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]))  # 2 agents, one link; messages: 1->0, then 0->1


def greedy_policy(obs):
    """The fixed policy of tests/test_execute.py (no torch), reacting to the multipliers."""
    lam, nu = obs[:, 7], obs[:, 8]
    grid = np.clip(1.0 - 0.9 * lam + 0.8 * (0.5 - nu), 0.0, 1.0)
    return np.stack([np.full(len(obs), 0.7), grid], axis=1)


class Draws:
    """A stand-in for a numpy Generator that returns prescribed draws, in order."""

    def __init__(self, *arrays):
        self.arrays = [np.asarray(a) for a in arrays]

    def random(self, size=None, **_):
        out = self.arrays.pop(0)
        assert out.shape == (size,)
        return out

    def integers(self, low, high, size=None, dtype=np.int64):
        out = self.arrays.pop(0).astype(dtype)
        assert out.shape == (size,) and np.all((out >= low) & (out < high))
        return out


def run_rounds(net, lam, rounds, eps=0.5):
    """``rounds`` hours of pure consensus (no dual step), one round per hour; the trajectory."""
    out = [np.array(lam, dtype=float)]
    for _ in range(rounds):
        net.begin_hour()
        out.append(net.mix(out[-1], eps, 1))
    return np.array(out)


# --------------------------------------------------------------------------- config
def test_config_fields_defaults_and_validation():
    c = DualConfig()
    assert not c.faulty
    assert DualConfig.from_dict(c.to_dict()) == c
    f = DualConfig(delay=2, delay_random=True, message_loss=0.3, loss_mode="drop", edge_up=0.5, update_prob=0.7,
                   agent_period_max=3, async_catch_up=True, quantize_bits=8, comm_seed=4)
    assert f.faulty and DualConfig.from_dict(f.to_dict()) == f
    for field_, value in [("delay", -1), ("delay", 1.5), ("message_loss", 1.2), ("message_loss", -0.1),
                          ("loss_mode", "keep"), ("edge_up", 0.0), ("edge_up", 1.5), ("update_prob", 0.0),
                          ("agent_period_max", 0), ("quantize_bits", 53), ("quantize_bits", -1),
                          ("graph_redraw", -2), ("comm_seed", -1), ("delay_random", "yes"),
                          ("async_catch_up", 1)]:
        with pytest.raises(ValueError, match=f"DualConfig.{field_}"):
            DualConfig(**{field_: value})
    for faulty in [dict(delay=1), dict(message_loss=0.1), dict(edge_up=0.9), dict(graph_redraw=5),
                   dict(update_prob=0.9), dict(agent_period_max=2), dict(quantize_bits=8)]:
        assert DualConfig(**faulty).faulty, faulty
    # modifiers alone are no fault
    assert not DualConfig(loss_mode="drop", delay_random=True, async_catch_up=True, comm_seed=3).faulty


# --------------------------------------------------------------------------- bit-identity with every fault off
@pytest.mark.parametrize("case", ["rw7", "mh30"])
def test_every_fault_off_is_bit_identical_to_the_code_before_the_models(dataset, case):
    """200 hours through run_execution with the default communication fields reproduce, bit for bit, the
    trajectories the fault-free code produced before the models existed (stored at commit df423e0 with the
    same greedy policy: random walk on the paper's 7 agents; Metropolis, L = 2, update_period = 2 on 30)."""
    golden = np.load(GOLDEN)
    configs = {
        "rw7": ExecutionConfig(n_agents=7, constraint=0.2, steps=200, dual=DualConfig(alpha=0.2, eta=0.5)),
        "mh30": ExecutionConfig(n_agents=30, graph="small_world", constraint=0.2, steps=200, start_hour=50,
                                dual=DualConfig(alpha=0.2, eta=0.5, rounds=2, update_period=2, weights="metropolis")),
    }
    result = run_execution(configs[case], {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    for key in ("lambda", "nu", "total_grid", "total_backlog", "consensus_error"):
        assert np.array_equal(result.trajectories[key], golden[f"{case}_greedy_{key}"]), key
    assert result.facts["communication"]["faulty"] is False


@pytest.mark.parametrize("weights", ["random_walk", "metropolis"])
def test_engine_with_every_fault_off_gives_the_matrix_product_bits(weights):
    """The edge-array engine itself, with nothing lost, delayed or quantised, sums the same products in the same
    order as the sparse matrix product: bit-identical to ``consensus`` over many rounds."""
    n = 300
    edges = graphs.make_edges("small_world", n, seed=3)
    W = graphs.consensus_matrix(edges, n, weights)
    net = CommNetwork(W, DualConfig(weights=weights, rounds=3), seed=0)
    lam = np.random.default_rng(1).uniform(0, 15, n)
    ref = lam.copy()
    for _ in range(10):
        net.begin_hour()
        lam = net.mix(lam, 0.5, 3)
        ref = consensus(ref, W, 0.5, 3)
        assert np.array_equal(lam, ref)


# --------------------------------------------------------------------------- message loss
def test_lost_message_hold_keeps_the_last_value_received():
    """Round 1: both messages arrive. Round 2: the message 1 -> 0 is lost, so agent 0 mixes with the value it
    received in round 1 (agent 1's value then), while agent 1 mixes with agent 0's new value."""
    net = CommNetwork(PAIR, DualConfig(message_loss=0.5), seed=0)
    net.rng_loss = Draws([0.9, 0.9], [0.1, 0.9])
    eps, x0, x1 = 0.5, 4.0, 0.0
    traj = run_rounds(net, [x0, x1], 2, eps)
    a0, a1 = x0 - eps * (x0 - x1), x1 - eps * (x1 - x0)  # 2, 2
    assert traj[1].tolist() == [a0, a1]
    assert net.buf.tolist() == [x1, a0]  # agent 0 still holds agent 1's round-1 value (0), not 2
    assert traj[2].tolist() == [a0 - eps * (a0 - x1), a1 - eps * (a1 - a0)]  # [1, 2]


def test_lost_message_drop_leaves_the_receiver_unchanged():
    """With loss_mode="drop" a receiver that got nothing this round keeps its value (its weights renormalise over
    an empty set); the other side mixes as usual."""
    net = CommNetwork(PAIR, DualConfig(message_loss=0.5, loss_mode="drop"), seed=0)
    net.rng_loss = Draws([0.9, 0.9], [0.1, 0.9])
    traj = run_rounds(net, [4.0, 0.0], 2)
    assert traj[1].tolist() == [2.0, 2.0]
    net = CommNetwork(PAIR, DualConfig(message_loss=0.5, loss_mode="drop"), seed=0)
    net.rng_loss = Draws([0.1, 0.9])
    net.begin_hour()
    assert net.mix(np.array([4.0, 0.0]), 0.5, 1).tolist() == [4.0, 2.0]  # agent 0 got nothing: unchanged


def test_renormalisation_over_what_arrived_random_walk_and_metropolis():
    """A star 0-{1,2,3}: agent 0 gets only the message from 1. Random walk: it averages over {1}; Metropolis: its
    neighbour weight (1 - w_00) is put on agent 1 alone."""
    n = 4
    edges = (np.array([0, 0, 0]), np.array([1, 2, 3]))
    lam = np.array([0.0, 4.0, 8.0, 12.0])
    for weights in ("random_walk", "metropolis"):
        W = graphs.consensus_matrix(edges, n, weights)
        net = CommNetwork(W, DualConfig(message_loss=0.5, loss_mode="drop", weights=weights), seed=0)
        # messages in CSR order: 1->0, 2->0, 3->0, 0->1, 0->2, 0->3; keep only 1->0 and the messages to the leaves
        net.rng_loss = Draws([0.9, 0.1, 0.1, 0.9, 0.9, 0.9])
        net.begin_hour()
        out = net.mix(lam, 1.0, 1)  # eps = 1: lam_0 becomes (W x)_0
        w00 = W[0, 0]
        assert out[0] == pytest.approx(w00 * 0.0 + (1 - w00) * 4.0)
        np.testing.assert_allclose(out[1:], [W[i, i] * lam[i] + W[i, 0] * 0.0 for i in (1, 2, 3)])


def test_loss_rate_and_determinism():
    n = 500
    W = graphs.consensus_matrix(graphs.make_edges("small_world", n, seed=0), n)
    lam = np.random.default_rng(0).uniform(0, 15, n)

    def run(seed):
        net = CommNetwork(W, DualConfig(message_loss=0.3), seed=seed)
        out = run_rounds(net, lam, 20)
        return out, net.facts()

    a, fa = run((0, 1, 2))
    b, _ = run((0, 1, 2))
    c, _ = run((1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert fa["delivered_fraction"] == pytest.approx(0.7, abs=0.01)


# --------------------------------------------------------------------------- delays
def test_fixed_delay_two_nodes_closed_form():
    """Delay d = 1 hour, eps = 1/2, x(0) = (1, 0): nothing arrives in round 0, then each agent mixes with the
    other's value of the previous round: x_i(s+1) = x_i(s) - eps (x_i(s) - x_j(s-1)). The sum stays 1 and the
    difference delta(s) = x_0 - x_1 solves delta(s+1) = delta(s)/2 - delta(s-1)/2, whose characteristic roots
    (1 +- i sqrt 7) / 4 have modulus 1/sqrt 2: delta(s) = 2^(-s/2) (A cos(s theta) + B sin(s theta))."""
    net = CommNetwork(PAIR, DualConfig(delay=1), seed=0)
    traj = run_rounds(net, [1.0, 0.0], 12)
    by_hand = [[1, 0], [1, 0], [0.5, 0.5], [0.25, 0.75], [0.375, 0.625], [0.5625, 0.4375]]
    np.testing.assert_array_equal(traj[:6], by_hand)
    np.testing.assert_allclose(traj.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    delta = traj[:, 0] - traj[:, 1]
    theta = math.atan2(math.sqrt(7) / 4, 1 / 4)
    s = np.arange(1, 13)
    # delta(1) = 1, delta(2) = 0 fix A and B (the recursion starts at s = 1)
    basis = np.stack([2 ** (-s / 2) * np.cos(s * theta), 2 ** (-s / 2) * np.sin(s * theta)], axis=1)
    coef = np.linalg.solve(basis[:2], delta[1:3])
    np.testing.assert_allclose(delta[1:], basis @ coef, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_fixed_delay_matches_the_delayed_recursion(d):
    """x(s+1) = x(s) - eps (x(s) - W x(s-d)) once the first message has arrived (s >= d), x(s+1) = x(s) before."""
    n = 6
    W = graphs.consensus_matrix(graphs.ring(n), n)
    x0 = np.arange(n, dtype=float)
    traj = run_rounds(CommNetwork(W, DualConfig(delay=d), seed=0), x0, 15)
    ref = [x0]
    for s in range(15):
        ref.append(ref[-1] if s < d else ref[-1] - 0.5 * (ref[-1] - W @ ref[s - d]))
    np.testing.assert_allclose(traj, ref, rtol=0, atol=1e-13)


def test_random_delay_keeps_the_freshest_value():
    """Random delays (uniform 0..2 hours): a message that arrives after a fresher one is ignored."""
    net = CommNetwork(PAIR, DualConfig(delay=2, delay_random=True), seed=0)
    # delays of the messages sent in rounds 0, 1, 2 (CSR order: 1->0, 0->1)
    net.rng_delay = Draws([2, 0], [0, 0], [0, 0])
    lam = np.array([4.0, 0.0])
    net.begin_hour()
    net.mix(lam, 0.0, 1)          # round 0: the message 0->1 arrives at once; 1->0 is due in round 2
    assert net.sent_at.tolist() == [-1, 0]
    net.begin_hour()
    net.mix(np.array([5.0, 1.0]), 0.0, 1)  # round 1: both sent now arrive now
    assert net.sent_at.tolist() == [1, 1] and net.buf.tolist() == [1.0, 5.0]
    net.begin_hour()
    net.mix(np.array([6.0, 2.0]), 0.0, 1)  # round 2: the stale round-0 message 1->0 arrives, but round 2 is fresher
    assert net.sent_at.tolist() == [2, 2] and net.buf.tolist() == [2.0, 6.0]


def test_random_delay_age_is_bounded():
    n = 200
    W = graphs.consensus_matrix(graphs.make_edges("small_world", n, seed=1), n)
    net = CommNetwork(W, DualConfig(delay=4, delay_random=True, rounds=2), seed=5)
    lam = np.random.default_rng(0).uniform(0, 15, n)
    prev = net.sent_at.copy()
    for _ in range(30):
        net.begin_hour()
        lam = net.mix(lam, 0.5, 2)
        assert np.all(net.sent_at >= prev)  # never older than what was held
        prev = net.sent_at.copy()
        # the message sent 4 hours (8 rounds) ago has surely arrived: nothing held is older
        if net.round > 8:
            assert net.has.all()
        assert np.all(net.round - 1 - net.sent_at[net.has] <= 4 * 2)


# --------------------------------------------------------------------------- time-varying graphs
def test_down_link_carries_nothing_and_joint_window():
    """A down link: neither side mixes. Path 0-1-2 with the two links up on alternate hours: no hourly graph is
    connected but every window of 2 hours is."""
    net = CommNetwork(PAIR, DualConfig(edge_up=0.5), seed=0)
    net.rng_links = Draws([0.9])
    net.begin_hour()
    assert net.mix(np.array([4.0, 0.0]), 0.5, 1).tolist() == [4.0, 0.0]

    jc = JointConnectivity(np.array([0, 1]), np.array([1, 2]), 3)
    for t in range(6):
        jc.update(t, np.array([t % 2 == 0, t % 2 == 1]))
    f = jc.facts()
    assert f["jointly_connected"] and f["joint_window_hours"] == 2 and f["first_connected_hour"] == 1
    assert f["hourly_graph_connected_fraction"] == 0.0
    jc = JointConnectivity(np.array([0, 1]), np.array([1, 2]), 3)
    for t in range(6):
        jc.update(t, np.array([True, t == 0]))  # link 1-2 never up again: the window grows every hour
    assert jc.window(5) == 6
    jc.update(6, np.array([False, False]))
    assert jc.windows[-1] == 7


def test_edge_up_mixes_over_the_graph_of_the_hour():
    """Random walk under edge_up: one round equals the consensus matrix of the hour's graph D(t)^-1 A(t)
    (agents with no up link keep their value)."""
    n = 40
    edges = graphs.make_edges("small_world", n, seed=2)
    W = graphs.consensus_matrix(edges, n)
    net = CommNetwork(W, DualConfig(edge_up=0.5), seed=7)
    lam = np.random.default_rng(3).uniform(0, 15, n)
    net.begin_hour()
    out = net.mix(lam, 0.5, 1)
    up = net.up_links
    src, dst = net.links.link_src[up], net.links.link_dst[up]
    a = graphs.adjacency((src, dst), n).toarray()
    deg = a.sum(axis=1)
    wx = np.where(deg > 0, a @ lam / np.maximum(deg, 1), lam)
    np.testing.assert_allclose(out, lam - 0.5 * (lam - wx), rtol=0, atol=1e-12)


def test_graph_redraw_in_execution(dataset):
    config = ExecutionConfig(n_agents=30, graph="small_world", constraint=0.2, steps=60,
                             dual=DualConfig(alpha=0.2, graph_redraw=10))
    result = run_execution(config, {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    c = result.facts["communication"]
    assert c["graph_redraws"] == 5 and c["joint_window_hours"] == 1 and c["hourly_graph_connected_fraction"] == 1.0
    with pytest.raises(ValueError, match="random graph family"):
        run_execution(ExecutionConfig(steps=10, dual=DualConfig(graph_redraw=5)),
                      {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)


# --------------------------------------------------------------------------- asynchrony
def test_asleep_agent_keeps_its_multipliers_and_averages_its_signals():
    """No consensus (L = 0), update_prob < 1: agent 1 sleeps in hour 0 and wakes in hour 1, when it takes one dual
    step on the mean of its two hours' signals; agent 0 updates both hours."""
    cfg = DualConfig(alpha=0.5, eta=0.25, rounds=0, update_prob=0.5)
    dual = DualConsensus(None, cfg, share=1.0, n=2)
    dual.comm.rng_async = Draws([0.1, 0.9], [0.1, 0.1])
    lam, nu = dual.step(np.array([3.0, 3.0]), np.array([1.0, 1.0]))
    assert lam.tolist() == [1.0, 0.0] and nu.tolist() == [-0.25, 0.0]
    lam, nu = dual.step(np.array([5.0, 5.0]), np.array([2.0, 4.0]))
    assert lam.tolist() == [1.0 + 0.5 * 4.0, 0.5 * (4.0 - 1.0)]
    assert nu.tolist() == [-0.25 - 0.25 * 2.0, -0.25 * 2.5]


def test_catch_up_applies_the_missed_steps():
    """async_catch_up: the agent that slept through hour 0 applies both hours' dual steps when it wakes (signals
    summed, budget twice), so lambda and nu integrate every hour as in the synchronous run (nu = -eta * sum r2)."""
    cfg = DualConfig(alpha=0.5, eta=0.25, rounds=0, update_prob=0.5, async_catch_up=True)
    dual = DualConsensus(None, cfg, share=1.0, n=2)
    dual.comm.rng_async = Draws([0.1, 0.9], [0.1, 0.1])
    dual.step(np.array([3.0, 3.0]), np.array([1.0, 1.0]))
    lam, nu = dual.step(np.array([5.0, 5.0]), np.array([2.0, 4.0]))
    sync = DualConsensus(None, DualConfig(alpha=0.5, eta=0.25, rounds=0), share=1.0, n=2)
    sync.step(np.array([3.0, 3.0]), np.array([1.0, 1.0]))
    lam_s, nu_s = sync.step(np.array([5.0, 5.0]), np.array([2.0, 4.0]))
    assert lam.tolist() == [3.0, 3.0] and lam.tolist() == lam_s.tolist()
    assert nu.tolist() == [-0.75, -1.25] and nu.tolist() == nu_s.tolist()


def test_periodic_agents_update_on_their_own_period():
    n = 50
    cfg = DualConfig(alpha=0.1, rounds=0, agent_period_max=5)
    dual = DualConsensus(None, cfg, share=0.0, n=n)
    period, phase = dual.comm.period, dual.comm.phase
    assert set(np.unique(period)) <= set(range(1, 6)) and np.all((phase >= 0) & (phase < period))
    updates = np.zeros((20, n), dtype=bool)
    lam = dual.lam
    for t in range(20):
        new, _ = dual.step(np.ones(n), np.zeros(n))
        updates[t] = new != lam
        lam = new
    for i in range(n):
        hours = np.flatnonzero(updates[:, i])
        assert np.all(np.diff(hours) == period[i]) and (hours[0] + phase[i]) % period[i] == 0


# --------------------------------------------------------------------------- quantisation
@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
def test_quantisation_error_within_half_a_step(bits):
    lo, hi = 0.0, 15.0
    step = quantization_step(bits, lo, hi)
    x = np.concatenate([np.random.default_rng(bits).uniform(lo, hi, 10_000), [lo, hi]])
    q = quantize(x, bits, lo, hi)
    assert np.all(np.abs(q - x) <= step / 2 * (1 + 1e-12))
    assert np.unique(q).size <= 2 ** bits and q.min() >= lo and q.max() <= hi
    levels = (q - lo) / step
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-9)


def test_quantised_messages_reach_the_receivers():
    """What a receiver holds is the sender's value quantised (within half a step); its own value stays exact."""
    n = 100
    W = graphs.consensus_matrix(graphs.make_edges("small_world", n, seed=0), n)
    net = CommNetwork(W, DualConfig(quantize_bits=3), seed=0)
    lam = np.random.default_rng(0).uniform(0, 15, n)
    net.begin_hour()
    out = net.mix(lam, 0.5, 1)
    step = 15 / 7
    sent = lam[net.links.off_cols]
    assert np.all(np.abs(net.buf - sent) <= step / 2 + 1e-12) and np.any(net.buf != sent)
    np.testing.assert_allclose(out, lam - 0.5 * (lam - W @ quantize(lam, 3, 0.0, 15.0)), atol=1e-12)


# --------------------------------------------------------------------------- scale, CLI, run folder
def test_vectorised_at_scale():
    """Every model at once on 200,000 agents: a few edge-array passes per round, no per-agent loop."""
    import time

    n = 200_000
    W = graphs.consensus_matrix(graphs.random_edges("small_world", n, seed=0), n)
    cfg = DualConfig(delay=2, delay_random=True, message_loss=0.2, edge_up=0.8, quantize_bits=10, update_prob=0.9)
    net = CommNetwork(W, cfg, seed=0)
    lam = np.random.default_rng(0).uniform(0, 15, n)
    t0 = time.perf_counter()
    for _ in range(3):
        net.begin_hour()
        lam = net.mix(lam, 0.5, 1, net.awake())
    assert time.perf_counter() - t0 < 10.0
    assert np.all((lam >= 0) & (lam <= 15))


def test_cli_flags_reach_the_run_folder(tmp_path):
    from benchmarks.cli import main

    out = tmp_path / "faulty"
    assert main(["run", "--steps", "30", "--message-loss", "0.3", "--delay", "2", "--edge-up", "0.5",
                 "--update-prob", "0.8", "--quantize-bits", "6", "--out", str(out), "--no-progress"]) == 0
    dual = json.loads((out / "config.json").read_text())["dual"]
    assert (dual["message_loss"], dual["delay"], dual["edge_up"], dual["update_prob"], dual["quantize_bits"]) == \
        (0.3, 2, 0.5, 0.8, 6)
    comm = json.loads((out / "facts.json").read_text())["communication"]
    assert comm["faulty"] and comm["message_loss"] == 0.3 and comm["connectivity_checks"] == 30
    assert 0 < comm["delivered_fraction"] < 1 and comm["quantization_step"] == pytest.approx(15 / 63)
    assert "joint_window_hours" in comm and "consensus_error_mean" in json.loads((out / "metrics.json").read_text())
    with pytest.raises(SystemExit):
        main(["run", "--steps", "10", "--message-loss", "1.5", "--out", str(tmp_path / "bad"), "--no-progress"])
