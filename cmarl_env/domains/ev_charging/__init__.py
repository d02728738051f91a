"""EV charging sites under a shared transformer limit (docs/ev_charging.md).

Data (``data``, ``derive_data``) -> sessions (``sessions``) -> vectorized core
(``core``) -> PettingZoo adapter (``parallel_env``; ``cmarl_env.ev_charging_v0``)
-> controllers (``references``) -> roll-out and verdict (``rollout``).
"""

from cmarl_env.domains.ev_charging.config import EVConfig
from cmarl_env.domains.ev_charging.core import EVChargingCore

__all__ = ["EVChargingCore", "EVConfig"]
