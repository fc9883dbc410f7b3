"""The bridge with a full outbox: start -> answer and event-loop stalls, next to an empty outbox.

    .venv/bin/python bench/outbox_scale.py [--pending N] [--stations S] [--starts K]

Two phases in this process, on Mosquitto at 127.0.0.1:1883, the MES down (its URL a closed
loopback port, so every request fails at once and the bridge answers `…_OFFLINE`):

* empty: a fresh data_dir;
* full: a data_dir holding N pending requests (starts of N WIPs, spread over S stations, already
  announced and waiting for their next attempt an hour from now, as after a long outage).

In each, a tablet sends K `batch/start`s (new WIPs, round robin over the stations, one at a time)
and times each to its `result/started`; a task on the bridge's event loop sleeps 5 ms at a time
and records how late it wakes (loop lag). At the end of each phase, with the bridge still running,
one full pass of the cyclic GC is timed (`gc.collect()`): the longest stall the GC can cause, which
a run of K starts may or may not meet. Printed: p50/p95/max of start -> answer, the longest stall
and the GC pass for both, and full/empty. A measurement, no thresholds: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
from full_outbox import config, fill
from ingest import MOSQUITTO, OPERATOR, Endpoint, forget, machine, new_tag, running

from bridge.core.topics import Inbound, Topics

LAG_TICK_S = 0.005


async def watch_lag(stalls: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_TICK_S)
        stalls.append(loop.time() - before - LAG_TICK_S)


async def phase(pending: int, stations: int, starts: int) -> tuple[list[float], float, float]:
    tag = new_tag()
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as data_dir:
        bridge = config(Path(data_dir), tag, stations)
        await fill(bridge, pending)
        topics = Topics(bridge.mqtt.topic_prefix)
        answers: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        tablet_id = f"bench-tablet-{tag}"
        async with (
            aiomqtt.Client(*MOSQUITTO, identifier=tablet_id) as tablet,
            running(bridge),
        ):
            await tablet.subscribe(topics.results(), qos=1)

            async def read() -> None:
                async for message in tablet.messages:
                    assert isinstance(message.payload, bytes)
                    body: dict[str, Any] = json.loads(message.payload)
                    answers.put_nowait((str(body.get("wip_id")), time.perf_counter()))

            reader = asyncio.create_task(read())
            stalls: list[float] = []
            await asyncio.sleep(2)  # the bridge settles (status, lanes) before the clock runs
            lag = asyncio.create_task(watch_lag(stalls))
            latencies = []
            for n in range(starts):
                station = bridge.stations[n % stations].id
                wip = f"NEW-{n:05d}"
                body = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
                sent = time.perf_counter()
                await tablet.publish(
                    topics.inbound(station, Inbound.START), json.dumps(body), qos=1
                )
                while True:
                    answered, at = await asyncio.wait_for(answers.get(), 30)
                    if answered == wip:
                        break
                latencies.append(at - sent)
            lag.cancel()
            reader.cancel()
            collecting = time.perf_counter()
            gc.collect()  # on the loop, as the GC's own full pass would run
            gc_pass = time.perf_counter() - collecting
        retained = [topics.status(station.id) for station in bridge.stations]
        retained.append(topics.availability(bridge.bridge_id))
        await forget(Endpoint("mosquitto", *MOSQUITTO), bridge.client_id, retained=retained)
    return latencies, max(stalls, default=0.0), gc_pass


def summary(latencies: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return statistics.median(ordered), p95, ordered[-1]


async def main_async(args: argparse.Namespace) -> None:
    print(machine())
    print(f"{args.pending} pending over {args.stations} stations, {args.starts} starts each phase")
    empty, empty_stall, empty_gc = await phase(0, args.stations, args.starts)
    full, full_stall, full_gc = await phase(args.pending, args.stations, args.starts)
    print(
        f"{'phase':<7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'longest stall ms':>17} "
        f"{'GC pass ms':>11}"
    )
    for name, latencies, stall, gc_pass in (
        ("empty", empty, empty_stall, empty_gc),
        ("full", full, full_stall, full_gc),
    ):
        p50, p95, top = summary(latencies)
        print(
            f"{name:<7} {p50 * 1e3:>8.1f} {p95 * 1e3:>8.1f} {top * 1e3:>8.1f} {stall * 1e3:>17.1f} "
            f"{gc_pass * 1e3:>11.1f}"
        )
    (e50, e95, _), (f50, f95, _) = summary(empty), summary(full)
    print(f"full/empty: p50 {f50 / e50:.2f}, p95 {f95 / e95:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--starts", type=int, default=200)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
