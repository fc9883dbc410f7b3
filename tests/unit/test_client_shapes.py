"""Answers a real MES (or the simulator) does not give on demand: a proxy's HTML, a broken login
answer, a 429 that keeps coming. respx stands in for the network only here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import respx

from bridge.core.domain import Result
from bridge.mes import CompleteProcess, MesClient, MesError, MesErrorCode, StartProcess
from bridge.mes.settings import MesSettings

URL = "http://mes.test"
LOGIN = {"access_token": "t1", "refresh_token": "r1", "token_type": "bearer", "expires_in": 1800}
WIP = {"id": 7, "wip_id": "WIP-A", "status": "CREATED"}
START = StartProcess(
    wip_id="WIP-A", process=1, operator_id=2, started_at=datetime(2026, 11, 26, tzinfo=UTC)
)


@pytest.fixture
async def mes() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        router.post("/api/v1/auth/login/json").respond(200, json=LOGIN)
        router.post("/api/v1/wip-items/WIP-A/scan").respond(200, json=WIP)
        yield router


@pytest.fixture
async def client() -> AsyncIterator[MesClient]:
    config = MesSettings(url=URL, username="svc", password="pw", resolve_process_ids=False)
    async with MesClient(config) as client:
        yield client


async def code_of(call: object) -> MesError:
    with pytest.raises(MesError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_html_from_a_proxy_on_success_is_a_server_error(
    mes: respx.MockRouter, client: MesClient
) -> None:
    mes.post("/api/v1/wip-items/7/start-process").respond(200, text="<html>ok</html>")
    error = await code_of(client.start_process(START))
    assert error.code is MesErrorCode.SERVER and error.maybe_applied


async def test_unexpected_json_shape_is_a_server_error(
    mes: respx.MockRouter, client: MesClient
) -> None:
    mes.post("/api/v1/wip-items/7/start-process").respond(200, json={"ok": True})
    error = await code_of(client.start_process(START))
    assert error.code is MesErrorCode.SERVER and "WipItem" in error.detail


async def test_spec_wrapped_start_answer_is_understood(
    mes: respx.MockRouter, client: MesClient
) -> None:
    wrapped = {"wip_item": {**WIP, "status": "IN_PROGRESS"}, "message": "Process started"}
    mes.post("/api/v1/wip-items/7/start-process").respond(200, json=wrapped)
    assert (await client.start_process(START)).status == "IN_PROGRESS"


async def test_login_answer_without_token(mes: respx.MockRouter, client: MesClient) -> None:
    mes.post("/api/v1/auth/login/json").respond(200, json={"token_type": "bearer"})
    error = await code_of(client.start_process(START))
    assert error.code is MesErrorCode.SERVER and "access_token" in error.detail


async def test_inactive_user_at_login_is_an_auth_error(
    mes: respx.MockRouter, client: MesClient
) -> None:
    mes.post("/api/v1/auth/login/json").respond(
        400, json={"error_code": "VAL_001", "message": "Inactive user account"}
    )
    error = await code_of(client.start_process(START))
    assert error.code is MesErrorCode.AUTH and error.mes_code == "VAL_001"


async def test_429_twice_gives_up_with_retry_after(
    mes: respx.MockRouter, client: MesClient
) -> None:
    route = mes.post("/api/v1/wip-items/7/start-process").respond(
        429, headers={"Retry-After": "0"}, json={"error_code": "RATE_LIMIT_EXCEEDED"}
    )
    error = await code_of(client.start_process(START))
    assert error.code is MesErrorCode.RATE_LIMITED and error.retry_after == 0
    assert route.call_count == 2  # waited out once, then handed back: not a loop


async def test_long_retry_after_is_handed_to_the_caller(
    mes: respx.MockRouter, client: MesClient
) -> None:
    route = mes.post("/api/v1/wip-items/7/start-process").respond(
        429, headers={"Retry-After": "600"}, json={"error_code": "RATE_LIMIT_EXCEEDED"}
    )
    error = await code_of(client.start_process(START))
    assert error.retry_after == 600 and route.call_count == 1


@pytest.mark.parametrize(
    ("raised", "code", "maybe_applied"),
    [
        (httpx.ConnectError("refused"), MesErrorCode.NETWORK, False),
        (httpx.ConnectTimeout("slow connect"), MesErrorCode.NETWORK, False),
        (httpx.PoolTimeout("pool"), MesErrorCode.TIMEOUT, False),
        (httpx.ReadTimeout("slow answer"), MesErrorCode.TIMEOUT, True),
        (httpx.WriteTimeout("slow write"), MesErrorCode.TIMEOUT, True),
        (httpx.RemoteProtocolError("disconnected"), MesErrorCode.NETWORK, True),
        (httpx.ReadError("reset"), MesErrorCode.NETWORK, True),
    ],
)
async def test_transport_failures(
    mes: respx.MockRouter,
    client: MesClient,
    raised: Exception,
    code: MesErrorCode,
    maybe_applied: bool,
) -> None:
    mes.post("/api/v1/wip-items/7/start-process").mock(side_effect=raised)
    error = await code_of(client.start_process(START))
    assert (error.code, error.maybe_applied) == (code, maybe_applied)


async def test_secrets_are_not_in_errors(mes: respx.MockRouter, client: MesClient) -> None:
    mes.post("/api/v1/wip-items/7/start-process").respond(
        401, json={"error_code": "AUTH_002", "message": "Invalid or expired token"}
    )
    mes.post("/api/v1/auth/refresh").respond(401, json={"error_code": "AUTH_002"})
    error = await code_of(client.start_process(START))
    assert error.code is MesErrorCode.AUTH
    assert "pw" not in str(error).split() and "t1" not in str(error)


@pytest.mark.parametrize(
    ("status", "body", "unsettled"),
    [
        (500, {"error_code": "SRV_001", "message": "Internal server error"}, False),
        (503, {"error_code": "SRV_002", "message": "Service temporarily unavailable"}, False),
        (500, "<html>500 Internal Server Error</html>", True),  # not the MES's own answer
        (502, "<html>502 Bad Gateway</html>", True),
        (504, "<html>504 Gateway Time-out</html>", True),
        (504, {"detail": "upstream timed out"}, True),
    ],
)
async def test_a_server_error_may_have_applied_the_request(
    mes: respx.MockRouter, client: MesClient, status: int, body: object, unsettled: bool
) -> None:
    # Not a refusal: the MES (or its proxy) may have recorded it before failing.
    answer = {"json": body} if isinstance(body, dict) else {"text": body}
    mes.post("/api/v1/wip-items/7/start-process").respond(status, **answer)  # type: ignore[arg-type]
    error = await code_of(client.start_process(START))
    assert (error.code, error.status, error.retryable) == (MesErrorCode.SERVER, status, True)
    assert error.maybe_applied and error.unsettled is unsettled


async def test_an_answer_that_cannot_be_decoded_is_a_maybe_applied_server_error(
    mes: respx.MockRouter, client: MesClient
) -> None:
    mes.post("/api/v1/wip-items/7/start-process").mock(
        side_effect=httpx.DecodingError("Error -3 while decompressing data")
    )
    error = await code_of(client.start_process(START))
    assert error.code is MesErrorCode.SERVER and error.maybe_applied
    assert "DecodingError" in error.detail


COMPLETE = CompleteProcess(
    wip_id="WIP-A",
    process=1,
    operator_id=2,
    result=Result.FAIL,
    started_at=datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
    completed_at=datetime(2026, 11, 26, 9, 0, 30, 123456, tzinfo=UTC),
)


@pytest.mark.parametrize(
    "stored",
    [
        "2026-11-26T09:00:30.123456Z",
        "2026-11-26T09:00:30.123456+00:00",
        "2026-11-26T09:00:30.123456",  # timestamp without time zone
        "2026-11-26 09:00:30.123456+00",  # PostgreSQL's text form
        "2026-11-26T18:00:30.123456+09:00",
        "2026-11-26T09:00:30.123Z",  # kept to milliseconds
    ],
)
async def test_recorded_finds_a_completion_in_any_form_of_its_instant(
    mes: respx.MockRouter, client: MesClient, stored: str
) -> None:
    # The simulator echoes completed_at exactly; the real MES writes back PostgreSQL's value.
    older = {"process_number": 1, "result": "FAIL", "complete_time": "2026-11-26T08:00:00Z"}
    trace = {
        "wip_id": "WIP-A",
        "status": "FAILED",
        "process_history": [
            older,
            {"process_number": 1, "result": "FAIL", "complete_time": stored},
        ],
    }
    route = mes.get("/api/v1/wip-items/WIP-A/trace").respond(200, json=trace)
    assert await client.recorded(COMPLETE)
    route.respond(200, json={**trace, "process_history": [older]})
    assert not await client.recorded(COMPLETE)
