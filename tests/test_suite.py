"""Suite parsing and validation: shipped suites, start hours, and clear errors that name the bad key."""

import copy
import dataclasses
import json

import pytest

from benchmarks import suite as S
from benchmarks.suite import RunSpec, SuiteError, load_suite, parse_suite, shipped_suites, start_hours

MINIMAL = {
    "name": "mini",
    "defaults": {"scenario": {"steps": 48, "start_jitter": 24}, "seeds": [0, 1], "rollouts": 3},
    "methods": {"rule": {"kind": "rule_based"}, "grid": {"kind": "grid_only"}},
    "experiments": [{"name": "main", "methods": ["rule", "grid"]}],
}


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


def test_shipped_suites_parse():
    names = set(shipped_suites())
    assert {"quick", "paper", "scaling", "ablations"} <= names
    for name in names:
        suite = load_suite(name)
        assert suite.runs(), name


def test_quick_suite_content():
    suite = load_suite("quick")
    kinds = {m.kind for m in suite.methods.values()}
    assert {"consensus", "no_consensus", "rule_based", "grid_only", "lp_oracle", "mappo"} <= kinds
    assert suite.methods["mappo"].budget == "short"
    main = [r for r in suite.runs() if r.scenario.name == "two_clusters_n7_c0.27"]
    assert {r.method.name for r in main} == set(suite.methods)
    assert all(r.rollouts == 10 for r in main)
    assert {r.seed for r in main} == {0, 1, 2}
    levels = {r.scenario.constraint for r in suite.runs() if r.method.kind == "consensus"}
    assert {0.2, 0.27, 0.3, 0.4, 0.5} <= levels


def test_paper_scaling_ablation_content():
    paper = load_suite("paper")
    graphs = {r.scenario.graph for r in paper.runs()}
    assert graphs == {"ring", "line", "two_clusters"}
    assert {r.scenario.constraint for r in paper.runs()} >= {0.2, 0.3, 0.4, 0.5}
    assert {m.kind for m in paper.methods.values()} == set(S.KINDS)
    ring = next(s for s in paper.scenarios() if s.graph == "ring")
    assert ring.demand_scales == (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    scaling = load_suite("scaling")
    ns = sorted({r.scenario.n_agents for r in scaling.runs()})
    assert ns[0] == 10 and ns[-1] == 1_000_000
    abl = load_suite("ablations")
    rounds = {r.method.params.get("rounds") for r in abl.runs() if "rounds" in r.method.params}
    assert rounds == {0, 1, 2, 5}
    assert {p for m in abl.methods.values() for p in m.params} >= {"rounds", "alpha", "eps", "eta"}


def test_minimal_expansion_and_names():
    suite = parse_suite(MINIMAL)
    runs = suite.runs()
    assert len(runs) == 1 * 2 * 2
    assert runs[0].run_id == "two_clusters_n7_c0.27/rule/seed_0"
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
    assert sorted(suite.methods) == ["cons-rounds0", "cons-rounds2", "grid", "rule"]
    assert suite.methods["cons-rounds2"].params == {"rounds": 2}
    assert suite.methods["cons-rounds2"].family == "cons"
    assert {r.method.name for r in suite.runs()} == {"cons-rounds0", "cons-rounds2"}


def test_start_hours_deterministic_and_paired():
    suite = parse_suite(MINIMAL)
    by_seed = {}
    for r in suite.runs():
        by_seed.setdefault(r.seed, set()).add(r.start_hours)
    for seed, hours in by_seed.items():
        assert len(hours) == 1, "every method sees the same start hours for a seed"
        (h,) = hours
        assert h[0] == 0 and len(h) == 3 and all(0 <= x <= 24 for x in h)
    assert by_seed[0] != by_seed[1]
    sc = suite.runs()[0].scenario
    assert start_hours(sc, 5, 4) == start_hours(sc, 5, 4)


def test_run_spec_round_trip():
    spec = parse_suite(MINIMAL).runs()[1]
    back = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.spec_hash() == spec.spec_hash()
    other = dataclasses.replace(spec, rollouts=4)
    assert other.spec_hash() != spec.spec_hash()


@pytest.mark.parametrize("raw, expected", [
    (bad(colour="red"), ["'colour'", "allowed"]),
    (bad(methods__rule__kind="rule_basd"), ["methods.rule.kind", "'rule_basd'", "rule_based", "consensus"]),
    (bad(methods__rule__params={"alpha": 1}), ["methods.rule.params.alpha", "rule_based"]),
    (bad(methods__rule__budget="huge"), ["methods.rule.budget", "short", "full"]),
    (bad(experiments__0__methods=["rule", "nope"]), ["experiments[0].methods[1]", "'nope'", "grid"]),
    (bad(experiments__0__matrix={"constraint": [0.3, 1.5]}), ["constraint", "1.5", "(0.0, 1.0]"]),
    (bad(experiments__0__matrix={"colour": [1]}), ["experiments[0].matrix.colour", "n_agents"]),
    (bad(defaults__scenario__graph="torus"), ["graph", "'torus'", "two_clusters"]),
    (bad(defaults__scenario__steps=0), ["steps", "[1,"]),
    (bad(defaults__scenario__steps=9000), ["start_hour + start_jitter + steps", "8760"]),
    (bad(defaults__scenario__demand_scales=[2, 1]), ["demand_scales", "n_agents=7"]),
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
    d = copy.deepcopy(MINIMAL)
    d["methods"]["mappo"] = {"kind": "mappo", "params": {"seed": 3}}
    d["experiments"][0]["methods"] = ["mappo"]
    assert "methods.mappo.params.seed" in error_of(d)
    d["methods"]["mappo"] = {"kind": "mappo", "params": {"total_steps": 100}}
    d["defaults"]["scenario"]["demand_scales"] = [2, 1, 1, 1, 1, 1, 1]
    msg = error_of(d)
    assert "demand_scales" in msg and "mappo" in msg


def test_no_consensus_rejects_rounds():
    d = copy.deepcopy(MINIMAL)
    d["methods"]["nc"] = {"kind": "no_consensus", "params": {"rounds": 1}}
    assert "methods.nc.params.rounds" in error_of(d)


def test_conflicting_scenario_definitions():
    d = copy.deepcopy(MINIMAL)
    d["experiments"] = [{"name": "a", "scenarios": [{"name": "s", "constraint": 0.3}], "methods": ["rule"]},
                        {"name": "b", "scenarios": [{"name": "s", "constraint": 0.4}], "methods": ["grid"]}]
    assert "scenario 's'" in error_of(d)
    d["experiments"] = [{"name": "a", "scenarios": [{"constraint": 0.3}, {"constraint": 0.3, "steps": 24}],
                         "methods": ["rule"]}]
    assert "give each scenario a 'name'" in error_of(d)


def test_load_suite_errors(tmp_path):
    with pytest.raises(SuiteError, match="quick"):
        load_suite("no_such_suite")
    p = tmp_path / "broken.json"
    p.write_text('{"name": "x",\n "methods": }')
    with pytest.raises(SuiteError, match=r"not valid JSON: line 2 column"):
        load_suite(p)
    p.write_text(json.dumps(MINIMAL))
    assert load_suite(p).name == "mini"


def test_marl_param_list_matches_baseline_config():
    common = pytest.importorskip("baselines.marl.common")
    fields = {f.name for f in dataclasses.fields(common.BaselineConfig)}
    assert set(S.MARL_PARAMS) | set(S.MARL_RESERVED) == fields
    assert set(S.MARL_KINDS) == set(common.BASELINES)


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
    assert "4 runs, 0 finished" in out and "missing  two_clusters_n7_c0.27/rule/seed_0" in out
