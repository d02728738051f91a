"""Shared fixtures: the real default CityLearn dataset (embedded in the package), loaded once per run."""

import importlib.util

import pytest

from cmarl_env.data import load_dataset

# test_battery.py imports CityLearn at module level: without the [citylearn] extra it is not collected
# (it runs in the CityLearn job of `make test`, see the Makefile).
collect_ignore = [] if importlib.util.find_spec("citylearn") is not None else ["test_battery.py"]


def pytest_report_header(config):
    import gymnasium
    import numpy
    import pettingzoo

    lines = [f"stack: gymnasium {gymnasium.__version__}, pettingzoo {pettingzoo.__version__}, numpy {numpy.__version__}"]
    if collect_ignore:
        lines.append("citylearn not installed: tests/test_battery.py runs in the CityLearn job (make test-citylearn)")
    return lines


@pytest.fixture(scope="session")
def dataset():
    return load_dataset()
