"""Hostile input through a real broker (Mosquitto) into a running bridge with the simulated MES:
every message is answered as docs/topics.md says, the bridge still serves a valid batch
afterwards, and nothing of a refused message reaches the MES."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind, Topics
from mes_sim import MesSimulator

from ..hostile import CORPUS, ODD_WIPS
from .harness import MOSQUITTO, OPERATOR, Tablet, bridge_config, event, mosquitto_running, running

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")

R = ResultKind
STATIONS = [
    {"id": "1", "processes": [1, 2]},
    {"id": "2", "processes": [1]},
    {"id": "6", "processes": [6], "auto_convert": True},
]


def make_config(sim: MesSimulator, tmp_path: Path, **overrides: Any) -> BridgeConfig:
    host, port = MOSQUITTO
    return bridge_config(
        sim, tmp_path / "data", host=host, port=port, stations=STATIONS, **overrides
    )


@pytest.fixture
async def tablet(sim: MesSimulator, tmp_path: Path) -> AsyncIterator[Tablet]:
    config = make_config(sim, tmp_path, batches={"max_measurements": 3})
    async with Tablet(config) as tablet, running(config):
        yield tablet


def start(wip: str, process: int = 1, **extra: Any) -> dict[str, Any]:
    return {"wip_id": wip, "process_id": process, "operator_id": OPERATOR, **extra}


async def test_the_hostile_corpus_is_answered_and_a_valid_batch_still_goes_through(
    tablet: Tablet, sim: MesSimulator
) -> None:
    # An empty message is how a retained one is cleared: it is ignored, not answered.
    answered = [(kind, raw, code) for kind, raw, code in CORPUS if raw]
    for kind, raw, _ in answered:
        await tablet.send("1", kind, raw)
    await tablet.until(lambda: len(tablet.results("1", R.ERROR)) >= len(answered), within=30)
    codes = [error["error"]["code"] for error in tablet.results("1", R.ERROR)]
    assert codes == [str(code) for _, _, code in answered]
    assert all(error["error"]["detail"] for error in tablet.results("1", R.ERROR))

    # Odd but printable WIP ids are sent as one quoted path segment: the MES knows no such WIP.
    for wip in ODD_WIPS:
        await tablet.send("2", Inbound.START, start(wip))
        error = await tablet.expect("2", R.ERROR, where=lambda p, wip=wip: p["wip_id"] == wip)
        assert error["error"]["code"] == "WIP_NOT_FOUND"

    wip = sim.wip_ids[0]
    await tablet.send("1", Inbound.START, start(wip))
    await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
    await tablet.send("1", Inbound.MEASUREMENT, {"measurements": {"a": 1, "b": 2.5}})
    await tablet.send("1", Inbound.COMPLETE, {"result": "PASS"})
    done = await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
    assert done["wip_id"] == wip and done["result"] == "PASS"

    ledger = sim.ledger()
    assert [(row["wip_id"], row["process_number"]) for row in ledger["history"]] == [(wip, 1)]
    assert [row["wip_id"] for row in ledger["starts"]] == [wip]
    assert not [w for w in ledger["wips"] if w["wip_id"] != wip and w["status"] != "CREATED"]


async def test_a_measurement_past_the_bound_is_refused_and_nothing_of_it_is_recorded(
    tablet: Tablet, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[1]
    await tablet.send("1", Inbound.START, start(wip))
    await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
    await tablet.send("1", Inbound.MEASUREMENT, {"measurements": {"a": 1, "b": 2}})
    await tablet.send(
        "1", Inbound.MEASUREMENT, {"measurements": {"c": 3, "d": 4}, "defects": ["X"]}
    )
    refused = await tablet.expect("1", R.ERROR)
    assert refused["error"]["code"] == "TOO_MANY_MEASUREMENTS"
    assert refused["wip_id"] == wip and refused["batch_id"]
    await tablet.send("1", Inbound.MEASUREMENT, {"name": "c", "value": 3})
    await tablet.send("1", Inbound.COMPLETE, {})
    done = await tablet.expect("1", R.COMPLETED, where=event("SEQUENCE_COMPLETE"))
    assert done["result"] == "PASS"  # the refused message's defect X was not kept
    (row,) = [row for row in sim.ledger()["history"] if row["wip_id"] == wip]
    assert set(row["measurements"]) == {"a", "b", "c", "cycle_time_ms"}
    assert row["defects"] == []


async def test_only_a_station_that_finishes_wips_may_convert(
    tablet: Tablet, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[2]
    await tablet.send("1", Inbound.CONVERT, {"wip_id": wip, "operator_id": OPERATOR})
    refused = await tablet.expect("1", R.ERROR)
    assert refused["error"]["code"] == "CONVERT_NOT_ALLOWED" and refused["wip_id"] == wip
    # The station of the last process is asked for; the MES decides (this WIP is not finished).
    await tablet.send("6", Inbound.CONVERT, {"wip_id": wip, "operator_id": OPERATOR})
    answer = await tablet.expect("6", R.ERROR)
    assert answer["error"]["code"] in {"INVALID_WIP_STATUS", "INCOMPLETE_PROCESSES"}


async def test_another_stations_batch_is_not_named(tablet: Tablet, sim: MesSimulator) -> None:
    wip = sim.wip_ids[3]
    await tablet.send("1", Inbound.START, start(wip, batch_id="B-SECRET-1"))
    await tablet.expect("1", R.STARTED, where=event("PROCESS_STARTED"))
    await tablet.send("2", Inbound.START, start(wip))
    busy = await tablet.expect("2", R.ERROR)
    assert busy["error"]["code"] == "WIP_BUSY" and "B-SECRET-1" not in str(busy)
    # The same batch id is station 2's to use: refusing it would confirm station 1's.
    await tablet.send("2", Inbound.START, start(sim.wip_ids[4], batch_id="B-SECRET-1"))
    own = await tablet.expect("2", R.STARTED, where=event("PROCESS_STARTED"))
    assert (own["wip_id"], own["batch_id"]) == (sim.wip_ids[4], "B-SECRET-1")
    await tablet.send("2", Inbound.START, start(sim.wip_ids[5], batch_id="B-SECRET-1"))
    duplicate = await tablet.expect("2", R.ERROR, where=lambda p: p["wip_id"] == sim.wip_ids[5])
    assert duplicate["error"]["code"] == "DUPLICATE_BATCH"
    assert "on this station" in duplicate["error"]["detail"] and wip not in str(duplicate)


async def test_unknown_stations_are_answered_on_the_bridge_topic_only(
    sim: MesSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(sim, tmp_path)
    long_id = "스" * 5000
    # The bridge subscribes to its configured stations only; other ids reach it through what its
    # persistent session still holds (a station since removed from the config), made here.
    host, port = MOSQUITTO
    async with aiomqtt.Client(
        host, port, identifier=config.client_id, clean_session=False
    ) as earlier:
        for station in ("99", long_id):
            topic = Topics(config.mqtt.topic_prefix).inbound(station, Inbound.START)
            await earlier.subscribe(topic, qos=1)
    async with Tablet(config) as tablet, running(config):
        for station in ("99", long_id, "99"):
            await tablet.send(station, Inbound.START, start("W"))
        topic = tablet.topics.bridge_error(config.bridge_id)
        await tablet.until(lambda: len([t for t, _ in tablet.seen if t == topic]) == 3)
        answers = [p for t, p in tablet.seen if t == topic]
        assert [a["error"]["code"] for a in answers] == ["UNKNOWN_STATION"] * 3
        assert [a["station_id"] for a in answers] == ["99", "스" * 64 + "…", "99"]
        assert all(a["topic"] == "batch/start" for a in answers)
        # a configured station's answer after them: nothing came on the invented ids' topics
        await tablet.send("1", Inbound.START, b"{")
        await tablet.expect("1", R.ERROR)
        assert not [t for t, _ in tablet.seen if "/station/99/" in t or long_id in t]
    logged = [r.getMessage() for r in caplog.records if "unknown station" in r.getMessage()]
    assert len(logged) == 2 and "'99'" in logged[0]  # once per id, the long one cut short
    assert all(len(line) < 200 for line in logged)
