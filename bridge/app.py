"""`station-bridge run`: the whole bridge, wired in one place.

stations, tablets ─MQTT─► MqttLink ─► Lifecycle.handle ──┐
serial gauges ─► GaugeReader ─► GaugeEvents ─► Lifecycle.measured (and measurement/live)
                                                         ▼
                   State: batches + outbox ─► Store (disk), then the MQTT acks
                                                         ▼
                   Dispatcher, one lane per WIP ─► MesClient ─► MES
                                                         ▼
                   Deliveries ─► State ─► result topics and status (MqttLink.publish)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from devices import GaugeReader

from .broker import EmbeddedBroker, EmbeddedBrokerError, is_loopback
from .config import BridgeConfig, MqttConfig
from .deliveries import Deliveries
from .faults import Faults
from .gauges import GaugeEvents
from .lifecycle import Lifecycle
from .mes import MesClient
from .mqtt import MqttLink
from .state import State
from .store import Store, StoreError
from .topics import Topics

_log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def _broker(config: MqttConfig) -> AsyncIterator[MqttConfig]:
    """The broker to connect to: the configured one, or an embedded one started here."""
    if not config.embedded:
        yield config
        return
    # Bound to a loopback address (the default) only this box can connect; bound to a LAN
    # address or 0.0.0.0, the stations and tablets on it are meant to.
    remote = not is_loopback(config.host)
    async with EmbeddedBroker(host=config.host, port=config.port, allow_remote=remote) as broker:
        _log.info("embedded MQTT broker on %s:%s", broker.host, broker.port)
        yield config.model_copy(update={"port": broker.port})


async def run_bridge(
    config: BridgeConfig, *, ready: asyncio.Event | None = None, faults: Faults | None = None
) -> None:
    """Run until cancelled (SIGTERM and SIGINT cancel it in `main`). `faults`: seams a test
    armed; by default those of `STATION_BRIDGE_FAULTS` (none, unless a test set it)."""
    store = Store(config.store_dir)
    faults = faults or Faults.from_env()
    async with _broker(config.mqtt) as mqtt, MesClient(config.mes) as mes:
        link = MqttLink(mqtt, client_id=config.client_id, bridge_id=config.bridge_id, faults=faults)
        state = State(config, store=store, publish=link.publish, clock=utc_now, faults=faults)

        async def connected(session_present: bool) -> None:
            # An embedded broker starts empty with the bridge: no session to lose.
            persistent = not config.mqtt.embedded
            await state.broker_connected(session_present=session_present, persistent=persistent)

        try:
            await state.load()
            deliveries = Deliveries(config, state, mes=mes, clock=utc_now)
            lifecycle = Lifecycle(state, deliveries)
            gauges = GaugeEvents(lifecycle, topics=Topics(mqtt.topic_prefix), publish=link.publish)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(
                    link.run(lifecycle.handle, on_connect=connected),
                    name="mqtt",
                )
                tasks.create_task(deliveries.dispatcher.run(), name="dispatcher")
                for device in config.devices:
                    reader = GaugeReader(device, gauges, clock=utc_now)
                    tasks.create_task(reader.run(), name=f"gauge {device.name}")
                if ready is not None:
                    await link.connected.wait()
                    ready.set()
        finally:
            await store.close()


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a task and wait for it to end.

    Asked again each second: in Python 3.11 a cancellation that meets a just-finished
    `asyncio.wait_for` (aiomqtt uses it for every call) can be swallowed, and a bridge asked once
    would then run on after SIGTERM.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


def main(config: BridgeConfig) -> int:
    """Run the bridge in this process; SIGTERM or Ctrl-C stop it cleanly (exit 0). A bridge that
    cannot start (its data_dir unusable, the embedded broker's port taken) exits 2."""

    async def supervised() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        bridge = asyncio.create_task(run_bridge(config), name="bridge")
        signalled = asyncio.create_task(stopping.wait())
        await asyncio.wait({bridge, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        await stop(bridge)

    try:
        asyncio.run(supervised())
    except (StoreError, EmbeddedBrokerError) as error:
        _log.error("cannot run: %s", error)
        return 2
    _log.info("stopped")
    return 0
