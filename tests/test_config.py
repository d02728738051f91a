"""Every invalid config value raises, naming the field and the allowed range."""

import pytest

from cmarl_env import EnvConfig
from cmarl_env.config import paper_demand_scales


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n_agents", 0, r"n_agents=0 is out of range; allowed: \[1,"),
        ("n_agents", 2.5, "n_agents=2.5 must be an integer"),
        ("constraint_fraction", 0.0, r"constraint_fraction=0.0 is out of range; allowed: \(0.0, 1.0\]"),
        ("constraint_fraction", float("nan"), "constraint_fraction=nan"),
        ("episode_length", -1, "episode_length=-1 is out of range"),
        ("split", "valid", r"split='valid' is not allowed; choose one of \('train', 'test', 'all'\)"),
        ("reward", "money", "reward='money' is not allowed"),
        ("multiplier_mode", "random", "multiplier_mode='random' is not allowed"),
        ("render_mode", "video", "render_mode='video' is not allowed"),
        ("lambda_range", (5.0, 1.0), "lambda_range=.* low < high"),
        ("lambda_range", (-1.0, 1.0), "lambda_range=.* low must be >= 0"),
        ("window", (10, 5), "window=.* first_hour < end_hour"),
        ("demand_scales", (1.0, 2.0), "demand_scales has 2 entries but n_agents=7"),
        ("demand_scales", -1.0, r"demand_scales=-1.0 is out of range"),
        ("initial_soc", 1.5, r"initial_soc=1.5 is out of range; allowed: \[0.0, 1.0\]"),
        ("augment", "yes", "augment='yes' must be a bool"),
    ],
)
def test_invalid_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        EnvConfig(**{field: value})


def test_sampled_multipliers_need_augmentation():
    with pytest.raises(ValueError, match="needs augment=True"):
        EnvConfig(multiplier_mode="sampled")


def test_unknown_field():
    with pytest.raises(ValueError, match=r"unknown EnvConfig field\(s\) \['colour'\]"):
        EnvConfig().replace(colour="red")
    with pytest.raises(ValueError, match="unknown EnvConfig field"):
        EnvConfig.from_dict({"agents": 3})


def test_round_trip():
    cfg = EnvConfig(n_agents=9, lambda_range=(0.0, 10.0), augment=True)
    assert EnvConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_scales():
    assert paper_demand_scales(7) == (2.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0)
    assert paper_demand_scales(1) == (1.0,)
