"""Where a start's time goes, from the tablet's publish to the bridge handing `result/started` to
its MQTT link: the MES's HTTP round trips, the store commits awaited on the way, and the rest
(the station -> bridge hop, parsing, hand-offs between tasks and threads). latency.py's bridge
phase on a tuned private Mosquitto, with timers wrapped around those steps in this process only.

    .venv/bin/python bench/start_path.py [--samples N]

Printed: medians over N starts (the first two left out: the login and the process map). A
measurement, no thresholds: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import latency
from ingest import machine

from bridge.adapters.mqtt import MqttLink
from bridge.adapters.store import Store
from bridge.mes import MesClient
from mes_sim import MesSimulator

marks: list[tuple[str, float]] = []


def mark(name: str) -> None:
    marks.append((name, time.perf_counter()))


def instrument() -> None:
    commit, send, link_publish = Store.commit, MesClient._send, MqttLink.publish
    tablet_publish = aiomqtt.Client.publish

    async def timed_commit(self: Store, writes: Any) -> None:
        mark("commit>")
        await commit(self, writes)
        mark("commit<")

    async def timed_send(self: MesClient, *args: Any, **kwargs: Any) -> Any:
        mark("http>")
        answer = await send(self, *args, **kwargs)
        mark("http<")
        return answer

    def answered(self: MqttLink, topic: str, payload: Any, *, retain: bool = False) -> None:
        if topic.endswith("/result/started"):
            mark("answer")
        link_publish(self, topic, payload, retain=retain)

    async def tablet(self: aiomqtt.Client, topic: Any, *args: Any, **kwargs: Any) -> None:
        if str(topic).endswith("/batch/start"):
            mark("start")
        await tablet_publish(self, topic, *args, **kwargs)

    Store.commit = timed_commit  # type: ignore[method-assign]
    MesClient._send = timed_send  # type: ignore[method-assign]
    MqttLink.publish = answered  # type: ignore[method-assign]
    aiomqtt.Client.publish = tablet  # type: ignore[method-assign]


def split(segment: list[tuple[str, float]]) -> tuple[float, float, float] | None:
    """(total, in HTTP, in commits) of one start, up to its answer; None if it got none."""
    begun = segment[0][1]
    answer = next((at for name, at in segment if name == "answer"), None)
    if answer is None:
        return None
    spent = {"http": 0.0, "commit": 0.0}
    opened: dict[str, float] = {}
    for name, at in segment:
        if at > answer:
            break
        step, edge = name[:-1], name[-1]
        if edge == ">":
            opened[step] = at
        elif edge == "<" and step in opened:
            spent[step] += at - opened.pop(step)
    return answer - begun, spent["http"], spent["commit"]


async def main_async(samples: int) -> None:
    print(machine())
    instrument()
    with (
        tempfile.TemporaryDirectory(prefix="bench-start-path-") as tmp,
        MesSimulator(wips=samples) as sim,
    ):
        sim.set_faults(rate_limit_per_min=100_000)
        async with latency.mosquitto(Path(tmp) / "broker", tuned=True) as port:
            config = latency.bench_config(Path(tmp) / "data", port, sim.url)
            await latency.bridge_work(config, sim.wip_ids[:samples])
    starts = [i for i, (name, _) in enumerate(marks) if name == "start"]
    rows = [split(marks[a:b]) for a, b in zip(starts, [*starts[1:], len(marks)], strict=True)]
    kept = [row for row in rows[2:] if row is not None]
    total, http, commits = (statistics.median(column) * 1e3 for column in zip(*kept, strict=True))
    print(f"start -> started handed to the MQTT link, medians of {len(kept)}, ms:")
    print(f"  all {total:.2f}: MES HTTP {http:.2f}, store commits awaited {commits:.2f}, ", end="")
    print(f"the rest {total - http - commits:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    asyncio.run(main_async(parser.parse_args(argv).samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
