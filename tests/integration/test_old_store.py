"""A data directory an older bridge left behind, opened by this one: a format-1 store (batches
under their batch_id, rows from before uids existed) is migrated in place and served, and a
request queued before the request-size bound existed is dead-lettered, not retried for ever
against an MES that closes the connection on it."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import diskcache
import pytest

from bridge.adapters.store import FORMAT_KEY, SETTINGS, Store
from bridge.commands.admin import change_stopped_bridge, plan_drop, plan_end_batch, show_outbox
from bridge.config import BridgeConfig
from bridge.core.domain import Result, format_utc
from bridge.core.topics import Inbound, ResultKind
from bridge.mes import CompleteProcess, StartProcess
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

R = ResultKind
STARTED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def make_config(sim: MesSimulator, tmp_path: Path, **overrides: Any) -> BridgeConfig:
    host, port = MOSQUITTO
    return bridge_config(sim, tmp_path / "data", host=host, port=port, **overrides)


def write_rows(config: BridgeConfig, rows: dict[str, str]) -> None:
    """Rows as an older bridge wrote them, with diskcache directly."""
    with diskcache.Cache(str(config.store_dir), **SETTINGS) as cache:
        for key, value in rows.items():
            cache.set(key, value)


def stored(config: BridgeConfig) -> dict[str, str]:
    with diskcache.Cache(str(config.store_dir), **SETTINGS) as cache:
        return {key: cache.get(key) for key in cache.iterkeys()}


def old_batch(batch_id: str, station: str, wip: str) -> str:
    """A batch row of format 1 from before uids existed."""
    return json.dumps(
        {
            "batch_id": batch_id,
            "station_id": station,
            "wip_id": wip,
            "process": 1,
            "operator_id": OPERATOR,
            "equipment_id": None,
            "started_at": format_utc(STARTED),
            "defects": [],
            "clock_note": None,
        }
    )


def old_entry(seq: int, request: StartProcess | CompleteProcess, batch_id: str | None) -> str:
    """An outbox entry of format 1 from before uids existed (no batch_uid)."""
    return json.dumps(
        {
            "seq": seq,
            "request": json.loads(request.model_dump_json()),
            "station_id": "1",
            "batch_id": batch_id,
            "enqueued_at": format_utc(STARTED),
        }
    )


def start_of(wip: str) -> StartProcess:
    return StartProcess(wip_id=wip, process=1, operator_id=OPERATOR, started_at=STARTED)


def format_1(wip: str) -> dict[str, str]:
    """Station 1 runs batch B1 of `wip` with a torque gathered; its 착공 was never sent."""
    return {
        FORMAT_KEY: "1",
        "meta/next_seq": "2",
        "batch/B1": old_batch("B1", "1", wip),
        "measurement/B1/torque_nm": '{"value":1.5,"unit":"Nm"}',
        "outbox/000000000001": old_entry(1, start_of(wip), "B1"),
    }


async def test_a_format_1_store_is_migrated_in_place(sim: MesSimulator, tmp_path: Path) -> None:
    config = make_config(sim, tmp_path)
    wip = sim.wip_ids[0]
    write_rows(config, format_1(wip))
    store = Store(config.store_dir)
    try:
        await store.open()
    finally:
        await store.close()
    after = stored(config)
    assert set(after) == {
        FORMAT_KEY,
        "meta/next_seq",
        "batch/legacy-B1",
        "measurement/legacy-B1/torque_nm",
        "outbox/000000000001",
    }
    assert after[FORMAT_KEY] == "2"
    assert json.loads(after["batch/legacy-B1"])["uid"] == "legacy-B1"
    assert json.loads(after["outbox/000000000001"])["batch_uid"] == "legacy-B1"


async def test_ending_a_migrated_batch_drops_its_start_never_sent(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # Found by the batch's uid: only an entry that has the batch's uid goes with it.
    config = make_config(sim, tmp_path)
    write_rows(config, format_1(sim.wip_ids[0]))
    change = await change_stopped_bridge(
        config, lambda batches, outbox: plan_end_batch(batches, outbox, "B1")
    )
    assert [batch.uid for batch in change.dropped_batches] == ["legacy-B1"]
    assert [entry.seq for entry in change.dropped_entries] == [1]
    assert set(stored(config)) == {FORMAT_KEY, "meta/next_seq"}


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
async def test_the_bridge_serves_a_migrated_batch_beside_another_stations_of_the_same_id(
    sim: MesSimulator, tmp_path: Path
) -> None:
    config = make_config(sim, tmp_path)
    wip, other = sim.wip_ids[0], sim.wip_ids[1]
    write_rows(config, format_1(wip))
    async with Tablet(config) as tablet, running(config):
        await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))  # the old 착공
        start = {"wip_id": other, "process_id": 1, "operator_id": OPERATOR, "batch_id": "B1"}
        await tablet.send("2", Inbound.START, start)
        theirs = await tablet.expect("2", R.STARTED, where=event("PROCESS_STARTED"))
        assert theirs["batch_id"] == "B1" and theirs["wip_id"] == other
        await tablet.send("1", Inbound.START, {**start, "wip_id": sim.wip_ids[2]})
        refused = await tablet.expect("1", R.ERROR)
        assert refused["error"]["code"] == "DUPLICATE_BATCH"  # its own B1 runs
        await tablet.send("1", Inbound.COMPLETE, {"batch_id": "B1", "result": "PASS"})
        await tablet.send("2", Inbound.COMPLETE, {"batch_id": "B1", "result": "FAIL"})
        mine = await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
        assert (mine["wip_id"], mine["result"]) == (wip, "PASS")
        done = await tablet.expect("2", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
        assert (done["wip_id"], done["result"]) == (other, "FAIL")
    [row] = ledger_rows(sim, wip)
    assert row["result"] == "PASS" and row["measurements"]["torque_nm"] == 1.5
    [row] = ledger_rows(sim, other)
    assert row["result"] == "FAIL" and "torque_nm" not in row["measurements"]


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
async def test_an_oversized_request_from_an_old_outbox_is_a_dead_letter_never_sent(
    sim: MesSimulator, tmp_path: Path
) -> None:
    config = make_config(sim, tmp_path, batches={"max_request_bytes": 4096})
    sim.set_faults(max_body_bytes=4096)  # as the deployed MES: the connection closed, no answer
    huge, small = sim.wip_ids[0], sim.wip_ids[1]
    # Queued before the bound existed: a 완공 far larger than the MES takes in.
    complete = CompleteProcess(
        wip_id=huge,
        process=1,
        operator_id=OPERATOR,
        result=Result.PASS,
        started_at=STARTED,
        completed_at=STARTED + timedelta(minutes=1),
        measurements={f"m{n:04}": n for n in range(1000)},
    )
    write_rows(
        config,
        {
            FORMAT_KEY: "1",
            "meta/next_seq": "3",
            "outbox/000000000001": old_entry(1, complete, "B1"),
            "outbox/000000000002": old_entry(2, start_of(small), "B2"),
        },
    )
    async with Tablet(config) as tablet, running(config):
        refused = await tablet.expect("1", R.ERROR)
        assert refused["action"] == "complete" and refused["wip_id"] == huge
        assert refused["error"]["code"] == "TOO_LARGE_TO_SEND"
        assert "batches.max_request_bytes is 4096" in refused["error"]["detail"]
        await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))  # the other WIP's
        await tablet.status("1", lambda s: s["outbox"] == {**s["outbox"], "dead_letters": 1})
    assert sim.ledger()["bodies_refused"] == 0  # never sent, so never cut off
    assert ledger_rows(sim, huge) == []

    out = io.StringIO()
    show_outbox(config, out=out, as_json=False)
    listed = out.getvalue()
    assert "0 pending, 1 dead-lettered" in listed
    assert f"#1 complete process 1 {huge}" in listed and "attempts 0" in listed
    assert "[TOO_LARGE_TO_SEND: the request is" in listed
    dropped = await change_stopped_bridge(config, lambda _, outbox: plan_drop(outbox, [1]))
    assert [entry.seq for entry in dropped.dropped_entries] == [1]
    assert not any(key.startswith("outbox/") for key in stored(config))
