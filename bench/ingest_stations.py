"""Ingest from many stations at once, next to a durable baseline.

    .venv/bin/python bench/ingest_stations.py [--messages N] [--stations S] [--repeat K]

Each repeat, on Mosquitto at 127.0.0.1:1883, in this process:

* durable baseline: a bare aiomqtt client with the bridge's session settings (fixed identifier,
  clean_session=False, QoS 1, manual acknowledgement) subscribed to the S stations' measurement
  topics; what has arrived together is parsed (json.loads) and written in one fsync'd commit to
  a store like the bridge's (`bridge.adapters.store.Store`), then acknowledged. The least a durable
  consumer does. Its count is seen as the bridge's status would tell it (`as_a_status`).
* bridge: the real bridge with S stations, each with a batch open; the same N measurements,
  round robin over the stations; the clock stops when the stations' statuses add up to N.

One publisher sends N QoS 1 messages as fast as the broker acknowledges them, at most ingest.py's
WINDOW ahead of the consumer. Printed: msg/s of both, bridge/baseline per repeat and the median.
A measurement, no thresholds: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiomqtt
from ingest import (
    IN_FLIGHT,
    MOSQUITTO,
    OPERATOR,
    PHASE_TIMEOUT_S,
    START_TIMEOUT_S,
    WINDOW,
    Endpoint,
    Progress,
    forget,
    machine,
    new_tag,
    publisher,
    running,
    window_bound,
)

from bridge.adapters.store import Store
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind, Topics
from mes_sim import MesSimulator

ENDPOINT = Endpoint("mosquitto", *MOSQUITTO)


def messages_for(topics: Topics, stations: list[str], n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        station = stations[i % len(stations)]
        body = {"batch_id": f"B-{station}", "name": f"m{i}", "value": i}
        out.append((topics.inbound(station, Inbound.MEASUREMENT), json.dumps(body).encode()))
    return out


async def flood(
    client: aiomqtt.Client, messages: Sequence[tuple[str, bytes]], progress: Progress
) -> None:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(topic: str, body: bytes) -> None:
        try:
            await client.publish(topic, body, qos=1, timeout=PHASE_TIMEOUT_S)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tasks:
        for sent, (topic, body) in enumerate(messages):
            await progress.reach(sent - WINDOW)
            await slots.acquire()
            tasks.create_task(one(topic, body))


def as_a_status(progress: Callable[[int], None]) -> Callable[[int], None]:
    """The durable consumer's count, told as the bridge tells its own in the station's status:
    a tenth of a second after the first change since the last one told (the bridge's
    `_STATUS_DELAY_S`). The publisher's window and the clock then see both consumers alike: a
    count told at once would let the baseline's publisher run ahead sooner and stop its clock
    up to 0.1 s earlier than the bridge's could."""
    latest = 0
    told: asyncio.TimerHandle | None = None

    def tell() -> None:
        nonlocal told
        told = None
        progress(latest)

    def update(count: int) -> None:
        nonlocal latest, told
        latest = count
        if told is None:
            told = asyncio.get_running_loop().call_later(0.1, tell)

    return update


async def consume_durably(
    consumer: aiomqtt.Client, store: Store, n: int, progress: Callable[[int], None]
) -> None:
    """The durable baseline's consumer: what has arrived together is parsed and written in one
    fsync'd commit, then acknowledged (the client must be in manual-ack mode)."""
    taken = 0
    messages = consumer.messages
    while taken < n:
        group = [await anext(messages)]
        while len(messages):
            group.append(await anext(messages))
        rows = {}
        for message in group:
            assert isinstance(message.payload, bytes)
            rows[f"m/{taken}"] = json.dumps(json.loads(message.payload))
            taken += 1
        await store.commit(rows)
        for message in group:
            consumer._client.ack(message.mid, message.qos)
        progress(taken)


@contextlib.asynccontextmanager
async def durable(
    topics: Topics, stations: list[str], identifier: str
) -> AsyncIterator[tuple[aiomqtt.Client, Store]]:
    """The durable baseline's client (the bridge's session settings, manual acknowledgement),
    subscribed to the stations' measurements, and its store in a temporary directory."""
    consumer = aiomqtt.Client(*MOSQUITTO, identifier=identifier, clean_session=False)
    consumer._client.manual_ack_set(True)
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
        store = Store(Path(tmp))
        await store.open()
        try:
            async with consumer:
                for station in stations:
                    await consumer.subscribe(topics.inbound(station, Inbound.MEASUREMENT), qos=1)
                yield consumer, store
        finally:
            await store.close()


async def baseline(stations: list[str], n: int) -> float:
    tag = new_tag()
    topics = Topics(f"bench-{tag}")
    subscriber_id = f"bench-durable-{tag}"
    progress = Progress()
    try:
        async with (
            durable(topics, stations, subscriber_id) as (consumer, store),
            publisher(ENDPOINT, tag) as client,
        ):
            async with asyncio.timeout(PHASE_TIMEOUT_S), asyncio.TaskGroup() as tasks:
                began = time.perf_counter()
                tell = as_a_status(progress.update)
                tasks.create_task(consume_durably(consumer, store, n, tell))
                tasks.create_task(flood(client, messages_for(topics, stations, n), progress))
            await progress.reach(n)
            return n / (progress.seen_at - began)
    finally:
        await forget(ENDPOINT, subscriber_id)


class StationWatch:
    """What a watcher of the result and status topics hears: each station's measurements in its
    batch (from the retained status), and when every station's batch has started."""

    def __init__(self, topics: Topics, stations: list[str], progress: Progress) -> None:
        self._topics = topics
        self._stations = stations
        self._progress = progress
        self._counts: dict[str, int] = {}
        self._started: set[str] = set()
        self.all_started = asyncio.Event()

    def heard(self, topic: str, payload: bytes) -> None:
        body = json.loads(payload)
        station = str(body.get("station_id"))
        if topic.endswith("/status"):
            batches = body.get("active_batches") or []
            self._counts[station] = int(batches[0]["measurements"]) if batches else 0
            self._progress.update(sum(self._counts.values()))
        elif topic == self._topics.result(station, ResultKind.STARTED):
            self._started.add(station)
            if len(self._started) == len(self._stations):
                self.all_started.set()

    async def start_batches(self, client: aiomqtt.Client, wips: list[str]) -> None:
        """A batch on every station, each of its own WIP; back when all have started."""
        for station, wip in zip(self._stations, wips, strict=True):
            start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
            body = json.dumps({**start, "batch_id": f"B-{station}"})
            await client.publish(self._topics.inbound(station, Inbound.START), body, qos=1)
        await asyncio.wait_for(self.all_started.wait(), START_TIMEOUT_S * 4)


async def bridge(stations: list[str], n: int) -> float:
    tag = new_tag()
    progress = Progress()
    with (
        MesSimulator(wips=len(stations)) as sim,
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as data_dir,
    ):
        sim.set_faults(rate_limit_per_min=100_000)
        config = BridgeConfig(
            bridge_id=f"bench-{tag}",
            data_dir=data_dir,
            log_level="WARNING",
            mqtt={"host": MOSQUITTO[0], "port": MOSQUITTO[1], "topic_prefix": f"bench-{tag}"},
            mes={
                "url": sim.url,
                "username": "admin",
                "password": "admin-pass",
                "rate_limit": 100_000,
            },
            stations=[{"id": station} for station in stations],
        )
        topics = Topics(config.mqtt.topic_prefix)
        stations_watch = StationWatch(topics, stations, progress)
        watcher = aiomqtt.Client(*MOSQUITTO, identifier=f"bench-watch-{tag}")

        async def watch() -> None:
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                if message.payload:
                    stations_watch.heard(message.topic.value, message.payload)

        try:
            async with watcher, publisher(ENDPOINT, tag) as client, running(config):
                await watcher.subscribe(topics.status("+"), qos=1)
                await watcher.subscribe(topics.results("+"), qos=1)
                reading = asyncio.create_task(watch())
                await stations_watch.start_batches(client, sim.wip_ids)
                async with asyncio.timeout(PHASE_TIMEOUT_S):
                    began = time.perf_counter()
                    await flood(client, messages_for(topics, stations, n), progress)
                    await progress.reach(n)
                reading.cancel()
                return n / (progress.seen_at - began)
        finally:
            retained = [topics.status(station) for station in stations]
            retained.append(topics.availability(config.bridge_id))
            await forget(ENDPOINT, config.client_id, retained=retained)


async def main_async(args: argparse.Namespace) -> None:
    print(machine())
    stations = [f"S{n:02d}" for n in range(args.stations)]
    print(f"{args.messages} messages over {args.stations} stations")
    print(f"{'run':>4} {'durable msg/s':>14} {'bridge msg/s':>13} {'bridge/durable':>15}")
    ratios = []
    for run in range(1, args.repeat + 1):
        base = await baseline(stations, args.messages)
        ours = await bridge(stations, args.messages)
        ratios.append(ours / base)
        print(f"{run:>4} {base:>14.0f} {ours:>13.0f} {ours / base:>15.3f}")
        if window_bound(max(base, ours)):
            print(f"note: held back by the publish window ({WINDOW}) in this run")
    print(f"bridge/durable (median of the per-run ratios): {statistics.median(ratios):.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
