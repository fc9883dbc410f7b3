"""Over a real Mosquitto: a message the broker delivers again (its DUP flag, its packet id) is
recognised, and a broker that lost the bridge's session is noticed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiomqtt
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


@pytest.fixture
def config(sim: MesSimulator, tmp_path: Path) -> BridgeConfig:
    host, port = MOSQUITTO
    return bridge_config(sim, tmp_path / "data", host=host, port=port)


def _drop_the_link() -> None:
    raise aiomqtt.MqttError("the link dropped (test)")


class _Logged(logging.Handler):
    """Set when a record with this text is logged (the event a test waits for)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_a_link_dropped_between_commit_and_ack_does_not_apply_messages_twice(
    config: BridgeConfig, sim: MesSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first, second = sim.wip_ids[:2]
    async with Tablet(config) as tablet:
        async with running(config):
            await tablet.send("1", Inbound.START, _start(first))
            await tablet.expect("1", ResultKind.STARTED, where=event("PROCESS_STARTED"))
        # While the bridge is away the station goes on; none of it names its batch.
        await tablet.send("1", Inbound.MEASUREMENT, {"name": "torque", "value": 1.5})
        await tablet.send("1", Inbound.COMPLETE, {"result": "PASS"})
        await tablet.send("1", Inbound.START, _start(second))
        faults = Faults()
        faults.arm(FaultPoint.AFTER_COMMIT, _drop_the_link)  # once: the first group's acks
        # The outcomes of the first handling may reach the tablet before the broker's DUPs are
        # handled after the reconnect: wait for that too.
        redelivered = _Logged("delivered again: answered as before")
        logging.getLogger("bridge.engine.lifecycle").addHandler(redelivered)
        async with running(config, faults=faults):
            await tablet.expect(
                "1",
                ResultKind.STARTED,
                where=lambda p: p["event"] == "PROCESS_STARTED" and p["wip_id"] == second,
            )
            # A status that names the second WIP: one sent at connect time, before the queued
            # messages were handled, would show the first batch still open.
            status = await tablet.status(
                "1",
                lambda s: (
                    s["outbox"]["pending_total"] == 0
                    and [b["wip_id"] for b in s["active_batches"]] == [second]
                ),
            )
            try:
                await asyncio.wait_for(redelivered.seen.wait(), 15)  # Mosquitto's DUP was seen
            finally:
                logging.getLogger("bridge.engine.lifecycle").removeHandler(redelivered)
    assert [(b["wip_id"], b["measurements"]) for b in status["active_batches"]] == [(second, 0)]
    assert [(r["result"], r["measurements"]["torque"]) for r in ledger_rows(sim, first)] == [
        ("PASS", 1.5)
    ]
    assert ledger_rows(sim, second) == []


async def test_a_broker_that_lost_the_bridges_session_is_a_warning_and_in_the_status(
    config: BridgeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with Tablet(config) as tablet, running(config):
        await tablet.status("1", lambda s: s["broker_session"] == "new")
        # A client that takes the bridge's id with a clean session makes the broker drop the
        # bridge's session, as a broker restarted without persistence would.
        host, port = MOSQUITTO
        async with aiomqtt.Client(host, port, identifier=config.client_id, clean_session=True):
            pass
        await tablet.status("1", lambda s: s["broker_session"] == "lost", within=30)
    assert "no session for this bridge any more" in caplog.text


async def test_a_reconnect_to_a_broker_that_kept_the_session_is_resumed(
    config: BridgeConfig,
) -> None:
    async with Tablet(config) as tablet:
        async with running(config):
            await tablet.status("1", lambda s: s["broker_session"] == "new")
        async with running(config):
            await tablet.status("1", lambda s: s["broker_session"] == "resumed")


def _start(wip: str) -> dict[str, object]:
    return {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
