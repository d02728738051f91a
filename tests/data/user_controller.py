"""A user's own controller, as the README shows it: battery first, then a fixed fraction of the rest from the grid."""

import numpy as np

from cmarl_env.evaluation import Controller


class HalfGrid(Controller):
    name = "half_grid"

    def __init__(self, fraction: float = 0.5):
        self.fraction = fraction

    def act(self, obs):
        actions = np.ones((obs.shape[0], 2))
        actions[:, 1] = self.fraction
        return actions
