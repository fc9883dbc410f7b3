"""The interface between a gauge reader and the bridge: `DeviceEvents` and `DeviceStatus`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from devices.config import DeviceConfig
from devices.readings import GaugeError, Reading

DeviceState = Literal["connected", "stale", "disconnected", "error"]


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, milliseconds: `2026-11-26T09:00:00.123Z`."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every timestamp must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DeviceStatus:
    """A device's state, published retained on `station/{sid}/device/{name}/status`.

    - connected: the port is open, and the gauge answers (or is not watched for silence).
    - stale: the port is open but the gauge went quiet: `poll.stale_after` polls unanswered, or
      a streaming gauge silent for longer than `max_silence_s`.
    - disconnected: the port is gone or closed (unplugged, not yet plugged in); the reader retries.
    - error: the port exists but cannot be used (permission, in use by another program, bad
      settings) or the reader hit an unexpected failure; the reader retries. Also a gauge quiet
      for `poll.error_after` polls or `silence_error_s`: the port stays open and the status goes
      back to connected with the next line.

    `last_reading_at` is the time of the last accepted reading, as of this change of state;
    `since` is when the state began.
    """

    state: DeviceState
    last_reading_at: datetime | None = None
    detail: str = ""
    since: datetime | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "state": self.state,
            "last_reading_at": iso_utc(self.last_reading_at) if self.last_reading_at else None,
            "detail": self.detail,
            "since": iso_utc(self.since) if self.since else None,
        }


class DeviceEvents(Protocol):
    """What a `GaugeReader` tells the bridge. Implementations should not raise: an exception is
    logged and that one event is lost, the reader carries on."""

    async def reading(self, device: DeviceConfig, reading: Reading, at: datetime) -> None:
        """An accepted reading (after the unstable filter, the unit check and the scale)."""

    async def gauge_error(self, device: DeviceConfig, error: GaugeError, at: datetime) -> None:
        """Overload, underload, device error or busy, unit mismatch. Not garbage lines, and a
        repeat of the same error is reported again only after a value came in between."""

    async def status(self, device: DeviceConfig, status: DeviceStatus) -> None:
        """On every change of state (or of its detail)."""
