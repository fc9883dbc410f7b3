"""The engine: the bridge's state over time. `State` holds batches and the outbox and changes them
only in transactions (disk first); `Lifecycle` applies what stations send, `Dispatcher` delivers
the outbox in one lane per WIP, `DeliveryReports` applies what each delivery report changes,
`GaugeEvents` feeds serial gauges in, `MesWatch` keeps the MES's state true while idle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge._exports import find

if TYPE_CHECKING:
    from bridge.engine.dispatcher import Dispatcher
    from bridge.engine.gauges import GaugeEvents
    from bridge.engine.lifecycle import Lifecycle
    from bridge.engine.mes_watch import MesWatch
    from bridge.engine.reports import DeliveryReports
    from bridge.engine.state import Publish, State, batch_ids

__all__ = [
    "DeliveryReports",
    "Dispatcher",
    "GaugeEvents",
    "Lifecycle",
    "MesWatch",
    "Publish",
    "State",
    "batch_ids",
]


def __getattr__(name: str) -> object:
    return find(__name__, __all__, name)
