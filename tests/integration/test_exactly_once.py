"""Faults aimed at the windows where two sides disagree, through the engine's seams: a real store,
the simulated MES over loopback HTTP, and `Lifecycle.handle` standing in for the MQTT link."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.adapters.store import Store, StoreError, read_directory
from bridge.config import BridgeConfig
from bridge.core.batches import Batch
from bridge.core.outbox import Change, load_state
from bridge.core.topics import Inbound
from bridge.engine.state import State
from bridge.faults import FaultPoint, Faults
from mes_sim import MesSimulator

from .engine import Published, Station, again, engine
from .harness import OPERATOR, bridge_config, ledger_rows


@pytest.fixture
def config(sim: MesSimulator, tmp_path: Path) -> BridgeConfig:
    return bridge_config(sim, tmp_path / "data", host="127.0.0.1", port=1)


def start(wip: str, process: int = 1, **extra: object) -> dict[str, object]:
    return {"wip_id": wip, "process_id": process, "operator_id": OPERATOR, **extra}


async def test_a_group_redelivered_after_a_crash_is_not_applied_to_the_next_batch(
    config: BridgeConfig, sim: MesSimulator
) -> None:
    # The crash lands after the commit and before the acks: the broker sends the whole group
    # again. None of these messages names its batch, so applied again they would go to whatever
    # batch is active then: W2's.
    first, second = sim.wip_ids[:2]
    station = Station(config, "1")
    group = [
        station.message(Inbound.MEASUREMENT, {"name": "torque", "value": 1.5}),
        station.message(Inbound.COMPLETE, {"result": "PASS"}),
        station.message(Inbound.START, start(second)),
    ]
    async with engine(config) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(first))])
        await bridge.lifecycle.handle(group)
        await bridge.idle()
    async with engine(config) as bridge:  # the restart: the broker delivers the group again
        await bridge.lifecycle.handle([again(message) for message in group])
        await bridge.idle()
        active = list(bridge.state.batches.values())
    assert [(b.wip_id, b.measurements) for b in active] == [(second, {})]
    assert [(r["result"], r["measurements"]["torque"]) for r in ledger_rows(sim, first)] == [
        ("PASS", 1.5)
    ]
    assert ledger_rows(sim, second) == []


async def test_a_redelivered_message_gets_the_answer_it_got_before(config: BridgeConfig) -> None:
    station = Station(config, "1")
    stray = station.message(Inbound.MEASUREMENT, {"name": "torque", "value": 1.5})
    async with engine(config) as bridge:
        await bridge.lifecycle.handle([stray])  # no active batch: refused
        refusal = bridge.published.messages[-1]
    published = Published()
    async with engine(config, published=published) as bridge:
        await bridge.lifecycle.handle([again(stray)])
    assert published.messages == [refusal]
    assert refusal[1]["error"]["code"] == "NO_ACTIVE_BATCH"


async def test_a_new_message_that_reuses_a_packet_id_is_applied(
    config: BridgeConfig, sim: MesSimulator
) -> None:
    # Packet ids are reused; only the broker's DUP flag makes a message a redelivery. A gauge
    # that repeats a value gets a message identical to an older one in all but that flag.
    wip = sim.wip_ids[0]
    station = Station(config, "1")
    reading = station.message(Inbound.MEASUREMENT, {"name": "count", "value": 1})
    async with engine(config) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(wip))])
        await bridge.lifecycle.handle([reading])
        await bridge.lifecycle.handle([station.message(Inbound.COMPLETE, {"result": "PASS"})])
        await bridge.lifecycle.handle([station.message(Inbound.START, start(wip, 2))])
        await bridge.lifecycle.handle([reading])  # the same id, topic and payload; not DUP
        batch = next(iter(bridge.state.batches.values()))
    assert (batch.process, list(batch.measurements)) == (2, ["count"])


async def test_a_commit_cancelled_midway_is_in_memory_as_it_is_on_disk(
    config: BridgeConfig, tmp_path: Path
) -> None:
    # SIGTERM or a broken broker link cancels the group while its commit is being written: the
    # worker thread finishes it anyway, so memory must keep it too.
    faults = Faults()
    faults.arm(FaultPoint.INSIDE_COMMIT, lambda: _cancel_me())
    store = Store(config.store_dir)
    state = State(config, store=store, publish=Published(), clock=_now, faults=faults)
    await state.load()
    batch = _a_batch()

    async def open_it() -> None:
        async with state.transaction() as tx:
            tx.stage(Change(batches=[batch]))

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(open_it())
    await store.close()
    on_disk, _ = load_state(read_directory(config.store_dir))
    assert list(on_disk) == ["U1"]  # batches are kept by uid
    assert list(state.batches) == ["U1"]


async def test_a_failed_commit_leaves_memory_as_it_was(config: BridgeConfig) -> None:
    store = Store(config.store_dir)
    state = State(config, store=store, publish=Published(), clock=_now)
    await state.load()
    batch = _a_batch()
    await store.close()  # every commit now fails
    with pytest.raises(StoreError):
        async with state.transaction() as tx:
            tx.stage(Change(batches=[batch]))
    assert state.batches == {}


async def test_aborting_a_rework_that_reused_a_batch_id_keeps_the_earlier_record(
    config: BridgeConfig, sim: MesSimulator
) -> None:
    # The MES is away: the first batch's FAIL waits untried. The rework reuses the batch id
    # (ids are unique among active batches only) and is aborted: only its own 착공 may go.
    wip = sim.wip_ids[0]
    station = Station(config, "1")
    async with engine(config) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(wip, batch_id="X"))])
        await bridge.idle()
        sim.set_faults(mode="unavailable")
        await bridge.lifecycle.handle([station.message(Inbound.START, start("W-NONE"))])
        await bridge.published.until(lambda: bridge.state.mes_state == "offline")
        await bridge.lifecycle.handle(
            [station.message(Inbound.COMPLETE, {"batch_id": "X", "result": "FAIL"})]
        )
        await bridge.lifecycle.handle(
            [
                station.message(Inbound.START, start(wip, batch_id="X")),
                station.message(Inbound.ABORT, {"batch_id": "X", "reason": "wrong part"}),
            ]
        )
        waiting = [(e.action, e.wip_id) for e in bridge.state.outbox.pending()]
        assert ("complete", wip) in waiting and waiting.count(("start", wip)) == 0
        sim.set_faults(mode="ok")
        await bridge.published.until(
            lambda: any(r["result"] == "FAIL" for r in ledger_rows(sim, wip)), within=30
        )
    assert [row["result"] for row in ledger_rows(sim, wip)] == ["FAIL"]


async def test_a_tablet_clock_minutes_fast_still_completes_and_says_so(
    config: BridgeConfig, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[0]
    station = Station(config, "1")
    fast = (_now() + timedelta(minutes=2)).isoformat()
    async with engine(config) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(wip, started_at=fast))])
        await bridge.lifecycle.handle([station.message(Inbound.COMPLETE, {"result": "PASS"})])
        await bridge.idle()
        outcomes = [p for t, p in bridge.published.messages if "/result/" in t]
    assert [row["result"] for row in ledger_rows(sim, wip)] == ["PASS"]
    started = next(p for p in outcomes if p["event"] == "PROCESS_STARTED")
    assert "station clock ahead by 120 s" in started["note"]
    assert "station clock ahead" in ledger_rows(sim, wip)[0]["notes"]


def _a_batch() -> Batch:
    return Batch(
        batch_id="B1",
        uid="U1",
        station_id="1",
        wip_id="W",
        process=1,
        operator_id=2,
        started_at=_now(),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _cancel_me() -> None:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
