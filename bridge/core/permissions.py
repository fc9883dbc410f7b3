"""What a station may do, and how the bridge answers ids that are not stations (pure: no clock
of its own, no I/O).

A station acts only for itself: its batches are found by its own id (`station.select_batch`), it
starts only the processes it runs (`station.open_batch`), and it converts a WIP only when it is
the station that finishes WIPs (`may_convert`). Messages on the topics of an id that is not in the
config are answered on one bridge-level topic, at a bounded rate (`UnknownStations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bridge.config import StationConfig
from bridge.core.problems import Problem, ProblemCode

SHOWN_ID_CHARS = 64  # an unknown id is echoed at most this long: it may be 5,000 characters


def may_convert(station: StationConfig, stations: Sequence[StationConfig]) -> Problem | None:
    """`wip/convert` is taken from a station with `converts: true`, or, when `converts` is not
    set, from one that auto-converts or runs the line's last process (the highest process number
    any station lists; a station without `processes` runs every process)."""
    if station.converts is not None:
        allowed = station.converts
    else:
        listed = [number for other in stations for number in other.processes or []]
        last = max(listed, default=None)
        runs_last = station.processes is None or (last is not None and last in station.processes)
        allowed = station.auto_convert or runs_last
    if allowed:
        return None
    return Problem(
        ProblemCode.CONVERT_NOT_ALLOWED,
        f"station {station.id} does not finish WIPs: convert at the station of the last process",
    )


def shown_id(station_id: str) -> str:
    """An id as it may be echoed in an answer: cut to a length a screen can show."""
    if len(station_id) <= SHOWN_ID_CHARS:
        return station_id
    return station_id[:SHOWN_ID_CHARS] + "…"


@dataclass(frozen=True)
class UnknownReply:
    answer: bool  # publish UNKNOWN_STATION on the bridge's error topic
    log: bool  # first time this id is seen: log it


@dataclass
class UnknownStations:
    """Answers to messages from unconfigured ids: at most `burst` at once, refilled at `per_s`
    a second (a token bucket), so that a flood of invented ids cannot make the bridge flood the
    broker; each id is logged the first time only, for the first `remembered` ids."""

    burst: int = 10
    per_s: float = 1.0
    remembered: int = 1000
    _tokens: float = field(init=False)
    _at: datetime | None = field(default=None, init=False)
    _seen: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)

    def note(self, station_id: str, *, now: datetime) -> UnknownReply:
        if self._at is None or now > self._at:  # a clock stepping back refills nothing
            if self._at is not None:
                elapsed = (now - self._at).total_seconds()
                self._tokens = min(float(self.burst), self._tokens + elapsed * self.per_s)
            self._at = now
        answer = self._tokens >= 1.0
        if answer:
            self._tokens -= 1.0
        log = station_id not in self._seen and len(self._seen) < self.remembered
        if log:
            self._seen.add(station_id)
        return UnknownReply(answer=answer, log=log)
