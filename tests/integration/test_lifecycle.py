"""The bridge end to end over a real broker (Mosquitto) and the simulated MES over loopback HTTP:
a tablet's scan becomes 착공, measurements gather, the end becomes 완공, and every outcome is
published where the tablet listens."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.broker import find_free_port
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind
from mes_sim import MesSimulator

from .harness import (
    MOSQUITTO,
    MOSQUITTO_BINARY,
    OPERATOR,
    PrivateMosquitto,
    Tablet,
    bridge_config,
    event,
    ledger_rows,
    mosquitto_running,
    running,
)

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")

R = ResultKind
SCAN = "POST /api/v1/wip-items/{wip_id}/scan"


def make_config(sim: MesSimulator, tmp_path: Path, **overrides: Any) -> BridgeConfig:
    host, port = MOSQUITTO
    return bridge_config(sim, tmp_path / "data", host=host, port=port, **overrides)


@pytest.fixture
async def tablet(sim: MesSimulator, tmp_path: Path) -> AsyncIterator[Tablet]:
    config = make_config(sim, tmp_path)
    async with Tablet(config) as tablet, running(config):
        yield tablet


def start(wip: str, process: int = 1, **extra: Any) -> dict[str, Any]:
    return {"wip_id": wip, "process_id": process, "operator_id": OPERATOR, **extra}


async def test_start_measure_complete_reaches_the_mes(tablet: Tablet, sim: MesSimulator) -> None:
    wip = sim.wip_ids[0]
    await tablet.send("1", Inbound.START, start(wip))
    started = await tablet.expect("1", R.STARTED)
    assert started["event"] == "PROCESS_STARTED"
    assert started["wip_id"] == wip and started["process_id"] == 1 and started["batch_id"]
    assert "공정 1" in started["message_ko"]

    await tablet.send("1", Inbound.MEASUREMENT, {"name": "torque_nm", "value": 1.5, "unit": "Nm"})
    await tablet.send("1", Inbound.MEASUREMENT, {"measurements": {"voltage_v": 3.7}})
    await tablet.send("1", Inbound.COMPLETE, {"result": "PASS"})
    done = await tablet.expect("1", R.COMPLETED)
    assert done["event"] == "SEQUENCE_COMPLETE"
    assert done["result"] == "PASS" and done["wip_status"] == "IN_PROGRESS"
    assert done["can_convert"] is False and done["batch_id"] == started["batch_id"]

    [row] = ledger_rows(sim, wip)
    assert row["process_number"] == 1 and row["result"] == "PASS"
    assert row["measurements"]["torque_nm"] == 1.5 and row["measurements"]["voltage_v"] == 3.7
    assert row["measurements"]["cycle_time_ms"] >= 0
    assert [s["operator_id"] for s in sim.ledger()["starts"] if s["wip_id"] == wip] == [OPERATOR]


async def test_a_rejected_start_reaches_the_tablet_and_the_batch_does_not_run(
    tablet: Tablet, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[1]
    await tablet.send("2", Inbound.START, start(wip, 3))  # process 2 has no PASS yet
    error = await tablet.expect("2", R.ERROR)
    assert error["event"] == "SEQUENCE_ERROR"
    assert error["error"]["code"] == "PREREQUISITE_NOT_MET"
    assert error["error"]["message_ko"] == "이전 공정을 먼저 완료하세요"
    assert tablet.results("2", R.STARTED) == []

    await tablet.send("2", Inbound.MEASUREMENT, {"name": "x", "value": 1})
    refused = await tablet.expect(
        "2", R.ERROR, where=lambda p: p["error"]["code"] != "PREREQUISITE_NOT_MET"
    )
    assert refused["error"]["code"] == "NO_ACTIVE_BATCH"


async def run_process(
    tablet: Tablet, station: str, wip: str, process: int, **complete: Any
) -> None:
    await tablet.send(station, Inbound.START, start(wip, process, batch_id=f"{wip}-{process}"))
    await tablet.send(
        station,
        Inbound.MEASUREMENT,
        {"batch_id": f"{wip}-{process}", "name": "torque_nm", "value": 1.0 + process},
    )
    await tablet.send(
        station, Inbound.COMPLETE, {"batch_id": f"{wip}-{process}", "result": "PASS", **complete}
    )


async def test_offline_work_is_queued_and_delivered_once_when_the_mes_is_back(
    tablet: Tablet, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[2]
    sim.set_faults(mode="unavailable")
    await run_process(tablet, "1", wip, 1)
    started = await tablet.expect("1", R.STARTED)
    assert started["event"] == "PROCESS_STARTED_OFFLINE"
    assert "오프라인" in started["message_ko"]
    done = await tablet.expect("1", R.COMPLETED)
    assert done["event"] == "SEQUENCE_COMPLETE_OFFLINE" and done["result"] == "PASS"
    status = await tablet.status(
        "1", lambda s: s["outbox"]["pending"] == 2 and s["mes"] == "offline"
    )
    assert status["state"] == "idle"
    assert ledger_rows(sim, wip) == []

    sim.set_faults(mode="ok")
    synced = await tablet.expect("1", R.SYNCED, where=lambda p: p["action"] == "complete")
    assert synced["event"] == "SYNCED" and synced["wip_status"] == "IN_PROGRESS"
    await tablet.expect("1", R.SYNCED, where=lambda p: p["action"] == "start")
    await tablet.status("1", lambda s: s["outbox"]["pending_total"] == 0)
    [row] = ledger_rows(sim, wip)
    assert row["result"] == "PASS" and row["measurements"]["torque_nm"] == 2.0


@pytest.mark.parametrize(("result", "status"), [("PASS", "IN_PROGRESS"), ("FAIL", "FAILED")])
async def test_a_lost_answer_is_not_recorded_twice(
    tablet: Tablet, sim: MesSimulator, result: str, status: str
) -> None:
    # The MES records the 완공 but the answer never comes back; the retry asks the MES (trace)
    # first. A FAIL is the hard case: the MES would accept it a second time.
    wip = sim.wip_ids[3]
    sim.set_faults(mode="drop_response", path_contains="complete-process", times=1)
    await run_process(tablet, "1", wip, 1, result=result)
    await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
    await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE_OFFLINE"))
    synced = await tablet.expect("1", R.SYNCED)
    assert synced["action"] == "complete" and synced["wip_status"] == status
    assert [row["result"] for row in ledger_rows(sim, wip)] == [result]
    # The status came with the trace that found it: no scan after it (only the start's).
    assert sim.ledger()["requests_by_route"][SCAN] == 1


async def test_a_start_of_a_process_the_wip_already_passed_is_refused_to_the_tablet(
    tablet: Tablet, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[5]
    await run_process(tablet, "1", wip, 1)
    await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
    await tablet.send("2", Inbound.START, start(wip, 1))
    error = await tablet.expect("2", R.ERROR)
    assert error["error"]["code"] == "DUPLICATE_PASS" and error["wip_id"] == wip
    assert tablet.results("2", R.STARTED) == []
    starts = sum(n for r, n in sim.ledger()["requests_by_route"].items() if "start-process" in r)
    assert starts == 1  # the MES never saw the second start: nothing left open there


async def test_a_refused_queued_start_blocks_its_complete(
    tablet: Tablet, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[4]
    sim.set_faults(mode="unavailable")
    await run_process(tablet, "2", wip, 3)  # process 2 never passed: the MES will refuse
    await tablet.expect("2", R.COMPLETED, where=event("SEQUENCE_COMPLETE_OFFLINE"))
    sim.set_faults(mode="ok")
    refused = await tablet.expect("2", R.ERROR, where=lambda p: p.get("action") == "start")
    assert refused["error"]["code"] == "PREREQUISITE_NOT_MET"
    blocked = await tablet.expect("2", R.ERROR, where=lambda p: p.get("action") == "complete")
    assert blocked["error"]["code"] == "BLOCKED" and blocked["batch_id"] == f"{wip}-3"
    failed = await tablet.expect("2", R.SYNCED, where=event("SYNC_FAILED"))
    assert failed["error"]["code"] == "PREREQUISITE_NOT_MET"
    assert ledger_rows(sim, wip) == []
    assert [s for s in sim.ledger()["starts"] if s["wip_id"] == wip] == []


async def test_requests_of_one_wip_keep_their_order_while_wips_run_in_parallel(
    tablet: Tablet, sim: MesSimulator
) -> None:
    wips = sim.wip_ids[5:9]
    sim.set_faults(mode="unavailable")
    for process in (1, 2, 3):
        for station, wip in zip(("1", "2", "3", "1"), wips, strict=True):
            await run_process(tablet, station, wip, process)
    await tablet.status("1", lambda s: s["outbox"]["pending_total"] == 24)
    sim.set_faults(mode="ok")
    await tablet.status("1", lambda s: s["outbox"]["pending_total"] == 0, within=30)
    for wip in wips:
        rows = ledger_rows(sim, wip)
        assert [(r["process_number"], r["result"]) for r in rows] == [
            (1, "PASS"),
            (2, "PASS"),
            (3, "PASS"),
        ]
    assert not [p for p in tablet.results("1", R.ERROR) + tablet.results("2", R.ERROR)]


@pytest.mark.parametrize(
    ("station", "kind", "body", "code"),
    [
        ("1", Inbound.START, b"{not json", "INVALID_JSON"),
        (
            "1",
            Inbound.START,
            b'{"wip_id": "W", "process_id": "one", "operator_id": 2}',
            "INVALID_PAYLOAD",
        ),
        (
            "1",
            Inbound.START,
            b'{"wip_id": "W", "process_id": 1, "operator_id": 2, "shift": 3}',
            "INVALID_PAYLOAD",
        ),
        ("1", Inbound.MEASUREMENT, b"[1, 2]", "INVALID_PAYLOAD"),
        ("1", Inbound.MEASUREMENT, b'{"name": "x", "value": 1}', "NO_ACTIVE_BATCH"),
        ("1", Inbound.COMPLETE, b'{"result": "MAYBE"}', "INVALID_PAYLOAD"),
        (
            "1",
            Inbound.MEASUREMENT,
            b'{"name": "x", "value": "' + b"x" * 70000 + b'"}',
            "MESSAGE_TOO_LARGE",
        ),
    ],
    ids=["json", "type", "extra-field", "array", "no-batch", "result", "size"],
)
async def test_bad_input_gets_an_error_outcome_and_the_bridge_keeps_running(
    tablet: Tablet, sim: MesSimulator, station: str, kind: Inbound, body: bytes, code: str
) -> None:
    await tablet.send(station, kind, body)
    error = await tablet.expect(station, R.ERROR)
    assert error["error"]["code"] == code and error["error"]["message_ko"]
    wip = sim.wip_ids[9]
    await tablet.send("1", Inbound.START, start(wip))
    assert (await tablet.expect("1", R.STARTED))["wip_id"] == wip


async def test_a_full_outbox_refuses_new_batches_but_keeps_every_record(
    sim: MesSimulator, tmp_path: Path
) -> None:
    config = make_config(
        sim,
        tmp_path,
        outbox={"max_pending": 2, "retry_min_s": 0.05, "retry_max_s": 0.2, "probe_interval_s": 0.1},
    )
    wip, other = sim.wip_ids[10], sim.wip_ids[11]
    sim.set_faults(mode="unavailable")
    async with Tablet(config) as tablet, running(config):
        await run_process(tablet, "1", wip, 1)  # start + complete: two pending
        await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE_OFFLINE"))
        await tablet.send("2", Inbound.START, start(other))
        refused = await tablet.expect("2", R.ERROR)
        assert refused["error"]["code"] == "OUTBOX_FULL"
        assert tablet.results("2", R.STARTED) == []
        sim.set_faults(mode="ok")
        await tablet.expect("1", R.SYNCED, where=lambda p: p["action"] == "complete")
        await tablet.send("2", Inbound.START, start(other))
        await tablet.expect("2", R.STARTED, where=event("PROCESS_STARTED"))
    assert [row["result"] for row in ledger_rows(sim, wip)] == ["PASS"]


async def test_active_batches_survive_a_restart(sim: MesSimulator, tmp_path: Path) -> None:
    config = make_config(sim, tmp_path)
    wip = sim.wip_ids[12]
    async with Tablet(config) as tablet:
        async with running(config):
            await tablet.send("3", Inbound.START, start(wip, batch_id="b-restart"))
            await tablet.expect("3", R.STARTED, where=event("PROCESS_STARTED"))
            await tablet.send("3", Inbound.MEASUREMENT, {"name": "gap_mm", "value": 0.25})
            await tablet.status(
                "3", lambda s: [b["measurements"] for b in s["active_batches"]] == [1]
            )
        async with running(config):
            await tablet.send("3", Inbound.COMPLETE, {})
            done = await tablet.expect("3", R.COMPLETED)
            assert done["batch_id"] == "b-restart" and done["result"] == "PASS"
    [row] = ledger_rows(sim, wip)
    assert row["measurements"]["gap_mm"] == 0.25


async def test_messages_sent_while_the_bridge_is_down_arrive_after_it_restarts(
    sim: MesSimulator, tmp_path: Path
) -> None:
    config = make_config(sim, tmp_path)
    wip = sim.wip_ids[13]
    async with Tablet(config) as tablet:
        async with running(config):  # registers the persistent session and its subscriptions
            pass
        offline = await tablet.latest(
            tablet.topics.availability(config.bridge_id), lambda p: p == "offline"
        )
        await run_process(tablet, "1", wip, 1)
        async with running(config):
            await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
    assert offline is not None
    assert [row["result"] for row in ledger_rows(sim, wip)] == ["PASS"]


async def test_auto_convert_after_the_last_process_publishes_the_serial(
    sim: MesSimulator, tmp_path: Path
) -> None:
    stations = [{"id": "1"}, {"id": "2"}, {"id": "3", "auto_convert": True}]
    config = make_config(sim, tmp_path, stations=stations)
    wip = sim.wip_ids[14]
    async with Tablet(config) as tablet, running(config):
        for process in range(1, 7):
            await run_process(tablet, "3", wip, process)
        done = await tablet.expect("3", R.COMPLETED, where=lambda p: p["process_id"] == 6)
        assert done["wip_status"] == "COMPLETED" and done["can_convert"] is True
        serial = await tablet.expect("3", R.SERIAL)
        assert serial["event"] == "SERIAL_CREATED" and serial["serial_number"]
        assert serial["serial_number"] in serial["message"]
    [converted] = [w for w in sim.ledger()["wips"] if w["wip_id"] == wip]
    assert converted["status"] == "CONVERTED"
    assert converted["serial_number"] == serial["serial_number"]


async def test_a_tablet_converts_a_finished_wip(tablet: Tablet, sim: MesSimulator) -> None:
    wip = sim.wip_ids[15]
    for process in range(1, 7):
        await run_process(tablet, "2", wip, process)
    await tablet.expect("2", R.COMPLETED, where=lambda p: p["process_id"] == 6)
    assert tablet.results("2", R.SERIAL) == []  # station 2 does not convert by itself
    await tablet.send("2", Inbound.CONVERT, {"wip_id": wip, "operator_id": OPERATOR})
    serial = await tablet.expect("2", R.SERIAL)
    assert serial["event"] == "SERIAL_CREATED" and serial["serial_number"]

    await tablet.send("2", Inbound.CONVERT, {"wip_id": wip, "operator_id": OPERATOR})
    again = await tablet.expect("2", R.ERROR)
    assert again["error"]["code"] == "ALREADY_CONVERTED" and again["wip_id"] == wip


def torque(value: float) -> dict[str, Any]:
    return {"name": "torque_nm", "value": value, "unit": "Nm"}


async def test_without_a_stated_result_the_limits_decide(sim: MesSimulator, tmp_path: Path) -> None:
    limits = {
        1: {
            "torque_nm": {"min": 1.0, "max": 2.0, "unit": "Nm", "defect": "TORQUE_OOR"},
            "gap_mm": {"max": 0.5, "defect": "GAP_WIDE", "missing_defect": "GAP_NOT_MEASURED"},
        }
    }
    config = make_config(sim, tmp_path, stations=[{"id": "1", "limits": limits}])
    good, bad = sim.wip_ids[16], sim.wip_ids[17]
    async with Tablet(config) as tablet, running(config):
        await tablet.send("1", Inbound.START, start(good))
        await tablet.send(
            "1", Inbound.MEASUREMENT, {"name": "torque_nm", "value": 1.5, "unit": "Nm"}
        )
        await tablet.send("1", Inbound.MEASUREMENT, {"measurements": {"gap_mm": 0.2}})
        await tablet.send("1", Inbound.COMPLETE, {})
        passed = await tablet.expect("1", R.COMPLETED, where=lambda p: p["wip_id"] == good)
        assert passed["result"] == "PASS"

        await tablet.send("1", Inbound.START, start(bad))
        await tablet.send(
            "1", Inbound.MEASUREMENT, {"name": "torque_nm", "value": 2.5, "unit": "Nm"}
        )
        await tablet.send("1", Inbound.MEASUREMENT, {"measurements": {}, "defects": ["SCRATCH"]})
        await tablet.send("1", Inbound.COMPLETE, {"defects": ["SCRATCH"]})
        failed = await tablet.expect("1", R.COMPLETED, where=lambda p: p["wip_id"] == bad)
        assert failed["result"] == "FAIL" and failed["wip_status"] == "FAILED"
    [row] = ledger_rows(sim, bad)
    assert row["result"] == "FAIL"
    assert row["defects"] == ["SCRATCH", "TORQUE_OOR", "GAP_NOT_MEASURED"]


async def test_an_aborted_batch_ends_without_a_completion(
    tablet: Tablet, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[18]
    await tablet.send("1", Inbound.START, start(wip))
    await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
    await tablet.send("1", Inbound.ABORT, {"reason": "fixture jammed"})
    aborted = await tablet.expect("1", R.COMPLETED)
    assert aborted["event"] == "BATCH_ABORTED" and aborted["reason"] == "fixture jammed"
    await tablet.status("1", lambda s: s["state"] == "idle")
    await tablet.send("1", Inbound.START, start(wip))  # the WIP may start again
    await tablet.expect("1", R.STARTED, where=lambda p: p["batch_id"] != aborted["batch_id"])
    assert ledger_rows(sim, wip) == []


async def test_the_embedded_broker_needs_no_other_broker(sim: MesSimulator, tmp_path: Path) -> None:
    port = find_free_port()
    config = bridge_config(
        sim,
        tmp_path / "data",
        host="127.0.0.1",
        port=port,
        mqtt={"host": "127.0.0.1", "port": port, "embedded": True, "topic_prefix": "emb"},
    )
    wip = sim.wip_ids[19]
    async with running(config), Tablet(config) as tablet:
        await tablet.latest(tablet.topics.availability(config.bridge_id), lambda p: p == "online")
        await run_process(tablet, "1", wip, 1)
        done = await tablet.expect("1", R.COMPLETED)
        assert done["event"] == "SEQUENCE_COMPLETE"
    assert [row["result"] for row in ledger_rows(sim, wip)] == ["PASS"]


async def test_aborting_a_batch_cancels_its_unsent_start(sim: MesSimulator, tmp_path: Path) -> None:
    # One failure means offline, so station 1's queued answer comes after the dispatcher went
    # offline and station 2's start is queued without a try. (With the default of three, the
    # MES watch can show "offline" in the status before the dispatcher thinks so.)
    outbox = {
        "retry_min_s": 0.05,
        "retry_max_s": 0.5,
        "probe_interval_s": 0.2,
        "offline_after_failures": 1,
    }
    config = make_config(sim, tmp_path, outbox=outbox)
    first, second = sim.wip_ids[0], sim.wip_ids[1]
    sim.set_faults(mode="unavailable")
    async with Tablet(config) as tablet, running(config):
        await tablet.send("1", Inbound.START, start(first))
        await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED_OFFLINE"))
        await tablet.status("1", lambda s: s["mes"] == "offline")
        await tablet.send("2", Inbound.START, start(second))  # queued, never tried
        await tablet.expect("2", R.STARTED, where=event("PROCESS_STARTED_OFFLINE"))
        await tablet.send("2", Inbound.ABORT, {"reason": "wrong unit scanned"})
        await tablet.expect("2", R.COMPLETED, where=event("BATCH_ABORTED"))
        await tablet.status("2", lambda s: s["outbox"]["pending"] == 0)
        sim.set_faults(mode="ok")
        await tablet.expect("1", R.SYNCED)
    starts = {s["wip_id"] for s in sim.ledger()["starts"]}
    assert first in starts and second not in starts


async def test_a_wrong_mes_password_keeps_records_and_shows_in_the_status(
    sim: MesSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mes = {"url": sim.url, "username": "admin", "password": "not-the-password", "timeout_s": 2}
    config = make_config(sim, tmp_path, mes=mes)
    wip = sim.wip_ids[0]
    async with Tablet(config) as tablet, running(config):
        await tablet.send("1", Inbound.START, start(wip))
        queued = await tablet.expect("1", R.STARTED)
        assert queued["event"] == "PROCESS_STARTED_OFFLINE"
        assert queued["reason"]["code"] == "AUTH"
        assert "계정" in queued["reason"]["message_ko"]
        status = await tablet.status("1", lambda s: s["mes"] == "auth_failed")
        assert status["outbox"] == {"pending": 1, "pending_total": 1, "dead_letters": 0}
        published = json.dumps([payload for _, payload in tablet.seen], ensure_ascii=False)
    assert "not-the-password" not in published + caplog.text


@pytest.mark.skipif(not Path(MOSQUITTO_BINARY).exists(), reason="no mosquitto binary")
async def test_the_bridge_reconnects_when_the_broker_comes_back(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # Messages cross the outage both ways: the MES's answer to a complete comes while the broker
    # is down (the bridge queues the outcome), and a station publishes before the bridge is back
    # (the broker queues it in the bridge's session, kept on disk across the restart).
    port = find_free_port()
    broker = PrivateMosquitto(tmp_path / "broker", port)
    mqtt = {"host": "127.0.0.1", "port": port, "topic_prefix": "rc", "reconnect_max_s": 1}
    config = bridge_config(sim, tmp_path / "data", host="127.0.0.1", port=port, mqtt=mqtt)
    first, second = sim.wip_ids[:2]
    tablet_id = f"tablet-{uuid.uuid4().hex[:8]}"
    await broker.start()
    try:
        async with running(config):
            async with Tablet(config, identifier=tablet_id, clean_session=False) as tablet:
                await tablet.send("1", Inbound.START, start(first, batch_id="across"))
                await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
                sim.set_faults(mode="slow", delay_s=1.0, times=1)
                await tablet.send("1", Inbound.COMPLETE, {"batch_id": "across", "result": "PASS"})
                await tablet.status("1", lambda s: s["active_batches"] == [])
            await broker.stop()  # the MES answers while the broker is away
            await _until(lambda: bool(ledger_rows(sim, first)))
            await broker.start()
            async with Tablet(config, identifier=tablet_id, clean_session=False) as tablet:
                await tablet.send("2", Inbound.START, start(second))  # maybe before the bridge
                done = await tablet.expect("1", R.COMPLETED)
                assert done["event"] == "SEQUENCE_COMPLETE" and done["wip_id"] == first
                await tablet.expect("2", R.STARTED, where=event("PROCESS_STARTED"))
    finally:
        await broker.stop()
    assert [row["result"] for row in ledger_rows(sim, first)] == ["PASS"]


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(15):
        while not condition():  # noqa: ASYNC110 - the simulator's ledger has no event to wait on
            await asyncio.sleep(0.05)


async def test_a_slow_mes_answer_is_announced_as_queued_then_synced(
    sim: MesSimulator, tmp_path: Path
) -> None:
    outbox = {
        "retry_min_s": 0.05,
        "retry_max_s": 0.5,
        "probe_interval_s": 0.2,
        "answer_within_s": 0.3,
    }
    config = make_config(sim, tmp_path, outbox=outbox)
    wip = sim.wip_ids[0]
    sim.set_faults(mode="slow", delay_s=0.6)  # answers, but after the tablet stopped waiting
    async with Tablet(config) as tablet, running(config):
        await tablet.send("1", Inbound.START, start(wip))
        queued = await tablet.expect("1", R.STARTED)
        assert queued["event"] == "PROCESS_STARTED_OFFLINE"
        assert queued["reason"]["code"] == "TIMEOUT"
        assert queued["reason"]["message_ko"] == "서버 응답 지연"
        synced = await tablet.expect("1", R.SYNCED)
        assert synced["event"] == "SYNCED" and synced["action"] == "start"
        assert [p["event"] for p in tablet.results("1", R.STARTED)] == ["PROCESS_STARTED_OFFLINE"]


async def test_the_mes_rate_limit_slows_delivery_but_loses_nothing(
    tablet: Tablet, sim: MesSimulator
) -> None:
    # 4 requests a second at the most: the bridge's own pacing allows more, so the MES answers
    # 429 with Retry-After, and every request still arrives once.
    sim.set_faults(rate_limit_per_min=4, rate_limit_window_s=1.0)
    wips = sim.wip_ids[:3]
    for station, wip in zip(("1", "2", "3"), wips, strict=True):
        await run_process(tablet, station, wip, 1)
    for station in ("1", "2", "3"):
        await tablet.status(station, lambda s: s["outbox"]["pending_total"] == 0, within=60)
    assert sim.ledger()["rate_limited"] > 0
    for wip in wips:
        assert [row["result"] for row in ledger_rows(sim, wip)] == ["PASS"]


async def test_a_retained_command_is_not_replayed(sim: MesSimulator, tmp_path: Path) -> None:
    # A PLC flow that publishes with the retain flag would otherwise start the same batch again
    # every time the bridge subscribes.
    config = make_config(sim, tmp_path)
    async with Tablet(config) as tablet:
        await tablet.send("1", Inbound.START, start(sim.wip_ids[0]), retain=True)
        try:
            async with running(config):
                refused = await tablet.expect("1", R.ERROR)
                assert refused["error"]["code"] == "RETAINED"
                assert "retain" in refused["error"]["message_ko"]
                await tablet.status("1", lambda s: s["active_batches"] == [])
                await tablet.send("1", Inbound.START, start(sim.wip_ids[0]))  # not retained
                await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
        finally:
            await tablet.send("1", Inbound.START, b"", retain=True)  # clear it from the broker


async def test_clearing_a_retained_command_gets_no_answer(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # An empty retained message is the standard way to delete a retained one; the broker hands
    # it to every subscriber, and answering it with INVALID_JSON would be noise.
    config = make_config(sim, tmp_path)
    async with Tablet(config) as tablet, running(config):
        await tablet.send("1", Inbound.START, b"", retain=True)
        await tablet.send("1", Inbound.START, b"", retain=False)
        # Handled in order: once the start that follows is answered, the empty ones were too.
        await tablet.send("1", Inbound.START, start(sim.wip_ids[0]))
        await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
        assert tablet.results("1", R.ERROR) == []
