"""bridge.core.permissions: what a station may do, and the answers to ids that are not stations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.config import StationConfig
from bridge.core.permissions import UnknownReply, UnknownStations, may_convert, shown_id
from bridge.core.problems import ProblemCode

LINE = [
    StationConfig(id="ST01", processes=[1, 2]),
    StationConfig(id="ST02", processes=[3, 4, 5]),
    StationConfig(id="ST03", processes=[6]),
    StationConfig(id="ST04", processes=[1], auto_convert=True),
    StationConfig(id="ST05", processes=[2], converts=True),
    StationConfig(id="ST06", processes=[6], converts=False),
    StationConfig(id="ANY"),
]


@pytest.mark.parametrize(
    ("station_id", "allowed"),
    [
        ("ST01", False),
        ("ST02", False),
        ("ST03", True),  # runs the last process
        ("ST04", True),  # auto-converts
        ("ST05", True),  # told so
        ("ST06", False),  # told not to, though it runs the last process
        ("ANY", True),  # runs every process, the last included
    ],
)
def test_may_convert(station_id: str, allowed: bool) -> None:
    station = next(s for s in LINE if s.id == station_id)
    problem = may_convert(station, LINE)
    if allowed:
        assert problem is None
    else:
        assert problem is not None and problem.code is ProblemCode.CONVERT_NOT_ALLOWED
        assert station_id in problem.detail


def test_without_process_lists_every_station_may_convert() -> None:
    line = [StationConfig(id="a"), StationConfig(id="b")]
    assert all(may_convert(station, line) is None for station in line)


@pytest.mark.parametrize(
    ("station_id", "shown"),
    [("ST99", "ST99"), ("x" * 64, "x" * 64), ("y" * 5000, "y" * 64 + "…")],
)
def test_shown_id(station_id: str, shown: str) -> None:
    assert shown_id(station_id) == shown


T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("notes", "expected"),
    [
        # a burst of 3 is answered, then one a second
        (
            [("a", 0), ("b", 0), ("c", 0), ("d", 0), ("e", 0.5), ("f", 1.0), ("g", 1.0)],
            [*[(True, True)] * 3, (False, True), (False, True), (True, True), (False, True)],
        ),
        # the same id is logged the first time only, answered while the rate allows
        (
            [("a", 0), ("a", 0), ("a", 0), ("a", 0), ("a", 10)],
            [(True, True), (True, False), (True, False), (False, False), (True, False)],
        ),
        # a quiet while refills the burst, not more
        (
            [("a", 0), ("b", 0), ("c", 0), ("d", 100), ("e", 100), ("f", 100), ("g", 100)],
            [(True, True)] * 6 + [(False, True)],
        ),
        # a clock that steps back takes nothing and gives nothing
        (
            [("a", 10), ("b", 10), ("c", 10), ("d", 5), ("e", 11)],
            [(True, True), (True, True), (True, True), (False, True), (True, True)],
        ),
    ],
    ids=["burst-then-rate", "logged-once", "refill-capped", "clock-back"],
)
def test_unknown_stations_answers(
    notes: list[tuple[str, float]], expected: list[tuple[bool, bool]]
) -> None:
    unknown = UnknownStations(burst=3, per_s=1.0)
    got = [unknown.note(sid, now=at(s)) for sid, s in notes]
    assert got == [UnknownReply(answer=a, log=log) for a, log in expected]


def test_unknown_ids_remembered_are_bounded() -> None:
    unknown = UnknownStations(burst=1, per_s=0.0, remembered=2)
    logged = [unknown.note(f"id{n}", now=T0).log for n in range(5)]
    assert logged == [True, True, False, False, False]
    assert unknown.note("id0", now=T0).log is False
