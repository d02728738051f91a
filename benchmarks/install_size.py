"""Install size and time of the package, and its first ``reset()`` offline.

    python -m benchmarks.install_size            # base and [all], Python 3.11
    python -m benchmarks.install_size --json
    python -m benchmarks.install_size --skip-all --python python3.13

What it does, each in a fresh virtual environment under a temporary folder:

1. builds the wheel of this checkout (``pip wheel --no-deps``);
2. **base**: installs the wheel once to warm pip's cache (untimed), then into
   a second clean environment, timed: the figure is "from a warm package
   cache". Size: what the install added to the environment (``du`` of the
   environment after the install minus the empty environment with its pip);
3. **first reset() offline**: in that environment, with the network switched
   off (``unshare -rn`` where available, and sockets refused in any case) and
   no numba cache yet, the wall time of ``python -c 'import ...; env =
   parallel_env(); env.reset()'`` from process start, then separately the
   first ``step()`` (numba compiles the step kernel on first use);
4. **[all]**: installs ``wheel[all]`` plus the tested torch (``--torch``, the
   CPU build where pip finds one) into a clean environment: size and time.

Figures land in the README's "Quick start" and "Dependencies" sections.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIRST_RESET = r"""
import socket, sys, time
def refuse(*a, **k):
    raise OSError("network disabled by the benchmark")
socket.socket.connect = refuse
socket.create_connection = refuse
t0 = time.perf_counter()
from cmarl_env import demand_response_v0
t1 = time.perf_counter()
env = demand_response_v0.parallel_env()
obs, infos = env.reset(seed=0)
t2 = time.perf_counter()
env.step({a: env.action_space(a).sample() for a in env.agents})
t3 = time.perf_counter()
heavy = sorted({m.split('.')[0] for m in sys.modules} & {"torch", "citylearn", "matplotlib", "ray", "tianshou"})
print({"import_s": t1 - t0, "make_and_reset_s": t2 - t1, "first_step_s": t3 - t2, "heavy_modules": heavy})
"""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _du_bytes(path: Path) -> int:
    return int(_run(["du", "-sb", str(path)]).stdout.split()[0])


def _venv(python: str, path: Path) -> Path:
    _run([python, "-m", "venv", str(path)])
    return path / "bin" / "python"


def build_wheel(workdir: Path) -> Path:
    """The wheel of a clean copy of this checkout (no stale build/ or egg-info)."""
    out, source = workdir / "wheel", workdir / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "results", "runs", "__pycache__", ".pytest_cache"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)])
    (wheel,) = out.glob("cmarl_env-*.whl")
    return wheel


def install(python: str, venv: Path, requirements: list[str]) -> dict[str, object]:
    """Fresh venv, then ``pip install`` timed; size added by the install and its largest folders."""
    py = _venv(python, venv)
    empty = _du_bytes(venv)
    start = time.perf_counter()
    _run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements])
    seconds = time.perf_counter() - start
    (site,) = venv.glob("lib/python3*/site-packages")
    sizes = {p.name: _du_bytes(p) for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")}
    largest = dict(sorted(((k, round(v / 1e6)) for k, v in sizes.items()), key=lambda kv: -kv[1])[:8])
    pycache = sum(_du_bytes(p) for p in site.rglob("__pycache__"))
    return {"seconds": seconds, "added_mb": (_du_bytes(venv) - empty) / 1e6, "venv_mb": _du_bytes(venv) / 1e6,
            "pyc_mb": pycache / 1e6, "largest_mb": largest}


def first_reset(venv: Path, workdir: Path) -> dict[str, object]:
    """Wall time from process start to the end of the first reset(), network off, no caches."""
    py = venv / "bin" / "python"
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "NO_PROXY": "*",
    }
    cmd = [str(py), "-c", FIRST_RESET]
    isolated = shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rn", "true"], capture_output=True).returncode == 0
    if isolated:
        cmd = ["unshare", "-rn", *cmd]
    start = time.perf_counter()
    out = _run(cmd, env=env, cwd=str(workdir))
    wall = time.perf_counter() - start
    parts = eval(out.stdout.strip().splitlines()[-1], {})  # the child's dict literal
    return {"network": "off (unshare -rn + refused sockets)" if isolated else "off (refused sockets)",
            "process_start_to_reset_end_s": wall - parts["first_step_s"], **parts,
            "wrote_user_cache": (home / ".cache" / "cmarl_env").exists()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="interpreter for the clean environments")
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement added to [all]")
    parser.add_argument("--skip-all", action="store_true", help="measure the base install only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    python_version = _run([args.python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]).stdout.strip()
    results: dict[str, object] = {"python": python_version}
    with tempfile.TemporaryDirectory(prefix="cmarl-install-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(work)
        results["wheel_mb"] = wheel.stat().st_size / 1e6
        install(args.python, work / "warmup", [str(wheel)])  # fills pip's cache; not timed
        shutil.rmtree(work / "warmup")
        results["base"] = install(args.python, work / "base", [str(wheel)])
        results["first_reset_offline"] = first_reset(work / "base", work)
        if not args.skip_all:
            results["all"] = install(args.python, work / "all", [f"{wheel}[all]", args.torch])

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    base, reset = results["base"], results["first_reset_offline"]
    print(f"Python {results['python']}, wheel {results['wheel_mb']:.2f} MB")
    print("| what | measured | target |")
    print("|---|---|---|")
    print(f"| base install, size added to a clean venv | {base['added_mb']:.0f} MB "
          f"({base['pyc_mb']:.0f} MB of it compiled .pyc) | <= 300 MB |")
    print(f"| base install, time from a warm pip cache | {base['seconds']:.1f} s | <= 60 s |")
    print(f"| first reset() after installation, network off | {reset['process_start_to_reset_end_s']:.2f} s "
          f"(import {reset['import_s']:.2f} s, make + reset {reset['make_and_reset_s']:.2f} s) | <= 3 s |")
    print(f"| first step() after that (numba compiles the step kernel) | {reset['first_step_s']:.2f} s | |")
    if "all" in results:
        full = results["all"]
        print(f"| [all] install ({args.torch}), size added | {full['added_mb']:.0f} MB | <= 2,500 MB |")
        print(f"| [all] install, time | {full['seconds']:.0f} s | |")
    print("largest folders of the base install (MB):", ", ".join(f"{k} {v}" for k, v in base["largest_mb"].items()))
    print(f"network: {reset['network']}; heavy modules imported: {reset['heavy_modules'] or 'none'}; "
          f"user cache written: {reset['wrote_user_cache']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
