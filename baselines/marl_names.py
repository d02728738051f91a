"""The MARL baselines this package trains (torch-free, so command-line help and the method registry stay light).

``BASELINES`` are the fixed-penalty learners (trained on ``r0 + lambda (c/N - e_grid) + nu r2`` with a fixed
pair); ``LAGRANGIAN_BASELINES`` learn their multipliers during training by dual ascent (MAPPO-Lagrangian and the
networked primal-dual method); ``ALL_BASELINES`` is every name ``cmarl train-baseline`` and the registry know.
"""

BASELINES = ("mappo", "maddpg", "masac", "isac")
LAGRANGIAN_BASELINES = ("mappo_lagrangian", "networked_pd")
ALL_BASELINES = BASELINES + LAGRANGIAN_BASELINES
LABELS = {"mappo": "MAPPO", "maddpg": "MADDPG", "masac": "MASAC", "isac": "ISAC",
          "mappo_lagrangian": "MAPPO-L", "networked_pd": "Networked PD"}
