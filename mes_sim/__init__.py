"""A simulator of the F2X NeuroHub MES, as deployed (quirks included) or as specified.

    with MesSimulator(wips=5) as sim:
        httpx.post(f"{sim.url}/api/v1/auth/login/json", json={...})
        sim.set_faults(mode="drop_response")
        sim.ledger()

`serve()` runs one from the command line; `station-bridge mes-sim` calls it.
"""

from .model import DEFAULT_LOT, STATION_API_KEY, Semantics
from .server import MesSimulator, serve

__all__ = ["DEFAULT_LOT", "STATION_API_KEY", "MesSimulator", "Semantics", "serve"]
