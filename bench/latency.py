"""P2 latency: start -> started and complete -> completed at the tablet, next to the work that
cannot be avoided, on a Mosquitto with the shipped latency config and on a stock one.

    .venv/bin/python bench/latency.py [--samples N]

For each broker (a private Mosquitto on a free loopback port: `tuned` includes
deploy/mosquitto-latency.conf, `stock` does not), in this process:

* bridge: the real bridge and the MES simulator; a tablet sends `batch/start` for a fresh WIP and
  times it to `result/started`, then `batch/complete` to `result/completed`; N of each, one at a
  time;
* unavoidable, measured in the same run, N times each: the MES round trips the request needs
  (a start: scan + start-process, as for a WIP the bridge has not seen; a complete:
  complete-process) with the bridge's own MES client, one fsync'd store commit, and two MQTT
  hops (a QoS 1 publish to a subscriber on the same broker, station -> bridge and bridge ->
  tablet).

Printed: p50 and p99 of each, and bridge / unavoidable (the sum of the parts' p50s, and of their
p99s). A measurement, no thresholds: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
from ingest import OPERATOR, machine, running

from bridge.adapters.broker import find_free_port
from bridge.adapters.store import Store
from bridge.config import BridgeConfig
from bridge.core.domain import Result
from bridge.core.topics import Inbound, ResultKind, Topics
from bridge.mes import CompleteProcess, MesClient, StartProcess
from mes_sim import MesSimulator

LATENCY_CONF = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto-latency.conf"
MOSQUITTO_BINARY = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def write_config(directory: Path, port: int, *, tuned: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true"]
    lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
    if tuned:
        lines.append(f"include_dir {directory / 'conf.d'}")
        (directory / "conf.d").mkdir(parents=True)
        shutil.copy(LATENCY_CONF, directory / "conf.d" / LATENCY_CONF.name)
    conf.write_text("\n".join(lines) + "\n")
    return conf


@contextlib.asynccontextmanager
async def mosquitto(directory: Path, *, tuned: bool) -> AsyncIterator[int]:
    port = find_free_port()
    conf = write_config(directory, port, tuned=tuned)
    process = await asyncio.create_subprocess_exec(
        MOSQUITTO_BINARY,
        "-c",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(250):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.02)
        yield port
    finally:
        process.terminate()
        await process.wait()


def no_nagle(client: aiomqtt.Client) -> None:
    """A station or tablet that answers at once: otherwise its PUBACK and its next publish meet
    Nagle's algorithm and the broker's delayed ACK (~40 ms), which is the client's cost, not the
    bridge's (the bridge sets it on its own socket)."""
    sock = client._client.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def p(values: Sequence[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(quantile * (len(ordered) - 1)))]


async def timed(n: int, work: Callable[[int], Awaitable[None]]) -> list[float]:
    out = []
    for i in range(n):
        began = time.perf_counter()
        await work(i)
        out.append(time.perf_counter() - began)
    return out


async def hops(port: int, n: int) -> list[float]:
    """One QoS 1 publish -> delivery to a subscriber on the same broker, N times."""
    topic = f"bench-{uuid.uuid4().hex[:8]}/hop"
    async with (
        aiomqtt.Client("127.0.0.1", port) as sender,
        aiomqtt.Client("127.0.0.1", port) as receiver,
    ):
        no_nagle(sender)
        no_nagle(receiver)
        await receiver.subscribe(topic, qos=1)
        messages = receiver.messages

        async def one(_: int) -> None:
            await sender.publish(topic, b"{}", qos=1)
            await anext(messages)

        return await timed(n, one)


async def fsyncs(directory: Path, n: int) -> list[float]:
    store = Store(directory / "fsync")
    await store.open()
    try:
        return await timed(n, lambda i: store.commit({f"row/{i}": '{"x":1}'}))
    finally:
        await store.close()


async def mes_work(
    sim: MesSimulator, config: BridgeConfig, wips: list[str]
) -> dict[str, list[float]]:
    async with MesClient(config.mes) as mes:
        await mes.process_ids()  # logged in and the process map known, as in a running bridge
        now = datetime.now(UTC)

        async def start(i: int) -> None:
            await mes.scan(wips[i])
            await mes.start_process(
                StartProcess(wip_id=wips[i], process=1, operator_id=OPERATOR, started_at=now)
            )

        async def complete(i: int) -> None:
            request = CompleteProcess(
                wip_id=wips[i],
                process=1,
                operator_id=OPERATOR,
                result=Result.PASS,
                started_at=now,
                completed_at=datetime.now(UTC),
            )
            await mes.complete_process(request)

        return {
            "start": await timed(len(wips), start),
            "complete": await timed(len(wips), complete),
        }


async def bridge_work(config: BridgeConfig, wips: list[str]) -> dict[str, list[float]]:
    topics = Topics(config.mqtt.topic_prefix)
    out: dict[str, list[float]] = {"start": [], "complete": []}
    async with (
        aiomqtt.Client(config.mqtt.host, config.mqtt.port) as tablet,
        running(config),
    ):
        no_nagle(tablet)
        await tablet.subscribe(topics.results("1"), qos=1)
        messages = tablet.messages

        async def answer(kind: ResultKind, wip: str) -> None:
            while True:
                message = await anext(messages)
                assert isinstance(message.payload, bytes)
                body: dict[str, Any] = json.loads(message.payload)
                if message.topic.value == topics.result("1", kind) and body["wip_id"] == wip:
                    return

        for wip in wips:
            start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR, "batch_id": wip}
            began = time.perf_counter()
            await tablet.publish(topics.inbound("1", Inbound.START), json.dumps(start), qos=1)
            await answer(ResultKind.STARTED, wip)
            out["start"].append(time.perf_counter() - began)
            complete = {"batch_id": wip, "result": "PASS"}
            began = time.perf_counter()
            await tablet.publish(topics.inbound("1", Inbound.COMPLETE), json.dumps(complete), qos=1)
            await answer(ResultKind.COMPLETED, wip)
            out["complete"].append(time.perf_counter() - began)
    return out


def bench_config(data_dir: Path, port: int, mes_url: str) -> BridgeConfig:
    """One station on the broker at `port`, the simulator at `mes_url`."""
    tag = uuid.uuid4().hex[:8]
    return BridgeConfig(
        bridge_id=f"bench-{tag}",
        data_dir=data_dir,
        log_level="WARNING",
        mqtt={"host": "127.0.0.1", "port": port, "topic_prefix": f"bench-{tag}"},
        # The MES's per-IP limit is not what is measured here: lifted on both sides.
        mes={"url": mes_url, "username": "admin", "password": "admin-pass", "rate_limit": 100_000},
        stations=[{"id": "1"}],
    )


async def one_broker(tuned: bool, samples: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
        MesSimulator(wips=2 * samples) as sim,
    ):
        directory = Path(tmp)
        sim.set_faults(rate_limit_per_min=100_000)
        async with mosquitto(directory / "broker", tuned=tuned) as port:
            config = bench_config(directory / "data", port, sim.url)
            bridge = await bridge_work(config, sim.wip_ids[:samples])
            mes = await mes_work(sim, config, sim.wip_ids[samples:])
            fsync = await fsyncs(directory, samples)
            hop = await hops(port, samples)
    name = "tuned (set_tcp_nodelay true)" if tuned else "stock"
    print(f"\n{name}: {samples} samples each, ms")
    print(f"  {'':<28} {'p50':>7} {'p99':>7}")
    for label, values in (
        ("fsync'd commit", fsync),
        ("MQTT hop", hop),
        ("MES: scan + start", mes["start"]),
        ("MES: complete", mes["complete"]),
    ):
        print(f"  {label:<28} {p(values, 0.5) * 1e3:>7.1f} {p(values, 0.99) * 1e3:>7.1f}")
    for action in ("start", "complete"):
        floor = {q: p(mes[action], q) + p(fsync, q) + 2 * p(hop, q) for q in (0.5, 0.99)}
        values = bridge[action]
        print(
            f"  {action + ' -> answer, bridge':<28} {p(values, 0.5) * 1e3:>7.1f} "
            f"{p(values, 0.99) * 1e3:>7.1f}   unavoidable {floor[0.5] * 1e3:.1f} / "
            f"{floor[0.99] * 1e3:.1f}   ratio {p(values, 0.5) / floor[0.5]:.2f} / "
            f"{p(values, 0.99) / floor[0.99]:.2f}"
        )


async def main_async(samples: int) -> None:
    print(machine())
    await one_broker(True, samples)
    await one_broker(False, samples)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    asyncio.run(main_async(parser.parse_args(argv).samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
