"""The shipped methods, one module each family, each kind registered once in ``benchmarks.registry``.

* ``dual``: the paper's method (dual consensus, no consensus);
* ``references``: serve-all, grid-only, random, the share rule, the tuned price rule, the clairvoyant LPs;
* ``marl``: MAPPO, MADDPG, MASAC, ISAC with fixed penalties (Tianshou);
* ``ippo``: independent PPO per agent type with fixed penalties (the grid search's learner);
* ``custom``: a user's own controller class from a Python file named in the suite.
"""

from benchmarks.methods import custom, dual, ippo, marl, references  # noqa: F401  (each module registers its kinds)
