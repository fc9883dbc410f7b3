"""Every MQTT topic the bridge reads or writes is named here, and nowhere else."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Inbound(StrEnum):
    """What a station, PLC or tablet may send; the value is the topic below `station/{sid}/`."""

    START = "batch/start"
    MEASUREMENT = "measurement"
    COMPLETE = "batch/complete"
    ABORT = "batch/abort"
    CONVERT = "wip/convert"


# By topic: a dict lookup costs a tenth of `Inbound(text)`, on every message.
_INBOUND = {kind.value: kind for kind in Inbound}


class ResultKind(StrEnum):
    """The outcome topics below `station/{sid}/result/`."""

    STARTED = "started"
    COMPLETED = "completed"
    SERIAL = "serial"
    ERROR = "error"
    SYNCED = "synced"


@dataclass(frozen=True)
class Received:
    """An inbound MQTT message. `retained` is set when the broker kept it from before (it was
    published with the retain flag): an old command, not a new one. `mid` is the broker's
    packet id of a QoS 1 message, and `redelivered` its DUP flag: the broker sent it before and
    got no acknowledgement, so the bridge may have handled it already."""

    topic: str
    payload: bytes
    retained: bool = False
    mid: int | None = None
    redelivered: bool = False


@dataclass(frozen=True)
class Topics:
    """Topic names under an optional prefix (`plant1/line2` -> `plant1/line2/station/3/...`)."""

    prefix: str = ""

    def _full(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def subscriptions(self, station_ids: Iterable[str]) -> list[str]:
        """What a bridge serving these stations subscribes to: their topics only, so that
        other bridges' stations on the same broker are none of its business."""
        return [self.inbound(sid, kind) for sid in station_ids for kind in Inbound]

    def parse(self, topic: str) -> tuple[str, Inbound] | None:
        """(station id, kind) for an inbound topic, None for anything else."""
        head = f"{self.prefix}/" if self.prefix else ""
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/", 2)
        if len(parts) != 3 or parts[0] != "station" or not parts[1]:
            return None
        kind = _INBOUND.get(parts[2])
        return None if kind is None else (parts[1], kind)

    def inbound(self, station_id: str, kind: Inbound) -> str:
        return self._full(f"station/{station_id}/{kind.value}")

    def result(self, station_id: str, kind: ResultKind) -> str:
        return self._full(f"station/{station_id}/result/{kind.value}")

    def results(self, station_id: str = "+") -> str:
        return self._full(f"station/{station_id}/result/+")

    def status(self, station_id: str) -> str:
        return self._full(f"station/{station_id}/status")

    def live(self, station_id: str) -> str:
        return self._full(f"station/{station_id}/measurement/live")

    def device_status(self, station_id: str, device: str) -> str:
        return self._full(f"station/{station_id}/device/{device}/status")

    def availability(self, bridge_id: str) -> str:
        return self._full(f"bridge/{bridge_id}/availability")

    def bridge_error(self, bridge_id: str) -> str:
        """Where messages from ids that are not configured stations are answered."""
        return self._full(f"bridge/{bridge_id}/error")
