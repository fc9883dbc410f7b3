"""Delivery when the MES's answer is odd or lost, aimed at the window where each fault happens:
a 5xx after the change was made, a body that cannot be decoded, a lane that dies, an answer
that comes after the client's timeout, an MES whose /health lies, one lost answer among many.
The bridge runs over the real Mosquitto, the simulated MES over loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind
from bridge.faults import FaultPoint, Faults
from mes_sim import MesSimulator

from .harness import (
    MOSQUITTO,
    OPERATOR,
    Tablet,
    bridge_config,
    event,
    ledger_rows,
    mosquitto_running,
    running,
)

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")

R = ResultKind
FAST = {"retry_min_s": 0.05, "retry_max_s": 0.5, "probe_interval_s": 0.2, "settle_s": 0.3}


def make_config(sim: MesSimulator, tmp_path: Path, **overrides: Any) -> BridgeConfig:
    host, port = MOSQUITTO
    return bridge_config(sim, tmp_path / "data", host=host, port=port, **overrides)


async def run_process(tablet: Tablet, station: str, wip: str, result: str = "PASS") -> None:
    batch = f"{wip}-1"
    start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR, "batch_id": batch}
    await tablet.send(station, Inbound.START, start)
    await tablet.send(station, Inbound.COMPLETE, {"batch_id": batch, "result": result})


def results(sim: MesSimulator, wip: str) -> list[str]:
    return [row["result"] for row in ledger_rows(sim, wip)]


def raising(error: BaseException) -> Callable[[], None]:
    def action() -> None:
        raise error

    return action


# -- 3: a 5xx is "maybe applied" -----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 504])
@pytest.mark.parametrize(("result", "wip_status"), [("PASS", "IN_PROGRESS"), ("FAIL", "FAILED")])
async def test_a_change_answered_with_a_5xx_is_delivered_once(
    sim: MesSimulator, tmp_path: Path, status: int, result: str, wip_status: str
) -> None:
    # The MES (or its proxy) applied the 완공 and answered 5xx. A FAIL must not be recorded
    # twice; a PASS the MES already holds is delivered, not dead-lettered as DUPLICATE_PASS.
    config = make_config(sim, tmp_path)
    wip = sim.wip_ids[0]
    sim.set_faults(
        mode="apply_then_error", error_status=status, path_contains="complete-process", times=1
    )
    async with Tablet(config) as tablet, running(config):
        await run_process(tablet, "1", wip, result)
        synced = await tablet.expect("1", R.SYNCED)
        assert synced["event"] == "SYNCED" and synced["action"] == "complete"
        assert synced["wip_status"] == wip_status
        assert tablet.results("1", R.ERROR) == []
    assert results(sim, wip) == [result]


# -- 5: unexpected errors are classified and retried; a dead lane is restarted ---------------------


async def test_an_answer_that_cannot_be_decoded_does_not_stop_the_wip(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # A proxy's corrupt gzip body (httpx.DecodingError) after the MES recorded the FAIL.
    config = make_config(sim, tmp_path)
    wip = sim.wip_ids[1]
    sim.set_faults(mode="apply_then_garble", path_contains="complete-process", times=1)
    async with Tablet(config) as tablet, running(config):
        await run_process(tablet, "1", wip, "FAIL")
        synced = await tablet.expect("1", R.SYNCED)
        assert synced["action"] == "complete" and synced["wip_status"] == "FAILED"
        await run_process(tablet, "1", wip, "PASS")  # the WIP goes on
        await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
    assert results(sim, wip) == ["FAIL", "PASS"]


async def test_an_unexpected_error_after_the_request_reached_the_mes_is_maybe_applied(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # Aimed at the window between the MES applying a request and its answer being read.
    config = make_config(sim, tmp_path)
    wip = sim.wip_ids[2]
    faults = Faults()
    async with Tablet(config) as tablet, running(config, faults=faults):
        start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR, "batch_id": "b1"}
        await tablet.send("1", Inbound.START, start)
        await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
        # The next request is the 완공 (the token and the WIP's id are known by now).
        faults.arm(FaultPoint.AFTER_SEND, raising(RuntimeError("a bug after sending")))
        await tablet.send("1", Inbound.COMPLETE, {"batch_id": "b1", "result": "FAIL"})
        synced = await tablet.expect("1", R.SYNCED)
        assert synced["action"] == "complete" and synced["wip_status"] == "FAILED"
    assert results(sim, wip) == ["FAIL"]


async def test_a_lane_that_dies_is_restarted(sim: MesSimulator, tmp_path: Path) -> None:
    config = make_config(sim, tmp_path)
    wip = sim.wip_ids[3]
    faults = Faults()
    faults.arm(FaultPoint.LANE_START, raising(RuntimeError("a bug in the lane")))
    async with Tablet(config) as tablet, running(config, faults=faults):
        # One message only: nothing but the dispatcher would ever start that lane again.
        start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
        await tablet.send("1", Inbound.START, start)
        await tablet.expect("1", R.STARTED)
        await tablet.status("1", lambda s: s["outbox"]["pending_total"] == 0)
    assert [s["wip_id"] for s in sim.ledger()["starts"]] == [wip]


async def slow_request_done(sim: MesSimulator) -> None:
    """Until the request the simulator held back has landed (the simulator offers no event)."""
    async with asyncio.timeout(15):
        while sim.ledger()["slow_finished"] < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# -- 11: an unknown outcome waits until the MES cannot still be at it ------------------------------


async def test_a_completion_the_mes_applies_after_the_timeout_is_sent_once(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # The MES takes longer than the client waits, then records the FAIL anyway. Asking the
    # trace before it is done would find nothing, and a resend would be a second FAIL.
    config = make_config(
        sim,
        tmp_path,
        mes={"url": sim.url, "username": "admin", "password": "admin-pass", "timeout_s": 0.5},
        outbox={**FAST, "settle_s": 4.0},
    )
    slow_wip, other_wip = sim.wip_ids[4], sim.wip_ids[5]
    async with Tablet(config) as tablet, running(config):
        await tablet.send(
            "1", Inbound.START, {"wip_id": slow_wip, "process_id": 1, "operator_id": OPERATOR}
        )
        await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
        sim.set_faults(mode="slow", delay_s=1.5, path_contains="complete-process", times=1)
        await tablet.send("1", Inbound.COMPLETE, {"result": "FAIL"})
        await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE_OFFLINE"))
        # Meanwhile that WIP's lane is held, and the others go on.
        await run_process(tablet, "2", other_wip)
        await tablet.expect("2", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
        assert tablet.results("1", R.SYNCED) == []
        synced = await tablet.expect("1", R.SYNCED)
        assert synced["action"] == "complete" and synced["wip_status"] == "FAILED"
    await slow_request_done(sim)
    assert results(sim, slow_wip) == ["FAIL"]
    assert results(sim, other_wip) == ["PASS"]


async def test_a_request_under_way_when_the_bridge_stopped_waits_to_settle_after_restart(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # Stopped while the MES works on a FAIL that it records a moment after the bridge is back.
    config = make_config(sim, tmp_path, outbox={**FAST, "settle_s": 3.0})
    wip = sim.wip_ids[10]

    def completions_received() -> int:
        routes = sim.ledger()["requests_by_route"]
        return sum(n for route, n in routes.items() if route.endswith("complete-process"))

    async with Tablet(config) as tablet:
        async with running(config):
            start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
            await tablet.send("1", Inbound.START, start)
            await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
            sim.set_faults(mode="slow", delay_s=1.5, path_contains="complete-process", times=1)
            await tablet.send("1", Inbound.COMPLETE, {"result": "FAIL"})
            async with asyncio.timeout(15):
                while completions_received() == 0:  # noqa: ASYNC110 (no event to await)
                    await asyncio.sleep(0.02)
        async with running(config):
            done = await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
            assert done["wip_status"] == "FAILED"
    await slow_request_done(sim)
    assert results(sim, wip) == ["FAIL"]


# -- 9: a recovery is confirmed by a real request, and released at the MES's pace -----------------


async def test_lanes_wait_while_the_database_is_down_even_though_health_says_200(
    sim: MesSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.engine.dispatcher")
    config = make_config(sim, tmp_path)
    # The status's idle check asks /health often: its 200 must not make the MES look back.
    outbox = config.outbox.model_copy(update={"idle_check_s": 0.1})
    config = config.model_copy(update={"outbox": outbox})
    first, *waiting = sim.wip_ids[6:9]

    def knocked() -> int:  # what the lanes ask; the probe reads a trace
        routes = sim.ledger()["requests_by_route"]
        return sum(n for route, n in routes.items() if route.endswith(("/scan", "start-process")))

    def requests() -> int:
        return int(sim.ledger()["requests"])

    async with Tablet(config) as tablet, running(config):
        start = {"wip_id": first, "process_id": 1, "operator_id": OPERATOR}
        await tablet.send("3", Inbound.START, start)  # logged in, process ids known
        await tablet.expect("3", R.STARTED, where=event("PROCESS_STARTED"))
        sim.set_faults(mode="database_down")
        for station, wip in zip(("1", "2"), waiting, strict=True):
            await tablet.send(station, Inbound.START, {**start, "wip_id": wip})
        await tablet.status("1", lambda s: s["mes"] == "offline")
        before, probed = knocked(), requests()
        async with asyncio.timeout(15):
            while requests() < probed + 5:  # noqa: ASYNC110 (the simulator offers no event)
                await asyncio.sleep(0.05)
        assert knocked() == before  # five probes later, no lane has knocked on its own
        status = tablet.topics.status("1")
        assert [p["mes"] for t, p in tablet.seen if t == status][-1] == "offline"
        assert sim.ledger()["requests_by_route"].get("GET /health", 0) > 0, "no idle check"
        sim.set_faults(mode="ok")
        for station in ("1", "2"):
            await tablet.expect(station, R.SYNCED)
    for wip in waiting:
        assert len([s for s in sim.ledger()["starts"] if s["wip_id"] == wip]) == 1
    # Let go one at a time at the MES's pace (a lower bound: a sleep never ends early).
    released = [r.created for r in caplog.records if r.getMessage().endswith(" may go")]
    assert len(released) == 2
    pace_s = config.mes.rate_window_s / config.mes.rate_limit
    assert released[1] - released[0] >= pace_s * 0.9


# -- 12: one lost answer is not an outage ----------------------------------------------------------


async def test_one_lost_answer_does_not_take_the_mes_offline(
    sim: MesSimulator, tmp_path: Path
) -> None:
    config = make_config(sim, tmp_path)
    wip = sim.wip_ids[9]
    faults = Faults()
    async with Tablet(config) as tablet, running(config, faults=faults):
        start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR, "batch_id": "b1"}
        await tablet.send("1", Inbound.START, start)
        await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
        faults.arm(FaultPoint.AFTER_SEND, raising(httpx.ReadError("connection reset by peer")))
        await tablet.send("1", Inbound.COMPLETE, {"batch_id": "b1", "result": "PASS"})
        await tablet.expect("1", R.SYNCED)
        await tablet.status("1", lambda s: s["mes"] == "online")
        mes_states = [p["mes"] for t, p in tablet.seen if t == tablet.topics.status("1")]
        assert "offline" not in mes_states
    assert results(sim, wip) == ["PASS"]
