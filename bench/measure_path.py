"""The event loop's CPU per measurement in `Lifecycle.handle`, without MQTT: a `State` and a
`Lifecycle` on a temporary store (no MES is contacted: the batches' 착공 requests stay queued),
one batch open on each of S stations, then N measurements round robin in groups of G, as
`MqttLink` hands them over.

    .venv/bin/python bench/measure_path.py [--messages N] [--stations S] [--group G]
                                          [--repeat K] [--profile]

Printed: µs of the event loop thread's CPU per message (`time.thread_time`, so the store's worker
thread is left out), over the measurements only, for each of K runs, then their minimum and
median (the minimum is the run least disturbed by the rest of the machine). `--profile` runs them
under cProfile instead and prints the top of its table. Run it from two checkouts in turn
(`PYTHONPATH=...`) to compare code: a measurement, no thresholds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bridge.adapters.store import Store
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, Received, Topics
from bridge.engine.lifecycle import Lifecycle
from bridge.engine.reports import DeliveryReports
from bridge.engine.state import State
from bridge.mes import MesClient


def _config(data_dir: Path, stations: int, messages: int) -> BridgeConfig:
    return BridgeConfig(
        bridge_id="bench",
        data_dir=data_dir,
        mqtt={"host": "127.0.0.1", "port": 1883, "topic_prefix": "bench"},
        # Never contacted: the dispatcher does not run.
        mes={"url": "http://127.0.0.1:9", "username": "u", "password": "p"},
        batches={"max_measurements": messages},
        stations=[{"id": str(i)} for i in range(1, stations + 1)],
    )


async def run(messages: int, stations: int, group: int, profile: cProfile.Profile | None) -> float:
    with tempfile.TemporaryDirectory() as directory:
        config = _config(Path(directory), stations, messages)
        store = Store(config.store_dir)
        state = State(config, store=store, publish=lambda *_, **__: None, clock=_now)
        await state.load()
        async with MesClient(config.mes) as mes:
            deliveries = DeliveryReports(config, state, mes=mes, clock=_now)
            lifecycle = Lifecycle(state, deliveries)
            topics = Topics(config.mqtt.topic_prefix)
            ids = [station.id for station in config.stations]
            mid = 0

            def message(station: str, kind: Inbound, body: dict[str, object]) -> Received:
                nonlocal mid
                mid = mid % 65535 + 1
                return Received(topics.inbound(station, kind), json.dumps(body).encode(), mid=mid)

            for s in ids:
                start = {"wip_id": f"W{s}", "process_id": 1, "operator_id": 1, "batch_id": f"B-{s}"}
                await lifecycle.handle([message(s, Inbound.START, start)])
            assert len(state.batches) == stations
            measurements = [
                message(
                    ids[i % stations],
                    Inbound.MEASUREMENT,
                    {"batch_id": f"B-{ids[i % stations]}", "name": f"m{i}", "value": i},
                )
                for i in range(messages)
            ]
            groups = [measurements[i : i + group] for i in range(0, messages, group)]
            spent = 0.0
            for one in groups:
                began = time.thread_time()
                if profile is not None:
                    profile.enable()
                await lifecycle.handle(one)
                if profile is not None:
                    profile.disable()
                spent += time.thread_time() - began
            recorded = sum(len(batch.measurements) for batch in state.batches.values())
            assert recorded == messages, recorded
        await store.close()
    return spent / messages * 1e6


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--group", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    print(f"{args.messages} measurements, {args.stations} stations, groups of {args.group}")
    runs = []
    for _ in range(args.repeat):
        runs.append(asyncio.run(run(args.messages, args.stations, args.group, profile)))
        print(f"  {runs[-1]:.1f} µs of event-loop CPU per message")
    print(f"min {min(runs):.1f} µs, median {statistics.median(runs):.1f} µs")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
