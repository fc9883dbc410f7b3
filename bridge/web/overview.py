"""The bridge at a glance, for `/readyz` and the status page: one JSON-ready snapshot built from the
running parts (the state, the MQTT link, the gauges) when asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.core.domain import MesState, format_utc
from bridge.core.outbox import Entry
from bridge.engine.state import State
from bridge.web.metrics import BridgeMetrics
from devices import DeviceConfig, DeviceEvents, DeviceStatus, GaugeError, Reading

LISTED = 50  # requests listed of each kind (pending, dead); the counts are always complete


class DeviceBoard:
    """Passes a gauge's events on to the bridge, keeping each device's latest state for the page
    and counting readings, errors and reconnects."""

    def __init__(self, inner: DeviceEvents, *, metrics: BridgeMetrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.statuses: dict[tuple[str, str], DeviceStatus] = {}
        self.last_readings: dict[tuple[str, str], datetime] = {}
        self._connected_before: set[tuple[str, str]] = set()

    async def reading(self, device: DeviceConfig, reading: Reading, at: datetime) -> None:
        self._metrics.gauge_readings.labels(device=device.name).inc()
        self.last_readings[(device.station, device.name)] = at
        await self._inner.reading(device, reading, at)

    async def gauge_error(self, device: DeviceConfig, error: GaugeError, at: datetime) -> None:
        self._metrics.gauge_errors.labels(device=device.name).inc()
        await self._inner.gauge_error(device, error, at)

    async def status(self, device: DeviceConfig, status: DeviceStatus) -> None:
        key = (device.station, device.name)
        before = self.statuses.get(key)
        if status.state == "connected" and (before is None or before.state != "connected"):
            if key in self._connected_before:  # not the first connection: a reconnect
                self._metrics.gauge_reconnects.labels(device=device.name).inc()
            self._connected_before.add(key)
        self.statuses[key] = status
        await self._inner.status(device, status)


@dataclass(frozen=True)
class Overview:
    state: State
    devices: DeviceBoard
    broker_connected: Callable[[], bool]
    broker_error: Callable[[], str | None]
    store_writable: Callable[[], bool]
    version: str
    started_at: datetime

    def ready(self) -> bool:
        """Ready to take the stations' work: connected to the broker, and the last disk commit
        went through. The MES may be away (that is what the outbox is for); its state is in
        the snapshot."""
        return self.broker_connected() and self.store_writable()

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        config = state.config
        # Only the oldest are listed, and only they are parsed: thousands may wait.
        pending, dead = state.outbox.pending(LISTED), state.outbox.dead(LISTED)
        stations = [station.id for station in config.stations]
        stations += sorted(
            {b.station_id for b in state.batches.values()} - set(stations)
        )  # removed from the config, with a batch left
        return {
            "bridge_id": config.bridge_id,
            "version": self.version,
            "started_at": format_utc(self.started_at),
            "at": format_utc(state.clock()),
            "ready": self.ready(),
            "store_writable": self.store_writable(),
            "broker": {
                "host": config.mqtt.host,
                "port": config.mqtt.port,
                "embedded": config.mqtt.embedded,
                "connected": self.broker_connected(),
                "last_error": self.broker_error(),
            },
            "mes": {
                "url": str(config.mes.url),
                "state": str(state.mes_state),
                "confirmed_at": _time(state.mes_confirmed_at),
                "reachable": state.mes_state is MesState.ONLINE,
            },
            "stations": [self._station(station_id) for station_id in stations],
            "outbox": {
                "pending_count": state.outbox.pending_count(),
                "dead_count": state.outbox.dead_count(),
                # the oldest ones: after an outage thousands may wait, and a page is not a log
                "pending": [_entry(entry) for entry in pending],
                "dead": [_entry(entry) for entry in dead],
            },
            "devices": [
                {
                    "station_id": station,
                    "device": name,
                    **status.to_json(),
                    # the status's own is as of its last change of state
                    "last_reading_at": _time(self.devices.last_readings.get((station, name))),
                }
                for (station, name), status in sorted(self.devices.statuses.items())
            ],
        }

    def _station(self, station_id: str) -> dict[str, Any]:
        state = self.state
        return {
            "station_id": station_id,
            "configured": state.config.station(station_id) is not None,
            "active_batches": [
                batch.summary()
                for batch in state.batches.values()
                if batch.station_id == station_id
            ],
            "pending": state.outbox.pending_count(station_id),
            "dead": state.outbox.dead_count(station_id),
        }


def _entry(entry: Entry) -> dict[str, Any]:
    reason = entry.dead_reason if entry.dead else entry.last_error
    return {
        "seq": entry.seq,
        "what": entry.describe(),
        "station_id": entry.station_id,
        "attempts": entry.attempts,
        "enqueued_at": format_utc(entry.enqueued_at),
        "reason": reason,
    }


def _time(at: datetime | None) -> str | None:
    return format_utc(at) if at is not None else None
