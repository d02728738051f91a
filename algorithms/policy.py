"""The acting side of the state-augmented policies: network, checkpoints, shipped policies.

A trained policy maps an augmented observation (the columns of
``cmarl_env.core.observation_layout(augment=True)``: demand, backlog, state of
charge, solar, price, hour sin/cos, lambda and nu normalised by their ranges)
to an action ``(a_bat, a_grid)`` in [0, 1]^2. At execution the action is
deterministic: the mean ``mu`` of the training Gaussian, clipped to [-1, 1] and
mapped linearly to [0, 1] (exactly Tianshou's ``action_bound_method="clip"``
plus ``action_scaling`` that produced the training actions).

This module needs torch and numpy only (not Tianshou): execution, baselines
and benchmarks can load a checkpoint without the training stack.

Checkpoint format (a ``torch.save`` file, loadable with ``weights_only=True``)::

    {"format": "cmarl-augmented-policy", "format_version": 1,
     "state_dict": <actor weights>, "metadata": {...}}

``metadata`` holds the observation layout, obs_dim, multiplier ranges, dataset,
demand scale / agent type, hidden sizes, reward scale, the training config,
package versions and the training wall time (see ``build_metadata``); a
checkpoint written by ``algorithms.train`` adds the observation normalisers
of its training window (``obs_norms``, ``window``), the per-agent grid share
``share_kwh`` and its evaluation returns (``eval_initial``, ``eval_final``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmarl_env import records
from cmarl_env.evaluation import Controller, rollout

FORMAT = "cmarl-augmented-policy"
FORMAT_VERSION = 1
ACTION_LAYOUT = ("battery", "grid")
ACTION_MAPPING = "a = (clip(mu, -1, 1) + 1) / 2"
DEFAULT_CHUNK = 65_536
INPUT_CLIP = 10.0
BACKLOG_CAP = 60.0  # in observation units (backlog / demand_norm)

PRETRAINED_FILES: dict[float, str] = {1.0: "normal.pt", 2.0: "double.pt"}
# EV charging (cmarl_env.domains.ev_charging): one shipped policy per site category, algorithms/pretrained/ev/<type>.pt
EV_PRETRAINED_DIR = "ev"
EV_DATASET = "elaadnl"
AGENT_TYPE_NAMES: dict[float, str] = {1.0: "normal", 2.0: "double"}

# Fields compared by ``load_policy(path, expected=...)`` (a mismatch is an error) ...
CHECKED_FIELDS = ("observation_layout", "obs_dim", "lambda_range", "nu_range", "dataset", "demand_scale")
# ... and the observation normalisers (a mismatch is a warning: they follow the core's data window).
NORM_FIELDS = ("demand_norm", "solar_norm", "price_norm")


class CheckpointError(ValueError):
    """A checkpoint file could not be read (corrupt, truncated or not a policy checkpoint); names the path."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (a ``CheckpointError`` and a ``FileNotFoundError``); names the path."""


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the environment it is meant to act in.

    ``field``, ``checkpoint_value`` and ``env_value`` say what differs.
    """

    def __init__(self, field: str, checkpoint_value: Any, env_value: Any, path: str | os.PathLike | None = None,
                 where: str = "in the environment"):
        self.field = field
        self.checkpoint_value = checkpoint_value
        self.env_value = env_value
        self.path = None if path is None else str(path)
        name = f" {self.path}" if path is not None else ""
        super().__init__(
            f"policy checkpoint{name} does not match the environment: {field} is {checkpoint_value!r} "
            f"in the checkpoint but {env_value!r} {where}"
        )


class UnknownDemandScaleError(ValueError):
    """A policy is assigned to a demand scale that no agent of the environment has."""

    def __init__(self, scale: float, scales: Sequence[float], path: str | os.PathLike | None = None):
        self.scale, self.scales, self.path = float(scale), [float(s) for s in scales], path
        what = f"policy checkpoint {str(path)} is" if path is not None else "a policy is"
        super().__init__(f"{what} assigned to demand scale {float(scale):g}, but no agent has that scale; "
                         f"the environment's demand scales are {[float(s) for s in scales]}")


# ------------------------------------------------------------------ network
def input_features(
    obs: torch.Tensor,
    backlog_index: int | None = 1,
    backlog_cap: float = BACKLOG_CAP,
    raw_columns: Sequence[Sequence[float]] | None = None,
    rate_features: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Fixed input transform of the networks.

    The backlog column becomes ``log1p(min(backlog, backlog_cap))`` (execution
    backlogs can exceed those of training episodes; beyond the cap they all look
    alike). ``raw_columns`` lists ``(index, offset, scale)`` triples: those
    columns become ``offset + scale * x``, which undoes the observation's range
    normalisation of the multipliers (lambda and nu in their own units, the
    units of the price). Without it, the multipliers that execution visits
    (lambda around 0-3, nu around -3-0) differ by a few thousandths of an input
    unit, far below what a small network resolves next to the price.
    ``rate_features`` (EV charging) appends each port's minimum rate
    (``ev_minimum_rates``). Then every input is clamped to [-10, 10].
    """
    raw_obs = obs
    if raw_columns:
        scale = torch.ones(obs.shape[1], dtype=obs.dtype, device=obs.device)
        offset = torch.zeros(obs.shape[1], dtype=obs.dtype, device=obs.device)
        for index, off, sc in raw_columns:
            scale[int(index)], offset[int(index)] = float(sc), float(off)
        obs = torch.addcmul(offset, obs, scale)
    if backlog_index is not None:
        i = backlog_index
        b = torch.log1p(obs[:, i : i + 1].clamp(min=0.0, max=backlog_cap))
        obs = torch.cat([obs[:, :i], b, obs[:, i + 1 :]], dim=1)
    if rate_features:
        obs = torch.cat([obs, ev_minimum_rates(raw_obs, rate_features)], dim=1)
    return obs.clamp(-INPUT_CLIP, INPUT_CLIP)


RATE_CAP = 3.0  # minimum rates above this (cars that can no longer get their energy) all look alike


def ev_minimum_rates(obs: torch.Tensor, spec: Mapping[str, Any]) -> torch.Tensor:
    """(n, K) EV input features: each port's minimum rate ``u = remaining / (power x connected hours left)``, the
    fraction of full power that delivers the car's energy exactly at its departure (0 without a car; capped at
    ``RATE_CAP``), from the observation's port columns (``cmarl_env.domains.ev_charging.core``: per port plugged,
    energy / energy_norm, hours left / time_norm, power / charger_kw, from column ``first``)."""
    k, first = int(spec["ports"]), int(spec.get("first", 4))
    ports = obs[:, first:first + 4 * k].reshape(obs.shape[0], k, 4)
    rem = ports[:, :, 1] * float(spec["energy_norm"])
    hours = ports[:, :, 2] * float(spec["time_norm"])
    power = ports[:, :, 3] * float(spec["charger_kw"])
    denom = power * hours
    ok = denom > 1e-9
    u = torch.where(ok, rem / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(denom))
    return u.clamp(0.0, RATE_CAP)


MULTIPLIER_UNIT = 2.0  # raw multipliers enter the networks divided by this, so [-20, 20] stays inside the [-10, 10] clamp


def multiplier_raw_columns(
    layout: Sequence[str], lambda_range: Sequence[float], nu_range: Sequence[float], unit: float = MULTIPLIER_UNIT
) -> list[list[float]]:
    """``raw_columns`` for ``input_features``: the observed lambda and nu back in their own units, divided by ``unit``.

    ``unit`` keeps the whole training range inside the input clamp (+-10): a
    clamped nu = -20 would look like nu = -10 and, next to lambda = 10, make
    serving and postponing look equally good.
    """
    names = list(layout)
    out = []
    for name, (lo, hi) in (("lambda", lambda_range), ("nu", nu_range)):
        if name in names:
            out.append([names.index(name), float(lo) / unit, (float(hi) - float(lo)) / unit])
    return out


class ActorNet(nn.Module):
    """Gaussian actor: an MLP from the augmented observation to the mean ``mu`` (pre-clip space).

    The mean is bounded, ``mu = mean_bound * tanh(.)`` with ``mean_bound`` a
    little above 1, so that the clipped Gaussian keeps exploring the other
    side of a boundary action (an unbounded mean drifts far past -1 or 1 where
    every sample clips to the same action and the gradient signal dies). The
    standard deviation is a state-independent learned parameter (``log_std``,
    floored at ``min_log_std``), used only while training. Inputs go through a fixed,
    parameter-free transform first (``input_features``): the backlog column is
    capped and compressed with ``log1p`` and every input is clamped to [-10, 10].

    ``forward`` follows Tianshou's actor protocol
    (``obs, state, info -> ((mu, sigma), state)``) so the same module is
    trained by Tianshou's PPO and executed by ``AugmentedPolicy``.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        act_dim: int = 2,
        backlog_index: int | None = 1,
        init_log_std: float = -0.5,
        mean_bound: float = 1.5,
        min_log_std: float = -1.6,
        backlog_cap: float = BACKLOG_CAP,
        raw_columns: Sequence[Sequence[float]] | None = None,
        rate_features: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.rate_features = dict(rate_features) if rate_features else None
        self.backlog_cap = float(backlog_cap)
        self.raw_columns = [[int(c[0]), float(c[1]), float(c[2])] for c in (raw_columns or ())]
        self.mean_bound = float(mean_bound)
        self.min_log_std = float(min_log_std)
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.backlog_index = backlog_index
        layers: list[nn.Module] = []
        width = self.obs_dim + (int(self.rate_features["ports"]) if self.rate_features else 0)
        for h in self.hidden_sizes:
            lin = nn.Linear(width, h)
            nn.init.orthogonal_(lin.weight, gain=math.sqrt(2.0))
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.Tanh()]
            width = h
        self.body = nn.Sequential(*layers)
        self.mu = nn.Linear(width, self.act_dim)
        nn.init.orthogonal_(self.mu.weight, gain=0.01)
        nn.init.zeros_(self.mu.bias)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(init_log_std)))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        if self.rate_features:
            return input_features(obs, self.backlog_index, self.backlog_cap, self.raw_columns, self.rate_features)
        return input_features(obs, self.backlog_index, self.backlog_cap, self.raw_columns)

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean of the action distribution in pre-clip space, shape (n, act_dim), bounded to +-mean_bound."""
        return self.mean_bound * torch.tanh(self.mu(self.body(self.features(obs))))

    def forward(self, obs, state=None, info=None):
        device = self.mu.weight.device
        obs = torch.as_tensor(obs, dtype=torch.float32, device=device)
        mu = self.mean(obs)
        sigma = self.log_std.clamp(self.min_log_std, 1.0).exp().expand_as(mu)
        return (mu, sigma), state


def deterministic_action(mu: torch.Tensor) -> torch.Tensor:
    """Execution action from the mean: clip to [-1, 1], map to [0, 1]."""
    return (mu.clamp(-1.0, 1.0) + 1.0) * 0.5


# ------------------------------------------------------------------- policy
class AugmentedPolicy:
    """A trained state-augmented policy for one agent type (deterministic, batched, no gradients).

    ``act(obs)`` takes an (n, obs_dim) float32 array whose columns follow
    ``metadata["observation_layout"]`` and returns (n, 2) float32 actions
    ``(a_bat, a_grid)`` in [0, 1]. Large batches are processed in chunks.

    ``num_threads`` is the torch CPU thread count used inside ``act`` (restored
    afterwards; None leaves torch's global setting alone). The default, 1,
    avoids the intra-op thread start-up that dominates small batches and
    degrades badly on a shared machine; raise it for very large batches on
    idle cores.
    """

    def __init__(self, net: ActorNet, metadata: Mapping[str, Any] | None = None, num_threads: int | None = 1):
        self.net = net.eval()
        self.num_threads = num_threads
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("obs_dim", net.obs_dim)
        self.metadata.setdefault("hidden_sizes", list(net.hidden_sizes))

    @property
    def obs_dim(self) -> int:
        return self.net.obs_dim

    @property
    def demand_scale(self) -> float | None:
        v = self.metadata.get("demand_scale")
        return None if v is None else float(v)

    @property
    def reward_scale(self) -> float | None:
        v = self.metadata.get("reward_scale")
        return None if v is None else float(v)

    @property
    def observation_layout(self) -> list[str] | None:
        v = self.metadata.get("observation_layout")
        return None if v is None else list(v)

    def act(self, obs: np.ndarray, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
        """Deterministic actions for a batch of augmented observations: (n, obs_dim) -> (n, 2) in [0, 1]."""
        arr = np.asarray(obs)
        path = self.metadata.get("path")
        who = f"policy checkpoint {path}" if path else "policy"
        if arr.ndim == 1:
            raise ValueError(f"{who}: obs must be a 2-D array (n, {self.obs_dim}); got shape {arr.shape}: "
                             "use obs[None] for one row")
        if arr.ndim != 2 or arr.shape[1] != self.obs_dim:
            raise ValueError(f"{who}: obs must have shape (n, {self.obs_dim}) (observation layout "
                             f"{self.observation_layout}); got {arr.shape}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        n = arr.shape[0]
        out = np.empty((n, self.net.act_dim), dtype=np.float32)
        if n == 0:
            return out
        chunk_size = max(int(chunk_size), 1)
        src = torch.from_numpy(arr)
        dst = torch.from_numpy(out)
        prev = torch.get_num_threads()
        threads = self.num_threads or prev
        if threads != prev:
            torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                for lo in range(0, n, chunk_size):
                    hi = min(lo + chunk_size, n)
                    dst[lo:hi] = deterministic_action(self.net.mean(src[lo:hi]))
        finally:
            if threads != prev:
                torch.set_num_threads(prev)
        return out

    __call__ = act

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def save(self, path: str | os.PathLike) -> Path:
        return save_checkpoint(path, self, self.metadata)

    def check_compatible(self, expected: Any) -> None:
        """Raise ``CheckpointMismatchError`` if this policy does not fit ``expected`` (see ``load_policy``)."""
        _check_expected(self.metadata, expected, self.metadata.get("path"))

    def check_assignment(self, env: Any, demand_scale: float) -> None:
        """This policy acts for the agents of ``demand_scale`` in ``env`` (a core or an env with ``.core``).

        Raises ``UnknownDemandScaleError`` when no agent of ``env`` has that scale, and
        ``CheckpointMismatchError`` naming the checkpoint file and the field when the checkpoint was
        trained for another demand scale, observation layout, multiplier range or dataset.
        """
        core = getattr(env, "core", env)
        scales = [float(s) for s in np.unique(core.layout.scale)] if hasattr(core, "layout") else None
        path = self.metadata.get("path")
        if scales is not None and not any(math.isclose(float(demand_scale), s, rel_tol=1e-9) for s in scales):
            raise UnknownDemandScaleError(demand_scale, scales, path)
        _check_demand_scale(self.metadata, demand_scale, path)
        _check_expected(self.metadata, env, path)

    def __repr__(self) -> str:
        return (
            f"AugmentedPolicy(agent_type={self.metadata.get('agent_type')!r}, demand_scale={self.demand_scale}, "
            f"obs_dim={self.obs_dim}, hidden_sizes={list(self.net.hidden_sizes)})"
        )


# -------------------------------------------------------------- checkpoints
def package_versions() -> dict[str, str | None]:
    """Versions of the packages a checkpoint depends on (None when not installed)."""
    return records.package_versions(("cmarl-env", "torch", "tianshou", "numpy"))


def agent_type_name(demand_scale: float) -> str:
    return AGENT_TYPE_NAMES.get(float(demand_scale), f"scale_{float(demand_scale):g}")


def build_metadata(
    *,
    observation_layout: Sequence[str],
    lambda_range: Sequence[float],
    nu_range: Sequence[float],
    dataset: str,
    demand_scale: float | None,
    hidden_sizes: Sequence[int],
    reward_scale: float,
    train_config: Mapping[str, Any] | None = None,
    train_wall_time_s: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The metadata dict stored with a checkpoint (JSON-friendly values only)."""
    meta: dict[str, Any] = {
        "observation_layout": [str(c) for c in observation_layout],
        "obs_dim": len(observation_layout),
        "action_layout": list(ACTION_LAYOUT),
        "action_mapping": ACTION_MAPPING,
        "lambda_range": [float(v) for v in lambda_range],
        "nu_range": [float(v) for v in nu_range],
        "dataset": str(dataset),
        "demand_scale": None if demand_scale is None else float(demand_scale),
        "agent_type": None if demand_scale is None else agent_type_name(demand_scale),
        "hidden_sizes": [int(h) for h in hidden_sizes],
        "reward_scale": float(reward_scale),
        "train_config": dict(train_config or {}),
        "train_wall_time_s": None if train_wall_time_s is None else float(train_wall_time_s),
        "versions": package_versions(),
    }
    meta.update(extra)
    return _plain(meta)


def save_checkpoint(path: str | os.PathLike, policy: AugmentedPolicy | ActorNet, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a policy checkpoint atomically (temporary file in the same folder, then ``os.replace``).

    ``policy`` is an ``AugmentedPolicy`` or its ``ActorNet``; ``metadata`` defaults
    to the policy's own. Returns the path written.
    """
    net = policy.net if isinstance(policy, AugmentedPolicy) else policy
    if not isinstance(net, ActorNet):
        raise TypeError(f"policy must be an AugmentedPolicy or an ActorNet, got {type(policy).__name__}")
    if metadata is None:
        metadata = policy.metadata if isinstance(policy, AugmentedPolicy) else {}
    meta = _plain(dict(metadata))
    meta.pop("path", None)
    meta["obs_dim"] = net.obs_dim
    meta["hidden_sizes"] = list(net.hidden_sizes)
    meta["backlog_index"] = net.backlog_index
    meta["mean_bound"] = net.mean_bound
    meta["min_log_std"] = net.min_log_std
    meta["backlog_cap"] = net.backlog_cap
    meta["raw_columns"] = [list(c) for c in net.raw_columns]
    if net.rate_features:
        meta["rate_features"] = dict(net.rate_features)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "metadata": meta,
    }
    return records.atomic_write(path, lambda fh: torch.save(payload, fh), binary=True)


def load_policy(
    path: str | os.PathLike,
    expected: Any = None,
    *,
    expected_layout: Sequence[str] | None = None,
    demand_scale: float | None = None,
    map_location: str = "cpu",
) -> AugmentedPolicy:
    """Load a checkpoint written by ``save_checkpoint``.

    ``expected`` describes the environment the policy will act in, and may be a
    mapping with any of the keys ``observation_layout``, ``obs_dim``,
    ``lambda_range``, ``nu_range``, ``dataset``, ``demand_scale``, or an object
    to read them from: a ``DemandResponseCore``, an env with a ``.core``
    (``BatchedEnv``, ``SingleAgentEnv``, the PettingZoo env) or an ``EnvConfig``.
    A differing field raises ``CheckpointMismatchError`` naming the field, the
    checkpoint's value and the environment's value. A file that cannot be read
    raises ``CheckpointError`` naming the path (``FileNotFoundError`` if missing).
    ``expected_layout`` is a shorthand for ``expected={"observation_layout": ...}``
    (combined with ``expected`` when both are given). ``demand_scale`` is the
    scale of the agents the policy is assigned to: a checkpoint trained for
    another scale raises ``CheckpointMismatchError`` (field ``demand_scale``).
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"policy checkpoint path {path!r} must be a non-empty str or path")
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise CheckpointNotFoundError(f"policy checkpoint {str(path)!r} is a directory, not a checkpoint file")
        raise CheckpointNotFoundError(f"policy checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zipfile/pickle/EOF/RuntimeError: all mean "not a readable checkpoint"
        raise CheckpointError(
            f"cannot read policy checkpoint {str(path)!r}: the file is corrupt, truncated or not a torch file "
            f"({type(err).__name__}: {err})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a cmarl policy checkpoint (no format marker {FORMAT!r})")
    if int(payload.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"policy checkpoint {str(path)!r} has format_version {payload.get('format_version')}, "
            f"newer than this package reads ({FORMAT_VERSION}); upgrade cmarl-env"
        )
    meta = payload.get("metadata")
    state = payload.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(state, dict):
        raise CheckpointError(f"policy checkpoint {str(path)!r} lacks its metadata or state_dict")
    try:
        net = ActorNet(
            obs_dim=int(meta["obs_dim"]),
            hidden_sizes=[int(h) for h in meta["hidden_sizes"]],
            act_dim=int(state["mu.bias"].shape[0]) if "mu.bias" in state else 2,
            backlog_index=meta.get("backlog_index", 1),
            mean_bound=float(meta.get("mean_bound", 1.5)),
            min_log_std=float(meta.get("min_log_std", -1.6)),
            backlog_cap=float(meta.get("backlog_cap", BACKLOG_CAP)),
            raw_columns=meta.get("raw_columns") or None,
            rate_features=meta.get("rate_features") or None,
        )
        net.load_state_dict(state)
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"policy checkpoint {str(path)!r} has inconsistent weights or metadata: {err}") from err
    meta = dict(meta)
    meta["path"] = str(path)
    if expected is not None:
        _check_expected(meta, expected, path)
    if expected_layout is not None:
        _check_expected(meta, {"observation_layout": list(expected_layout)}, path)
    if demand_scale is not None:
        _check_demand_scale(meta, demand_scale, path)
    return AugmentedPolicy(net, meta)


def _check_demand_scale(meta: Mapping[str, Any], demand_scale: float, path=None) -> None:
    have = meta.get("demand_scale")
    if have is None or not math.isclose(float(have), float(demand_scale), rel_tol=1e-9):
        raise CheckpointMismatchError("demand_scale", None if have is None else float(have), float(demand_scale), path,
                                      where="for the agents it is assigned to")


def expected_from(obj: Any) -> dict[str, Any]:
    """What ``load_policy`` compares, read from a mapping, a core, an env with ``.core`` or an ``EnvConfig``."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        unknown = set(obj) - set(CHECKED_FIELDS) - {"obs_norms"}
        if unknown:
            raise ValueError(f"unknown expected field(s) {sorted(unknown)}; allowed: {list(CHECKED_FIELDS)}")
        return dict(obj)
    core = getattr(obj, "core", None)
    if core is not None and hasattr(core, "layout_names"):
        obj = core
    if getattr(obj, "domain", None) == "ev_charging" and hasattr(obj, "layout_names"):
        return {"observation_layout": list(obj.layout_names), "lambda_range": list(obj.lambda_range),
                "nu_range": list(obj.nu_range), "dataset": EV_DATASET}
    if hasattr(obj, "layout_names") and hasattr(obj, "lambda_range"):
        out = {
            "observation_layout": list(obj.layout_names),
            "lambda_range": list(obj.lambda_range),
            "nu_range": list(obj.nu_range),
            "dataset": obj.data.name,
        }
        if all(hasattr(obj, k) for k in NORM_FIELDS):
            out["obs_norms"] = obs_norms(obj)
        return out
    if hasattr(obj, "augment") and hasattr(obj, "lambda_range") and hasattr(obj, "dataset"):
        from cmarl_env.core import observation_layout

        out = {
            "observation_layout": list(observation_layout(obj.augment)),
            "lambda_range": list(obj.lambda_range),
            "nu_range": list(obj.nu_range),
        }
        if isinstance(obj.dataset, str):
            out["dataset"] = obj.dataset
        return out
    raise TypeError(
        f"cannot read the expected environment facts from a {type(obj).__name__}; pass a mapping with keys "
        f"{list(CHECKED_FIELDS)}, a DemandResponseCore, an env with .core or an EnvConfig"
    )


def obs_norms(core: Any) -> dict[str, float]:
    """The divisors a core scales its observations by (they depend on its data window)."""
    return {k: float(getattr(core, k)) for k in NORM_FIELDS}


def _check_expected(meta: Mapping[str, Any], expected: Any, path=None) -> None:
    exp = expected_from(expected)
    norms_have, norms_want = meta.get("obs_norms"), exp.get("obs_norms")
    if norms_have and norms_want:
        differ = {k: (norms_have.get(k), v) for k, v in norms_want.items()
                  if norms_have.get(k) is not None and not math.isclose(float(norms_have[k]), float(v), rel_tol=1e-6)}
        if differ:
            warnings.warn(
                f"policy checkpoint {path}: the environment scales observations differently from training "
                f"(checkpoint, env): {differ}; the core's normalisers depend on its data window",
                stacklevel=3,
            )
    for field in CHECKED_FIELDS:
        if field not in exp or exp[field] is None:
            continue
        have, want = meta.get(field), exp[field]
        if field == "observation_layout":
            same = have is not None and [str(c) for c in have] == [str(c) for c in want]
            have, want = (None if have is None else list(have)), list(want)
        elif field in ("lambda_range", "nu_range"):
            same = have is not None and len(have) == len(want) and all(
                math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9) for a, b in zip(have, want)
            )
            have, want = (None if have is None else [float(v) for v in have]), [float(v) for v in want]
        elif field in ("obs_dim",):
            same = have is not None and int(have) == int(want)
        elif field == "demand_scale":
            same = have is not None and math.isclose(float(have), float(want), rel_tol=1e-9)
        else:
            same = have == want
        if not same:
            raise CheckpointMismatchError(field, have, want, path)


# --------------------------------------------------------------- pretrained
def pretrained_paths() -> dict[float, Path]:
    """Shipped policy files by demand scale: {1.0: .../normal.pt, 2.0: .../double.pt}."""
    root = importlib.resources.files("algorithms") / "pretrained"
    return {scale: Path(str(root / name)) for scale, name in PRETRAINED_FILES.items()}


def load_pretrained(
    demand_scale: float = 1.0, expected: Any = None, *, expected_layout: Sequence[str] | None = None
) -> AugmentedPolicy:
    """Load the shipped policy of an agent type (demand scale 1.0 "normal" or 2.0 "double").

    ``expected`` / ``expected_layout`` are checked as in ``load_policy``.
    """
    if isinstance(demand_scale, str) and not _is_number(demand_scale):  # an EV site category (the domain seam's key)
        return load_ev_pretrained(demand_scale, expected)
    scale = float(demand_scale)
    if scale not in PRETRAINED_FILES:
        raise ValueError(
            f"demand_scale={demand_scale!r} has no shipped policy; allowed: {sorted(PRETRAINED_FILES)} "
            "(train one with `cmarl train --demand-scale ...`)"
        )
    resource = importlib.resources.files("algorithms") / "pretrained" / PRETRAINED_FILES[scale]
    with importlib.resources.as_file(resource) as p:
        return load_policy(p, expected, expected_layout=expected_layout, demand_scale=scale)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_policies_by_scale(paths: Mapping[float, str | os.PathLike] | None = None, expected: Any = None) -> dict[float, AugmentedPolicy]:
    """One policy per agent type: ``paths`` maps demand scale -> checkpoint (default: the shipped ones).

    Each checkpoint must have been trained for the scale it is assigned to (``CheckpointMismatchError``);
    with ``expected`` a core (or an env with ``.core``), a scale no agent has is an ``UnknownDemandScaleError``.
    """
    if paths is None:
        return {s: load_pretrained(s, expected) for s in PRETRAINED_FILES}
    core = getattr(expected, "core", expected)
    env_scales = [float(v) for v in np.unique(core.layout.scale)] if hasattr(core, "layout") else None
    out = {}
    for s, p in paths.items():
        scale = parse_scale(s)
        if env_scales is not None and not any(math.isclose(scale, v, rel_tol=1e-9) for v in env_scales):
            raise UnknownDemandScaleError(scale, env_scales, p)
        out[scale] = load_policy(p, expected, demand_scale=scale)
    return out


def parse_scale(value: Any) -> float:
    """A demand scale given as a number or a string such as "2.0" (a finite number > 0)."""
    try:
        scale = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"demand scale {value!r} must be a finite number > 0, e.g. 1.0 or 2.0")
    return scale


def _plain(value: Any) -> Any:
    """Convert to plain Python types (what ``torch.load(weights_only=True)`` and JSON accept)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


# ------------------------------------------------------- fixed-multiplier check
def fixed_multiplier_response(
    policy: AugmentedPolicy,
    lambdas: Sequence[float] = (0.0, 5.0, 10.0, 15.0),
    nus: Sequence[float] = (-20.0, -10.0, 0.0, 10.0),
    *,
    hours: int = 300,
    start_hour: int = 0,
    split: str = "train",
    demand_scale: float | None = None,
    dataset: str | None = None,
    data: Any = None,
) -> list[dict[str, float]]:
    """The augmented policy at fixed grid points of (lambda, nu): mean grid use and mean r2 per agent-hour.

    For every (lambda, nu) pair, one copy of each building of the dataset (at
    the policy's demand scale) runs ``hours`` hours from ``start_hour`` with
    the multipliers held fixed; every pair sees the same hours. Returns one row
    per pair: ``lambda, nu, e_grid, r2, e_bat`` (kWh per agent-hour) and
    ``backlog_end`` (mean final backlog, kWh).
    """
    from cmarl_env.config import EnvConfig
    from cmarl_env.core import DemandResponseCore
    from cmarl_env.data import load_dataset

    scale = float(demand_scale if demand_scale is not None else (policy.demand_scale or 1.0))
    name = dataset or policy.metadata.get("dataset") or "citylearn_challenge_2022_phase_all"
    data = data if data is not None else load_dataset(name)
    b = data.n_buildings
    cfg = EnvConfig(
        n_agents=b, dataset=name, buildings=tuple(range(b)), demand_scales=scale, augment=True,
        multiplier_mode="fixed", episode_length=hours, split=split, start_hour=start_hour,
    )
    core = DemandResponseCore(cfg, data)
    policy.check_assignment(core, scale)
    rows = []
    for lam in lambdas:
        for nu in nus:
            probe = _ResponseProbe(policy, float(lam), float(nu))
            rollout(probe, core, start_hour, hours)
            rows.append({"lambda": float(lam), "nu": float(nu)} | {k: v / hours for k, v in probe.sums.items()}
                        | {"backlog_end": float(core.backlog.mean())})
    return rows


class _ResponseProbe(Controller):
    """The policy at fixed multipliers, summing the per-agent means of e_grid, r2 and e_bat over the hours."""

    augment = True

    def __init__(self, policy: "AugmentedPolicy", lam: float, nu: float):
        self.policy, self.lam, self.nu = policy, lam, nu

    def reset(self, core) -> None:
        super().reset(core)
        core.set_multipliers(self.lam, self.nu)
        self.sums = {k: 0.0 for k in ("e_grid", "r2", "e_bat")}

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.act(obs)

    def observe(self, step) -> None:
        for k in self.sums:
            self.sums[k] += float(getattr(step.signals, k).mean())


def format_response_table(rows: Sequence[Mapping[str, float]]) -> str:
    """Markdown table of ``fixed_multiplier_response`` rows."""
    lines = ["| lambda | nu | grid use (kWh/h) | r2 (kWh/h) | battery (kWh/h) | final backlog (kWh) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['lambda']:g} | {r['nu']:g} | {r['e_grid']:.3f} | {r['r2']:.3f} | {r['e_bat']:.3f} | {r['backlog_end']:.1f} |")
    return "\n".join(lines)


# ------------------------------------------------------------ EV charging
def ev_pretrained_paths() -> dict[str, Path]:
    """Shipped EV policy files by site category: {"private": .../pretrained/ev/private.pt, ...} (those that exist)."""
    from cmarl_env.domains.ev_charging.config import SITE_TYPES

    root = importlib.resources.files("algorithms") / "pretrained" / EV_PRETRAINED_DIR
    out = {t: Path(str(root / f"{t}.pt")) for t in SITE_TYPES}
    return {t: p for t, p in out.items() if p.is_file()}


class EVPolicy(AugmentedPolicy):
    """A shipped or trained EV-charging policy bound to the core it acts on.

    The price column of an EV observation is the price over the core's window's largest absolute price
    (``core.price_norm``), which differs between windows (0.50 EUR/kWh in 2023, the training split; 0.87 in 2024);
    ``act`` rescales it to the training window's divisor (the checkpoint's ``obs_norms.price_norm``) so that the
    network reads the same price for the same EUR/kWh. ``price_factor`` = core's divisor / training divisor.
    """

    def __init__(self, net: ActorNet, metadata: Mapping[str, Any] | None = None, num_threads: int | None = 1,
                 price_factor: float = 1.0):
        super().__init__(net, metadata, num_threads)
        self.price_factor = float(price_factor)

    @classmethod
    def bind(cls, policy: AugmentedPolicy, core: Any = None) -> "EVPolicy":
        trained = (policy.metadata.get("obs_norms") or {}).get("price_norm")
        factor = float(core.price_norm) / float(trained) if trained and core is not None else 1.0
        return cls(policy.net, policy.metadata, policy.num_threads, factor)

    def act(self, obs: np.ndarray, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
        if self.price_factor != 1.0 and np.ndim(obs) == 2:
            obs = np.array(obs, dtype=np.float32, copy=True)
            obs[:, 0] *= self.price_factor
        return super().act(obs, chunk_size)

    __call__ = act


def load_ev_pretrained(site_type: str, expected: Any = None) -> EVPolicy:
    """The shipped state-augmented policy of an EV site category (``private``, ``public``, ``workplace``).

    ``expected`` (an ``EVChargingCore`` or a mapping) is checked as in ``load_policy``: the observation layout (so
    the number of ports), the multiplier ranges and the dataset. With a core the policy is bound to it
    (``EVPolicy``: the price column rescaled to the training window's).
    """
    paths = ev_pretrained_paths()
    if site_type not in paths:
        raise ValueError(f"site_type={site_type!r} has no shipped EV policy; allowed: {sorted(paths)} "
                         "(train one with `cmarl train --domain ev_charging --site-type ...`)")
    policy = load_policy(paths[site_type], expected)
    if policy.metadata.get("site_type") != site_type:
        raise CheckpointMismatchError("site_type", policy.metadata.get("site_type"), site_type, paths[site_type],
                                      where="for the sites it is assigned to")
    core = getattr(expected, "core", expected)
    return EVPolicy.bind(policy, core if hasattr(core, "price_norm") else None)


def ev_policy_fn(policy: AugmentedPolicy, core: Any, chunk_size: int = DEFAULT_CHUNK):
    """``obs -> (n, K)`` actions of an EV checkpoint on ``core``'s observations (``EVPolicy.bind``)."""
    bound = EVPolicy.bind(policy, core)
    return lambda obs: bound.act(obs, chunk_size=chunk_size)


def shipped_ev_policies(core: Any, chunk_size: int = DEFAULT_CHUNK) -> tuple[dict, dict, dict]:
    """The shipped EV policies for the site categories of ``core``, checked against it: (checkpoints, act
    functions, repository paths), by category; what Algorithm 1 on EV runs with (``cmarl run``, the benchmarks)."""
    from cmarl_env.domains import get_domain

    loaded = {t: load_ev_pretrained(t, expected=core) for t in get_domain("ev_charging").type_keys(core)}
    policies = {t: ev_policy_fn(p, core, chunk_size=chunk_size) for t, p in loaded.items()}
    return loaded, policies, {t: f"algorithms/pretrained/ev/{t}.pt" for t in loaded}
