"""MES credentials: a service-account login kept fresh, or a static bearer token.

The deployed MES issues 30-minute access tokens and limits logins to 10 a minute per IP, and one
edge box serves many stations. So there is exactly one token per client: it is renewed shortly
before it expires, every concurrent caller waits for the same renewal, and a 401 renews it at
most once per stale token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge.mes.errors import MesError, MesErrorCode
from bridge.mes.pacing import Pacer

# (path, json body) -> parsed 2xx body; raises MesError otherwise.
PostJson = Callable[[str, dict[str, Any]], Awaitable[Any]]

_log = logging.getLogger(__name__)

LOGIN_LIMIT = 10  # the MES's login limit per IP per minute
LOGIN_WINDOW_S = 60.0


@dataclass
class _Token:
    access: str
    refresh: str | None
    renew_at: float


class TokenSource:
    """Hands out a valid user bearer token, logging in or refreshing as needed."""

    def __init__(
        self,
        post: PostJson,
        *,
        username: str | None,
        password: str | None,
        static_token: str | None,
        refresh_margin_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._post = post
        self._username = username
        self._password = password
        self._static = static_token
        self._margin_s = refresh_margin_s
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self._pacer = Pacer(limit=LOGIN_LIMIT, window_s=LOGIN_WINDOW_S, clock=clock)

    @property
    def available(self) -> bool:
        return self._static is not None or self._username is not None

    async def bearer(self) -> str:
        if self._static is not None:
            return self._static
        async with self._lock:
            token = self._token
            if token is None or self._clock() >= token.renew_at:
                token = await self._renew(token)
            return token.access

    async def renew_after_401(self, rejected: str) -> bool:
        """Renew a token the MES rejected; False when there is nothing to renew."""
        if self._static is not None or self._username is None:
            return False
        async with self._lock:
            if self._token is not None and self._token.access != rejected:
                return True  # another caller already renewed it
            _log.info("the MES refused the access token; renewing it once")
            await self._renew(self._token)
            return True

    async def _renew(self, old: _Token | None) -> _Token:
        if old is not None and old.refresh is not None:
            try:
                self._token = await self._exchange(
                    "/api/v1/auth/refresh", {"refresh_token": old.refresh}
                )
                _log.info("MES token refreshed")
                return self._token
            except MesError as error:
                if error.code is not MesErrorCode.AUTH:
                    raise
                _log.info("MES refresh token refused (%s); logging in again", error.detail)
        self._token = await self._login()
        _log.info("logged in to the MES as %s", self._username)
        return self._token

    async def _login(self) -> _Token:
        if self._username is None or self._password is None:
            raise MesError(
                MesErrorCode.AUTH,
                detail="no MES user account configured (mes.username and mes.password, "
                "or mes.token): start, complete, convert and trace need one",
            )
        return await self._exchange(
            "/api/v1/auth/login/json", {"username": self._username, "password": self._password}
        )

    async def _exchange(self, path: str, body: dict[str, Any]) -> _Token:
        try:
            async with self._pacer.slot():
                answer = await self._post(path, body)
        except MesError as error:
            if error.code is MesErrorCode.RATE_LIMITED:
                self._pacer.hold(error.retry_after if error.retry_after is not None else 60.0)
            if error.code in (MesErrorCode.VALIDATION, MesErrorCode.CONFLICT):
                # e.g. 400 VAL_001 for an inactive user: still a credentials problem.
                raise MesError(
                    MesErrorCode.AUTH,
                    status=error.status,
                    mes_code=error.mes_code,
                    detail=error.detail,
                ) from error
            raise
        try:
            access = str(answer["access_token"])
            lifetime = float(answer.get("expires_in", 1800))
            refresh = answer.get("refresh_token")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MesError(
                MesErrorCode.SERVER, detail=f"unexpected answer from {path}: no access_token"
            ) from error
        margin = min(self._margin_s, lifetime / 2)
        return _Token(
            access=access,
            refresh=str(refresh) if refresh else None,
            renew_at=self._clock() + lifetime - margin,
        )
