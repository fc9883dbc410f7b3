"""How fast the bridge takes in measurement messages, next to a bare MQTT subscriber.

    .venv/bin/python bench/ingest.py [--messages N] [--broker mosquitto|embedded] [--repeat K]

Each repeat runs two phases on the same broker, in this process and event loop:

* baseline: a bare `aiomqtt.Client` (QoS 1, fixed identifier, clean_session=False, like the
  bridge) receives N QoS 1 messages that a publisher client sends as fast as it can; the time runs
  from the first publish to the N-th message received.
* bridge: the real bridge (`run_bridge`, with the MES simulator and a temporary data_dir) has a
  batch open; the publisher sends N `station/1/measurement` messages as fast as it can; the time
  runs from the first publish to the retained `station/1/status` saying the batch holds N
  measurements. Every one of them is an fsync'd SQLite commit before its MQTT acknowledgement.

It prints messages/s for both, bridge/baseline, and their medians over the repeats. There is no
threshold: it is a measurement. See bench/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiomqtt

from bridge.adapters.broker import EmbeddedBroker
from bridge.app import run_bridge
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind, Topics
from mes_sim import MesSimulator

BrokerKind = Literal["mosquitto", "embedded"]

MOSQUITTO = ("127.0.0.1", 1883)
OPERATOR = 2  # operator1 on the MES simulator
STATION = "1"
BATCH = "bench"

# The publisher never runs more than WINDOW messages ahead of what the consumer has taken:
# Mosquitto queues at most 1000 QoS 1 messages per client (max_queued_messages) beyond the 20 in
# flight and silently drops the rest, and a flooded amqtt gives up on a PUBACK after 5 s. The
# bridge's progress is only seen on its status topic (at most ~10/s), so the window is as large
# as that queue allows, with a margin: a window the consumer fills within a tenth of a second
# stalls the publisher, and the bench then measures itself (see `window_bound`). It was 500 until
# issue 11's last ingest work: the bridge got fast enough to meet it.
WINDOW = 900
IN_FLIGHT = 100  # QoS 1 publishes awaiting their PUBACK at once
PHASE_TIMEOUT_S = 60.0
START_TIMEOUT_S = 15.0

_log = logging.getLogger("bench.ingest")


@dataclass(frozen=True)
class Endpoint:
    kind: BrokerKind
    host: str
    port: int


@dataclass(frozen=True)
class Sample:
    baseline: float  # messages/s
    bridge: float  # messages/s

    @property
    def ratio(self) -> float:
        return self.bridge / self.baseline


class Progress:
    """How many messages the consumer has taken, and when that count was last seen to grow."""

    def __init__(self) -> None:
        self.count = 0
        self.seen_at = time.perf_counter()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def update(self, count: int) -> None:
        if count <= self.count:
            return
        self.count, self.seen_at = count, time.perf_counter()
        for target, waiter in self._waiters:
            if count >= target and not waiter.done():
                waiter.set_result(None)
        self._waiters = [(target, w) for target, w in self._waiters if not w.done()]

    async def reach(self, target: int) -> None:
        if self.count >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        await waiter


def new_tag() -> str:
    return uuid.uuid4().hex[:8]


def publisher(endpoint: Endpoint, tag: str) -> aiomqtt.Client:
    client = aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        identifier=f"bench-pub-{tag}",
        max_inflight_messages=IN_FLIGHT,
    )
    client.pending_calls_threshold = IN_FLIGHT  # aiomqtt warns above 10 pending publishes
    return client


async def flood(
    client: aiomqtt.Client, topic: str, bodies: Sequence[bytes], progress: Progress
) -> None:
    """Publish every body at QoS 1 as fast as the broker acknowledges them (IN_FLIGHT at once),
    but never more than WINDOW messages ahead of the consumer."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(body: bytes) -> None:
        try:
            await client.publish(topic, body, qos=1, timeout=PHASE_TIMEOUT_S)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tasks:
        for index, body in enumerate(bodies):
            await progress.reach(index + 1 - WINDOW)
            await slots.acquire()
            tasks.create_task(one(body))


async def forget(endpoint: Endpoint, client_id: str, *, retained: Sequence[str] = ()) -> None:
    """Leave the broker as it was: end a persistent session, clear retained messages."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with aiomqtt.Client(
            endpoint.host, endpoint.port, identifier=client_id, clean_session=True
        ) as client:
            for topic in retained:
                await client.publish(topic, b"", qos=1, retain=True)


# -- baseline -----------------------------------------------------------------------------------


async def run_baseline(endpoint: Endpoint, messages: int) -> float:
    """Messages/s from the first publish to the last message received by a bare subscriber."""
    tag = new_tag()
    topic = f"bench-{tag}/station/{STATION}/measurement"
    subscriber_id = f"bench-sub-{tag}"
    bodies = measurement_bodies(messages)
    progress = Progress()
    subscriber = aiomqtt.Client(
        endpoint.host, endpoint.port, identifier=subscriber_id, clean_session=False
    )

    async def consume() -> None:
        received = 0
        async for _message in subscriber.messages:
            received += 1
            progress.update(received)
            if received == messages:
                return

    try:
        async with subscriber, publisher(endpoint, tag) as client:
            await subscriber.subscribe(topic, qos=1)
            async with asyncio.timeout(PHASE_TIMEOUT_S), asyncio.TaskGroup() as tasks:
                started = time.perf_counter()
                tasks.create_task(consume())
                tasks.create_task(flood(client, topic, bodies, progress))
            return messages / (progress.seen_at - started)
    finally:
        await forget(endpoint, subscriber_id)


# -- bridge -------------------------------------------------------------------------------------


def bench_config(
    sim: MesSimulator, endpoint: Endpoint, data_dir: Path, tag: str, *, measurements: int
) -> BridgeConfig:
    # All N measurements go into one batch: its bounds are raised to hold them.
    return BridgeConfig(
        bridge_id=f"bench-{tag}",
        data_dir=data_dir,
        log_level="WARNING",
        mqtt={"host": endpoint.host, "port": endpoint.port, "topic_prefix": f"bench-{tag}"},
        mes={"url": sim.url, "username": "admin", "password": "admin-pass", "timeout_s": 5},
        stations=[{"id": STATION}],
        batches={"max_measurements": max(measurements, 1000), "max_request_bytes": 1 << 30},
    )


@contextlib.asynccontextmanager
async def running(config: BridgeConfig) -> AsyncIterator[None]:
    """The bridge as `station-bridge run` runs it, in this event loop, until the block ends."""
    ready = asyncio.Event()
    bridge = asyncio.create_task(run_bridge(config, ready=ready), name="bridge")
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([bridge, waiter], timeout=START_TIMEOUT_S, return_when="FIRST_COMPLETED")
    waiter.cancel()
    if bridge.done():
        bridge.result()  # raises what stopped it
        raise RuntimeError("the bridge stopped before it connected")
    try:
        if not ready.is_set():
            raise TimeoutError(f"the bridge did not connect within {START_TIMEOUT_S:.0f} s")
        yield
    finally:
        bridge.cancel()
        await asyncio.gather(bridge, waiter, return_exceptions=True)


def measured_count(status: dict[str, Any]) -> int:
    batches = status.get("active_batches") or []
    return int(batches[0]["measurements"]) if batches else 0


async def watch(
    client: aiomqtt.Client, topics: Topics, progress: Progress, started: asyncio.Future[None]
) -> None:
    """Follow the station's status (measurement count) and its start outcome."""
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        if not message.payload:
            continue
        payload = json.loads(message.payload)
        if message.topic.matches(topics.status(STATION)):
            progress.update(measured_count(payload))
        elif message.topic.matches(topics.result(STATION, ResultKind.STARTED)):
            if not started.done():
                started.set_result(None)
        elif not started.done():  # an error outcome before the batch could start
            started.set_exception(RuntimeError(f"the batch did not start: {payload}"))
        else:
            _log.warning("bridge error outcome during the run: %s", payload)


async def run_bridge_ingest(endpoint: Endpoint, messages: int) -> float:
    """Messages/s from the first publish to the status saying the bridge recorded all of them."""
    tag = new_tag()
    bodies = measurement_bodies(messages)
    progress = Progress()
    with MesSimulator() as sim, tempfile.TemporaryDirectory(prefix="bench-ingest-") as data_dir:
        config = bench_config(sim, endpoint, Path(data_dir), tag, measurements=messages)
        topics = Topics(config.mqtt.topic_prefix)
        start = {"wip_id": sim.wip_ids[0], "process_id": 1, "operator_id": OPERATOR}
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watcher = aiomqtt.Client(endpoint.host, endpoint.port, identifier=f"bench-watch-{tag}")
        try:
            async with watcher, publisher(endpoint, tag) as client, asyncio.TaskGroup() as tasks:
                await watcher.subscribe(topics.status(STATION), qos=1)
                await watcher.subscribe(topics.results(STATION), qos=1)
                watching = tasks.create_task(watch(watcher, topics, progress, started))
                try:
                    async with running(config):
                        body = json.dumps({**start, "batch_id": BATCH}).encode()
                        await client.publish(topics.inbound(STATION, Inbound.START), body, qos=1)
                        await asyncio.wait_for(started, START_TIMEOUT_S)
                        measurement = topics.inbound(STATION, Inbound.MEASUREMENT)
                        async with asyncio.timeout(PHASE_TIMEOUT_S):
                            began = time.perf_counter()
                            await flood(client, measurement, bodies, progress)
                            await progress.reach(messages)
                        return messages / (progress.seen_at - began)
                finally:
                    watching.cancel()
        finally:
            retained = [topics.status(STATION), topics.availability(config.bridge_id)]
            await forget(endpoint, config.client_id, retained=retained)


def measurement_bodies(messages: int) -> list[bytes]:
    return [
        json.dumps({"batch_id": BATCH, "name": f"m{i}", "value": i}).encode()
        for i in range(messages)
    ]


# -- the run ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def broker(kind: BrokerKind) -> AsyncIterator[Endpoint]:
    if kind == "mosquitto":
        host, port = MOSQUITTO
        try:
            with socket.create_connection(MOSQUITTO, timeout=1):
                pass
        except OSError as error:
            raise SystemExit(f"Mosquitto is not reachable at {host}:{port}: {error}") from None
        yield Endpoint(kind, host, port)
        return
    async with EmbeddedBroker(host="127.0.0.1", port=0) as embedded:
        yield Endpoint(kind, embedded.host, embedded.port)


def window_bound(rate: float) -> bool:
    """Whether a consumer taking this many messages a second may have been held back by WINDOW:
    its progress is seen ~10 times a second (the bridge's status, or the durable baseline's count
    told as the status would), and the publisher waits for it."""
    return rate * 0.2 > WINDOW


async def measure(kind: BrokerKind, messages: int, repeat: int) -> list[Sample]:
    samples: list[Sample] = []
    async with broker(kind) as endpoint:
        print(f"broker: {kind} at {endpoint.host}:{endpoint.port}")
        print(f"{'run':>4} {'baseline msg/s':>15} {'bridge msg/s':>13} {'bridge/baseline':>16}")
        for run in range(1, repeat + 1):
            sample = Sample(
                baseline=await run_baseline(endpoint, messages),
                bridge=await run_bridge_ingest(endpoint, messages),
            )
            samples.append(sample)
            print(f"{run:>4} {sample.baseline:>15.0f} {sample.bridge:>13.0f} {sample.ratio:>16.3f}")
    return samples


def machine() -> str:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()} {platform.machine()}; load average {load}; "
        f"bridge data_dir under {tempfile.gettempdir()}"
    )


def report(samples: Sequence[Sample]) -> None:
    baseline = statistics.median(sample.baseline for sample in samples)
    bridge = statistics.median(sample.bridge for sample in samples)
    ratio = statistics.median(sample.ratio for sample in samples)
    print(f"{'median':>4} {baseline:>15.0f} {bridge:>13.0f} {ratio:>16.3f}")
    print(f"bridge/baseline (median of the per-run ratios): {ratio:.3f}")
    if window_bound(bridge):
        print(f"note: the bridge may have been held back by the publish window ({WINDOW})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--messages", type=int, default=5000, help="measurement messages per phase (5000)"
    )
    parser.add_argument(
        "--broker", choices=["mosquitto", "embedded"], default="mosquitto", help="(mosquitto)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of both phases (3)")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.repeat < 1:
        parser.error("--messages and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"station-bridge ingest: {args.messages} QoS 1 measurement messages, {args.repeat} runs")
    print(f"machine: {machine()}")
    started = time.perf_counter()
    samples = asyncio.run(measure(args.broker, args.messages, args.repeat))
    report(samples)
    print(f"took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
