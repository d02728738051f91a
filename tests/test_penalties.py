"""The baselines' fixed penalties come from this repository's own IPPO grid search (baselines.penalties)."""

import json

import pytest

from baselines.grid_search import GridSearchConfig, run_grid_search
from baselines.penalties import SELECTED_FILE, load_selected, selected_pair, write_selected

SMALL = dict(method="augmented", lambda_min=0.0, lambda_max=10.0, lambda_step=10.0, nu_min=-10.0, nu_max=0.0,
             nu_step=10.0, eval_steps=96, constraint=0.4, rollouts=1)


def test_shipped_selection_is_readable_and_names_its_levels():
    data = load_selected()
    assert data["grid_config"]["method"] == "ippo" and data["grid_config"]["sharing"] == "per_agent"
    for key, entry in data["levels"].items():
        if entry is not None:
            assert selected_pair(float(key)) == (entry["lambda"], entry["nu"])
    with pytest.raises(ValueError, match=r"no selected penalty pair for c = 0.333; the grid search selected pairs"):
        selected_pair(0.333)


def test_write_selected_refuses_other_searches_and_copies_the_ippo_one(tmp_path):
    out = tmp_path / "grid"
    run_grid_search(GridSearchConfig(**SMALL), out, max_concurrent=2, progress=False)
    with pytest.raises(ValueError, match="holds a 'augmented' grid search"):
        write_selected(out, tmp_path / "sel.json")
    # the same files, relabelled as an IPPO search, are copied with their settings
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps(summary | {"method": "ippo"}))
    data = write_selected(out, tmp_path / "sel.json")
    assert data["levels"] == summary["selected"] and data["grid_config"]["constraint"] == 0.4
    sel = summary["selected"]["0.4"]
    if sel is not None:
        assert selected_pair(0.4, tmp_path / "sel.json") == (sel["lambda"], sel["nu"])
    (out / "summary.json").write_text(json.dumps(summary | {"method": "ippo", "finished": 3}))
    with pytest.raises(ValueError, match="only 3 of 4 points finished"):
        write_selected(out, tmp_path / "sel2.json")
    assert SELECTED_FILE.name == "selected_penalties.json"


def test_the_recorded_command_reproduces_the_recorded_search_settings():
    """Rerunning the shipped file's command must run the search it came from (same GridSearchConfig)."""
    import argparse
    import shlex

    from baselines import grid_search_cli

    data = load_selected()
    parser = argparse.ArgumentParser()
    grid_search_cli.configure(parser)
    argv = shlex.split(data["command"])
    assert argv[:2] == ["cmarl", "grid-search"]
    args = parser.parse_args(argv[2:])
    config = grid_search_cli.config_from_args(args)
    recorded = dict(data["grid_config"])
    recorded["extra_constraints"] = tuple(recorded["extra_constraints"])
    recorded["train_seeds"] = tuple(recorded["train_seeds"])
    recorded["fail_points"] = tuple(recorded["fail_points"])
    recorded["grid_values"] = tuple(recorded.get("grid_values", ()))
    assert GridSearchConfig(**recorded) == config


def test_a_level_without_a_feasible_pair_keeps_the_main_levels_pair_and_says_so():
    from baselines.penalties import with_main_level_fallback

    main = {"lambda": 6.0, "nu": -6.3, "total_cost": 4100.0, "grid_use_ratio": 0.76}
    levels = with_main_level_fallback({"0.27": main, "0.2": None}, 0.27)
    assert levels["0.27"] == main
    assert levels["0.2"]["lambda"] == 6.0 and levels["0.2"]["selected_at"] == 0.27
    assert "no pair that is not degenerate is feasible in every roll-out at c = 0.2" in levels["0.2"]["note"]
    assert with_main_level_fallback({"0.27": None, "0.2": None}, 0.27) == {"0.27": None, "0.2": None}
