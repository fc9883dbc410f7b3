"""The 50-station ingest of `ingest_stations.py` with each consumer in a process of its own, as
the bridge runs on the Pi, and what that process spends per message: CPU of each of its threads,
read from /proc. In `ingest_stations.py` the consumer shares one interpreter (one GIL) with the
publisher, the status watcher and the simulator, and cProfile sees only the event loop's thread:
here the store's worker thread shows too.

    .venv/bin/python bench/ingest_process.py [--messages N] [--stations S] [--repeat K]

Each repeat, one after the other, the same N measurements round robin over S stations, from this
process (at most `WINDOW` ahead of the consumer, as in ingest_stations.py):

* durable: `ingest_stations.consume_durably` (the durable baseline: parse what arrived together,
  one fsync'd commit, acknowledge) run as `ingest_process.py --durable-consumer`; it prints its
  count as the bridge's status would tell it (`ingest_stations.as_a_status`: 0.1 s after the
  first change), and the clock stops when that reaches N.
* bridge: `python -m bridge run --config FILE` (a temporary YAML: S stations, the MES simulator
  in this process, its rate limit lifted); each station's batch is started first, and the clock
  stops when the statuses add up to N.

Printed per repeat and phase: msg/s, and the consumer's CPU per message in all and per thread
(the event loop's thread is the one with the process's id); then bridge/durable for msg/s and
durable/bridge for CPU per message (both read "1.0 = as cheap as the baseline"), and their
medians. A measurement, no thresholds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiomqtt
import yaml
from ingest import (
    MOSQUITTO,
    START_TIMEOUT_S,
    WINDOW,
    Progress,
    forget,
    machine,
    new_tag,
    publisher,
    window_bound,
)
from ingest_stations import (
    ENDPOINT,
    StationWatch,
    as_a_status,
    consume_durably,
    durable,
    flood,
    messages_for,
)

from bridge.core.topics import Topics
from mes_sim import MesSimulator

_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


async def one_run(stations: list[str], n: int) -> tuple[float, dict[int, float], int]:
    """msg/s, CPU seconds per thread over the flood, and the bridge's pid."""
    tag = new_tag()
    topics = Topics(f"bench-{tag}")
    bridge_id = f"bench-{tag}"
    progress = Progress()
    stations_watch = StationWatch(topics, stations, progress)
    online = asyncio.Event()
    with (
        MesSimulator(wips=len(stations)) as sim,
        tempfile.TemporaryDirectory(prefix="bench-process-") as tmp,
    ):
        sim.set_faults(rate_limit_per_min=100_000)
        config = {
            "bridge_id": bridge_id,
            "data_dir": str(Path(tmp) / "data"),
            "log_level": "WARNING",
            "mqtt": {"host": MOSQUITTO[0], "port": MOSQUITTO[1], "topic_prefix": f"bench-{tag}"},
            "mes": {
                "url": sim.url,
                "username": "admin",
                "password": "admin-pass",
                "rate_limit": 100_000,
            },
            "stations": [{"id": station} for station in stations],
        }
        path = Path(tmp) / "bridge.yaml"
        path.write_text(yaml.safe_dump(config))
        bridge = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(path)
        )
        watcher = aiomqtt.Client(*MOSQUITTO, identifier=f"bench-watch-{tag}")

        async def watch() -> None:
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                if not message.payload:
                    continue
                if message.topic.value == topics.availability(bridge_id):
                    if message.payload == b"online":
                        online.set()
                    continue
                stations_watch.heard(message.topic.value, message.payload)

        try:
            async with watcher, publisher(ENDPOINT, tag) as client:
                await watcher.subscribe(topics.status("+"), qos=1)
                await watcher.subscribe(topics.results("+"), qos=1)
                await watcher.subscribe(topics.availability(bridge_id), qos=1)
                reading = asyncio.create_task(watch())
                await asyncio.wait_for(online.wait(), START_TIMEOUT_S * 2)
                await stations_watch.start_batches(client, sim.wip_ids)
                before = thread_cpu(bridge.pid)
                began = time.perf_counter()
                await flood(client, messages_for(topics, stations, n), progress)
                await progress.reach(n)
                after = thread_cpu(bridge.pid)
                reading.cancel()
            spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
            return n / (progress.seen_at - began), spent, bridge.pid
        finally:
            bridge.send_signal(signal.SIGTERM)
            await bridge.wait()
            retained = [topics.status(station) for station in stations]
            retained.append(topics.availability(bridge_id))
            await forget(ENDPOINT, f"station-bridge-{bridge_id}", retained=retained)


async def durable_consumer(prefix: str, identifier: str, stations: list[str], n: int) -> None:
    """The durable baseline in a process of its own (`--durable-consumer`): prints `ready` once
    subscribed, then how many messages it has taken, as the bridge's status would."""
    async with durable(Topics(prefix), stations, identifier) as (consumer, store):
        print("ready", flush=True)
        tell = as_a_status(lambda taken: print(taken, flush=True))
        await consume_durably(consumer, store, n, tell)
        # Its threads' CPU is read after the last count: the store's worker must be there
        # still. The parent closes our stdin when it has read them.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def baseline_run(stations: list[str], n: int) -> tuple[float, dict[int, float], int]:
    """msg/s, CPU seconds per thread over the flood, and the pid of the durable consumer."""
    tag = new_tag()
    prefix, identifier = f"bench-{tag}", f"bench-durable-{tag}"
    progress = Progress()
    consumer = await asyncio.create_subprocess_exec(
        *[sys.executable, __file__, "--durable-consumer", prefix, identifier],
        *["--messages", str(n), "--stations", str(len(stations))],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert consumer.stdin is not None and consumer.stdout is not None
    output = consumer.stdout

    async def follow() -> None:
        while line := await output.readline():
            progress.update(int(line))

    try:
        ready = await asyncio.wait_for(output.readline(), START_TIMEOUT_S)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the durable consumer said {ready!r}")
        reading = asyncio.create_task(follow())
        async with publisher(ENDPOINT, tag) as client:
            before = thread_cpu(consumer.pid)
            began = time.perf_counter()
            await flood(client, messages_for(Topics(prefix), stations, n), progress)
            await progress.reach(n)
            after = thread_cpu(consumer.pid)
        consumer.stdin.close()
        await reading
        spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
        return n / (progress.seen_at - began), spent, consumer.pid
    finally:
        # It ends by itself once its stdin is closed. Not killed unless it hangs: on a process
        # that has just ended, kill() polls it, reaping it under asyncio's child watcher, which
        # then logs "Unknown child process".
        consumer.stdin.close()
        try:
            await asyncio.wait_for(consumer.wait(), START_TIMEOUT_S)
        except TimeoutError:
            consumer.kill()
            await consumer.wait()
        await forget(ENDPOINT, identifier)


def cpu_line(name: str, n: int, rate: float, spent: dict[int, float], pid: int) -> float:
    """Print one process's figures; returns its CPU in µs per message."""
    loop = spent.pop(pid, 0.0)
    others = sorted((cpu for cpu in spent.values() if cpu > 0), reverse=True)
    per = n / 1e6
    total = (loop + sum(others)) / per
    threads = ", ".join(f"{cpu / per:.0f}" for cpu in others)
    print(
        f"  {name:<8} {rate:6.0f} msg/s; CPU {total:4.0f} us/msg: event loop "
        f"{loop / per:.0f}, other threads {threads or '0'} (the store's worker first)"
    )
    return total


async def main_async(args: argparse.Namespace) -> None:
    stations = [f"S{n:02d}" for n in range(args.stations)]
    if args.durable_consumer:
        prefix, identifier = args.durable_consumer
        await durable_consumer(prefix, identifier, stations, args.messages)
        return
    print(machine())
    print(f"{args.messages} messages over {args.stations} stations; CPU in us per message")
    rates, cpus = [], []
    for run in range(1, args.repeat + 1):
        print(f"{run}:")
        base_rate, base_spent, base_pid = await baseline_run(stations, args.messages)
        base_cpu = cpu_line("durable", args.messages, base_rate, base_spent, base_pid)
        rate, spent, pid = await one_run(stations, args.messages)
        cpu = cpu_line("bridge", args.messages, rate, spent, pid)
        if window_bound(max(rate, base_rate)):
            print(f"  note: held back by the publish window ({WINDOW}) in this run")
        rates.append(rate / base_rate)
        cpus.append(base_cpu / cpu)
        print(f"  bridge/durable: msg/s {rates[-1]:.3f}, CPU per message (inverted) {cpus[-1]:.3f}")
    print(
        f"medians: bridge/durable msg/s {statistics.median(rates):.3f}, "
        f"durable CPU / bridge CPU {statistics.median(cpus):.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--durable-consumer", nargs=2, metavar=("PREFIX", "ID"), help="internal")
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
