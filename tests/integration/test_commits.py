"""How many fsync'd commits a request costs between a tablet's message and its answer, counted
through the real store (each one is on the path of the answer), and that the commits left out
lose nothing across a crash."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.store import Store, StoreError, read_directory
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound
from bridge.faults import FaultPoint, Faults
from bridge.mes import MesClient, MesRequest, Recorded
from mes_sim import MesSimulator

from .engine import Published, Station, engine
from .harness import OPERATOR, bridge_config


@pytest.fixture
def config(sim: MesSimulator, tmp_path: Path) -> BridgeConfig:
    return bridge_config(sim, tmp_path / "data", host="127.0.0.1", port=1)


class Commits:
    """Every non-empty commit the store makes, in order, and how many have ended (the real
    commit runs)."""

    def __init__(self) -> None:
        self.made: list[dict[str, str | None]] = []
        self.ended = 0


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> Commits:
    seen = Commits()
    commit = Store.commit

    async def counted(store: Store, writes: dict[str, str | None]) -> None:
        if writes:
            seen.made.append(dict(writes))
        await commit(store, writes)
        if writes:
            seen.ended += 1

    monkeypatch.setattr(Store, "commit", counted)
    return seen


class Answers(Published):
    """What was published, and how many commits had ended when each outcome went out."""

    def __init__(self, commits: Commits) -> None:
        super().__init__()
        self.commits = commits
        self.ended_at: list[tuple[str, int]] = []

    def __call__(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        self.ended_at.append((payload.get("event", ""), self.commits.ended))
        super().__call__(topic, payload, retain=retain)


def start(wip: str) -> dict[str, object]:
    return {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}


def starts_of(sim: MesSimulator, wip: str) -> list[dict[str, object]]:
    return [row for row in sim.ledger()["starts"] if row["wip_id"] == wip]


def outbox_rows(writes: dict[str, str | None]) -> list[dict[str, Any]]:
    return [json.loads(v) for k, v in writes.items() if k.startswith("outbox/") and v]


async def test_a_start_sent_at_once_is_answered_after_one_commit(
    config: BridgeConfig, sim: MesSimulator, commits: Commits
) -> None:
    # The request's commit, written already marked as under way (before, the attempt was a
    # commit of its own), and then the MES: the answer goes out as the outcome's commit begins
    # (before, after its fsync). Two commits in all.
    answers = Answers(commits)
    station = Station(config, "1")
    async with engine(config, published=answers) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(sim.wip_ids[0]))])
        await answers.until(lambda: "PROCESS_STARTED" in answers.events())
        await bridge.idle()
    assert [ended for event, ended in answers.ended_at if event == "PROCESS_STARTED"] == [1]
    assert len(commits.made) == 2, commits.made
    [written] = outbox_rows(commits.made[0])
    assert (written["attempts"], written["in_flight"]) == (1, True)
    assert len(starts_of(sim, sim.wip_ids[0])) == 1


async def test_an_answer_sent_before_its_commit_failed_is_sent_again_and_recorded_once(
    config: BridgeConfig, sim: MesSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The outcome's commit fails after the tablet was told: the request stays on disk as under
    # way, the next attempt finds it in the MES's trace, and the tablet hears the same answer
    # again: one record, no refusal.
    wip = sim.wip_ids[0]
    commit = Store.commit
    calls = 0

    async def second_fails(store: Store, writes: dict[str, str | None]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreError("disk full")
        await commit(store, writes)

    monkeypatch.setattr(Store, "commit", second_fails)
    station = Station(config, "1")
    async with engine(config) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(wip))])
        await bridge.published.until(
            lambda: bridge.published.events().count("PROCESS_STARTED") == 2
        )
        await bridge.idle()
        events = bridge.published.events("/result/started")
    assert events == ["PROCESS_STARTED", "PROCESS_STARTED"]
    assert len(starts_of(sim, wip)) == 1


async def test_a_request_behind_another_of_its_wip_is_marked_when_its_turn_comes(
    config: BridgeConfig, sim: MesSimulator, commits: Commits
) -> None:
    # A complete queued behind its WIP's start is not sent at once: written unattempted, and
    # marked in a commit of its own when its lane takes it.
    wip = sim.wip_ids[0]
    station = Station(config, "1")
    arrived = asyncio.Event()
    held = asyncio.Event()

    async def hold_the_first_lane() -> None:
        arrived.set()
        await held.wait()

    faults = Faults()
    faults.arm(FaultPoint.LANE_START, hold_the_first_lane)
    async with engine(config, faults=faults) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(wip))])
        await asyncio.wait_for(arrived.wait(), 15)
        await bridge.lifecycle.handle([station.message(Inbound.COMPLETE, {"result": "PASS"})])
        assert [(e.attempts, e.in_flight) for e in bridge.state.outbox.lane(wip)] == [
            (1, True),
            (0, False),
        ]
        held.set()
        await bridge.idle()
    marks = [
        row
        for writes in commits.made
        for row in outbox_rows(writes)
        if row["request"]["kind"] == "complete"
    ]
    assert [(row["attempts"], row["in_flight"]) for row in marks] == [(0, False), (1, True)]


async def test_a_start_its_lane_had_not_sent_when_the_bridge_died_is_asked_of_the_mes_first(
    config: BridgeConfig, sim: MesSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the attempt's own commit, the request's commit must already say "under way": a
    # bridge that dies between it and the send cannot tell whether the MES got the request.
    wip = sim.wip_ids[0]
    asked: list[str] = []
    recorded = MesClient.recorded

    async def spied(mes: MesClient, request: MesRequest) -> Recorded | None:
        asked.append(request.wip_id)
        return await recorded(mes, request)

    monkeypatch.setattr(MesClient, "recorded", spied)
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    faults = Faults()
    faults.arm(FaultPoint.LANE_START, hang)  # the lane never gets to send
    station = Station(config, "1")
    async with engine(config, faults=faults) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(wip))])
        rows = read_directory(config.store_dir)
    [on_disk] = [json.loads(v) for k, v in rows.items() if k.startswith("outbox/")]
    assert (on_disk["attempts"], on_disk["in_flight"]) == (1, True)
    async with engine(config) as bridge:  # after the crash
        await bridge.published.until(lambda: "PROCESS_STARTED" in bridge.published.events())
    assert asked == [wip]
    assert len(starts_of(sim, wip)) == 1


async def test_an_abort_in_the_same_group_drops_a_start_marked_but_not_sent(
    config: BridgeConfig, sim: MesSimulator
) -> None:
    wip = sim.wip_ids[0]
    station = Station(config, "1")
    async with engine(config) as bridge:
        group = [
            station.message(Inbound.START, start(wip)),
            station.message(Inbound.ABORT, {"reason": "wrong unit scanned"}),
        ]
        await bridge.lifecycle.handle(group)
        await bridge.idle()
        events = bridge.published.events()
    assert "BATCH_ABORTED" in events and "PROCESS_STARTED" not in events
    assert starts_of(sim, wip) == []


async def test_a_reading_writes_its_own_row_and_the_header_only_when_a_defect_is_new(
    config: BridgeConfig, sim: MesSimulator, commits: Commits
) -> None:
    wip = sim.wip_ids[0]
    station = Station(config, "1")
    async with engine(config) as bridge:
        await bridge.lifecycle.handle([station.message(Inbound.START, start(wip))])
        await bridge.idle()
        reading = {"name": "torque", "value": 1.5}
        await bridge.lifecycle.handle([station.message(Inbound.MEASUREMENT, reading)])
        plain = commits.made[-1]
        flawed = {"name": "gap", "value": 0.2, "defects": ["SCRATCH"]}
        await bridge.lifecycle.handle([station.message(Inbound.MEASUREMENT, flawed)])
        with_defect = commits.made[-1]
    assert sorted(key.split("/")[0] for key in plain) == ["inbox", "measurement"]
    assert sorted(key.split("/")[0] for key in with_defect) == ["batch", "inbox", "measurement"]
    async with engine(config) as bridge:  # what the disk holds
        [batch] = bridge.state.batches.values()
    assert set(batch.measurements) == {"torque", "gap"} and batch.defects == ["SCRATCH"]
