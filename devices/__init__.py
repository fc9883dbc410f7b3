"""Serial gauges (RS-232/USB): pure line parsers, a reader per port, and a simulated gauge.

Commissioning: `devices.discover` finds a gauge's settings (its judgements are pure, in
`devices.discovery`), `devices.watch` shows a configured gauge's lines; `devices.silence` decides
when a connected gauge has gone quiet.

The bridge builds one `GaugeReader(device, events)` per configured `DeviceConfig`, runs each
`reader.run()` as a task, and implements `DeviceEvents` to record and publish what they report.
docs/devices.md is the reference.
"""

from devices.config import DeviceConfig, PollConfig
from devices.events import DeviceEvents, DeviceState, DeviceStatus
from devices.formats import parse_line
from devices.framing import Framed, LineFramer
from devices.gauge_sim import GaugeSimulator, run_gauge_sim
from devices.reader import GaugeReader, ReaderCounters
from devices.readings import (
    GaugeError,
    GaugeErrorCode,
    Ignored,
    Measured,
    MeasurementValue,
    ParseResult,
    Reading,
)

__all__ = [
    "DeviceConfig",
    "DeviceEvents",
    "DeviceState",
    "DeviceStatus",
    "Framed",
    "GaugeError",
    "GaugeErrorCode",
    "GaugeReader",
    "GaugeSimulator",
    "Ignored",
    "LineFramer",
    "Measured",
    "MeasurementValue",
    "ParseResult",
    "PollConfig",
    "ReaderCounters",
    "Reading",
    "parse_line",
    "run_gauge_sim",
]
