"""Shared fixtures: the real default CityLearn dataset, loaded once per run."""

import pytest

from cmarl_env.data import load_dataset


@pytest.fixture(scope="session")
def dataset():
    return load_dataset()
