"""The MES client against the simulator over real loopback HTTP: the whole flow, every error row
of mes-contract.md §4, token expiry mid-run, 429 pacing and lost responses. No mocks here."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.core.domain import Result
from bridge.mes import (
    CompleteProcess,
    ConvertToSerial,
    MesClient,
    MesError,
    MesErrorCode,
    StartProcess,
    WipStatus,
)
from bridge.mes.settings import MesSettings
from mes_sim import MesSimulator

C = MesErrorCode
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
OPERATOR = 2  # operator1, seeded by the simulator
MakeClient = Callable[..., MesClient]


@pytest.fixture
async def make_client(sim: MesSimulator) -> AsyncIterator[MakeClient]:
    clients: list[MesClient] = []

    def make(target: MesSimulator | None = None, **config: Any) -> MesClient:
        fields: dict[str, Any] = {"username": "admin", "password": "admin-pass", "timeout_s": 5}
        fields.update(config)
        options = fields.pop("kw", {})
        fields.setdefault("url", (target or sim).url)
        client = MesClient(MesSettings(**fields), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: MakeClient) -> MesClient:
    return make_client()


def start(wip: str, process: int, at: datetime = T0) -> StartProcess:
    return StartProcess(wip_id=wip, process=process, operator_id=OPERATOR, started_at=at)


def complete(
    wip: str, process: int, result: Result = Result.PASS, at: datetime = T0, **extra: Any
) -> CompleteProcess:
    return CompleteProcess(
        wip_id=wip,
        process=process,
        operator_id=OPERATOR,
        result=result,
        started_at=at,
        completed_at=at + timedelta(seconds=30),
        **extra,
    )


async def run_process(
    client: MesClient, wip: str, process: int, result: Result = Result.PASS
) -> WipStatus:
    await client.start_process(start(wip, process))
    return (await client.complete_process(complete(wip, process, result))).wip_status


async def complete_all(client: MesClient, wip: str) -> None:
    for process in range(1, 7):
        await run_process(client, wip, process)


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for a condition the simulator reaches on its own (e.g. after a slow answer).

    The simulator's state lives in its server thread, which offers no event to await: poll it.
    """
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def raises(code: MesErrorCode, call: Any) -> MesError:
    with pytest.raises(MesError) as caught:
        await call
    assert caught.value.code is code, str(caught.value)
    return caught.value


# -- the flow ---------------------------------------------------------------------------------


async def test_whole_flow_from_scan_to_serial(sim: MesSimulator, client: MesClient) -> None:
    wip = sim.wip_ids[0]
    scanned = await client.scan(wip, process=1)
    assert scanned.wip_id == wip and scanned.status is WipStatus.CREATED
    assert scanned.id != 1  # the integer id is the MES's, not the sequence

    statuses = []
    for process in range(1, 7):
        started = await client.start_process(start(wip, process, T0 + timedelta(minutes=process)))
        assert started.status is WipStatus.IN_PROGRESS
        done = await client.complete_process(
            complete(
                wip,
                process,
                at=T0 + timedelta(minutes=process),
                measurements={"torque_nm": 1.0 + process},
                defects=[],
            )
        )
        assert done.sent_result is Result.PASS
        statuses.append(done.wip_status)
    assert statuses == [WipStatus.IN_PROGRESS] * 5 + [WipStatus.COMPLETED]
    assert done.can_convert

    serial = await client.convert_to_serial(ConvertToSerial(wip_id=wip, operator_id=OPERATOR))
    assert len(serial.serial_number) == 16

    ledger = sim.ledger()
    rows = [h for h in ledger["history"] if h["wip_id"] == wip]
    assert [h["process_number"] for h in rows] == [1, 2, 3, 4, 5, 6]
    assert [h["measurements"]["torque_nm"] for h in rows] == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert all(h["operator_id"] == OPERATOR and h["result"] == "PASS" for h in rows)
    # the bridge's own start time is what the MES recorded, in aware UTC
    assert rows[0]["started_at"].replace("+00:00", "Z") == "2026-11-26T09:01:00Z"
    (record,) = [w for w in ledger["wips"] if w["wip_id"] == wip]
    assert record["status"] == "CONVERTED" and record["serial_number"] == serial.serial_number
    assert ledger["labels_printed"] == 0  # print_label=false unless configured
    assert ledger["logins"] == 1


async def test_trace_shows_what_was_recorded(sim: MesSimulator, client: MesClient) -> None:
    wip = sim.wip_ids[0]
    await run_process(client, wip, 1, Result.FAIL)
    await run_process(client, wip, 1, Result.PASS)
    trace = await client.trace(wip)
    assert trace.wip_id == wip
    assert trace.results_for(1) == ["FAIL", "PASS"]


async def test_health_and_process_ids(sim: MesSimulator, client: MesClient) -> None:
    assert await client.health() == "healthy"
    assert await client.process_ids() == {n: n for n in range(1, 7)}


async def test_process_numbers_are_mapped_to_mes_ids(
    sim_factory: Callable[..., MesSimulator], make_client: MakeClient
) -> None:
    sim = sim_factory(process_id_offset=10)
    client = make_client(sim)
    assert await client.process_ids() == {n: n + 10 for n in range(1, 7)}
    await run_process(client, sim.wip_ids[0], 1)
    await client.scan(sim.wip_ids[0], process=2)  # the pre-check takes the id too
    (row,) = sim.ledger()["history"]
    assert (row["process_number"], row["process_id"]) == (1, 11)


async def test_rework_goes_out_as_fail_and_the_process_restarts(
    sim: MesSimulator, client: MesClient
) -> None:
    wip = sim.wip_ids[0]
    await client.start_process(start(wip, 1))
    done = await client.complete_process(complete(wip, 1, Result.REWORK, notes="re-seat"))
    assert done.sent_result is Result.FAIL and done.wip_status is WipStatus.FAILED
    assert await run_process(client, wip, 1) is WipStatus.IN_PROGRESS
    first, second = sim.ledger()["history"]
    assert (first["result"], first["notes"]) == ("FAIL", "REWORK: re-seat")
    assert second["result"] == "PASS"


async def test_hostile_barcode_stays_one_path_segment(sim: MesSimulator, client: MesClient) -> None:
    for barcode in ("../../auth/me#", "..", ".", "WIP?x=1&y=2", "a/b"):
        error = await raises(C.WIP_NOT_FOUND, client.scan(barcode))
        assert error.status == 404


async def test_station_key_scans_but_cannot_start(
    sim: MesSimulator, make_client: MakeClient
) -> None:
    client = make_client(username=None, password=None, api_key="sim-station-key")
    wip = sim.wip_ids[0]
    assert (await client.scan(wip)).wip_id == wip
    error = await raises(C.AUTH, client.start_process(start(wip, 1)))
    assert "no MES user account" in error.detail
    routes = sim.ledger()["requests_by_route"]
    assert not any("start-process" in route for route in routes)  # refused here, not sent


# -- every error row of mes-contract.md §4 ------------------------------------------------------


async def test_business_rule_errors(sim: MesSimulator, client: MesClient) -> None:
    wip, other = sim.wip_ids[0], sim.wip_ids[1]
    await raises(C.WIP_NOT_FOUND, client.start_process(start("WIP-NOPE0000000-999", 1)))
    await raises(C.PREREQUISITE_NOT_MET, client.start_process(start(wip, 2)))
    await raises(C.PREREQUISITE_NOT_MET, client.scan(wip, process=2))

    await run_process(client, wip, 1)
    error = await raises(C.DUPLICATE_PASS, client.complete_process(complete(wip, 1)))
    assert error.status == 400 and error.mes_code == "VAL_004" and not error.retryable

    await complete_all(client, other)
    await raises(C.INVALID_WIP_STATUS, client.start_process(start(other, 1)))
    await raises(
        C.INVALID_WIP_STATUS,
        client.convert_to_serial(ConvertToSerial(wip_id=wip, operator_id=OPERATOR)),
    )
    await client.convert_to_serial(ConvertToSerial(wip_id=other, operator_id=OPERATOR))
    await raises(
        C.ALREADY_CONVERTED,
        client.convert_to_serial(ConvertToSerial(wip_id=other, operator_id=OPERATOR)),
    )
    await raises(C.ALREADY_CONVERTED, client.start_process(start(other, 1)))


async def test_convert_to_serial_route(sim: MesSimulator, make_client: MakeClient) -> None:
    client = make_client(convert_via="convert-to-serial")
    wip, fresh = sim.wip_ids[0], sim.wip_ids[1]
    await raises(
        C.INVALID_WIP_STATUS,
        client.convert_to_serial(ConvertToSerial(wip_id=fresh, operator_id=OPERATOR)),
    )
    await complete_all(client, wip)
    # the deployed MES fails every valid conversion with 500: retryable, nothing converted
    convert = ConvertToSerial(wip_id=wip, operator_id=OPERATOR)
    error = await raises(C.SERVER, client.convert_to_serial(convert))
    assert error.status == 500 and error.retryable
    sim.set_faults(convert="working")
    serial = await client.convert_to_serial(ConvertToSerial(wip_id=wip, operator_id=OPERATOR))
    assert serial.serial_number
    await raises(
        C.ALREADY_CONVERTED,
        client.convert_to_serial(ConvertToSerial(wip_id=wip, operator_id=OPERATOR)),
    )


async def test_conflicts(sim: MesSimulator, make_client: MakeClient) -> None:
    client = make_client(rework_as="REWORK")
    wip = sim.wip_ids[0]
    error = await raises(
        C.CONFLICT,
        client.start_process(StartProcess(wip_id=wip, process=1, operator_id=999, started_at=T0)),
    )
    assert error.status == 409 and "Referenced resource" in error.detail
    await client.start_process(start(wip, 1))
    await raises(C.CONFLICT, client.complete_process(complete(wip, 1, Result.REWORK)))
    # a completion earlier than the start the MES holds
    late = CompleteProcess(
        wip_id=wip,
        process=1,
        operator_id=OPERATOR,
        result=Result.PASS,
        started_at=T0 - timedelta(hours=1),
        completed_at=T0 - timedelta(minutes=30),
    )
    await raises(C.CONFLICT, client.complete_process(late))
    assert sim.ledger()["history"] == []


async def test_validation(sim: MesSimulator, make_client: MakeClient) -> None:
    client = make_client()
    error = await raises(C.VALIDATION, client.start_process(start(sim.wip_ids[0], 7)))
    assert "not an active process" in error.detail
    unmapped = make_client(resolve_process_ids=False)
    error = await raises(C.VALIDATION, unmapped.start_process(start(sim.wip_ids[0], 7)))
    assert error.status in (404, 422)


async def test_wrong_password_is_auth_and_not_a_loop(
    sim: MesSimulator, make_client: MakeClient
) -> None:
    client = make_client(password="wrong")
    error = await raises(C.AUTH, client.start_process(start(sim.wip_ids[0], 1)))
    assert error.mes_code == "AUTH_001" and error.retryable
    assert sim.ledger()["logins"] <= 1


async def test_server_errors_change_nothing(sim: MesSimulator, client: MesClient) -> None:
    wip = sim.wip_ids[0]
    await client.scan(wip)
    for mode, status in (("error_500", 500), ("unavailable", 503)):
        sim.set_faults(mode=mode)
        error = await raises(C.SERVER, client.start_process(start(wip, 1)))
        # The MES changed nothing here, but a 5xx cannot say so: a retry checks first.
        assert error.status == status and error.retryable and error.maybe_applied
    sim.set_faults(mode="ok")
    assert sim.ledger()["starts"] == []
    await client.start_process(start(wip, 1))


async def test_unreachable_mes_is_network_and_not_applied(make_client: MakeClient) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(url=f"http://127.0.0.1:{port}")
    error = await raises(C.NETWORK, client.scan("WIP-KR01PSA261102-001"))
    assert error.retryable and not error.maybe_applied


async def test_timeout_may_have_applied(sim: MesSimulator, make_client: MakeClient) -> None:
    client = make_client(timeout_s=0.5)
    wip = sim.wip_ids[0]
    await client.start_process(start(wip, 1))
    sim.set_faults(mode="slow", delay_s=2)
    error = await raises(C.TIMEOUT, client.complete_process(complete(wip, 1)))
    assert error.maybe_applied and error.retryable
    # the MES finished the work after the client gave up: exactly the case trace exists for
    await eventually(lambda: len(sim.ledger()["history"]) == 1)
    sim.set_faults(mode="ok")
    assert (await client.trace(wip)).results_for(1) == ["PASS"]


async def test_lost_response_then_replay_is_a_duplicate_not_a_second_record(
    sim: MesSimulator, client: MesClient
) -> None:
    wip = sim.wip_ids[0]
    await client.start_process(start(wip, 1))
    sim.set_faults(mode="drop_response")
    error = await raises(C.NETWORK, client.complete_process(complete(wip, 1)))
    assert error.maybe_applied
    sim.set_faults(mode="ok")
    await raises(C.DUPLICATE_PASS, client.complete_process(complete(wip, 1)))
    assert (await client.trace(wip)).results_for(1) == ["PASS"]
    assert len(sim.ledger()["history"]) == 1


async def test_a_start_of_a_process_already_passed_is_refused_before_it_is_sent(
    sim: MesSimulator, client: MesClient
) -> None:
    # The MES would accept the start and refuse its PASS (BR-004): an open start for ever.
    wip = sim.wip_ids[0]
    await run_process(client, wip, 1)
    await run_process(client, wip, 2, Result.FAIL)  # FAILED: process 1 keeps its PASS
    error = await raises(C.DUPLICATE_PASS, client.start_process(start(wip, 1)))
    assert not error.retryable and "already has a PASS for process 1" in error.detail
    assert await client.start_process(start(wip, 2))  # the rework path stays open
    starts = sum(n for r, n in sim.ledger()["requests_by_route"].items() if "start-process" in r)
    assert starts == 3  # process 1, process 2, process 2 again: not the refused one


async def test_no_notes_are_left_out_not_sent_as_an_empty_note(
    sim: MesSimulator, client: MesClient
) -> None:
    wip = sim.wip_ids[0]
    await run_process(client, wip, 1)
    await client.start_process(start(wip, 2))
    await client.complete_process(complete(wip, 2, notes="scratch"))
    assert [row["notes"] for row in sim.ledger()["history"]] == [None, "scratch"]


# -- tokens -----------------------------------------------------------------------------------


async def test_expired_token_mid_run_is_renewed_once(sim: MesSimulator, client: MesClient) -> None:
    wip = sim.wip_ids[0]
    await run_process(client, wip, 1)
    sim.set_faults(expire_tokens=True)
    await run_process(client, wip, 2)
    ledger = sim.ledger()
    assert ledger["logins"] + ledger["refreshes"] == 2  # the first login, then one renewal
    assert len(ledger["history"]) == 2


async def test_concurrent_callers_share_one_renewal(sim: MesSimulator, client: MesClient) -> None:
    await client.trace(sim.wip_ids[0])
    sim.set_faults(expire_tokens=True)
    traces = await asyncio.gather(*(client.trace(w) for w in sim.wip_ids[:8]))
    assert [t.wip_id for t in traces] == sim.wip_ids[:8]
    ledger = sim.ledger()
    assert ledger["logins"] + ledger["refreshes"] == 2


async def test_token_refreshed_before_it_expires(
    sim: MesSimulator, make_client: MakeClient
) -> None:
    now = [0.0]
    client = make_client(kw={"clock": lambda: now[0]})
    await client.trace(sim.wip_ids[0])
    now[0] += 1800 - 60  # inside the refresh margin: renew before the MES would say 401
    await client.trace(sim.wip_ids[0])
    ledger = sim.ledger()
    assert (ledger["logins"], ledger["refreshes"]) == (1, 1)


async def test_token_the_mes_keeps_refusing_is_an_error_not_a_loop(
    sim: MesSimulator, client: MesClient
) -> None:
    await client.trace(sim.wip_ids[0])
    sim.set_faults(token_ttl_s=0, expire_tokens=True)
    await raises(C.AUTH, client.trace(sim.wip_ids[0]))
    ledger = sim.ledger()
    assert ledger["logins"] + ledger["refreshes"] <= 3


async def test_static_token_cannot_be_renewed(sim: MesSimulator, make_client: MakeClient) -> None:
    login = make_client()
    token = await login._tokens.bearer()
    client = make_client(username=None, password=None, token=token)
    await client.trace(sim.wip_ids[0])
    sim.set_faults(expire_tokens=True)
    error = await raises(C.AUTH, client.trace(sim.wip_ids[0]))
    assert error.status == 401


# -- pacing -----------------------------------------------------------------------------------


async def test_pacing_keeps_below_the_mes_limit(
    sim_factory: Callable[..., MesSimulator], make_client: MakeClient
) -> None:
    sim = sim_factory()
    sim.set_faults(rate_limit_per_min=5, rate_limit_window_s=2)
    client = make_client(sim, rate_limit=4, rate_window_s=2)
    results = await asyncio.gather(*(client.scan(w) for w in sim.wip_ids[:10]))
    assert len(results) == 10
    assert sim.ledger()["rate_limited"] == 0


async def test_429_is_waited_out_not_retried_in_a_loop(
    sim_factory: Callable[..., MesSimulator], make_client: MakeClient
) -> None:
    sim = sim_factory()
    sim.set_faults(rate_limit_per_min=3, rate_limit_window_s=2)
    client = make_client(sim, rate_limit=1000)  # the client does not pace: the MES must stop it
    for wip in sim.wip_ids[:7]:
        assert (await client.scan(wip)).wip_id == wip
    ledger = sim.ledger()
    # each 429 was followed by a wait of Retry-After, so the next attempt went through
    assert 1 <= ledger["rate_limited"] <= 2
    scans = ledger["requests_by_route"]["POST /api/v1/wip-items/{wip_id}/scan"]
    assert scans == 7 + ledger["rate_limited"]


# -- the integration spec's stricter MES ------------------------------------------------------


async def test_spec_semantics(
    sim_factory: Callable[..., MesSimulator], make_client: MakeClient
) -> None:
    sim = sim_factory(semantics="spec")
    client = make_client(sim, rework_as="REWORK", convert_via="convert-to-serial")
    wip, other = sim.wip_ids[0], sim.wip_ids[1]
    await raises(C.PROCESS_NOT_STARTED, client.complete_process(complete(other, 1)))
    await raises(C.PREREQUISITE_NOT_MET, client.start_process(start(wip, 2)))
    await client.start_process(start(wip, 1))
    done = await client.complete_process(complete(wip, 1, Result.REWORK))
    assert done.sent_result is Result.REWORK and done.wip_status is WipStatus.IN_PROGRESS
    await run_process(client, wip, 1)
    await raises(C.DUPLICATE_PASS, client.complete_process(complete(wip, 1)))
    for process in range(2, 7):
        await run_process(client, wip, process)
    serial = await client.convert_to_serial(ConvertToSerial(wip_id=wip, operator_id=OPERATOR))
    assert serial.serial_number
    await raises(
        C.ALREADY_CONVERTED,
        client.convert_to_serial(ConvertToSerial(wip_id=wip, operator_id=OPERATOR)),
    )
    await raises(C.WIP_NOT_FOUND, client.scan("WIP-NOPE0000000-999"))


# -- lost answers: was it recorded? ----------------------------------------------------------


async def test_recorded_finds_a_lost_fail_and_not_an_older_one(
    sim: MesSimulator, client: MesClient
) -> None:
    wip = sim.wip_ids[0]
    earlier = complete(wip, 1, Result.FAIL)
    await client.start_process(start(wip, 1))
    await client.complete_process(earlier)

    retry_at = T0 + timedelta(hours=1)
    lost = complete(wip, 1, Result.FAIL, at=retry_at)
    await client.start_process(start(wip, 1, retry_at))
    assert await client.recorded(earlier)
    assert not await client.recorded(lost)  # the older FAIL of process 1 is not this one

    sim.set_faults(mode="drop_response")
    await raises(C.NETWORK, client.complete_process(lost))
    sim.set_faults(mode="ok")
    assert await client.recorded(lost)
    assert len(sim.ledger()["history"]) == 2


async def test_recorded_for_rework_sent_as_fail_and_for_conversion(
    sim: MesSimulator, client: MesClient
) -> None:
    wip = sim.wip_ids[0]
    rework = complete(wip, 1, Result.REWORK)
    await client.start_process(start(wip, 1))
    assert not await client.recorded(rework)
    await client.complete_process(rework)
    assert await client.recorded(rework)

    convert = ConvertToSerial(wip_id=wip, operator_id=OPERATOR)
    assert not await client.recorded(start(wip, 1))  # starts are resent: they are idempotent
    await run_process(client, wip, 1)
    for process in range(2, 7):
        await run_process(client, wip, process)
    assert not await client.recorded(convert)
    await client.convert_to_serial(convert)
    assert await client.recorded(convert)


async def test_print_label_when_configured(sim: MesSimulator, make_client: MakeClient) -> None:
    client = make_client(print_label=True)
    wip = sim.wip_ids[0]
    await complete_all(client, wip)
    await client.convert_to_serial(ConvertToSerial(wip_id=wip, operator_id=OPERATOR))
    assert sim.ledger()["labels_printed"] == 1


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_server_error_after_the_change_is_maybe_applied_and_found_by_recorded(
    sim: MesSimulator, client: MesClient, status: int
) -> None:
    wip = sim.wip_ids[0]
    fail = complete(wip, 1, Result.FAIL)
    await client.start_process(start(wip, 1))
    sim.set_faults(mode="apply_then_error", error_status=status, times=1)
    error = await raises(C.SERVER, client.complete_process(fail))
    assert error.maybe_applied and error.unsettled is (status != 500)
    assert await client.recorded(fail)


async def test_a_body_that_cannot_be_decoded_is_a_maybe_applied_server_error(
    sim: MesSimulator, client: MesClient
) -> None:
    wip = sim.wip_ids[0]
    await client.scan(wip)
    sim.set_faults(mode="apply_then_garble", path_contains="start-process", times=1)
    error = await raises(C.SERVER, client.start_process(start(wip, 1)))
    assert error.maybe_applied and "DecodingError" in error.detail
    assert len(sim.ledger()["starts"]) == 1


async def test_the_probe_needs_the_database_where_health_does_not(
    sim: MesSimulator, client: MesClient
) -> None:
    wip = sim.wip_ids[0]
    sim.set_faults(mode="database_down")
    assert await client.health() == "degraded"  # 200, as the deployed MES answers
    await raises(C.SERVER, client.probe(wip))
    await raises(C.SERVER, client.probe())
    sim.set_faults(mode="ok")
    await client.probe(wip)
    await client.probe()
