"""Benchmark suites: typed configuration, parsing and validation.

A suite is a JSON file (the shipped ones live in ``benchmarks/suites/``)::

    {
      "format": "cmarl-suite/1",
      "name": "quick",
      "description": "what the suite is for",
      "defaults": {
        "scenario": {"n_agents": 7, "graph": "two_clusters", "constraint": 0.27, "steps": 1500, ...},
        "seeds": [0, 1, 2],
        "rollouts": 10,
        "oracle": true
      },
      "methods": {
        "consensus":    {"kind": "consensus", "params": {"rounds": 1}},
        "no_consensus": {"kind": "no_consensus"},
        "rounds":       {"kind": "consensus", "sweep": {"rounds": [0, 1, 2, 5]}},
        "mappo":        {"kind": "mappo", "budget": "short", "params": {"total_steps": 8000}}
      },
      "experiments": [
        {"name": "main", "methods": ["consensus", "no_consensus", "mappo"]},
        {"name": "sweep", "scenarios": [{"graph": "ring", "demand_scales": [2, 1, 1, 1, 1, 1, 1]}],
         "matrix": {"constraint": [0.2, 0.3]}, "methods": ["consensus"], "seeds": [0], "oracle": false}
      ],
      "resources": {"num_cpus": null, "max_concurrent": null, "cpus_per_run": 1}
    }

*Scenario* fields (``defaults.scenario`` and every entry of an experiment's
``scenarios``; see :class:`ScenarioSpec`): ``name``, ``n_agents``, ``graph``,
``graph_params``, ``constraint``, ``steps``, ``start_hour``, ``start_jitter``,
``demand_scales``, ``dataset``, ``record_agents``. An experiment's scenarios
(default: one scenario equal to the defaults) are crossed with its ``matrix``
(scenario field -> list of values). A scenario without a ``name`` is named
``{graph}_n{n_agents}_c{constraint}`` plus ``_{field}{value}`` for any other
matrix field.

*Methods* are named entries with a ``kind`` (:data:`KINDS`), ``params`` (the
kind's own options), an optional ``sweep`` (param -> list of values; expands
into one method per combination, named ``{name}-{param}{value}``), ``budget``
(:data:`BUDGETS`), ``label`` and ``note`` (shown in the leaderboard). An
experiment lists method names; a swept name stands for all its variants.

Every run is (scenario, method, seed) and performs ``rollouts`` roll-outs of
``steps`` hours: roll-out 0 starts at ``start_hour`` (its trajectories are
stored and drawn in the figures); roll-out ``k >= 1`` starts at
``start_hour + u_k`` with ``u_k`` uniform in ``[0, start_jitter]`` drawn from
``numpy.random.default_rng([seed, k])``: every method sees the same start
hours for the same seed (paired comparison). With ``oracle: true`` the
clairvoyant LP is solved for every roll-out and each run reports its cost
ratio to the LP optimum.

Errors are :class:`SuiteError` (a ``ValueError``) naming the offending key as a
path (``experiments[1].matrix.constraint[2]``) and the allowed values.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

FORMAT = "cmarl-suite/1"
SUITES_DIR = Path(__file__).resolve().parent / "suites"
DEFAULT_DATASET = "citylearn_challenge_2022_phase_all"
DATASET_HOURS = {DEFAULT_DATASET: 8760}

GRAPHS = ("ring", "line", "two_clusters", "complete", "erdos_renyi", "random_geometric", "small_world",
          "watts_strogatz")
CALIBRATED = "calibrated"  # scenario "constraint": placed between the LP frontier and serve-all use (``calibrate``)

SCENARIO_KEYS = ("name", "n_agents", "graph", "graph_params", "constraint", "calibrate", "steps", "start_hour",
                 "start_jitter", "demand_scales", "dataset", "record_agents", "seed", "label", "domain", "start_day",
                 "domain_params")
# Domains the benchmarks run (cmarl_env.domains): the paper's demand response (default) and EV charging
DEFAULT_DOMAIN = "demand_response"
DOMAINS = ("demand_response", "ev_charging")
EV_DATASET = "elaadnl"  # the EV domain's data (ElaadNL sessions, NL day-ahead prices; cmarl_env.domains.ev_charging)
# EVConfig fields an EV scenario may set in ``domain_params`` (the others come from the scenario's own keys)
EV_PARAMS = ("ports", "site_types", "charger_kw", "daily_use", "limit", "limit_profile", "split", "unmet_allowance")
# the EV dual kinds read these shipped checkpoints (algorithms/pretrained/ev/<site type>.pt)
EV_POLICY_KINDS = ("consensus", "no_consensus")
TOP_KEYS = ("format", "name", "description", "defaults", "methods", "experiments", "resources")
DEFAULTS_KEYS = ("scenario", "seeds", "rollouts", "oracle")
METHOD_KEYS = ("kind", "params", "sweep", "budget", "label", "note")
EXPERIMENT_KEYS = ("name", "scenarios", "matrix", "methods", "seeds", "rollouts", "oracle")
RESOURCE_KEYS = ("num_cpus", "max_concurrent", "cpus_per_run")



class SuiteError(ValueError):
    """A suite file is malformed; the message names the key (as a path) and the allowed values."""


# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class ScenarioSpec:
    """One environment setting: agents, graph, constraint level, horizon, roll-out start hours."""

    name: str
    n_agents: int = 7
    graph: str = "two_clusters"
    graph_params: Mapping[str, Any] = field(default_factory=dict)
    constraint: float = 0.27
    steps: int = 3000
    start_hour: int = 0
    start_jitter: int = 168
    demand_scales: tuple[float, ...] | float | None = None
    dataset: str = DEFAULT_DATASET
    record_agents: int = 100
    seed: int = 0                    # the scenario's own randomness: agent offsets, random graphs, start hours
    calibrate: float | None = None   # constraint = frontier + calibrate * (serve-all use - frontier), computed
    label: str = ""                  # shown in the table header (e.g. "paper; not binding")
    # the domain (``DOMAINS``); demand response is the default and is left out of to_dict (unchanged spec hashes).
    # EV charging: ``steps`` hours from local midnight of ``start_day`` (day index of the EV data; roll-out k starts
    # on day start_day + (start_hours[k] - 24 start_day) // 24), ``constraint`` = c of the cap c x the uncontrolled
    # peak of roll-out 0, ``domain_params`` = further EVConfig fields (``EV_PARAMS``)
    domain: str = DEFAULT_DOMAIN
    start_day: int | None = None
    domain_params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_ev(self) -> bool:
        return self.domain == "ev_charging"

    def rollout_day(self, start_hour: int) -> int:
        """EV: the day a roll-out starts on, from its start hour (``start_hours`` count hours from 24 x start_day)."""
        return int(start_hour) // 24

    def rollout_seed(self, k: int) -> int:
        """EV: the seed of roll-out k's cars (the same for every method: paired comparison)."""
        import numpy as np

        return int(np.random.default_rng([self.seed, k, 0xE7]).integers(2**31))

    def ev_config(self, *, augment: bool = False, constraint: float | None = None):
        """EV: the scenario's ``EVConfig``; its cap is calibrated on roll-out 0 (start day, seed of roll-out 0)."""
        from cmarl_env.domains.ev_charging.config import EVConfig

        c = self.constraint if constraint is None else constraint
        if not isinstance(c, (int, float)):
            raise ValueError(f"scenario {self.name!r}: constraint {c!r} is not resolved yet (calibrated scenarios "
                             "get theirs from the runner)")
        extra = dict(self.domain_params)
        if isinstance(extra.get("site_types"), list):
            extra["site_types"] = tuple(extra["site_types"])
        if isinstance(extra.get("limit_profile"), list):
            extra["limit_profile"] = tuple(extra["limit_profile"])
        return EVConfig(n_agents=self.n_agents, constraint_fraction=float(c), episode_length=self.steps,
                        start_day=self.start_day, seed=self.rollout_seed(0), graph=self.graph,
                        graph_params=dict(self.graph_params), augment=augment, **extra)

    @property
    def calibrated(self) -> bool:
        return self.calibrate is not None

    def env_config(self, start_hour: int, n_hours: int, *, augment: bool = False, steps: int | None = None,
                   constraint: float | None = None):
        """The environment of a roll-out of this scenario from ``start_hour`` (``cmarl_env.evaluation``'s window)."""
        from cmarl_env.evaluation import evaluation_config

        c = self.constraint if constraint is None else constraint
        if not isinstance(c, (int, float)):
            raise ValueError(f"scenario {self.name!r}: constraint {c!r} is not resolved yet (calibrated scenarios "
                             "get theirs from the runner)")
        return evaluation_config(n_agents=self.n_agents, constraint=float(c), start_hour=start_hour,
                                 steps=self.steps if steps is None else steps, n_hours=n_hours, dataset=self.dataset,
                                 demand_scales=self.demand_scales, graph=self.graph, graph_params=self.graph_params,
                                 seed=self.seed, augment=augment)

    def cache_key(self) -> str:
        """A short hash of the scenario's physics (for caches shared between runs)."""
        return hashlib.sha256(json.dumps(self.physics_key(), sort_keys=True, default=str).encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["graph_params"] = dict(self.graph_params)
        if isinstance(self.demand_scales, tuple):
            out["demand_scales"] = list(self.demand_scales)
        if self.domain == DEFAULT_DOMAIN:  # demand-response scenarios read (and hash) as before domains existed
            for k in ("domain", "start_day", "domain_params"):
                out.pop(k)
        else:
            out["domain_params"] = _plain(dict(self.domain_params))
        return out

    def physics_key(self) -> dict[str, Any]:
        """Everything but the name and label: two scenarios with equal keys are the same scenario."""
        out = self.to_dict()
        out.pop("name")
        out.pop("label")
        out.pop("record_agents")
        return out


@dataclass(frozen=True)
class MethodSpec:
    """One method as the leaderboard shows it (a sweep is already expanded)."""

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    budget: str = "none"
    label: str = ""
    note: str = ""
    family: str = ""  # the suite entry it came from (differs from name for sweeps)

    @property
    def reference(self) -> bool:
        """References (the LP bound) are listed but not ranked."""
        from benchmarks.registry import get

        return get(self.kind).reference

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["params"] = _plain(dict(self.params))
        return out


@dataclass(frozen=True)
class RunSpec:
    """One run: a scenario, a method and a seed, with the roll-out start hours fixed up front."""

    suite: str
    experiment: str
    scenario: ScenarioSpec
    method: MethodSpec
    seed: int
    rollouts: int
    oracle: bool
    start_hours: tuple[int, ...]

    @property
    def run_id(self) -> str:
        return f"{self.scenario.name}/{self.method.name}/seed_{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "cmarl-bench-run-spec/1",
            "run_id": self.run_id,
            "suite": self.suite,
            "experiment": self.experiment,
            "scenario": self.scenario.to_dict(),
            "method": self.method.to_dict(),
            "seed": self.seed,
            "rollouts": self.rollouts,
            "oracle": self.oracle,
            "start_hours": list(self.start_hours),
            "spec_hash": self.spec_hash(),
        }

    def spec_hash(self) -> str:
        """Hash of everything that determines the run's result (not the suite or experiment name)."""
        payload = {"scenario": self.scenario.physics_key(), "method": {k: v for k, v in self.method.to_dict().items()
                                                                         if k in ("kind", "params")},
                   "seed": self.seed, "rollouts": self.rollouts, "oracle": self.oracle,
                   "start_hours": list(self.start_hours), "inputs": self.input_digests()}
        defaults = self.method_defaults()
        if defaults:  # only kinds that declare code defaults: the other runs keep their hashes
            payload["defaults"] = defaults
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def method_defaults(self) -> dict[str, Any]:
        """The code defaults of the method's kind (registry ``MethodDef.defaults``), part of the spec hash."""
        from benchmarks.registry import get

        return get(self.method.kind).default_params()

    def input_digests(self) -> list[list[str]]:
        """Content hashes of the files the method reads (checkpoints; registry ``MethodDef.inputs``), (name, digest) pairs:
        retraining a policy changes the spec hash, so the runner reruns instead of reusing the old result."""
        from benchmarks.registry import file_digest, get

        if self.scenario.is_ev and self.method.kind in EV_POLICY_KINDS:
            import importlib.resources  # torch-free, as the demand-response inputs

            root = Path(str(importlib.resources.files("algorithms") / "pretrained" / "ev"))
            return [[f"ev/{p.name}", file_digest(p)] for p in sorted(root.glob("*.pt"))]
        return [[p.name, file_digest(p)] for p in get(self.method.kind).input_files(self.method.params)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        sc = dict(d["scenario"])
        if isinstance(sc.get("demand_scales"), list):
            sc["demand_scales"] = tuple(sc["demand_scales"])
        me = dict(d["method"])
        return cls(suite=d["suite"], experiment=d["experiment"], scenario=ScenarioSpec(**sc), method=MethodSpec(**me),
                   seed=int(d["seed"]), rollouts=int(d["rollouts"]), oracle=bool(d["oracle"]),
                   start_hours=tuple(int(h) for h in d["start_hours"]))


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    scenarios: tuple[ScenarioSpec, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    rollouts: int
    oracle: bool


@dataclass(frozen=True)
class Resources:
    num_cpus: int | None = None        # local Ray: CPUs to start with (None: all of this machine)
    max_concurrent: int | None = None  # runs in flight at once (None: num_cpus // cpus_per_run)
    cpus_per_run: float = 1


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    methods: Mapping[str, MethodSpec]
    experiments: tuple[ExperimentSpec, ...]
    resources: Resources
    source: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def runs(self, constraints: Mapping[str, float] | None = None) -> list[RunSpec]:
        """All runs of the suite, in a stable order, without duplicates.

        ``constraints`` gives the computed level of calibrated scenarios (by
        name; see ``benchmarks.runner.scenario_facts``); without it they keep
        ``constraint = "calibrated"``. A method whose results do not depend on
        the seed (registry ``seeded=False``) runs with the first seed only.
        """
        from benchmarks.registry import get

        out: dict[str, RunSpec] = {}
        for exp in self.experiments:
            for scenario in exp.scenarios:
                if constraints is not None and scenario.name in constraints:
                    scenario = replace(scenario, constraint=float(constraints[scenario.name]))
                for mname in exp.methods:
                    method = self.methods[mname]
                    seeds = exp.seeds if get(method.kind).seeded else exp.seeds[:1]
                    for seed in seeds:
                        spec = RunSpec(self.name, exp.name, scenario, method, seed, exp.rollouts, exp.oracle,
                                       start_hours(scenario, exp.rollouts))
                        prev = out.get(spec.run_id)
                        if prev is not None and prev.spec_hash() != spec.spec_hash():
                            raise SuiteError(
                                f"suite {self.name!r}: run {spec.run_id} appears in experiments {prev.experiment!r} "
                                f"and {exp.name!r} with different settings (rollouts/oracle); give the scenarios "
                                "distinct names"
                            )
                        out.setdefault(spec.run_id, spec)
        return list(out.values())

    def scenarios(self) -> list[ScenarioSpec]:
        seen: dict[str, ScenarioSpec] = {}
        for exp in self.experiments:
            for s in exp.scenarios:
                seen.setdefault(s.name, s)
        return list(seen.values())


# --------------------------------------------------------------------------- start hours
def start_hours(scenario: ScenarioSpec, rollouts: int) -> tuple[int, ...]:
    """The scenario's roll-out start hours (``cmarl_env.evaluation.rollout_start_hours`` with its start hour, jitter
    and seed): the same hours for every method and every training seed."""
    from cmarl_env.evaluation import rollout_start_hours

    if scenario.is_ev:  # hours from local midnight of the start day; roll-outs start at the midnight of their day
        return tuple(24 * (h // 24) for h in rollout_start_hours(24 * scenario.start_day, rollouts,
                                                                  scenario.start_jitter, scenario.seed))
    return rollout_start_hours(scenario.start_hour, rollouts, scenario.start_jitter, scenario.seed)


# --------------------------------------------------------------------------- parsing
def shipped_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.json"))}


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A shipped suite name (``quick``) or a path to a JSON file."""
    text = str(name_or_path)
    shipped = shipped_suites()
    if text in shipped:
        return shipped[text]
    path = Path(text)
    if path.is_file():
        return path
    raise SuiteError(f"suite {text!r} is neither a shipped suite ({', '.join(shipped) or 'none'}) nor an existing file")


def load_suite(name_or_path: str | Path) -> Suite:
    path = resolve_suite_path(name_or_path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SuiteError(f"suite file {path} is not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from None
    return parse_suite(raw, source=str(path))


def parse_suite(raw: Any, source: str = "<dict>") -> Suite:
    """Validate a suite dict and build the typed :class:`Suite`."""
    where = f"suite {source}"
    _require_mapping(raw, "", where)
    _check_keys(raw, TOP_KEYS, "", where)
    fmt = raw.get("format", FORMAT)
    if fmt != FORMAT:
        raise SuiteError(f"{where}: format={fmt!r} is not supported; allowed: {FORMAT!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise SuiteError(f"{where}: name={name!r} must be a non-empty string without '/'")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(f"{where}: description must be a string")

    defaults = raw.get("defaults", {})
    _require_mapping(defaults, "defaults", where)
    _check_keys(defaults, DEFAULTS_KEYS, "defaults", where)
    base_scenario = defaults.get("scenario", {})
    _require_mapping(base_scenario, "defaults.scenario", where)
    _check_keys(base_scenario, SCENARIO_KEYS, "defaults.scenario", where)
    if "name" in base_scenario:
        raise SuiteError(f"{where}: defaults.scenario.name is not allowed (scenario names belong to experiments)")
    default_seeds = _seeds(defaults.get("seeds", [0]), "defaults.seeds", where)
    default_rollouts = _int(defaults.get("rollouts", 10), "defaults.rollouts", where, 1, 10_000)
    default_oracle = _bool(defaults.get("oracle", True), "defaults.oracle", where)

    methods_raw = raw.get("methods")
    if not isinstance(methods_raw, Mapping) or not methods_raw:
        raise SuiteError(f"{where}: methods must be a non-empty object (method name -> definition)")
    methods: dict[str, MethodSpec] = {}
    families: dict[str, list[str]] = {}
    for mname, mraw in methods_raw.items():
        for spec in _parse_method(mname, mraw, where):
            if spec.name in methods:
                raise SuiteError(f"{where}: methods.{mname} expands to {spec.name!r}, which is already defined")
            methods[spec.name] = spec
            families.setdefault(mname, []).append(spec.name)

    exps_raw = raw.get("experiments")
    if not isinstance(exps_raw, list) or not exps_raw:
        raise SuiteError(f"{where}: experiments must be a non-empty list")
    experiments = []
    names_seen: set[str] = set()
    scenario_registry: dict[str, ScenarioSpec] = {}
    for i, eraw in enumerate(exps_raw):
        key = f"experiments[{i}]"
        _require_mapping(eraw, key, where)
        _check_keys(eraw, EXPERIMENT_KEYS, key, where)
        ename = eraw.get("name", f"experiment_{i}")
        if not isinstance(ename, str) or not ename:
            raise SuiteError(f"{where}: {key}.name={ename!r} must be a non-empty string")
        if ename in names_seen:
            raise SuiteError(f"{where}: {key}.name={ename!r} is used twice; experiment names must be unique")
        names_seen.add(ename)
        mlist = eraw.get("methods")
        if not isinstance(mlist, list) or not mlist:
            raise SuiteError(f"{where}: {key}.methods must be a non-empty list of method names; defined: {sorted(families)}")
        expanded: list[str] = []
        for j, m in enumerate(mlist):
            if m in families:
                expanded.extend(families[m])
            elif m in methods:
                expanded.append(m)
            else:
                raise SuiteError(f"{where}: {key}.methods[{j}]={m!r} is not a defined method; "
                                 f"allowed: {sorted(set(families) | set(methods))}")
        expanded = list(dict.fromkeys(expanded))
        seeds = _seeds(eraw["seeds"], f"{key}.seeds", where) if "seeds" in eraw else default_seeds
        rollouts = _int(eraw["rollouts"], f"{key}.rollouts", where, 1, 10_000) if "rollouts" in eraw else default_rollouts
        oracle = _bool(eraw["oracle"], f"{key}.oracle", where) if "oracle" in eraw else default_oracle
        scenarios = _expand_scenarios(eraw, base_scenario, key, where)
        for s in scenarios:
            prev = scenario_registry.get(s.name)
            if prev is not None and prev.physics_key() != s.physics_key():
                raise SuiteError(f"{where}: {key} defines scenario {s.name!r} differently from an earlier experiment; "
                                 "give one of them another name")
            scenario_registry[s.name] = s
            for m in expanded:
                _check_compatible(methods[m], s, key, where)
        experiments.append(ExperimentSpec(ename, tuple(scenarios), tuple(expanded), seeds, rollouts, oracle))

    res_raw = raw.get("resources", {})
    _require_mapping(res_raw, "resources", where)
    _check_keys(res_raw, RESOURCE_KEYS, "resources", where)
    num_cpus = res_raw.get("num_cpus")
    if num_cpus is not None:
        _int(num_cpus, "resources.num_cpus", where, 1, 100_000)
    max_conc = res_raw.get("max_concurrent")
    if max_conc is not None:
        _int(max_conc, "resources.max_concurrent", where, 1, 100_000)
    cpr = _real(res_raw.get("cpus_per_run", 1), "resources.cpus_per_run", where, 0.0, 1024.0, low_open=True)
    suite = Suite(name=name, description=description, methods=methods, experiments=tuple(experiments),
                  resources=Resources(num_cpus, max_conc, cpr), source=source, raw=copy.deepcopy(dict(raw)))
    suite.runs()  # raises on conflicting duplicates
    return suite


def _parse_method(mname: Any, mraw: Any, where: str) -> list[MethodSpec]:
    from benchmarks import registry

    key = f"methods.{mname}"
    if not isinstance(mname, str) or not mname or "/" in mname:
        raise SuiteError(f"{where}: method name {mname!r} must be a non-empty string without '/'")
    _require_mapping(mraw, key, where)
    _check_keys(mraw, METHOD_KEYS, key, where)
    kind = mraw.get("kind")
    kinds = registry.kinds()
    if kind not in kinds:
        raise SuiteError(f"{where}: {key}.kind={kind!r} is not allowed; choose one of {list(kinds)}")
    mdef = registry.get(kind)
    params = dict(mraw.get("params", {})) if isinstance(mraw.get("params", {}), Mapping) else mraw.get("params")
    _require_mapping(params, f"{key}.params", where)
    if kind == "controller" and isinstance(params.get("path"), str) and not Path(params["path"]).is_absolute():
        base = Path(where.removeprefix("suite ")).parent if where.startswith("suite ") else Path.cwd()
        params["path"] = str((base / params["path"]).resolve())
    sweep = mraw.get("sweep", {})
    _require_mapping(sweep, f"{key}.sweep", where)
    for p in list(params) + list(sweep):
        if p not in mdef.params:
            raise SuiteError(f"{where}: unknown key {key}.params.{p} for kind {kind!r}; "
                             f"allowed: {sorted(mdef.params) or 'none'}")
    for p, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise SuiteError(f"{where}: {key}.sweep.{p} must be a non-empty list of values")
    budget = mraw.get("budget", mdef.budget)
    if budget not in registry.BUDGETS:
        raise SuiteError(f"{where}: {key}.budget={budget!r} is not allowed; choose one of {list(registry.BUDGETS)}")
    label = mraw.get("label", mdef.label or mname)
    note = mraw.get("note", "")
    for k, v in (("label", label), ("note", note)):
        if not isinstance(v, str):
            raise SuiteError(f"{where}: {key}.{k} must be a string")
    combos = list(itertools.product(*(sweep[k] for k in sweep))) if sweep else [()]
    out = []
    for combo in combos:
        p = dict(params)
        p.update(dict(zip(sweep, combo)))
        if mdef.validate is not None:
            try:
                mdef.validate(p)
            except (ValueError, TypeError) as err:
                where_key = key + (f".sweep({', '.join(f'{k}={_fmt_value(v)}' for k, v in zip(sweep, combo))})"
                                   if sweep else ".params")
                raise SuiteError(f"{where}: {where_key}: {err}") from None
        if not sweep:
            out.append(MethodSpec(mname, kind, p, budget, label, note, mname))
        else:
            suffix = "-".join(f"{k}{_fmt_value(v)}" for k, v in zip(sweep, combo))
            extra = ", ".join(f"{k}={_fmt_value(v)}" for k, v in zip(sweep, combo))
            out.append(MethodSpec(f"{mname}-{suffix}", kind, p, budget, f"{label} ({extra})", note, mname))
    return out


def _expand_scenarios(eraw: Mapping[str, Any], base: Mapping[str, Any], key: str, where: str) -> list[ScenarioSpec]:
    scen_list = eraw.get("scenarios", [{}])
    if not isinstance(scen_list, list) or not scen_list:
        raise SuiteError(f"{where}: {key}.scenarios must be a non-empty list of scenario objects")
    matrix = eraw.get("matrix", {})
    _require_mapping(matrix, f"{key}.matrix", where)
    for m, values in matrix.items():
        if m not in SCENARIO_KEYS or m == "name":
            raise SuiteError(f"{where}: unknown key {key}.matrix.{m}; allowed: {[k for k in SCENARIO_KEYS if k != 'name']}")
        if not isinstance(values, list) or not values:
            raise SuiteError(f"{where}: {key}.matrix.{m} must be a non-empty list of values")
    mkeys = list(matrix)
    out: list[ScenarioSpec] = []
    for i, sraw in enumerate(scen_list):
        skey = f"{key}.scenarios[{i}]"
        _require_mapping(sraw, skey, where)
        _check_keys(sraw, SCENARIO_KEYS, skey, where)
        for combo in itertools.product(*(matrix[m] for m in mkeys)) if mkeys else [()]:
            values = dict(base)
            values.update(sraw)
            values.update(dict(zip(mkeys, combo)))
            ckey = skey if not mkeys else f"{key}.matrix({', '.join(f'{m}={_fmt_value(v)}' for m, v in zip(mkeys, combo))})"
            if "name" in sraw and mkeys:
                values["name"] = sraw["name"] + "".join(f"_{_short(m)}{_fmt_value(v)}" for m, v in zip(mkeys, combo))
            out.append(_scenario(values, ckey, where, [m for m in mkeys if m not in ("graph", "n_agents", "constraint")]))
    names = [s.name for s in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SuiteError(f"{where}: {key} yields several scenarios named {sorted(dup)}; give each scenario a 'name'")
    return out


def _short(field_name: str) -> str:
    return {"constraint": "c", "n_agents": "n", "steps": "T", "start_hour": "h"}.get(field_name, field_name)


def _scenario(values: dict[str, Any], key: str, where: str, extra_name_fields: Sequence[str]) -> ScenarioSpec:
    domain = values.get("domain", DEFAULT_DOMAIN)
    if not isinstance(domain, str) or domain not in DOMAINS:
        raise SuiteError(f"{where}: {key}.domain={domain!r} is not allowed; choose one of {list(DOMAINS)}")
    if domain == "ev_charging":
        return _ev_scenario(values, key, where, extra_name_fields)
    for k in ("start_day", "domain_params"):
        if k in values:
            raise SuiteError(f"{where}: {key}.{k} is only allowed with domain='ev_charging' (got domain={domain!r})")
    n = _int(values.get("n_agents", 7), f"{key}.n_agents", where, 1, 10_000_000)
    graph = values.get("graph", "two_clusters")
    if graph not in GRAPHS:
        raise SuiteError(f"{where}: {key}.graph={graph!r} is not allowed; choose one of {list(GRAPHS)}")
    gparams = values.get("graph_params", {})
    _require_mapping(gparams, f"{key}.graph_params", where)
    c = values.get("constraint", 0.27)
    calibrate = values.get("calibrate")
    if c == CALIBRATED:
        calibrate = 0.5 if calibrate is None else _real(calibrate, f"{key}.calibrate", where, 0.0, 1.0, low_open=True)
        if calibrate >= 1.0:
            raise SuiteError(f"{where}: {key}.calibrate={calibrate!r} is out of range; allowed: (0, 1) (0: the LP "
                             "frontier, 1: the serve-all controller's grid use)")
    else:
        c = _real(c, f"{key}.constraint", where, 0.0, 1.0, low_open=True)
        if calibrate is not None:
            raise SuiteError(f"{where}: {key}.calibrate needs constraint={CALIBRATED!r}; got constraint={c!r}")
    seed = _int(values.get("seed", 0), f"{key}.seed", where, 0, 2**31 - 1)
    label = values.get("label", "")
    if not isinstance(label, str):
        raise SuiteError(f"{where}: {key}.label must be a string")
    steps = _int(values.get("steps", 3000), f"{key}.steps", where, 1, 10**7)
    start = _int(values.get("start_hour", 0), f"{key}.start_hour", where, 0, 10**7)
    jitter = _int(values.get("start_jitter", 168), f"{key}.start_jitter", where, 0, 10**7)
    dataset = values.get("dataset", DEFAULT_DATASET)
    if not isinstance(dataset, str) or not dataset:
        raise SuiteError(f"{where}: {key}.dataset={dataset!r} must be a dataset name or schema path")
    hours = DATASET_HOURS.get(dataset)
    if hours is not None and start + jitter + steps > hours:
        raise SuiteError(f"{where}: {key}: start_hour + start_jitter + steps = {start} + {jitter} + {steps} exceeds the "
                         f"{hours} hours of {dataset}; allowed: start_hour + start_jitter + steps <= {hours}")
    record = _int(values.get("record_agents", 100), f"{key}.record_agents", where, 0, 10_000_000)
    scales = values.get("demand_scales")
    if isinstance(scales, list):
        if len(scales) != n:
            raise SuiteError(f"{where}: {key}.demand_scales has {len(scales)} entries but n_agents={n}; "
                             "allowed: one per agent, a single number, or null (the paper's layout)")
        for j, s in enumerate(scales):
            _real(s, f"{key}.demand_scales[{j}]", where, 0.0, 1000.0, low_open=True)
        scales = tuple(float(s) for s in scales)
    elif scales is not None:
        scales = _real(scales, f"{key}.demand_scales", where, 0.0, 1000.0, low_open=True)
    name = values.get("name")
    if name is None:
        level = f"cal{_fmt_value(calibrate)}" if c == CALIBRATED else _fmt_value(c)
        name = f"{graph}_n{n}_c{level}" + "".join(f"_{_short(m)}{_fmt_value(values[m])}" for m in extra_name_fields)
    if not isinstance(name, str) or not name or "/" in name:
        raise SuiteError(f"{where}: {key}.name={name!r} must be a non-empty string without '/'")
    return ScenarioSpec(name=name, n_agents=n, graph=graph, graph_params=dict(gparams), constraint=c, steps=steps,
                        start_hour=start, start_jitter=jitter, demand_scales=scales, dataset=dataset,
                        record_agents=record, seed=seed, calibrate=calibrate, label=label)


def _ev_scenario(values: dict[str, Any], key: str, where: str, extra_name_fields: Sequence[str]) -> ScenarioSpec:
    """An EV-charging scenario (``domain: "ev_charging"``); its EVConfig is built once here to check it fits."""
    for k in ("demand_scales", "start_hour"):
        if values.get(k) is not None and not (k == "start_hour" and values[k] == 0):
            raise SuiteError(f"{where}: {key}.{k} is not used by domain 'ev_charging' (use start_day and "
                             f"domain_params); remove it")
    dataset = values.get("dataset", EV_DATASET)
    if dataset in (DEFAULT_DATASET,):
        dataset = EV_DATASET  # inherited from demand-response defaults
    if dataset != EV_DATASET:
        raise SuiteError(f"{where}: {key}.dataset={dataset!r} is not allowed for domain 'ev_charging'; allowed: "
                         f"{EV_DATASET!r}")
    params = values.get("domain_params", {})
    _require_mapping(params, f"{key}.domain_params", where)
    for p in params:
        if p not in EV_PARAMS:
            raise SuiteError(f"{where}: unknown key {key}.domain_params.{p}; allowed: {list(EV_PARAMS)}")
    from cmarl_env.domains.ev_charging.config import SPLITS, EVConfig

    split = params.get("split", "test")
    if split not in SPLITS:
        raise SuiteError(f"{where}: {key}.domain_params.split={split!r} is not allowed; choose one of {list(SPLITS)}")
    params = dict(params) | {"split": split}
    values = dict(values)
    values.pop("start_hour", None)
    values.pop("demand_scales", None)
    values["dataset"] = DEFAULT_DATASET  # parsed below as a demand-response scenario (same checks), then replaced
    values.pop("domain", None)
    start_day = values.pop("start_day", None)
    values.pop("domain_params", None)
    base = _scenario(values | {"start_hour": 0, "start_jitter": 0}, key, where, extra_name_fields)
    jitter = _int(values.get("start_jitter", 168), f"{key}.start_jitter", where, 0, 10**7)
    lo = EVConfig(split=split).day_window[0]
    if start_day is None:
        start_day = lo
    start_day = _int(start_day, f"{key}.start_day", where, 0, 10**6)
    spec = replace(base, domain="ev_charging", start_day=start_day, domain_params=params, dataset=EV_DATASET,
                   start_hour=0, start_jitter=jitter, demand_scales=None)
    last = jitter // 24
    try:
        spec.ev_config(constraint=0.5)
        replace(spec, start_day=start_day + last).ev_config(constraint=0.5)
    except (ValueError, TypeError) as err:
        raise SuiteError(f"{where}: {key}: {err}") from None
    return spec


def _check_compatible(method: MethodSpec, scenario: ScenarioSpec, key: str, where: str) -> None:
    from benchmarks.registry import get

    check = get(method.kind).check_scenario
    reason = check(scenario) if check is not None else None
    if reason:
        raise SuiteError(f"{where}: {key}: method {method.name!r} (kind {method.kind!r}) cannot run scenario "
                         f"{scenario.name!r}: {reason}")


# --------------------------------------------------------------------------- small checks
def _require_mapping(value: Any, key: str, where: str) -> None:
    if not isinstance(value, Mapping):
        raise SuiteError(f"{where}: {key or 'the top level'} must be a JSON object, got {type(value).__name__}")


def _check_keys(value: Mapping[str, Any], allowed: Sequence[str], key: str, where: str) -> None:
    for k in value:
        if k not in allowed:
            path = f"{key}.{k}" if key else k
            raise SuiteError(f"{where}: unknown key {path!r}; allowed: {list(allowed)}")


def _int(value: Any, key: str, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SuiteError(f"{where}: {key}={value!r} must be an integer in [{low}, {high}]")
    if not low <= value <= high:
        raise SuiteError(f"{where}: {key}={value!r} is out of range; allowed: [{low}, {high}]")
    return value


def _real(value: Any, key: str, where: str, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SuiteError(f"{where}: {key}={value!r} must be a finite number")
    if (value <= low if low_open else value < low) or value > high:
        raise SuiteError(f"{where}: {key}={value!r} is out of range; allowed: {'(' if low_open else '['}{low}, {high}]")
    return float(value)


def _bool(value: Any, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise SuiteError(f"{where}: {key}={value!r} must be true or false")
    return value


def _seeds(value: Any, key: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{where}: {key} must be a non-empty list of integer seeds")
    for j, s in enumerate(value):
        _int(s, f"{key}[{j}]", where, 0, 2**31 - 1)
    if len(set(value)) != len(value):
        raise SuiteError(f"{where}: {key}={value!r} repeats a seed")
    return tuple(value)


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "x".join(_fmt_value(x) for x in v)
    return str(v)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
