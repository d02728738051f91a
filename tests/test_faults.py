"""The fault list of issue 12, one test (or a few) per row, plus SIGKILL-and-resume of a small `cmarl bench` suite
and concurrent writers of one output folder.

Rows:

1. checkpoints checked wherever a policy is loaded (`cmarl run --policy`, `cmarl bench` params.policies, the grid
   search's controllers): demand scale, multiplier ranges, observation layout, dataset; a scale no agent has;
2. no silent wrap-around of the data (start hour 2995 with 80-hour episodes, episode_length=5000, window=(0, 10)
   with 30-hour episodes); wrapping only with ``wrap_data=True``, recorded; replay at per-agent offsets still works;
3. errors that name the problem (wrong types as well as values, actions naming the agent, a missing checkpoint,
   --out an existing file or an unwritable folder, checked before any work; a checkpoint of the wrong size);
4. two writers of one `cmarl run --out` / `cmarl bench --out`: the second is refused by the lock file, and a run
   folder is never left half-written;
5. SIGKILL in the middle of `cmarl bench`: no finished run lost or repeated after the resume;
6. a missing optional extra skips (ModuleNotFoundError), it does not fail.

Subprocesses are waited on through events (a lock file holding the child's pid, a controller that kills its own
process at a given roll-out), never through sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cmarl_env import EnvConfig, demand_response_v0
from cmarl_env.config import FieldTypeError
from cmarl_env.core import ActionTypeError, DemandResponseCore, NonFiniteActionError
from cmarl_env.records import FolderLock, FolderLockedError, OutputPathError, check_output_dir, publish_folder

torch = pytest.importorskip("torch", reason="checkpoint faults need torch (the [learn] extra)")

from algorithms.policy import (  # noqa: E402
    CheckpointMismatchError,
    CheckpointNotFoundError,
    UnknownDemandScaleError,
    load_policies_by_scale,
    load_policy,
    load_pretrained,
    save_checkpoint,
)
from benchmarks.cli import main as cmarl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NORMAL = ROOT / "algorithms" / "pretrained" / "normal.pt"
DOUBLE = ROOT / "algorithms" / "pretrained" / "double.pt"
SUBPROCESS_TIMEOUT = 300  # a safety net only: every wait below ends on an event


def _cmarl_error(argv: list[str]) -> str:
    """Run `cmarl ...` in this process; it must exit with a one-line message (no traceback). Returns it."""
    with pytest.raises(SystemExit) as exc:
        cmarl(argv)
    message = exc.value.code
    assert isinstance(message, str), f"exit code {message!r} instead of a message"
    assert "\n" not in message.strip() and "Traceback" not in message, message
    return message


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _checkpoint(tmp_path: Path, name: str, source: Path = NORMAL, **changes) -> Path:
    """A copy of a shipped checkpoint whose metadata differs by ``changes``."""
    policy = load_policy(source)
    meta = dict(policy.metadata) | changes
    return save_checkpoint(tmp_path / name, policy, meta)


# ------------------------------------------------------------------ row 1: checkpoints checked everywhere
def test_run_refuses_a_checkpoint_of_the_other_demand_scale(tmp_path):
    message = _cmarl_error(["run", "--steps", "24", "--no-progress", "--out", str(tmp_path / "run"),
                            "--policy", f"2.0={NORMAL}"])
    assert str(NORMAL) in message and "demand_scale" in message and "1.0" in message and "2.0" in message
    assert not (tmp_path / "run").exists()  # refused before any work: no folder


def test_run_refuses_a_scale_no_agent_has(tmp_path):
    message = _cmarl_error(["run", "--steps", "24", "--no-progress", "--out", str(tmp_path / "run"),
                            "--policy", f"3.0={NORMAL}"])
    assert "no agent has demand scale 3" in message and "[1.0, 2.0]" in message
    # all agents normal (--double-demand ''): a checkpoint for the double agents has no agents to act for
    message = _cmarl_error(["run", "--steps", "24", "--no-progress", "--double-demand", "", "--out",
                            str(tmp_path / "run"), "--policy", f"2.0={DOUBLE}"])
    assert "no agent has demand scale 2" in message and "[1.0]" in message


@pytest.mark.parametrize("field, value", [("lambda_range", [0.0, 10.0]), ("nu_range", [-15.0, 15.0]),
                                          ("dataset", "citylearn_challenge_2023_phase_1"),
                                          ("observation_layout", ["demand", "backlog", "soc", "solar", "price",
                                                                  "hour_sin", "hour_cos", "nu", "lambda"])])
def test_run_refuses_a_checkpoint_trained_for_another_environment(tmp_path, field, value):
    path = _checkpoint(tmp_path, f"other_{field}.pt", **{field: value})
    message = _cmarl_error(["run", "--steps", "24", "--no-progress", "--out", str(tmp_path / "run"),
                            "--policy", f"1.0={path}"])
    assert str(path) in message and f"{field} is {value!r} in the checkpoint" in message, message
    assert not (tmp_path / "run").exists()


def test_run_accepts_matching_checkpoints_and_checks_them(tmp_path, dataset):
    """The control: the right files at the right scales run (exit 0) and give the shipped-policy result."""
    assert cmarl(["run", "--steps", "24", "--no-progress", "--out", str(tmp_path / "given"),
                  "--policy", f"1.0={NORMAL}", "--policy", f"2.0={DOUBLE}"]) == 0
    assert cmarl(["run", "--steps", "24", "--no-progress", "--out", str(tmp_path / "shipped")]) == 0
    given = json.loads((tmp_path / "given" / "metrics.json").read_text())
    shipped = json.loads((tmp_path / "shipped" / "metrics.json").read_text())
    for key in ("avg_grid_consumption", "total_cost", "final_backlog_kwh"):
        assert given[key] == shipped[key], key


def test_bench_refuses_swapped_policies(tmp_path, dataset):
    """`cmarl bench` with params.policies swapped: the run fails, error.json names the file and demand_scale."""
    from benchmarks.runner import run_dir, run_suite
    from benchmarks.suite import parse_suite

    swapped = {"1.0": str(DOUBLE), "2.0": str(NORMAL)}
    raw = {"name": "swapped", "defaults": {"scenario": {"steps": 24, "start_jitter": 0, "constraint": 0.6},
                                           "seeds": [0], "rollouts": 1, "oracle": False},
           "methods": {"ours": {"kind": "consensus", "params": {"policies": swapped}},
                       "extra": {"kind": "consensus", "params": {"policies": {"1.0": str(NORMAL), "2.0": str(DOUBLE),
                                                                              "3.0": str(NORMAL)}}}},
           "experiments": [{"name": "x", "methods": ["ours", "extra"]}]}
    suite = parse_suite(raw)
    report = run_suite(suite, tmp_path / "out", backend="serial", progress=False)
    assert len(report.failed) == 2 and not report.completed
    by_method = {spec.method.name: spec for spec in suite.runs()}
    err = json.loads((run_dir(tmp_path / "out", by_method["ours"]) / "error.json").read_text())
    assert err["error_type"] == "CheckpointMismatchError" and "demand_scale" in err["error"]
    assert str(DOUBLE) in err["error"] or str(NORMAL) in err["error"]
    err = json.loads((run_dir(tmp_path / "out", by_method["extra"]) / "error.json").read_text())
    assert err["error_type"] == "UnknownDemandScaleError" and "demand scale 3" in err["error"]
    # the same check in the library call
    core = DemandResponseCore(suite.scenarios()[0].env_config(0, dataset.n_steps, augment=True), dataset)
    with pytest.raises(CheckpointMismatchError) as exc:
        load_policies_by_scale({1.0: DOUBLE, 2.0: NORMAL}, expected=core)
    assert exc.value.field == "demand_scale" and exc.value.path == str(DOUBLE)


def test_controllers_check_checkpoint_policies(dataset):
    """execute.policies_for (Algorithm 1, the grid search's FixedMultipliers) checks every checkpoint it is given."""
    from algorithms.execute import DualConsensusController, FixedMultipliers
    from cmarl_env.evaluation import evaluation_config, rollout

    core = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.3, start_hour=0, steps=24,
                                                n_hours=dataset.n_steps, augment=True), dataset)
    normal, double = load_pretrained(1.0), load_pretrained(2.0)
    with pytest.raises(CheckpointMismatchError, match="demand_scale"):
        rollout(FixedMultipliers(1.0, -1.0, {1.0: double, 2.0: normal}), core, 0, 24)
    with pytest.raises(UnknownDemandScaleError, match="demand scale 4"):
        rollout(DualConsensusController(policies={1.0: normal, 4.0: normal}), core, 0, 24)
    plain = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.3, start_hour=0, steps=24,
                                                 n_hours=dataset.n_steps, augment=False), dataset)
    with pytest.raises(CheckpointMismatchError, match="observation_layout"):
        rollout(FixedMultipliers(1.0, -1.0, {1.0: normal, 2.0: double}, augment=False), plain, 0, 24)
    assert rollout(FixedMultipliers(1.0, -1.0, {1.0: normal, 2.0: double}), core, 0, 24).steps == 24


# ------------------------------------------------------------------ row 2: no silent wrap-around
def test_no_wrap_around(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)  # 80-hour episodes on the training hours [0, 3000)
    with pytest.raises(ValueError, match=r"start_hour=2995 \+ episode length 80 = 3075 runs past the end of the "
                                         r"data window \[0, 3000\)"):
        core.reset(start_hour=2995)
    env = demand_response_v0.parallel_env(data=dataset)
    with pytest.raises(ValueError, match=r"start_hour=2995 .* \[0, 3000\)"):
        env.reset(options={"start_hour": 2995})
    with pytest.raises(ValueError, match=r"episode_length=5000 hours does not fit in the data window \[0, 3000\)"):
        DemandResponseCore(EnvConfig(episode_length=5000), dataset)
    with pytest.raises(ValueError, match=r"episode_length=30 hours does not fit in the data window \[0, 10\)"):
        EnvConfig(window=(0, 10), episode_length=30)
    with pytest.raises(ValueError, match=r"start_hour=2990 .* \[0, 3000\)"):
        DemandResponseCore(EnvConfig(start_hour=2990), dataset)
    # the last hour that fits is fine, and stepping past the episode's window end is refused, not wrapped
    core.reset(start_hour=2920)
    for _ in range(80):
        out = core.step(np.ones((7, 2)))
    assert out.truncated
    with pytest.raises(ValueError, match=r"step 80 of the episode from start_hour=2920 would read hour 3000, past "
                                         r"the end of the data window \[0, 3000\)"):
        core.step(np.ones((7, 2)))


def test_wrapping_is_explicit_and_recorded(dataset, tmp_path):
    wrapped = DemandResponseCore(EnvConfig(window=(0, 10), episode_length=30, wrap_data=True, n_agents=2,
                                           demand_scales=1.0), dataset)
    wrapped.reset(start_hour=5)
    demand = [wrapped.step(np.ones((2, 2))).signals.demand[0] for _ in range(30)]
    assert demand[5] == demand[15] == demand[25]  # hour 10 is hour 0 again: repeated on request
    assert wrapped.describe()["wrap_data"] is True
    assert DemandResponseCore(EnvConfig(), dataset).describe()["wrap_data"] is False
    assert cmarl(["run", "--steps", "24", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    facts = json.loads((tmp_path / "run" / "facts.json").read_text())
    assert facts["wrap_data"] is False and facts["window"] == [0, 24] and facts["episode_length"] == 24


def test_replay_at_offsets_still_works(dataset):
    """Agents beyond the 17 buildings replay a building at a per-agent offset inside the window (the layout, not an
    episode past its window): a full-window episode of 100 agents runs, and their data are the window's hours."""
    core = DemandResponseCore(EnvConfig(n_agents=100, window=(0, 48), episode_length=48, start_hour=0,
                                        demand_scales=1.0), dataset)
    assert np.any(core.layout.offset[17:] > 0)
    core.reset()
    for t in range(48):
        out = core.step(np.ones((100, 2)))
        i = 40
        col = (core.layout.offset[i] + t) % 48
        assert out.signals.demand[i] == dataset.demand_kwh[core.layout.building[i], col]
    assert out.truncated


def test_random_starts_fit_the_window(dataset):
    """Random starts (core, BatchedEnv per copy) are drawn so that the episode fits."""
    from cmarl_env.views import BatchedEnv

    core = DemandResponseCore(EnvConfig(window=(100, 190), episode_length=80), dataset)
    starts = set()
    for s in range(200):
        core.reset(seed=s)
        starts.add(int(core.start_hour))
    assert min(starts) >= 100 and max(starts) <= 110 and len(starts) > 5
    env = BatchedEnv(EnvConfig(episode_length=80), num_envs=256, data=dataset)
    env.reset(seed=0)
    for _ in range(3):
        start = np.asarray(env.core.start_hour)
        assert start.min() >= 0 and start.max() + 80 <= 3000
        for _ in range(80):
            env.step(np.ones((256, 2)))  # the last step resets every copy to fresh starts


# ------------------------------------------------------------------ row 3: errors that name the problem
def test_config_type_errors_name_the_field():
    with pytest.raises(FieldTypeError, match=r"constraint_fraction='0.3' must be a real number in \(0.0, 1.0\]"):
        EnvConfig(constraint_fraction="0.3")
    with pytest.raises(TypeError, match="dataset=123 must be a dataset name"):
        EnvConfig(dataset=123)
    with pytest.raises(ValueError, match="dataset=123"):  # FieldTypeError is both
        EnvConfig(dataset=123)
    with pytest.raises(TypeError, match=r"lambda_range='0,15' must be a pair"):
        EnvConfig(lambda_range="0,15")
    with pytest.raises(TypeError, match="n_agents=7.0 must be an integer"):
        EnvConfig(n_agents=7.0)
    with pytest.raises(ValueError, match=r"constraint_fraction=1e\+400|constraint_fraction=1000"):
        EnvConfig(constraint_fraction=10**400)


def test_action_errors_name_the_agent(dataset):
    env = demand_response_v0.parallel_env(data=dataset, episode_length=5)
    env.reset(seed=0)
    good = {a: [0.5, 0.5] for a in env.agents}
    for bad, error, words in (([10**400, 0], ValueError, "non-finite"), (["0.5", "0.5"], TypeError, "not real"),
                              ([0.5 + 1j, 0.0], TypeError, "not real"), ([object(), 0.0], TypeError, "not real")):
        with pytest.raises(error, match=rf"{words}.*\['building_3'\]|\['building_3'\].*{words}"):
            env.step(good | {"building_3": bad})
    core = DemandResponseCore(EnvConfig(), dataset)
    core.reset(start_hour=0)
    before = (core.soc.copy(), core.backlog.copy(), core.t)
    actions = [[0.5, 0.5]] * 7
    with pytest.raises(NonFiniteActionError) as exc:
        core.step(actions[:3] + [[10**400, 0]] + actions[4:])
    assert exc.value.agents == [3]
    with pytest.raises(ActionTypeError) as exc:
        core.step(actions[:5] + [["0.5", "0.5"]] + actions[6:])
    assert exc.value.agents == [5]
    with pytest.raises(ActionTypeError):
        core.step(np.full((7, 2), 0.5 + 0j))
    assert np.array_equal(core.soc, before[0]) and np.array_equal(core.backlog, before[1]) and core.t == before[2]


def test_multiplier_and_reset_errors_name_the_argument(dataset):
    core = DemandResponseCore(EnvConfig(augment=True), dataset)
    with pytest.raises(TypeError, match=r"lambda='3' must be a real number"):
        core.set_multipliers("3")
    with pytest.raises(TypeError, match=r"nu=\(1\+2j\)"):
        core.set_multipliers(nu=1 + 2j)
    with pytest.raises(ValueError, match=r"lambda values must lie in \[0.0, 15.0\].*agent index\(es\) \[2\]"):
        core.set_multipliers([1.0, 1.0, 16.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(TypeError, match=r"start_hour='10' must be an integer hour"):
        core.reset(start_hour="10")
    with pytest.raises(ValueError, match="seed=-1 is out of range"):
        core.reset(seed=-1)


def test_missing_checkpoint_is_one_line(tmp_path):
    """End to end (a subprocess): exit code 1, one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "run", "--steps", "24", "--no-progress",
                           "--out", str(tmp_path / "run"), "--policy", "1.0=/nonexistent.pt"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "cmarl run: --policy '1.0=/nonexistent.pt': policy checkpoint '/nonexistent.pt' does not exist"]
    with pytest.raises(CheckpointNotFoundError):
        load_policy("/nonexistent.pt")
    with pytest.raises(FileNotFoundError):  # still a FileNotFoundError for callers that catch that
        load_policy("/nonexistent.pt")


def test_wrong_observation_size_names_the_checkpoint(tmp_path):
    policy = load_pretrained(1.0)
    with pytest.raises(ValueError, match=rf"policy checkpoint .*normal.pt: obs must have shape \(n, 9\)"):
        policy.act(np.zeros((5, 7), dtype=np.float32))
    with pytest.raises(CheckpointMismatchError, match="normal.pt does not match the environment: observation_layout"):
        load_pretrained(1.0, EnvConfig(augment=False))


def test_out_is_checked_before_any_work(tmp_path, monkeypatch):
    import algorithms.run_cli as run_cli

    calls = []
    monkeypatch.setattr(run_cli, "run_execution", lambda *a, **k: calls.append(1))
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    message = _cmarl_error(["run", "--steps", "3000", "--out", str(existing)])
    assert "--out" in message and "exists and is not a folder" in message
    message = _cmarl_error(["run", "--steps", "3000", "--out", str(existing / "sub")])
    assert "is a file, so the folder cannot be created" in message
    message = _cmarl_error(["bench", "quick", "--out", str(existing)])
    assert message.startswith("cmarl bench: error: --out") and "exists and is not a folder" in message
    message = _cmarl_error(["grid-search", "--method", "augmented", "--out", str(existing)])
    assert "exists and is not a folder" in message
    assert calls == [] and existing.read_text() == "keep me"


@pytest.mark.parametrize("argv, prefix", [
    (["train", "--steps", "256", "--out", "{file}"], "cmarl train: --out"),
    (["train", "--steps", "256", "--out", "{dir}/t", "--export", "{file}/p.pt"], "cmarl train: --export"),
    (["train-baseline", "mappo", "--out", "{file}"], "cmarl train-baseline: error: --out"),
    (["figures", "{dir}", "--out", "{file}"], "cmarl figures: error: --out"),
    (["env-demo", "--steps", "5", "--out", "{file}"], "cmarl env-demo: error: --out"),
])
def test_every_out_flag_is_checked_first(tmp_path, capsys, argv, prefix):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    argv = [a.format(file=existing, dir=tmp_path) for a in argv]
    try:
        code = cmarl(argv)
        message = capsys.readouterr().err.strip()
        assert code != 0
    except SystemExit as exc:
        message = str(exc.code)
    assert message.startswith(prefix) and "exists and is not a folder" in message and "\n" not in message, message
    assert existing.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt"]


def test_train_refuses_an_unknown_dataset_in_one_line(tmp_path, capsys):
    assert cmarl(["train", "--steps", "256", "--dataset", "no_such_dataset", "--out", str(tmp_path / "t")]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("cmarl train: --dataset 'no_such_dataset':") and "\n" not in message
    assert not (tmp_path / "t").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_out_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="cannot write in"):
            check_output_dir(locked / "run")
        message = _cmarl_error(["run", "--steps", "24", "--out", str(locked / "run")])
        assert "cannot write in" in message
    finally:
        locked.chmod(0o700)


def test_out_on_a_read_only_filesystem_is_refused():
    """A folder no one can create files in (even root): /proc."""
    with pytest.raises(OutputPathError, match="cannot write in '/proc'"):
        check_output_dir("/proc/cmarl-run")


# ------------------------------------------------------------------ row 4: concurrent writers, nothing half-written
def test_run_folder_lock_refuses_a_second_writer(tmp_path):
    out = tmp_path / "run"
    with FolderLock(out):
        message = _cmarl_error(["run", "--steps", "24", "--no-progress", "--out", str(out)])
        assert "is being written by another process" in message and f"pid {os.getpid()}" in message
        message = _cmarl_error(["bench", "quick", "--out", str(out), "--backend", "serial", "--quiet"])
        assert "is being written by another process" in message
        with pytest.raises(FolderLockedError):
            FolderLock(out).acquire()
    assert not (out / "metrics.json").exists()
    assert cmarl(["run", "--steps", "24", "--no-progress", "--out", str(out)]) == 0  # released: it runs


def test_concurrent_cmarl_run_processes(tmp_path):
    """Two `cmarl run` processes on one --out: the second is refused while the first holds the lock; the first
    finishes a complete folder. The first is paused (SIGSTOP) once its lock file holds its pid: no timing race."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", "--steps", "48", "--no-progress", "--out", str(out)]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / ".lock"
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):  # the event: first holds the lock
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                                timeout=SUBPROCESS_TIMEOUT)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"is being written by another process (pid {first.pid}" in second.stderr
        assert not (out / "metrics.json").exists()
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert first.returncode == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    traj = np.load(out / "trajectories.npz")
    assert metrics["steps"] == 48 and metrics["avg_grid_consumption"] == pytest.approx(traj["total_grid"].mean())
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.json", "facts.json", "metrics.json",
                                                    "trajectories.csv", "trajectories.npz"]


def test_a_failed_write_leaves_the_previous_run_intact(tmp_path, dataset, monkeypatch):
    from algorithms.execute import ExecutionConfig, run_execution, write_run

    out = tmp_path / "run"
    first = run_execution(ExecutionConfig(steps=24), data=dataset)
    write_run(first, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = run_execution(ExecutionConfig(steps=30), data=dataset)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="No space left"):
        write_run(second, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder, no mixed files


def test_publish_folder_moves_metrics_last(tmp_path):
    staging, out = tmp_path / "staging", tmp_path / "out"
    staging.mkdir()
    out.mkdir()
    (out / "metrics.json").write_text("old")
    for name in ("metrics.json", "a.json", "z.json"):
        (staging / name).write_text(name)
    order = []
    real = os.replace
    try:
        os.replace = lambda src, dst: (order.append(Path(dst).name), real(src, dst))[1]
        publish_folder(staging, out)
    finally:
        os.replace = real
    assert order[-1] == "metrics.json" and sorted(order) == ["a.json", "metrics.json", "z.json"]
    assert (out / "metrics.json").read_text() == "metrics.json" and not staging.exists()


# ------------------------------------------------------------------ row 5: SIGKILL in the middle of `cmarl bench`
KILLER = '''
import os
import signal
from pathlib import Path

import numpy as np

from cmarl_env.evaluation import Controller


class Logged(Controller):
    """Serve-all that logs every roll-out it starts and kills its own process (SIGKILL) at the KILL_AT-th one."""

    name = "logged"

    def __init__(self, log, tag):
        self.log, self.tag = Path(log), tag

    def reset(self, core):
        super().reset(core)
        with self.log.open("a") as fh:
            fh.write(self.tag + "\\n")
        if len(self.log.read_text().split()) == int(os.environ.get("KILL_AT", "0")):
            os.kill(os.getpid(), signal.SIGKILL)

    def act(self, obs):
        return np.ones((obs.shape[0], 2))
'''


def test_bench_sigkill_and_resume(tmp_path):
    """`cmarl bench` killed by SIGKILL in its 4th run: the 3 finished runs are kept byte for byte and not run again,
    the interrupted one and the rest run on the next invocation, and every run ends up done exactly once."""
    from benchmarks.runner import plan
    from benchmarks.suite import load_suite

    (tmp_path / "killer.py").write_text(KILLER)
    log = tmp_path / "log.txt"
    tags = ["a", "b", "c", "d", "e"]
    raw = {"name": "sigkill", "defaults": {"scenario": {"steps": 24, "start_jitter": 0, "constraint": 0.6},
                                           "seeds": [0], "rollouts": 1, "oracle": False},
           "methods": {t: {"kind": "controller", "params": {"path": "killer.py", "class": "Logged",
                                                              "kwargs": {"log": str(log), "tag": t}}} for t in tags},
           "experiments": [{"name": "x", "methods": tags}]}
    (tmp_path / "suite.json").write_text(json.dumps(raw))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.cli", "bench", str(tmp_path / "suite.json"), "--out", str(out),
           "--backend", "serial", "--quiet", "--no-figures"]
    killed = subprocess.run(cmd, cwd=ROOT, env=_env(KILL_AT="4"), capture_output=True, text=True,
                            timeout=SUBPROCESS_TIMEOUT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    suite = load_suite(tmp_path / "suite.json")
    _, done, states = plan(suite, out)
    finished = sorted(s.method.name for s in done)
    assert finished == ["a", "b", "c"]
    snapshot = {p: p.read_bytes() for s in done for p in (out / "runs").rglob("*") if p.is_file()
                and f"/{s.method.name}/" in str(p)}
    resumed = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr
    status = json.loads((out / "status.json").read_text())
    assert status["skipped"] == 3 and sorted(status["completed"]) == sorted(s.run_id for s in suite.runs()
                                                                             if s.method.name in ("d", "e"))
    assert log.read_text().split() == ["a", "b", "c", "d", "d", "e"]  # d was interrupted, nothing else ran twice
    assert all(p.read_bytes() == data for p, data in snapshot.items())  # finished runs untouched
    _, done, _ = plan(suite, out)
    assert len(done) == 5


# ------------------------------------------------------------------ row 6: a missing optional extra skips
@pytest.mark.parametrize("module", ["baselines.marl.common", "algorithms.train"])
def test_missing_tianshou_skips_instead_of_failing(module):
    code = ("import sys; sys.modules['tianshou'] = None\n"
            "import pytest\n"
            "try:\n"
            f"    pytest.importorskip({module!r})\n"
            "except BaseException as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    assert proc.stdout.startswith("Skipped "), proc.stdout + proc.stderr
    assert "pip install 'cmarl-env[learn]'" in proc.stdout and "tianshou" in proc.stdout
