"""bridge.engine.mes_watch: what each answer from the MES, or each failed check, makes of its
state."""

from __future__ import annotations

import pytest

from bridge.core.domain import MesState
from bridge.engine.mes_watch import (
    HEALTH_PATH,
    LOGIN_PATH,
    after_answer,
    after_error,
    is_confirmation,
)
from bridge.mes import MesErrorCode

ONLINE, OFFLINE, AUTH, UNKNOWN = (
    MesState.ONLINE,
    MesState.OFFLINE,
    MesState.AUTH_FAILED,
    MesState.UNKNOWN,
)
SCAN = "/api/v1/wip-items/WIP-1/scan"
START = "/api/v1/wip-items/12/start-process"


@pytest.mark.parametrize(
    ("current", "path", "status", "authenticated", "expected"),
    [
        (UNKNOWN, HEALTH_PATH, 200, False, ONLINE),
        (OFFLINE, HEALTH_PATH, 200, False, ONLINE),
        # One 5xx is not an outage (the dispatcher judges that from failures in a row).
        (ONLINE, HEALTH_PATH, 503, False, ONLINE),
        (ONLINE, START, 500, True, ONLINE),
        (OFFLINE, START, 502, True, OFFLINE),
        (UNKNOWN, LOGIN_PATH, 401, False, AUTH),
        (ONLINE, LOGIN_PATH, 403, False, AUTH),
        # Reachable is not the same as logged in: a wrong password stays in the status.
        (AUTH, HEALTH_PATH, 200, False, AUTH),
        (AUTH, SCAN, 200, False, AUTH),  # a station key's scan proves nothing of the account
        (AUTH, LOGIN_PATH, 200, False, ONLINE),
        (AUTH, START, 200, True, ONLINE),
        (AUTH, START, 400, True, AUTH),
        # Refusals and rate limits are answers: the MES is there.
        (OFFLINE, START, 400, True, ONLINE),
        (OFFLINE, SCAN, 429, False, ONLINE),
        (ONLINE, START, 401, True, ONLINE),  # a stale token: renewed by the client
    ],
)
def test_after_answer(
    current: MesState, path: str, status: int, authenticated: bool, expected: MesState
) -> None:
    assert after_answer(current, path=path, status=status, authenticated=authenticated) is expected


@pytest.mark.parametrize(
    ("current", "code", "expected"),
    [
        (ONLINE, MesErrorCode.NETWORK, OFFLINE),
        (ONLINE, MesErrorCode.TIMEOUT, OFFLINE),
        (UNKNOWN, MesErrorCode.SERVER, OFFLINE),
        (UNKNOWN, MesErrorCode.AUTH, AUTH),
        (OFFLINE, MesErrorCode.RATE_LIMITED, OFFLINE),
        (ONLINE, MesErrorCode.VALIDATION, ONLINE),
    ],
)
def test_after_error(current: MesState, code: MesErrorCode, expected: MesState) -> None:
    assert after_error(current, code) is expected


@pytest.mark.parametrize(
    ("status", "confirms"), [(200, True), (404, True), (429, True), (503, False)]
)
def test_which_answers_confirm_the_mes_is_up(status: int, confirms: bool) -> None:
    assert is_confirmation(status) is confirms
