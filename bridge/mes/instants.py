"""Whether a timestamp the MES echoes back is the instant the bridge sent (pure).

The bridge sends `completed_at` as ISO 8601 UTC with a `Z` and microseconds at most. The MES
stores it in PostgreSQL and writes it back in whatever form its serializer picks: `Z` or
`+00:00`, another offset (`+09:00`), no zone at all (a `timestamp without time zone` column,
which this MES fills with UTC), a space instead of the `T`, fewer fractional digits. Two forms
name the same instant when they agree to the precision the stored form keeps.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_FORM = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:[.,](?P<fraction>\d+))?\s*(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_instant(text: str) -> tuple[datetime, timedelta] | None:
    """The instant a stored timestamp names (naive read as UTC) and the precision it keeps;
    None for text that is not a timestamp."""
    found = _FORM.match(text.strip())
    if found is None:
        return None
    fraction = found["fraction"] or ""
    digits = min(len(fraction), 6)  # PostgreSQL keeps microseconds; more digits are noise
    zone = found["zone"] or "+00:00"
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif len(zone) == 3:  # "+09", as PostgreSQL writes whole-hour offsets
        zone += ":00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    micros = fraction[:digits].ljust(6, "0")
    clock = found["time"] if found["time"].count(":") == 2 else f"{found['time']}:00"
    try:
        moment = datetime.fromisoformat(f"{found['date']}T{clock}.{micros}{zone}")
    except ValueError:
        return None
    return moment.astimezone(UTC), timedelta(microseconds=10 ** (6 - digits))


def same_instant(sent: datetime, stored: str | None) -> bool:
    """Whether `stored`, as the MES wrote it, is `sent` as far as it can tell: `sent` cut or
    rounded to the stored precision is the stored instant."""
    parsed = None if stored is None else parse_instant(stored)
    if parsed is None:
        return False
    instant, precision = parsed
    sent = sent.astimezone(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    below = (sent - epoch) % precision
    cut = sent - below
    rounded = cut + precision if below * 2 >= precision else cut
    return instant in (cut, rounded)
