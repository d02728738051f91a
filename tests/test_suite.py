"""Suite parsing and validation: shipped suites, kinds and parameters from the registry, start hours from the
scenario seed, calibrated scenarios, and clear errors that name the bad key."""

import copy
import dataclasses
import json

import numpy as np
import pytest

from benchmarks import registry
from benchmarks.suite import (
    CALIBRATED,
    RunSpec,
    ScenarioSpec,
    SuiteError,
    load_suite,
    parse_suite,
    shipped_suites,
    start_hours,
)

MINIMAL = {
    "name": "mini",
    "defaults": {"scenario": {"steps": 48, "start_jitter": 24}, "seeds": [0, 1], "rollouts": 3},
    "methods": {"rule": {"kind": "rule_based"}, "grid": {"kind": "grid_only"}, "rand": {"kind": "random"}},
    "experiments": [{"name": "main", "methods": ["rule", "grid", "rand"]}],
}
MARL_KINDS = ("mappo", "maddpg", "masac", "isac")


def bad(**changes):
    d = copy.deepcopy(MINIMAL)
    for path, value in changes.items():
        node = d
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return d


def error_of(raw) -> str:
    with pytest.raises(SuiteError) as info:
        parse_suite(raw, source="t.json")
    return str(info.value)


def _expected_seeds(suite, exp_seeds, kind):
    return set(exp_seeds) if registry.get(kind).seeded else {exp_seeds[0]}


# --------------------------------------------------------------------------- shipped suites
def test_shipped_suites_parse_and_follow_the_seed_rule():
    names = set(shipped_suites())
    assert {"quick", "paper", "paper_main", "scaling", "ablations", "baselines"} <= names
    for name in names:
        suite = load_suite(name)
        runs = suite.runs()
        assert runs, name
        assert len({r.run_id for r in runs}) == len(runs)
        for exp in suite.experiments:
            for sc in exp.scenarios:
                for m in exp.methods:
                    kind = suite.methods[m].kind
                    got = {r.seed for r in runs if r.scenario.name == sc.name and r.method.name == m}
                    assert got == _expected_seeds(suite, exp.seeds, kind), (name, sc.name, m)
        # every method of a scenario rolls out from the same hours, the scenario's own
        for sc in suite.scenarios():
            hours = {r.start_hours for r in runs if r.scenario.name == sc.name}
            assert len(hours) == 1, (name, sc.name)


def test_quick_suite_is_the_whole_comparison_on_a_binding_and_the_paper_scenario():
    suite = load_suite("quick")
    kinds = {m.kind for m in suite.methods.values()}
    assert {"consensus", "no_consensus", "ippo", *MARL_KINDS, "serve_all", "price_rule", "rule_based",
            "lp_oracle"} <= kinds
    for m in suite.methods.values():
        if m.kind in MARL_KINDS or m.kind == "ippo":
            assert m.budget == "short", m.name                       # a short budget, labelled as such
            assert m.params.get("penalties") == "selected", m.name  # the pair the grid search chose, not a guess
    scenarios = {s.name: s for s in suite.scenarios()}
    from baselines.penalties import selected_pair

    for sc in scenarios.values():  # the grid search selected a pair at every level the quick suite runs
        assert len(selected_pair(sc.constraint)) == 2
    assert all(s.n_agents == 7 for s in scenarios.values())
    paper = [s for s in scenarios.values() if s.constraint == 0.27]
    assert len(paper) == 1 and "paper" in paper[0].label and "not binding" in paper[0].label
    binding = [s for s in scenarios.values() if isinstance(s.constraint, float) and s.constraint < 0.21]
    assert binding, "a 7-agent scenario where the constraint binds (between the LP frontier 0.187 and 0.208)"
    runs = suite.runs()
    for name in scenarios:
        assert {r.method.name for r in runs if r.scenario.name == name} == set(suite.methods)


def test_paper_main_has_the_binding_levels_and_labels_the_paper_level():
    suite = load_suite("paper_main")
    seven = [s for s in suite.scenarios() if s.n_agents == 7 and s.start_hour == 0]
    levels = {s.constraint for s in seven}
    assert {0.20, 0.21, 0.22, 0.27} <= levels
    (paper,) = [s for s in seven if s.constraint == 0.27]
    assert paper.label == "paper; not binding"


def test_paper_scaling_ablation_content():
    paper = load_suite("paper")
    assert {r.scenario.graph for r in paper.runs()} == {"ring", "line", "two_clusters"}
    assert {r.scenario.constraint for r in paper.runs()} >= {0.2, 0.27, 0.3, 0.4, 0.5}
    # every shipped method except a user's own controller
    assert {m.kind for m in paper.methods.values()} == set(registry.kinds()) - {"controller"}
    ring = next(s for s in paper.scenarios() if s.graph == "ring")
    assert ring.demand_scales == (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    scaling = load_suite("scaling")
    ns = sorted({r.scenario.n_agents for r in scaling.runs()})
    assert ns[0] == 10 and ns[-1] == 1_000_000
    # no fixed level binds at every N: from 100 agents on the level is calibrated per scenario
    for s in scaling.scenarios():
        if s.n_agents >= 100:
            assert s.constraint == CALIBRATED and 0.0 < s.calibrate < 1.0, s.name
    abl = load_suite("ablations")
    rounds = {r.method.params.get("rounds") for r in abl.runs() if "rounds" in r.method.params}
    assert rounds == {0, 1, 2, 5}
    assert {p for m in abl.methods.values() for p in m.params} >= {"rounds", "alpha", "eps", "eta"}


def test_dual_steps_suites_sweep_the_default_step_sizes_and_share_their_pairs():
    """DualConfig's alpha and eta are a pair of suite dual_steps (its rank 1, README "Dual step sizes"), and the
    held-out suite judges the same pairs on hours outside the training window."""
    from algorithms.dual import DualConfig

    tuning, held_out = load_suite("dual_steps"), load_suite("dual_steps_held_out")
    pairs = {(r.method.params["alpha"], r.method.params["eta"]) for r in tuning.runs() if r.method.kind == "consensus"}
    assert (DualConfig().alpha, DualConfig().eta) in pairs and len(pairs) == 20
    assert pairs == {(r.method.params["alpha"], r.method.params["eta"])
                     for r in held_out.runs() if r.method.kind == "consensus"}
    assert all(r.scenario.start_hour + r.scenario.steps <= 3000 + r.scenario.start_jitter for r in tuning.runs())
    assert all(r.scenario.start_hour >= 3000 for r in held_out.runs())


# --------------------------------------------------------------------------- expansion
def test_minimal_expansion_and_names():
    suite = parse_suite(MINIMAL)
    runs = suite.runs()
    # rule and grid do not depend on the seed: one run each; random runs every seed
    assert sorted(r.run_id for r in runs) == ["two_clusters_n7_c0.27/grid/seed_0", "two_clusters_n7_c0.27/rand/seed_0",
                                              "two_clusters_n7_c0.27/rand/seed_1", "two_clusters_n7_c0.27/rule/seed_0"]
    d = copy.deepcopy(MINIMAL)
    d["experiments"][0]["matrix"] = {"constraint": [0.3, 0.5], "steps": [24, 48]}
    names = sorted({r.scenario.name for r in parse_suite(d).runs()})
    assert names == ["two_clusters_n7_c0.3_T24", "two_clusters_n7_c0.3_T48", "two_clusters_n7_c0.5_T24",
                     "two_clusters_n7_c0.5_T48"]


def test_sweep_expands_into_named_methods():
    d = copy.deepcopy(MINIMAL)
    d["methods"]["cons"] = {"kind": "consensus", "sweep": {"rounds": [0, 2]}}
    d["experiments"][0]["methods"] = ["cons"]
    suite = parse_suite(d)
    assert sorted(suite.methods) == ["cons-rounds0", "cons-rounds2", "grid", "rand", "rule"]
    assert suite.methods["cons-rounds2"].params == {"rounds": 2}
    assert suite.methods["cons-rounds2"].family == "cons"
    assert suite.methods["cons-rounds2"].label == "Dual consensus (ours) (rounds=2)"   # the registry's label
    assert suite.methods["cons-rounds2"].budget == registry.get("consensus").budget
    assert {r.method.name for r in suite.runs()} == {"cons-rounds0", "cons-rounds2"}


def test_start_hours_come_from_the_scenario_seed():
    sc = ScenarioSpec(name="s", start_hour=100, start_jitter=24, seed=5)
    hours = start_hours(sc, 6)
    expected = [100] + [100 + int(np.random.default_rng([5, k]).integers(0, 25)) for k in range(1, 6)]
    assert list(hours) == expected
    assert len(set(hours)) > 1 and all(100 <= h <= 124 for h in hours)
    assert start_hours(dataclasses.replace(sc, seed=6), 6) != hours
    assert start_hours(dataclasses.replace(sc, start_jitter=0), 4) == (100, 100, 100, 100)
    # in a suite: every method and every training seed sees the scenario's hours
    suite = parse_suite(MINIMAL)
    for r in suite.runs():
        assert r.start_hours == start_hours(r.scenario, 3)
    d = copy.deepcopy(MINIMAL)
    d["defaults"]["scenario"]["seed"] = 9
    other = parse_suite(d).runs()[0]
    assert other.start_hours == start_hours(other.scenario, 3) != suite.runs()[0].start_hours


def test_run_spec_round_trip_and_hash():
    spec = parse_suite(MINIMAL).runs()[1]
    back = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.spec_hash() == spec.spec_hash()
    assert dataclasses.replace(spec, rollouts=4).spec_hash() != spec.spec_hash()
    relabelled = dataclasses.replace(spec, scenario=dataclasses.replace(spec.scenario, label="shown", name="other"))
    assert relabelled.spec_hash() == spec.spec_hash()          # name and label do not change the physics
    reseeded = dataclasses.replace(spec, scenario=dataclasses.replace(spec.scenario, seed=1))
    assert reseeded.spec_hash() != spec.spec_hash()


def test_calibrated_scenarios():
    d = copy.deepcopy(MINIMAL)
    d["defaults"]["scenario"]["constraint"] = CALIBRATED
    suite = parse_suite(d)
    (sc,) = suite.scenarios()
    assert sc.calibrated and sc.calibrate == 0.5 and sc.name == "two_clusters_n7_ccal0.5"
    with pytest.raises(ValueError, match="not resolved"):
        sc.env_config(0, 8760)
    unresolved = suite.runs()
    assert {r.scenario.constraint for r in unresolved} == {CALIBRATED}
    resolved = suite.runs({sc.name: 0.195})
    assert {r.scenario.constraint for r in resolved} == {0.195}
    assert [r.run_id for r in resolved] == [r.run_id for r in unresolved]
    assert all(a.spec_hash() != b.spec_hash() for a, b in zip(resolved, unresolved))
    assert resolved[0].scenario.env_config(0, 8760).constraint_fraction == 0.195
    d["defaults"]["scenario"]["calibrate"] = 0.25
    assert parse_suite(d).scenarios()[0].calibrate == 0.25
    assert "calibrate needs constraint='calibrated'" in error_of(bad(defaults__scenario={"calibrate": 0.5}))
    d["defaults"]["scenario"]["calibrate"] = 1.0
    assert "calibrate=1.0 is out of range" in error_of(d)


def test_method_params_come_from_the_registry():
    for kind in registry.kinds():
        mdef = registry.get(kind)
        d = copy.deepcopy(MINIMAL)
        d["methods"] = {"m": {"kind": kind, "params": {"not_a_param": 1}}}
        d["experiments"][0]["methods"] = ["m"]
        msg = error_of(d)
        assert "methods.m.params.not_a_param" in msg and str(sorted(mdef.params) or "none") in msg, kind
    d = copy.deepcopy(MINIMAL)
    d["methods"]["lp"] = {"kind": "lp_oracle", "params": {"backlog_cap": -1}}
    assert "methods.lp.params" in error_of(d) and "backlog_cap=-1" in error_of(d)


@pytest.mark.parametrize("raw, expected", [
    (bad(colour="red"), ["'colour'", "allowed"]),
    (bad(methods__rule__kind="rule_basd"), ["methods.rule.kind", "'rule_basd'", "rule_based", "consensus",
                                            "serve_all"]),
    (bad(methods__rule__params={"alpha": 1}), ["methods.rule.params.alpha", "rule_based"]),
    (bad(methods__rule__budget="huge"), ["methods.rule.budget", "short", "full"]),
    (bad(experiments__0__methods=["rule", "nope"]), ["experiments[0].methods[1]", "'nope'", "grid"]),
    (bad(experiments__0__matrix={"constraint": [0.3, 1.5]}), ["constraint", "1.5", "(0.0, 1.0]"]),
    (bad(experiments__0__matrix={"colour": [1]}), ["experiments[0].matrix.colour", "n_agents"]),
    (bad(defaults__scenario__graph="torus"), ["graph", "'torus'", "two_clusters"]),
    (bad(defaults__scenario__steps=0), ["steps", "[1,"]),
    (bad(defaults__scenario__steps=9000), ["start_hour + start_jitter + steps", "8760"]),
    (bad(defaults__scenario__demand_scales=[2, 1]), ["demand_scales", "n_agents=7"]),
    (bad(defaults__scenario__seed=-1), ["seed=-1", "out of range"]),
    (bad(defaults__scenario__label=3), ["label must be a string"]),
    (bad(defaults__scenario__constraint="binding"), ["constraint='binding'", "finite number"]),
    (bad(defaults__seeds=[0, 0]), ["defaults.seeds", "repeats"]),
    (bad(defaults__rollouts=0), ["defaults.rollouts", "[1, 10000]"]),
    (bad(experiments__0__oracle="yes"), ["experiments[0].oracle", "true or false"]),
    (bad(resources={"gpus": 1}), ["resources.gpus", "num_cpus"]),
    (bad(name=""), ["name"]),
    (bad(format="cmarl-suite/9"), ["format", "cmarl-suite/1"]),
])
def test_bad_suites_name_the_key(raw, expected):
    msg = error_of(raw)
    for part in expected:
        assert part in msg, (part, msg)


def test_marl_params_reserved_and_layout():
    for kind in MARL_KINDS + ("ippo",):
        d = copy.deepcopy(MINIMAL)
        d["methods"][kind] = {"kind": kind, "params": {"total_steps": 100}}
        d["experiments"][0]["methods"] = [kind]
        d["defaults"]["scenario"]["demand_scales"] = [2, 1, 1, 1, 1, 1, 1]
        msg = error_of(d)
        assert "demand_scales" in msg and f"method {kind!r}" in msg, kind
    d = copy.deepcopy(MINIMAL)
    d["methods"]["mappo"] = {"kind": "mappo", "params": {"seed": 3}}
    d["experiments"][0]["methods"] = ["mappo"]
    assert "methods.mappo.params.seed" in error_of(d)


def test_marl_param_list_matches_baseline_config():
    common = pytest.importorskip("baselines.marl.common")
    from benchmarks.methods import marl

    fields = {f.name for f in dataclasses.fields(common.BaselineConfig)}
    for kind in MARL_KINDS:
        params = set(registry.get(kind).params)
        assert params == (fields - set(marl.RESERVED)) | set(marl.EXTRA), kind
        assert registry.get(kind).trains and registry.get(kind).seeded
    assert set(MARL_KINDS) == set(common.BASELINES)


def test_no_consensus_rejects_rounds():
    d = copy.deepcopy(MINIMAL)
    d["methods"]["nc"] = {"kind": "no_consensus", "params": {"rounds": 1}}
    assert "methods.nc.params" in error_of(d) and "rounds=1" in error_of(d)


def test_conflicting_scenario_definitions():
    d = copy.deepcopy(MINIMAL)
    d["experiments"] = [{"name": "a", "scenarios": [{"name": "s", "constraint": 0.3}], "methods": ["rule"]},
                        {"name": "b", "scenarios": [{"name": "s", "constraint": 0.4}], "methods": ["grid"]}]
    assert "scenario 's'" in error_of(d)
    d["experiments"] = [{"name": "a", "scenarios": [{"constraint": 0.3}, {"constraint": 0.3, "steps": 24}],
                         "methods": ["rule"]}]
    assert "give each scenario a 'name'" in error_of(d)
    # the same scenario with another label is still the same scenario
    d["experiments"] = [{"name": "a", "scenarios": [{"name": "s", "label": "x"}], "methods": ["rule"]},
                        {"name": "b", "scenarios": [{"name": "s", "label": "y"}], "methods": ["grid"]}]
    assert len(parse_suite(d).scenarios()) == 1


def test_load_suite_errors(tmp_path):
    with pytest.raises(SuiteError, match="quick"):
        load_suite("no_such_suite")
    p = tmp_path / "broken.json"
    p.write_text('{"name": "x",\n "methods": }')
    with pytest.raises(SuiteError, match=r"not valid JSON: line 2 column"):
        load_suite(p)
    p.write_text(json.dumps(MINIMAL))
    assert load_suite(p).name == "mini"


def test_user_controller_path_is_resolved_against_the_suite_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "suite.json"
    raw = copy.deepcopy(MINIMAL)
    raw["methods"] = {"mine": {"kind": "controller", "params": {"path": "mine.py", "class": "Mine"}}}
    raw["experiments"][0]["methods"] = ["mine"]
    p.write_text(json.dumps(raw))
    suite = load_suite(p)
    assert suite.methods["mine"].params["path"] == str((tmp_path / "sub" / "mine.py").resolve())
    raw["methods"]["mine"]["params"] = {"path": "mine.py"}
    assert "class must name the controller" in error_of(raw)


def test_bench_command_reports_the_bad_key(tmp_path, capsys):
    from benchmarks.cli import main

    p = tmp_path / "bad.json"
    raw = copy.deepcopy(MINIMAL)
    raw["methods"]["rule"]["kind"] = "rulebased"
    p.write_text(json.dumps(raw))
    with pytest.raises(SystemExit) as info:
        main(["bench", str(p), "--dry-run"])
    assert "methods.rule.kind" in str(info.value) and "rule_based" in str(info.value)
    p.write_text(json.dumps(MINIMAL))
    assert main(["bench", str(p), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 0 finished" in out
    for run_id in ("two_clusters_n7_c0.27/rule/seed_0", "two_clusters_n7_c0.27/rand/seed_1"):
        assert f"missing  {run_id}" in out
    assert "rule/seed_1" not in out


def test_spec_hash_follows_the_checkpoint_contents(tmp_path):
    """A retrained policy (same path, new contents) must make finished runs stale, not be silently reused."""
    normal, double = tmp_path / "normal.pt", tmp_path / "double.pt"
    normal.write_bytes(b"policy one")
    double.write_bytes(b"policy two")
    d = copy.deepcopy(MINIMAL)
    d["methods"] = {"ours": {"kind": "consensus", "params": {"policies": {"1.0": str(normal), "2.0": str(double)}}}}
    d["experiments"] = [{"name": "main", "methods": ["ours"]}]
    spec = parse_suite(d).runs()[0]
    before = spec.spec_hash()
    assert [name for name, _ in spec.input_digests()] == ["normal.pt", "double.pt"]
    assert parse_suite(d).runs()[0].spec_hash() == before     # same contents, same hash
    normal.write_bytes(b"policy one, retrained")
    assert spec.spec_hash() != before
    # the shipped policies are inputs of the dual kinds too
    shipped = dataclasses.replace(spec, method=dataclasses.replace(spec.method, params={}))
    assert {name for name, _ in shipped.input_digests()} == {"normal.pt", "double.pt"}
    assert all(digest != "missing" for _, digest in shipped.input_digests())


def test_spec_hash_follows_the_dual_defaults(monkeypatch):
    """Changing Algorithm 1's default step sizes in code must make finished dual runs stale; the methods that
    declare no code defaults keep their hashes."""
    from cmarl_env.domains import get_domain

    d = copy.deepcopy(MINIMAL)
    d["methods"] = {"ours": {"kind": "consensus"}, "rule": {"kind": "rule_based"}}
    d["experiments"] = [{"name": "main", "methods": ["ours", "rule"]}]
    ours, rule = parse_suite(d).runs()[:2]
    assert ours.method.kind == "consensus" and rule.method.kind == "rule_based"
    assert ours.method_defaults()["dual"]["eta"] > 0 and rule.method_defaults() == {}
    before_ours, before_rule = ours.spec_hash(), rule.spec_hash()
    ev = type(get_domain("ev_charging"))
    monkeypatch.setattr(ev, "dual_defaults", dict(ev.dual_defaults) | {"alpha": 0.123})
    assert ours.spec_hash() != before_ours
    assert rule.spec_hash() == before_rule
