"""EV charging sites under a shared transformer limit (docs/ev_charging.md).

Data (``data``, ``derive_data``) -> sessions (``sessions``) -> vectorized core
(``core``) -> PettingZoo adapter (``parallel_env``; ``cmarl_env.ev_charging_v0``)
-> controllers (``references``) -> record and verdict (``evaluation``), through the generic
``cmarl_env.evaluation.rollout``; the adapter to the domain seam is ``domain``.
"""

from cmarl_env.domains.ev_charging.config import EVConfig
from cmarl_env.domains.ev_charging.core import EVChargingCore

__all__ = ["EVChargingCore", "EVConfig"]
