"""`station-bridge run`: the whole bridge, wired in one place.

stations, tablets ─MQTT─► adapters.MqttLink ─► engine.Lifecycle.handle ─┐   core decides:
serial gauges ─► devices.GaugeReader ─► engine.GaugeEvents ─► Lifecycle.measured   payloads,
                                                         ▼                 batches, limits
         engine.State: batches + outbox (core) ─► adapters.Store (disk), then the MQTT acks
                                                         ▼
         engine.Dispatcher, one lane per WIP (core.retry) ─► mes.MesClient ─► MES
                                                         ▼
         engine.DeliveryReports ─► State ─► result topics and status (MqttLink.publish)

Around it: MesWatch keeps the status's MES state true while idle; BridgeMetrics counts at the
edges (handler, publish, MES client hooks, store, gauges); the HTTP endpoint (`http.listen`)
serves health, metrics and the status page; LiveAdmin takes `outbox retry|drop` and `batch end`
over a Unix socket in data_dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from bridge.adapters.listening import EmbeddedBrokerError, HttpEndpointError, is_loopback
from bridge.adapters.mqtt import MqttLink
from bridge.adapters.notify import Notifier, notify_settings
from bridge.adapters.store import StoreError
from bridge.commands import live_admin
from bridge.commands.live_admin import LiveAdmin
from bridge.config import BridgeConfig, MqttConfig
from bridge.core.topics import Topics
from bridge.engine.gauges import GaugeEvents
from bridge.engine.lifecycle import Lifecycle
from bridge.engine.mes_watch import MesWatch
from bridge.engine.reports import DeliveryReports
from bridge.engine.state import State
from bridge.faults import Faults
from bridge.mes import MesClient
from bridge.version import bridge_version
from bridge.web.metrics import BridgeMetrics, MeteredStore
from bridge.web.overview import DeviceBoard, Overview
from devices import GaugeReader

_log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def _broker(config: MqttConfig) -> AsyncIterator[MqttConfig]:
    """The broker to connect to: the configured one, or an embedded one started here."""
    if not config.embedded:
        yield config
        return
    # Imported only here: amqtt is megabytes of memory that a bridge using Mosquitto never needs.
    from bridge.adapters.broker import EmbeddedBroker

    # Bound to a loopback address (the default) only this box can connect; bound to a LAN
    # address or 0.0.0.0, the stations and tablets on it are meant to.
    remote = not is_loopback(config.host)
    async with EmbeddedBroker(
        host=config.host,
        port=config.port,
        allow_remote=remote,
        users_file=config.embedded_users_file,
    ) as broker:
        _log.info("embedded MQTT broker on %s:%s", broker.host, broker.port)
        yield config.model_copy(update={"port": broker.port})


async def run_bridge(
    config: BridgeConfig,
    *,
    ready: asyncio.Event | None = None,
    faults: Faults | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Run until cancelled (SIGTERM and SIGINT cancel it in `main`). `ready` is set, and
    `notifier` tells systemd, once the broker is first connected. `faults`: seams a test armed;
    by default those of `STATION_BRIDGE_FAULTS` (none, unless a test set it)."""
    _log_setup(config)
    faults = faults or Faults.from_env()
    metrics = BridgeMetrics()
    store = MeteredStore(config.store_dir, metrics=metrics)
    async with _broker(config.mqtt) as mqtt:
        link = MqttLink(
            mqtt,
            client_id=config.client_id,
            bridge_id=config.bridge_id,
            station_ids=[station.id for station in config.stations],
            faults=faults,
        )
        publish = metrics.counting_publish(link.publish)
        state = State(config, store=store, publish=publish, clock=utc_now, faults=faults)
        watch = MesWatch(
            state,
            url=str(config.mes.url),
            username=config.mes.username,
            idle_check_s=config.outbox.idle_check_s,
            clock=utc_now,
        )
        hooks = metrics.mes_hooks()
        hooks["response"].append(watch.on_response)

        async def connected(session_present: bool) -> None:
            # An embedded broker starts empty with the bridge: no session to lose.
            persistent = not config.mqtt.embedded
            await state.broker_connected(session_present=session_present, persistent=persistent)

        async with MesClient(
            config.mes, event_hooks=hooks, faults=faults, send_log=config.mes_send_log
        ) as mes:
            try:
                await state.load()
                metrics.watch_state(state)
                deliveries = DeliveryReports(config, state, mes=mes, clock=utc_now, faults=faults)
                watch.follow(lambda: deliveries.offline)
                lifecycle = Lifecycle(state, deliveries)
                topics = Topics(mqtt.topic_prefix)
                gauges = DeviceBoard(
                    GaugeEvents(lifecycle, topics=topics, publish=publish), metrics=metrics
                )
                overview = Overview(
                    state=state,
                    devices=gauges,
                    broker_connected=link.connected.is_set,
                    broker_error=lambda: link.last_error,
                    store_writable=lambda: not store.last_commit_failed,
                    version=bridge_version(),
                    started_at=utc_now(),
                )
                admin = LiveAdmin(state, mes=mes, wake=deliveries.wake)
                async with (
                    _endpoint(config, overview, metrics),
                    live_admin.serving(admin, live_admin.socket_path(config)),
                    asyncio.TaskGroup() as tasks,
                ):
                    tasks.create_task(
                        link.run(
                            metrics.counting_handler(lifecycle.handle, topics),
                            on_connect=connected,
                        ),
                        name="mqtt",
                    )
                    tasks.create_task(deliveries.dispatcher.run(), name="dispatcher")
                    tasks.create_task(watch.run(mes), name="mes watch")
                    tasks.create_task(metrics.watch_loop_lag(), name="loop lag")
                    for device in config.devices:
                        reader = GaugeReader(device, gauges, clock=utc_now)
                        tasks.create_task(reader.run(), name=f"gauge {device.name}")
                    if notifier is not None:
                        tasks.create_task(notifier.heartbeat(), name="systemd watchdog")
                    await link.connected.wait()
                    if notifier is not None:
                        notifier.ready()
                    if ready is not None:
                        ready.set()
            finally:
                await store.close()


def _log_setup(config: BridgeConfig) -> None:
    """What an operator checks first in the log: which bridge, which broker, which MES."""
    broker = "embedded broker" if config.mqtt.embedded else "MQTT broker"
    _log.info(
        "station-bridge %s (%s): %d station(s) %s, %d gauge(s); %s %s:%s; MES %s; data %s",
        bridge_version(),
        config.bridge_id,
        len(config.stations),
        ", ".join(station.id for station in config.stations) or "-",
        len(config.devices),
        broker,
        config.mqtt.host,
        config.mqtt.port,
        config.mes.url,
        config.data_dir,
    )


@contextlib.asynccontextmanager
async def _endpoint(
    config: BridgeConfig, overview: Overview, metrics: BridgeMetrics
) -> AsyncIterator[None]:
    address = config.http.address
    if address is None:
        yield
        return
    # Imported only here: aiohttp is megabytes of memory that a bridge without it never needs.
    from bridge.web import endpoint

    async with endpoint.serving(
        endpoint.endpoint_app(overview, metrics), host=address[0], port=address[1]
    ):
        yield


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
    cannot start (its data_dir unusable, the embedded broker's or the HTTP endpoint's port taken)
    exits 2."""

    notifier = Notifier(notify_settings(os.environ, pid=os.getpid()))

    async def supervised() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        bridge = asyncio.create_task(run_bridge(config, notifier=notifier), name="bridge")
        signalled = asyncio.create_task(stopping.wait())
        await asyncio.wait({bridge, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        notifier.stopping()
        await stop(bridge)

    try:
        asyncio.run(supervised())
    except (StoreError, EmbeddedBrokerError, HttpEndpointError) as error:
        _log.error("cannot run: %s", error)
        return 2
    _log.info("stopped")
    return 0
