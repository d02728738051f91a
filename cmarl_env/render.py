"""Text and image renderings of an episode (totals over all agents)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EpisodeHistory:
    """Per-step totals kept for rendering: cheap scalars, one row per hour."""

    demand: list[float] = field(default_factory=list)
    grid: list[float] = field(default_factory=list)
    soc: list[float] = field(default_factory=list)
    backlog: list[float] = field(default_factory=list)

    def record_state(self, core) -> None:
        self.soc.append(float(core.soc.mean()))
        self.backlog.append(float(core.backlog.sum()))

    def record_step(self, core, signals) -> None:
        self.demand.append(float(signals.demand.sum()))
        self.grid.append(float(signals.e_grid.sum()))
        self.record_state(core)


def render_ansi(history: EpisodeHistory, core) -> str:
    hour = core.t
    grid = history.grid[-1] if history.grid else 0.0
    demand = history.demand[-1] if history.demand else float(core.demand.sum())
    mean_grid = float(np.mean(history.grid)) if history.grid else 0.0
    return (
        f"t={hour:5d}  demand={demand:8.2f} kWh  grid={grid:8.2f} kWh  "
        f"mean grid={mean_grid:8.2f} / limit {core.grid_limit:8.2f} kWh  "
        f"backlog={history.backlog[-1]:8.2f} kWh  mean SOC={history.soc[-1]:5.2f}"
    )


def render_rgb(history: EpisodeHistory, core, size=(640, 480)) -> np.ndarray:
    """A matplotlib frame: demand and grid use against the limit, SOC, backlog.

    Drawn on an Agg canvas of its own, so pyplot's backend is left alone.
    matplotlib is not a base dependency: the ``[plot]`` extra brings it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ModuleNotFoundError(
            'render_mode="rgb_array" draws with matplotlib, which is not installed: '
            'pip install "cmarl-env[plot]" (or matplotlib)',
            name="matplotlib",
        ) from exc

    dpi = 80
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax_energy, ax_soc, ax_backlog = fig.subplots(3, 1, sharex=True)
    steps = np.arange(1, len(history.grid) + 1)
    ax_energy.plot(steps, history.demand, label="demand", color="tab:blue")
    ax_energy.plot(steps, history.grid, label="grid use", color="tab:orange")
    ax_energy.axhline(core.grid_limit, color="grey", linestyle="--", label="grid limit")
    ax_energy.set_ylabel("kWh")
    ax_energy.legend(loc="upper right", fontsize=7)
    ax_soc.plot(np.arange(len(history.soc)), history.soc, color="tab:green")
    ax_soc.set_ylabel("mean SOC")
    ax_soc.set_ylim(0, 1)
    ax_backlog.plot(np.arange(len(history.backlog)), history.backlog, color="tab:red")
    ax_backlog.set_ylabel("backlog kWh")
    ax_backlog.set_xlabel("step")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
