"""P5 soak: the bridge under a steady load for a long time; its RSS and open files sampled.

    .venv/bin/python bench/soak.py [--minutes 30] [--stations 10] [--every-s 25]
                                   [--warmup-min 5] [--sample-s 10]

The bridge runs as `station-bridge run` in a process of its own (so that what is sampled is the
bridge alone), on Mosquitto at 127.0.0.1:1883, against the MES simulator (in this process) at the
deployed MES's limit of 100 requests a minute, with its default pacing (90 a minute). Each of S
stations runs a batch every `--every-s` seconds (start a fresh WIP, three measurements,
complete PASS), staggered; the defaults make 24 batches a minute, each a scan (a fresh WIP), a
start and a complete: 72 MES requests a minute, under the bridge's pace of 90.

Every `--sample-s` seconds: the bridge's VmRSS, its open file descriptors, and the outbox's
pending_total from the retained status. At the end: the figures after the warm-up, their growth
(the mean of the last fifth over the mean of the first fifth after the warm-up), whether the
outbox kept up (pending at the end, batches answered), and any 429 the MES gave. A measurement,
no thresholds: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from ingest import MOSQUITTO, OPERATOR, forget, machine
from ingest import Endpoint as BrokerEndpoint

from bridge.core.topics import Inbound, Topics
from mes_sim import MesSimulator


def sample(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    def __init__(self, topics: Topics, wips: list[str]) -> None:
        self.topics = topics
        self._wips = iter(wips)
        self.sent = 0
        self.answered = 0
        self.pending_total = 0
        self.drained = asyncio.Event()  # the outbox was seen empty

    async def station(self, client: aiomqtt.Client, station: str, every_s: float) -> None:
        while True:
            began = time.monotonic()
            wip = next(self._wips)
            batch = f"{wip}-1"
            start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR, "batch_id": batch}
            await client.publish(self.topics.inbound(station, Inbound.START), json.dumps(start), 1)
            for n in range(3):
                reading = {"batch_id": batch, "name": f"m{n}", "value": n}
                topic = self.topics.inbound(station, Inbound.MEASUREMENT)
                await client.publish(topic, json.dumps(reading), 1)
            complete = {"batch_id": batch, "result": "PASS"}
            await client.publish(
                self.topics.inbound(station, Inbound.COMPLETE), json.dumps(complete), 1
            )
            self.sent += 1
            self.drained.clear()  # until a status says this one is through too
            await asyncio.sleep(max(0.0, every_s - (time.monotonic() - began)))

    async def read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            if not message.payload:
                continue
            body: dict[str, Any] = json.loads(message.payload)
            if message.topic.value.endswith("/status"):
                self.pending_total = int(body["outbox"]["pending_total"])
                if self.pending_total == 0:
                    self.drained.set()
                else:
                    self.drained.clear()
            elif body.get("event") in ("SEQUENCE_COMPLETE", "SYNCED") and (
                body.get("action", "complete") == "complete"
            ):
                self.answered += 1


async def soak(args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex[:8]
    stations = [f"S{n:02d}" for n in range(args.stations)]
    batches = int(args.minutes * 60 / args.every_s * args.stations) + args.stations * 2
    with (
        tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp,
        MesSimulator(wips=batches) as sim,
    ):
        sim.set_faults(rate_limit_per_min=100)
        config = {
            "bridge_id": f"soak-{tag}",
            "data_dir": tmp,
            "log_level": "WARNING",
            "mqtt": {"host": MOSQUITTO[0], "port": MOSQUITTO[1], "topic_prefix": f"bench-{tag}"},
            "mes": {"url": sim.url, "username": "admin", "password": "admin-pass"},
            "stations": [{"id": station} for station in stations],
        }
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        bridge = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "station-bridge"), "run", "--config", str(path)
        )
        topics = Topics(f"bench-{tag}")
        load = Load(topics, list(sim.wip_ids))
        samples: list[tuple[float, float, int, int]] = []  # minute, MB, fds, pending
        try:
            async with aiomqtt.Client(*MOSQUITTO, identifier=f"soak-{tag}") as client:
                await client.subscribe(topics.results(), qos=1)
                await client.subscribe(topics.status("+"), qos=1)
                await asyncio.sleep(3)  # the bridge connects
                reader = asyncio.create_task(load.read(client))
                began = time.monotonic()
                runners = []
                for station in stations:
                    runners.append(asyncio.create_task(load.station(client, station, args.every_s)))
                    await asyncio.sleep(args.every_s / len(stations))  # staggered
                while (elapsed := time.monotonic() - began) < args.minutes * 60:
                    await asyncio.sleep(args.sample_s)
                    mb, fds = sample(bridge.pid)
                    samples.append((elapsed / 60, mb, fds, load.pending_total))
                    print(
                        f"{elapsed / 60:6.1f} min  RSS {mb:6.1f} MB  fds {fds:3d}  "
                        f"pending {load.pending_total:4d}  batches {load.sent} sent, "
                        f"{load.answered} completed",
                        flush=True,
                    )
                for runner in runners:
                    runner.cancel()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(load.drained.wait(), 120)
                reader.cancel()
        finally:
            with contextlib.suppress(ProcessLookupError):
                bridge.terminate()
            await bridge.wait()
            retained = [topics.status(station) for station in stations]
            retained.append(topics.availability(f"soak-{tag}"))
            await forget(
                BrokerEndpoint("mosquitto", *MOSQUITTO),
                f"station-bridge-soak-{tag}",
                retained=retained,
            )
        report(samples, args.warmup_min, load, sim.ledger()["rate_limited"])


def report(
    samples: Sequence[tuple[float, float, int, int]], warmup: float, load: Load, limited: int
) -> None:
    after = [s for s in samples if s[0] >= warmup]
    if len(after) < 5:
        print("too few samples after the warm-up for a growth figure")
        return
    fifth = max(1, len(after) // 5)
    first, last = after[:fifth], after[-fifth:]
    for label, index in (("RSS MB", 1), ("open files", 2)):
        a = statistics.mean(s[index] for s in first)
        b = statistics.mean(s[index] for s in last)
        print(f"{label:<11} after warm-up: {a:.1f} -> {b:.1f}, growth {100 * (b / a - 1):+.1f} %")
    print(f"pending: max {max(s[3] for s in after)}, at the end {load.pending_total}")
    print(f"batches sent {load.sent}, completes answered {load.answered}; MES 429s: {limited}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--stations", type=int, default=10)
    parser.add_argument("--every-s", type=float, default=25)
    parser.add_argument("--warmup-min", type=float, default=5)
    parser.add_argument("--sample-s", type=float, default=10)
    print(machine())
    asyncio.run(soak(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
