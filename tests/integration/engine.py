"""The bridge's engine without a broker: `Lifecycle.handle` is the MQTT side's seam (what
`MqttLink` hands over), the store is real (a temp directory), and the MES is the simulator over
loopback HTTP. A test can "crash" the engine and build it again over the same disk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.adapters.store import Store
from bridge.app import stop
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, Received, Topics
from bridge.engine.lifecycle import Lifecycle
from bridge.engine.reports import DeliveryReports
from bridge.engine.state import State
from bridge.faults import Faults
from bridge.mes import MesClient


@dataclass
class Published:
    """What the engine published, in order: (topic, payload)."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        self.messages.append((topic, payload))
        self.changed.set()

    def events(self, topic_end: str = "") -> list[str]:
        return [p.get("event", "") for t, p in self.messages if t.endswith(topic_end)]

    async def until(self, condition: Callable[[], bool], *, within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Engine:
    state: State
    lifecycle: Lifecycle
    published: Published
    deliveries: DeliveryReports

    async def idle(self, *, within: float = 15.0) -> None:
        """Until nothing waits for the MES any more (dead letters aside)."""
        await self.published.until(lambda: self.state.outbox.pending_count() == 0, within=within)


class Station:
    """Builds the messages one station sends, with packet ids as a broker would give them."""

    def __init__(self, config: BridgeConfig, station_id: str) -> None:
        self._topics = Topics(config.mqtt.topic_prefix)
        self._station = station_id
        self._mid = 0

    def message(self, kind: Inbound, payload: dict[str, Any]) -> Received:
        self._mid += 1
        body = json.dumps(payload).encode()
        return Received(self._topics.inbound(self._station, kind), body, mid=self._mid)


def again(message: Received) -> Received:
    """The broker's redelivery of a message whose acknowledgement it did not get."""
    return Received(message.topic, message.payload, mid=message.mid, redelivered=True)


@asynccontextmanager
async def engine(
    config: BridgeConfig, *, published: Published | None = None, faults: Faults | None = None
) -> AsyncIterator[Engine]:
    """The engine over `config.data_dir`, delivering to the MES while it runs."""
    published = published if published is not None else Published()
    store = Store(config.store_dir)
    async with MesClient(config.mes) as mes:
        state = State(
            config, store=store, publish=published, clock=lambda: datetime.now(UTC), faults=faults
        )
        await state.load()
        deliveries = DeliveryReports(
            config, state, mes=mes, clock=lambda: datetime.now(UTC), faults=faults
        )
        dispatcher = asyncio.create_task(deliveries.dispatcher.run())
        try:
            yield Engine(state, Lifecycle(state, deliveries), published, deliveries)
        finally:
            await stop(dispatcher)
            await store.close()
