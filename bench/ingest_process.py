"""The 50-station ingest of `ingest_stations.py` with the bridge in its own process, and what that
process spends per message: CPU of each of its threads, read from /proc. In `ingest_stations.py`
the bridge shares one interpreter with the publisher, the status watcher and the simulator, and
cProfile sees only the event loop's thread: here the store's worker thread shows too.

    .venv/bin/python bench/ingest_process.py [--messages N] [--stations S] [--repeat K]

The bridge runs as `python -m bridge run --config FILE` (a temporary YAML: S stations, the MES
simulator in this process, its rate limit lifted). Each station's batch is started, then N
measurements go round robin as in ingest_stations.py; the clock stops when the statuses add up
to N. Printed per repeat: msg/s, and the bridge's CPU per message in all and per thread (the
event loop's thread is the one with the process's id). A measurement, no thresholds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
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
    Progress,
    forget,
    machine,
    new_tag,
    publisher,
)
from ingest_stations import ENDPOINT, StationWatch, flood, messages_for

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


async def main_async(args: argparse.Namespace) -> None:
    print(machine())
    stations = [f"S{n:02d}" for n in range(args.stations)]
    print(f"{args.messages} messages over {args.stations} stations; bridge CPU in us per message")
    for run in range(1, args.repeat + 1):
        rate, spent, pid = await one_run(stations, args.messages)
        loop = spent.pop(pid, 0.0)
        others = sorted((cpu for cpu in spent.values() if cpu > 0), reverse=True)
        total = loop + sum(others)
        per = args.messages / 1e6
        threads = ", ".join(f"{cpu / per:.0f}" for cpu in others)
        print(
            f"{run:>3}: {rate:6.0f} msg/s; CPU {total / per:4.0f} us/msg: event loop "
            f"{loop / per:.0f}, other threads {threads or '0'} (the store's worker first)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
