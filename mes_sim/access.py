"""Tokens and rate limits of the simulated MES. Pure bookkeeping: every time is passed in."""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .model import REFRESH_TTL, STATION_API_KEY


def _random_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class _Grant:
    user_id: int
    expires_at: datetime


class TokenStore:
    """Opaque access and refresh tokens, and the station API keys accepted by scan."""

    def __init__(self, new_token: Callable[[], str] = _random_token) -> None:
        self._new = new_token
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
        self._station_keys: set[str] = {STATION_API_KEY}

    def login(self, user_id: int, now: datetime, access_ttl_s: float) -> tuple[str, str]:
        """A new access token and a new refresh token for ``user_id``."""
        refresh = self._new()
        self._refresh[refresh] = _Grant(user_id, now + REFRESH_TTL)
        return self.issue_access(user_id, now, access_ttl_s), refresh

    def issue_access(self, user_id: int, now: datetime, ttl_s: float) -> str:
        token = self._new()
        self._access[token] = _Grant(user_id, now + timedelta(seconds=ttl_s))
        return token

    def access_user(self, token: str, now: datetime) -> int | None:
        return _valid(self._access.get(token), now)

    def refresh_user(self, token: str, now: datetime) -> int | None:
        return _valid(self._refresh.get(token), now)

    def expire_access_tokens(self, now: datetime) -> None:
        """Every access token issued so far stops working, as if its 30 minutes had passed.
        Refresh tokens keep working: that is how a client recovers."""
        for grant in self._access.values():
            grant.expires_at = min(grant.expires_at, now)

    def issue_station_key(self) -> str:
        key = f"sk_{self._new()}"
        self._station_keys.add(key)
        return key

    def is_station_key(self, key: str) -> bool:
        return key in self._station_keys


def _valid(grant: _Grant | None, now: datetime) -> int | None:
    return grant.user_id if grant is not None and now < grant.expires_at else None


class SlidingWindowLimiter:
    """Counts admitted requests per key over the last ``window_s`` seconds.

    A refused request is not counted, as with the MES's limiter: a client that waits out the
    Retry-After it was given gets through.
    """

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def admit(self, key: tuple[str, str], *, limit: int, window_s: float, now: float) -> int | None:
        """None when admitted (and counted); otherwise whole seconds until a slot frees, >= 1."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        if len(hits) < limit:
            hits.append(now)
            return None
        # The hit that has to leave the window before the count drops below the limit.
        frees_at = hits[len(hits) - limit] + window_s if limit > 0 else now + window_s
        return max(1, math.ceil(frees_at - now))
