"""A completion is found in the MES's trace by its instant, whatever form the MES writes it in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.mes.instants import parse_instant, same_instant

SENT = datetime(2026, 11, 26, 9, 0, 30, 123456, tzinfo=UTC)
WHOLE = datetime(2026, 11, 26, 9, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sent", "stored", "same"),
    [
        (SENT, "2026-11-26T09:00:30.123456Z", True),  # as sent, echoed
        (SENT, "2026-11-26T09:00:30.123456+00:00", True),  # Python's isoformat of timestamptz
        (SENT, "2026-11-26T09:00:30.123456", True),  # timestamp without time zone, in UTC
        (SENT, "2026-11-26 09:00:30.123456+00", True),  # PostgreSQL's own text form
        (SENT, "2026-11-26T18:00:30.123456+09:00", True),  # the same instant in KST
        (SENT, "2026-11-26T18:00:30.123456+0900", True),
        (SENT, "2026-11-26T04:30:30.123456-04:30", True),
        (SENT, "2026-11-26T09:00:30.123Z", True),  # milliseconds kept: cut
        (SENT, "2026-11-26T09:00:30.12346Z", True),  # rounded to 5 digits
        (SENT, "2026-11-26T09:00:30Z", True),  # whole seconds kept
        (SENT, "2026-11-26T09:00:30.1234560Z", True),  # padded beyond microseconds
        (WHOLE, "2026-11-26T09:00:30Z", True),
        (WHOLE, "2026-11-26T09:00:30.000000+00:00", True),
        (WHOLE, "2026-11-26 09:00:30", True),
        (WHOLE.astimezone(), "2026-11-26T09:00:30Z", True),  # sent from a local-zone datetime
        (SENT, "2026-11-26T09:00:30.123457Z", False),  # one microsecond later: another one
        (SENT, "2026-11-26T09:00:30.124Z", False),
        (SENT, "2026-11-26T09:00:31Z", False),
        (SENT, "2026-11-26T09:00:30.123456+09:00", False),  # the same wall clock, 9 h apart
        (WHOLE, "2026-11-26T09:00:29.999999Z", False),
        (SENT, "yesterday", False),
        (SENT, "", False),
        (SENT, None, False),
    ],
)
def test_same_instant(sent: datetime, stored: str | None, same: bool) -> None:
    assert same_instant(sent, stored) is same


def test_a_precision_is_read_from_the_stored_form() -> None:
    parsed = parse_instant("2026-11-26T09:00:30.12Z")
    assert parsed == (datetime(2026, 11, 26, 9, 0, 30, 120000, tzinfo=UTC), timedelta(seconds=0.01))
    assert parse_instant("2026-13-40T09:00:30Z") is None  # shaped right, no such day
