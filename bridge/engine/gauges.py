"""Serial gauges into batches: what a `devices.GaugeReader` reports, the bridge records and shows.

- An accepted reading goes into the station's active batch exactly as if it had arrived on
  `station/{sid}/measurement`, and is published on `station/{sid}/measurement/live` either way
  (with no active batch it is shown but not recorded).
- An overload or a gauge error is a `result/error` outcome for the station's tablet.
- The device's state is retained on `station/{sid}/device/{name}/status`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.core.limits import Measured
from bridge.core.topics import Topics
from bridge.engine.lifecycle import Lifecycle
from bridge.engine.state import Publish
from devices import DeviceConfig, DeviceStatus, GaugeError, Reading
from devices.events import iso_utc


class GaugeEvents:
    """The bridge's side of `devices.DeviceEvents`."""

    def __init__(self, lifecycle: Lifecycle, *, topics: Topics, publish: Publish) -> None:
        self._lifecycle = lifecycle
        self._topics = topics
        self._publish = publish

    async def reading(self, device: DeviceConfig, reading: Reading, at: datetime) -> None:
        values = {
            name: Measured(value=got.value, unit=got.unit) for name, got in reading.values.items()
        }
        batch = await self._lifecycle.measured(device.station, values)
        live: dict[str, Any] = {
            "station_id": device.station,
            "device": device.name,
            "measurements": reading.measurements(),
            "stable": reading.stable,
            "recorded": batch is not None,
            "at": iso_utc(at),
        }
        if batch is not None:
            live.update(batch_id=batch.batch_id, wip_id=batch.wip_id, process_id=batch.process)
        self._publish(self._topics.live(device.station), live)

    async def gauge_error(self, device: DeviceConfig, error: GaugeError, at: datetime) -> None:
        self._lifecycle.gauge_problem(device.station, error.to_json(), device=device.name)

    async def status(self, device: DeviceConfig, status: DeviceStatus) -> None:
        body = {"station_id": device.station, "device": device.name, **status.to_json()}
        topic = self._topics.device_status(device.station, device.name)
        self._publish(topic, body, retain=True)
