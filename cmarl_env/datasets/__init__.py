"""The embedded default dataset: CityLearn's ``citylearn_challenge_2022_phase_all`` as arrays.

Data files only (see ``README.md`` here for what they are and how they were
derived); ``cmarl_env.data.load_dataset()`` reads them. ``python -m
cmarl_env.datasets`` re-derives them from the ``citylearn==2.1.2`` wheel.
"""
