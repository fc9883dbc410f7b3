"""What the status says about the MES, kept true while nothing is being delivered.

The dispatcher learns the MES's state from deliveries; with nothing to deliver it would say
`online` long after the MES went away. This watch sees every answer the MES client gets (an httpx
event hook) and, when none came for `outbox.idle_check_s`, asks `GET /health` itself (the MES
does not count it against the rate limit). At startup it checks at once, and logs in when the
config has a service account, so that a wrong password or an unreachable MES is in the log and
the status before the first station sends anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

import httpx

from bridge.core.domain import MesState
from bridge.core.retry import OFFLINE_CODES
from bridge.engine.state import State
from bridge.mes import MesClient, MesError, MesErrorCode

_log = logging.getLogger(__name__)

LOGIN_PATH = "/api/v1/auth/login/json"
HEALTH_PATH = "/health"


def after_answer(current: MesState, *, path: str, status: int, authenticated: bool) -> MesState:
    """The MES's state after it answered `status` to a request on `path`.

    An answer proves the MES is reachable, but not that the account works: a refused login keeps
    the state `auth_failed` until a login or an authenticated request succeeds.
    """
    if status >= 500:
        # One 5xx is not an outage: the dispatcher decides that from failures in a row.
        return current
    if path.endswith(LOGIN_PATH) and status in (401, 403):
        return MesState.AUTH_FAILED
    if current is MesState.AUTH_FAILED:
        proven = 200 <= status < 300 and (authenticated or path.endswith(LOGIN_PATH))
        return MesState.ONLINE if proven else current
    return MesState.ONLINE


def after_error(current: MesState, code: MesErrorCode) -> MesState:
    """The MES's state after a check of ours failed with `code`."""
    if code in OFFLINE_CODES:
        return MesState.OFFLINE
    if code is MesErrorCode.AUTH:
        return MesState.AUTH_FAILED
    return current


def is_confirmation(status: int) -> bool:
    """An answer that shows the MES is up (a 5xx is the MES saying it is not)."""
    return status < 500


class MesWatch:
    def __init__(
        self,
        state: State,
        *,
        url: str,
        username: str | None,
        idle_check_s: float,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._url = url
        self._username = username
        self._idle_check_s = idle_check_s
        self._clock = clock
        self._monotonic = monotonic
        self._last_answer = -float("inf")
        self._logged_in = False
        self._delivery_offline: Callable[[], bool] = lambda: False

    def follow(self, delivery_offline: Callable[[], bool]) -> None:
        """While deliveries hold back because the MES is down, only they say it is back: their
        probe is a real request, and `/health` answers 200 while the MES's database is down."""
        self._delivery_offline = delivery_offline

    async def on_response(self, response: httpx.Response) -> None:
        """The MES client's response hook."""
        request = response.request
        if is_confirmation(response.status_code):
            self._last_answer = self._monotonic()
            self._state.mes_confirmed_at = self._clock()
        if request.url.path.endswith(LOGIN_PATH) and response.is_success:
            self._logged_in = True
        self._become(
            after_answer(
                self._state.mes_state,
                path=request.url.path,
                status=response.status_code,
                authenticated="Authorization" in request.headers,
            )
        )

    async def run(self, mes: MesClient) -> None:
        """Check now, then whenever the MES has been silent for `idle_check_s`."""
        await self._check(mes, first=True)
        while True:
            silent_for = self._monotonic() - self._last_answer
            await asyncio.sleep(max(self._idle_check_s - silent_for, 0.0) or self._idle_check_s)
            if self._monotonic() - self._last_answer >= self._idle_check_s:
                await self._check(mes, first=False)

    async def _check(self, mes: MesClient, *, first: bool) -> None:
        step = "health"
        try:
            await mes.health()
            if self._username is not None and not self._logged_in:
                step = "login"
                await mes.login()
        except MesError as error:
            self._become(after_error(self._state.mes_state, error.code))
            if first:
                self._log_startup_failure(step, error)
            return
        if first:
            _log.info("the MES at %s answers%s", self._url, self._as_user())

    def _log_startup_failure(self, step: str, error: MesError) -> None:
        if step == "login":
            _log.error(
                "the MES at %s refused the login%s: %s (check mes.username and the password); "
                "requests wait in the outbox",
                self._url,
                self._as_user(),
                error,
            )
        else:
            _log.error(
                "the MES at %s does not answer: %s; requests wait in the outbox", self._url, error
            )

    def _as_user(self) -> str:
        return f" as {self._username}" if self._username else ""

    def _become(self, state: MesState) -> None:
        previous = self._state.mes_state
        if state is previous or (state is MesState.ONLINE and self._delivery_offline()):
            return
        level = logging.INFO if state is MesState.ONLINE else logging.WARNING
        _log.log(level, "MES %s: %s (was %s)", self._url, state, previous)
        self._state.mes_state = state
        self._state.publish_all_status()
