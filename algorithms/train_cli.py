"""``cmarl train``: train the state-augmented PPO policy of one agent type.

Example::

    cmarl train --demand-scale 2.0 --steps 3000000 --envs 256 --seed 0 --out runs/train_double

writes ``policy.pt`` (checkpoint), ``config.json``, ``metrics.json`` and
``tensorboard/`` into the out folder and prints where they are.

EV charging (one site category per run; the shipped EV policies' recipe)::

    cmarl train --domain ev_charging --site-type public --config algorithms/pretrained/ev/recipe.json \
        --out runs/train_ev_public --export algorithms/pretrained/ev/public.pt
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

DEFAULTS_NOTE = "defaults are those of algorithms.train.TrainConfig (the shipped policies' settings)"


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden {text!r} must be comma-separated ints, e.g. 64,64") from None
    if not sizes:
        raise argparse.ArgumentTypeError("--hidden needs at least one layer size, e.g. 64,64")
    return sizes


def _pair(text: str) -> tuple[float, float]:
    try:
        lam, nu = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fixed-multipliers {text!r} must be LAMBDA,NU, e.g. 8,-8") from None
    return lam, nu


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = DEFAULTS_NOTE
    parser.add_argument("--domain", choices=("demand_response", "ev_charging"), default=None,
                        help="the domain whose agent type is trained (default demand_response)")
    parser.add_argument("--site-type", choices=("private", "public", "workplace"), default=None,
                        help="ev_charging: the site category trained (default public)")
    parser.add_argument("--ports", type=int, default=None, help="ev_charging: ports per site (default 4)")
    parser.add_argument("--imitation-steps", type=int, default=None,
                        help="ev_charging: minibatches of the MultiplierRate imitation warm start before PPO (0: none)")
    parser.add_argument("--demand-scale", type=float, default=None, help="agent type: 1.0 normal, 2.0 double (default 1.0)")
    parser.add_argument("--steps", type=int, default=None, help="total environment steps (all copies)")
    parser.add_argument("--envs", type=int, default=None, help="parallel copies stepped as one array")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (one evaluation + log point each)")
    parser.add_argument("--seed", type=int, default=None, help="seed of torch, numpy and the environment")
    parser.add_argument("--out", type=str, default=None, help="run folder (default runs/train_<type>_seed<seed>)")
    parser.add_argument("--constraint", type=float, default=None,
                        help="grid limit as a fraction of peak aggregate demand (sets c/N in r_L; default 0.27)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--no-lr-decay", action="store_true", help="keep the learning rate constant")
    parser.add_argument("--gamma", type=float, default=None)
    parser.add_argument("--gae-lambda", type=float, default=None)
    parser.add_argument("--hidden", type=_hidden, default=None, help="hidden layer sizes, e.g. 64,64")
    parser.add_argument("--batch-size", type=int, default=None, help="PPO minibatch size")
    parser.add_argument("--repeats", type=int, default=None, help="PPO passes over each rollout")
    parser.add_argument("--rollout-steps", type=int, default=None, help="steps per copy per PPO iteration")
    parser.add_argument("--reward-scale", type=float, default=None, help="fixed divisor of r_L (default 10 x demand scale)")
    parser.add_argument("--fixed-multipliers", type=_pair, default=None, metavar="LAMBDA,NU",
                        help="fixed-penalty baseline: no augmentation, these multipliers throughout (e.g. 8,-8)")
    parser.add_argument("--episode-length", type=int, default=None, help="hours per training episode")
    parser.add_argument("--init-backlog-hours", type=float, default=None,
                        help="exploring starts: initial backlogs up to this many hours of mean demand (0: empty)")
    parser.add_argument("--multiplier-sampling", choices=("uniform", "skewed"), default=None,
                        help="per-episode draw of (lambda, nu): uniform over the ranges, or skewed towards what "
                             "execution visits (see algorithms.train.multiplier_sampler)")
    parser.add_argument("--multiplier-power", type=float, default=None,
                        help="skewed sampling: lambda = 15 u^k, nu = -20 v^k with this k")
    parser.add_argument("--wide-fraction", type=float, default=None,
                        help="skewed sampling: share of episodes drawn uniformly over the full ranges")
    parser.add_argument("--raw-multipliers", action=argparse.BooleanOptionalAction, default=None,
                        help="networks read lambda and nu in their own units (undoing the observation's range "
                             "normalisation) instead of the normalised columns")
    parser.add_argument("--reward-normalization", choices=("fixed", "multipliers"), default=None,
                        help="divide r_L by the reward scale only (fixed), or also by the episode's "
                             "(price_norm + lambda + |nu|) / price_norm (multipliers)")
    parser.add_argument("--reward-shaping", choices=("none", "backlog_potential", "shortfall_potential"), default=None,
                        help="backlog_potential: nu r2 becomes the holding cost (1 - gamma) nu B' (potential-based "
                             "shaping with Phi = -nu B; same optimal policy, far less reward noise)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="fixed evaluation episodes per epoch")
    parser.add_argument("--dataset", type=str, default=None, help="CityLearn dataset name or schema path")
    parser.add_argument("--device", type=str, default=None, help="cpu (default) or cuda[:k]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    parser.add_argument("--config", type=str, default=None, help="JSON file of TrainConfig fields (flags override it)")
    parser.add_argument("--export", type=str, default=None, help="also copy the checkpoint to this path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")


FLAG_FIELDS = {
    "domain": "domain",
    "site_type": "site_type",
    "ports": "ports",
    "imitation_steps": "imitation_steps",
    "demand_scale": "demand_scale",
    "steps": "total_steps",
    "envs": "num_envs",
    "epochs": "epochs",
    "seed": "seed",
    "constraint": "constraint_fraction",
    "lr": "lr",
    "gamma": "gamma",
    "gae_lambda": "gae_lambda",
    "hidden": "hidden_sizes",
    "batch_size": "batch_size",
    "repeats": "update_repeats",
    "rollout_steps": "rollout_steps",
    "reward_scale": "reward_scale",
    "eval_episodes": "eval_episodes",
    "episode_length": "episode_length",
    "init_backlog_hours": "init_backlog_hours",
    "multiplier_sampling": "multiplier_sampling",
    "multiplier_power": "multiplier_power",
    "wide_fraction": "wide_fraction",
    "raw_multipliers": "raw_multipliers",
    "reward_normalization": "reward_normalization",
    "reward_shaping": "reward_shaping",
    "fixed_multipliers": "fixed_multipliers",
    "dataset": "dataset",
    "device": "device",
    "threads": "num_threads",
}


def config_from_args(args: argparse.Namespace):
    from algorithms.policy import agent_type_name
    from algorithms.train import TrainConfig

    values: dict = {}
    if args.config:
        values.update(json.loads(Path(args.config).read_text()))
    for flag, name in FLAG_FIELDS.items():
        v = getattr(args, flag, None)
        if v is not None:
            values[name] = v
    if args.no_lr_decay:
        values["lr_decay"] = False
    if args.out:
        values["out_dir"] = args.out
    elif "out_dir" not in values:
        if values.get("domain") == "ev_charging":
            values["out_dir"] = f"runs/train_ev_{values.get('site_type', 'public')}_seed{values.get('seed', 0)}"
        else:
            scale = float(values.get("demand_scale", 1.0))
            values["out_dir"] = f"runs/train_{agent_type_name(scale)}_seed{values.get('seed', 0)}"
    return TrainConfig.from_dict(values)


def _check_outputs(config, export: str | None) -> None:
    """Before any training: the run folder and the export path can be written, and the dataset loads."""
    from cmarl_env.data import load_dataset
    from cmarl_env.records import check_output_dir

    check_output_dir(config.out_dir, "--out")
    if export:
        target = Path(export)
        if target.is_dir():
            raise ValueError(f"--export {export!r} is a folder; give the checkpoint file to write")
        check_output_dir(target.parent, "--export")
    if config.is_ev:
        return  # the EV tables ship with the package
    try:
        load_dataset(config.dataset)
    except ImportError as err:  # an unknown name, or a CityLearn dataset without the [citylearn] extra
        raise ValueError(f"--dataset {config.dataset!r}: {' '.join(str(err).split())}") from None


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        _check_outputs(config, args.export)
    except (ValueError, OSError) as err:
        print(f"cmarl train: {err}", file=sys.stderr)
        return 2
    from algorithms.train import CONFIG_NAME, METRICS_NAME, TENSORBOARD_DIR, train

    progress = not args.no_progress
    what = (f"the EV {config.site_type!r}-site policy ({config.ports} ports)" if config.is_ev
            else f"the {config.demand_scale:g}x-demand policy")
    print(
        f"training {what}: {config.total_steps} steps on {config.num_envs} copies, "
        f"seed {config.seed}, run folder {config.out_dir}",
        flush=True,
    )
    result = train(config, progress=progress)
    run_dir = result.run_dir
    print(f"done in {result.wall_time_s:.1f} s ({result.env_steps} env steps)")
    start = "after the imitation warm start" if config.imitation_steps else "untrained"
    print(f"Lagrangian return on fixed evaluation episodes: {result.eval_return_initial:.1f} ({start}) -> "
          f"{result.eval_return_final:.1f}")
    print(f"checkpoint:  {result.checkpoint}")
    print(f"config:      {run_dir / CONFIG_NAME}")
    print(f"metrics:     {run_dir / METRICS_NAME}")
    print(f"tensorboard: {run_dir / TENSORBOARD_DIR}  (tensorboard --logdir {run_dir / TENSORBOARD_DIR})")
    if args.export:
        export = Path(args.export)
        export.parent.mkdir(parents=True, exist_ok=True)
        tmp = export.with_name(f".{export.name}.tmp")
        shutil.copyfile(result.checkpoint, tmp)
        tmp.replace(export)
        print(f"exported:    {export}")
    return 0
