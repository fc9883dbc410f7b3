"""A WIP has a lane (a task) only while it can go: one waiting for its next attempt has a timer,
one waiting for the MES to come back has none at all, and each is started again when its time
comes. The engine over a real store and the simulated MES over loopback HTTP, no broker."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.adapters.store import Store
from bridge.config import BridgeConfig
from bridge.core.domain import MesState
from bridge.core.outbox import NEXT_SEQ_KEY, Change, Entry
from bridge.engine.dispatcher import Dispatcher
from bridge.mes.models import StartProcess
from mes_sim import MesSimulator

from .engine import Published, engine
from .harness import MOSQUITTO, OPERATOR, bridge_config


def config(sim: MesSimulator, tmp_path: Path) -> BridgeConfig:
    host, port = MOSQUITTO  # not connected to: the engine runs without a broker
    # A fast pace, so that a recovery lets ten WIPs go in a second or so.
    mes = {"url": sim.url, "username": "admin", "password": "admin-pass", "rate_limit": 600}
    return bridge_config(sim, tmp_path / "data", host=host, port=port, mes=mes)


async def queued(
    config: BridgeConfig, wips: dict[str, datetime], *, under_way: frozenset[str] = frozenset()
) -> None:
    """A start per WIP on disk before the engine starts, as a long outage leaves them: already
    tried once and announced, its next attempt at the given time; those `under_way` were being
    sent when the bridge stopped."""
    now = datetime.now(UTC)
    entries = [
        Entry(
            seq=seq,
            request=StartProcess(wip_id=wip, process=1, operator_id=OPERATOR, started_at=now),
            station_id="1",
            enqueued_at=now,
            attempts=1,
            announced=True,
            next_attempt_at=at,
            last_error={"code": "NETWORK", "message": "connection refused"},
            in_flight=wip in under_way,
        )
        for seq, (wip, at) in enumerate(wips.items(), start=1)
    ]
    store = Store(config.store_dir)
    await store.open()
    try:
        await store.commit({**Change(entries=entries).writes(), NEXT_SEQ_KEY: str(len(wips) + 1)})
    finally:
        await store.close()


async def until(condition: Callable[[], bool], *, within: float = 15.0) -> None:
    """The dispatcher's lanes publish nothing when they park: look until it is so."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (no event to await)
            await asyncio.sleep(0.01)


def lane_tasks() -> int:
    return len([task for task in asyncio.all_tasks() if task.get_name().startswith("lane ")])


def started(sim: MesSimulator, wip: str) -> int:
    return len([s for s in sim.ledger()["starts"] if s["wip_id"] == wip])


async def test_wips_waiting_for_their_next_attempt_hold_no_task_and_go_at_their_time(
    sim: MesSimulator, tmp_path: Path
) -> None:
    made = config(sim, tmp_path)
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    later = datetime.now(UTC) + timedelta(hours=1)
    due_soon = sim.wip_ids[:3]
    waiting = {wip: soon for wip in due_soon}
    waiting |= {f"LATER-{n:04d}": later for n in range(300)}
    await queued(made, waiting)
    async with engine(made) as bridge:
        dispatcher: Dispatcher = bridge.deliveries.dispatcher
        await until(lambda: dispatcher.timed_lanes == len(waiting))
        assert dispatcher.running_lanes == 0 and lane_tasks() == 0
        assert all(started(sim, wip) == 0 for wip in due_soon)

        await bridge.published.until(lambda: bridge.state.outbox.pending_count() == 300)
        assert datetime.now(UTC) >= soon  # not before its time
        assert [started(sim, wip) for wip in due_soon] == [1, 1, 1]
        await until(lambda: dispatcher.running_lanes == 0)
        assert dispatcher.timed_lanes == 300


async def test_wips_waiting_for_the_mes_hold_no_task_and_go_when_it_is_back(
    sim: MesSimulator, tmp_path: Path
) -> None:
    made = config(sim, tmp_path)
    wips = sim.wip_ids[:10]
    await queued(made, dict.fromkeys(wips, datetime.now(UTC)))  # due now
    sim.set_faults(mode="unavailable")
    async with engine(made) as bridge:
        dispatcher: Dispatcher = bridge.deliveries.dispatcher
        await until(lambda: dispatcher.held_lanes == len(wips))
        assert dispatcher.state is MesState.OFFLINE
        assert dispatcher.running_lanes == 0 and dispatcher.timed_lanes == 0
        assert lane_tasks() == 0
        assert sim.ledger()["starts"] == []

        sim.set_faults(mode="ok")
        await bridge.idle()
        assert [started(sim, wip) for wip in wips] == [1] * len(wips)
        await until(lambda: dispatcher.running_lanes == 0)
        assert dispatcher.held_lanes == 0 and dispatcher.timed_lanes == 0


@dataclass
class TimedPublished(Published):
    """What the engine published, and when."""

    at: list[datetime] = field(default_factory=list)

    def __call__(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        self.at.append(datetime.now(UTC))
        super().__call__(topic, payload, retain=retain)

    def synced(self) -> dict[str, datetime]:
        return {
            payload["wip_id"]: at
            for (_, payload), at in zip(self.messages, self.at, strict=True)
            if payload.get("event") == "SYNCED"
        }


HOUR = 3600.0
# How long each WIP's next attempt is away (None: it is due already), and whether its request was
# under way when the bridge stopped (it then waits `settle_s` first).
WIPS = st.lists(
    st.tuples(st.sampled_from([None, 0.2, 0.6, HOUR]), st.booleans()), min_size=1, max_size=6
)


@settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(WIPS)
def test_every_wip_goes_once_not_before_its_time_and_those_not_due_keep_no_task(
    waits: list[tuple[float | None, bool]],
) -> None:
    with MesSimulator() as sim, tempfile.TemporaryDirectory() as directory:
        asyncio.run(goes_at_its_time(sim, Path(directory), waits))


async def goes_at_its_time(
    sim: MesSimulator, directory: Path, waits: list[tuple[float | None, bool]]
) -> None:
    made = config(sim, directory)
    now = datetime.now(UTC)
    due = {
        wip: now + timedelta(seconds=wait or -1.0)
        for wip, (wait, _) in zip(sim.wip_ids, waits, strict=False)
    }
    under_way = frozenset(wip for wip, (_, was) in zip(sim.wip_ids, waits, strict=False) if was)
    later = {wip for wip, at in due.items() if at > now + timedelta(minutes=1)}
    await queued(made, due, under_way=under_way)
    published = TimedPublished()
    started_at = datetime.now(UTC)
    async with engine(made, published=published) as bridge:
        dispatcher: Dispatcher = bridge.deliveries.dispatcher
        await published.until(lambda: bridge.state.outbox.pending_count() == len(later))
        # (Both hold before the dispatcher has read the outbox at all: wait for its timers too.)
        await until(lambda: (dispatcher.running_lanes, dispatcher.timed_lanes) == (0, len(later)))
        assert dispatcher.held_lanes == 0 and lane_tasks() == 0
    synced = published.synced()
    assert set(synced) == set(due) - later
    for wip, at in synced.items():
        assert at >= due[wip], f"{wip} went before its time"
        if wip in under_way:  # not before the MES can have finished the lost attempt
            assert at >= started_at + timedelta(seconds=made.outbox.settle_s)
    assert all(started(sim, wip) == (wip not in later) for wip in due)
