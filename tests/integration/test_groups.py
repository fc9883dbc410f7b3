"""Messages that arrive together are handled as a group: one commit (one fsync) for all, and
if it fails, none of them took effect and each is told so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.store import Store, StoreError, read_directory
from bridge.app import stop, utc_now
from bridge.config import BridgeConfig
from bridge.core.outbox import load_state
from bridge.core.topics import Received
from bridge.engine.lifecycle import Lifecycle
from bridge.engine.reports import DeliveryReports
from bridge.engine.state import State
from bridge.mes import MesClient
from mes_sim import MesSimulator

from .harness import OPERATOR


class CountingStore(Store):
    """A real store that counts its commits, and can be told to refuse the next one."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.commits = 0
        self.refuse = False

    async def commit(self, writes: Mapping[str, str | None]) -> None:
        if self.refuse:
            raise StoreError("refused for the test")
        self.commits += 1
        await super().commit(writes)


Published = list[tuple[str, dict[str, Any]]]
Bridge = tuple[Lifecycle, State, CountingStore, Published]


@pytest.fixture
async def bridge(sim: MesSimulator, tmp_path: Path) -> AsyncIterator[Bridge]:
    config = BridgeConfig(
        data_dir=tmp_path,
        mes={"url": sim.url, "username": "admin", "password": "admin-pass"},
        stations=[{"id": "1"}],
    )
    store = CountingStore(tmp_path / "store")
    published: Published = []

    def publish(topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        published.append((topic, payload))

    async with MesClient(config.mes) as mes:
        state = State(config, store=store, publish=publish, clock=utc_now)
        await state.load()
        deliveries = DeliveryReports(config, state, mes=mes, clock=utc_now)
        delivering = asyncio.create_task(deliveries.dispatcher.run())
        try:
            yield Lifecycle(state, deliveries), state, store, published
        finally:
            await stop(delivering)
            await store.close()


def messages(wip: str) -> list[Received]:
    start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR, "batch_id": "g1"}
    return [
        Received("station/1/batch/start", json.dumps(start).encode()),
        Received("station/1/measurement", json.dumps({"name": "torque_nm", "value": 1.5}).encode()),
        Received("station/1/batch/complete", json.dumps({"result": "PASS"}).encode()),
    ]


async def test_a_group_is_one_commit(bridge: Bridge, sim: MesSimulator) -> None:
    lifecycle, state, store, _ = bridge
    before = store.commits
    await lifecycle.handle(messages(sim.wip_ids[0]))
    assert store.commits == before + 1
    assert state.batches == {}  # started and completed within the group
    [start, complete] = [entry.action for entry in state.outbox]
    assert (start, complete) == ("start", "complete")


async def test_a_failed_group_commit_undoes_all_of_it_and_says_so(
    bridge: Bridge, sim: MesSimulator
) -> None:
    lifecycle, state, store, published = bridge
    store.refuse = True
    await lifecycle.handle([*messages(sim.wip_ids[0]), Received("station/1/measurement", b"{oops")])
    assert state.batches == {} and list(state.outbox) == []
    results = [
        (topic.rsplit("/", 1)[1], payload) for topic, payload in published if "/result/" in topic
    ]
    codes = [(kind, payload["error"]["code"]) for kind, payload in results]
    # Nothing else (no start was announced); the broken message is told what is wrong with it.
    assert codes == [("error", "STORAGE_FAILED")] * 3 + [("error", "INVALID_JSON")]
    assert [payload.get("batch_id") for _, payload in results] == ["g1", None, None, None]

    store.refuse = False
    await lifecycle.handle(messages(sim.wip_ids[0]))  # the same again, now with a working disk
    assert [entry.action for entry in state.outbox] == ["start", "complete"]


async def test_a_failed_commit_of_readings_puts_each_batch_back_exactly(
    bridge: Bridge, sim: MesSimulator
) -> None:
    lifecycle, state, store, _ = bridge
    first, second = sim.wip_ids[:2]

    def sent(topic: str, body: dict[str, Any]) -> Received:
        return Received(f"station/1/{topic}", json.dumps(body).encode())

    def reading(batch_id: str, i: int, **more: Any) -> Received:
        return sent("measurement", {"batch_id": batch_id, "name": f"m{i % 30}", "value": i, **more})

    opened = [
        sent(
            "batch/start", {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR, "batch_id": b}
        )
        for wip, b in ((first, "a"), (second, "b"))
    ]
    # Enough readings that the batches' measurements were merged more than once (`Gathered`).
    await lifecycle.handle([*opened, *(reading(b, i) for i in range(40) for b in "ab")])
    before = dict(state.batches)
    held = {uid: (dict(b.measurements), b.gathered_bytes()) for uid, b in before.items()}
    in_order = list(state.station_batches("1"))

    store.refuse = True
    group = [
        reading(b, i, defects=["SCRATCH"] if i == 45 else []) for i in range(25, 70) for b in "ab"
    ]
    await lifecycle.handle(group)
    assert state.batches == before
    assert all(state.batches[uid] is batch for uid, batch in before.items())  # the same objects
    assert list(state.station_batches("1")) == in_order
    assert {uid: (dict(b.measurements), b.gathered_bytes()) for uid, b in before.items()} == held

    store.refuse = False
    await lifecycle.handle(group)  # again, with a working disk: as if the first never happened
    batches, _ = load_state(read_directory(store.directory))
    assert batches == state.batches
    for uid, batch in state.batches.items():
        assert list(batch.measurements) == [f"m{i}" for i in range(30)]
        assert batch.measurements["m9"].value == 69 and batch.defects == ["SCRATCH"]
        assert batch.gathered_bytes() == batches[uid].gathered_bytes()  # counted afresh there
