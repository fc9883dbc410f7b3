"""Tokens and the sliding-window rate limiter, with the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from mes_sim.access import SlidingWindowLimiter, TokenStore

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

LIMIT_CASES = [
    # limit, window, request times -> answer per request (None admitted, else Retry-After)
    (3, 60, [0, 0, 0, 0], [None, None, None, 60]),
    (2, 60, [0, 10, 20, 59.5, 60.5], [None, None, 40, 1, None]),  # at least 1, rounded up
    (2, 10, [0, 1, 2, 10.5, 11.5], [None, None, 8, None, None]),  # refusals are not counted
    (1, 2, [0, 0.5, 2, 2.1, 4.1], [None, 2, None, 2, None]),
]


@pytest.mark.parametrize(("limit", "window", "times", "expected"), LIMIT_CASES)
def test_sliding_window(
    limit: int, window: float, times: list[float], expected: list[int | None]
) -> None:
    limiter = SlidingWindowLimiter()
    answers = [limiter.admit(("ip", "api"), limit=limit, window_s=window, now=t) for t in times]
    assert answers == expected


def test_limits_are_per_ip_and_bucket() -> None:
    limiter = SlidingWindowLimiter()
    assert limiter.admit(("a", "api"), limit=1, window_s=60, now=0) is None
    assert limiter.admit(("a", "api"), limit=1, window_s=60, now=0) == 60
    assert limiter.admit(("b", "api"), limit=1, window_s=60, now=0) is None
    assert limiter.admit(("a", "login"), limit=1, window_s=60, now=0) is None


def test_tokens_expire_and_refresh_tokens_outlive_them() -> None:
    numbers = count()
    store = TokenStore(new_token=lambda: f"t{next(numbers)}")
    access, refresh = store.login(2, T0, 1800)
    assert store.access_user(access, T0 + timedelta(seconds=1799)) == 2
    assert store.access_user(access, T0 + timedelta(seconds=1800)) is None
    assert store.access_user(refresh, T0) is None  # a refresh token is not an access token
    assert store.refresh_user(refresh, T0 + timedelta(days=6)) == 2
    assert store.refresh_user(refresh, T0 + timedelta(days=7)) is None


def test_expire_access_tokens_spares_later_tokens() -> None:
    store = TokenStore()
    old, refresh = store.login(1, T0, 1800)
    store.expire_access_tokens(T0)
    assert store.access_user(old, T0) is None
    assert store.refresh_user(refresh, T0) == 1
    new = store.issue_access(1, T0, 1800)
    assert store.access_user(new, T0) == 1


def test_station_keys() -> None:
    store = TokenStore()
    assert store.is_station_key("sim-station-key")
    issued = store.issue_station_key()
    assert store.is_station_key(issued) and not store.is_station_key("guess")
