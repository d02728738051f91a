"""The MARL baselines this package trains (torch-free, so command-line help and the method registry stay light)."""

BASELINES = ("mappo", "maddpg", "masac", "isac")
LABELS = {"mappo": "MAPPO", "maddpg": "MADDPG", "masac": "MASAC", "isac": "ISAC"}
