"""Pacing against the MES simulator's per-IP limit: 429s across a kill -9 and restart, the
drain time of N queued requests, and the first delivery after an outage.

    .venv/bin/python bench/pacing.py [--limit 100] [--window 6] [--requests 300] [--repeat 3]

The simulator counts `--limit` requests per `--window` seconds per IP (the MES: 100 per 60 s;
the default window is 6 s so that a run takes minutes, not an hour; every figure below is a
count or a ratio to the window, which the scale does not change).

* restart: a worker process (a `MesClient` sending `GET /processes/active`, paced) is killed
  with SIGKILL once the simulator has counted `--limit` of its requests; a second worker sends
  the rest of `--requests`. With the send log in a shared data_dir (the bridge) and without it
  (the pacer before issue 11, the baseline), in the same run. Printed: 429s of each.
* drain: one client, `--requests` callers at once; the time until the last answer, next to
  floor((N - 1) / limit) windows, the earliest the last request may go without a 429.
* recovery: the real bridge over Mosquitto with `probe_interval_s` of 30 s and four queued
  starts while the simulator answers 503 to everything; the time from the simulator answering
  again to the first start recorded there, next to the probe interval (what decided before).

There is no threshold: it is a measurement. See bench/README.md for a result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiomqtt
import ingest

from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, Topics
from bridge.mes import MesClient
from bridge.mes.settings import MesSettings
from mes_sim import MesSimulator

ROUTE = "GET /api/v1/processes/active"
OPERATOR = 2
RECOVERY_PROBE_S = 30.0
STATIONS = ("1", "2", "3", "4")


def mes_config(url: str, limit: int, window_s: float) -> MesSettings:
    return MesSettings.model_validate(
        {"url": url, "rate_limit": limit, "rate_window_s": window_s, "timeout_s": 10}
    )


# -- restart ------------------------------------------------------------------------------------


async def worker(url: str, limit: int, window_s: float, count: int, log: str) -> None:
    """The process that is killed, and the one after it: `count` paced requests, 8 at a time."""
    send_log = Path(log) if log else None
    async with MesClient(mes_config(url, limit, window_s), send_log=send_log) as client:
        queue = asyncio.Queue[None]()
        for _ in range(count):
            queue.put_nowait(None)

        async def lane() -> None:
            while not queue.empty():
                queue.get_nowait()
                await client.probe()

        await asyncio.gather(*(lane() for _ in range(8)))


def start_worker(
    url: str, limit: int, window_s: float, count: int, log: Path | None
) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "--worker", url, str(limit), str(window_s), str(count)]
    return subprocess.Popen([*command, str(log or "")], cwd=Path(__file__).parent)


def sent(sim: MesSimulator) -> int:
    return int(sim.ledger()["requests_by_route"].get(ROUTE, 0))


async def restart_429s(limit: int, window_s: float, requests: int, *, logged: bool) -> int:
    with MesSimulator() as sim, tempfile.TemporaryDirectory(prefix="bench-pacing-") as data:
        sim.set_faults(rate_limit_per_min=limit, rate_limit_window_s=window_s)
        log = Path(data) / "mes-sends.log" if logged else None
        first = start_worker(sim.url, limit, window_s, requests, log)
        while sent(sim) < limit:  # noqa: ASYNC110 (the simulator offers no event)
            await asyncio.sleep(0.005)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        rest = requests - sent(sim)
        second = start_worker(sim.url, limit, window_s, rest, log)
        await asyncio.to_thread(second.wait)
        return int(sim.ledger()["rate_limited"])


# -- drain --------------------------------------------------------------------------------------


async def drain(limit: int, window_s: float, requests: int) -> tuple[float, int]:
    with MesSimulator() as sim:
        sim.set_faults(rate_limit_per_min=limit, rate_limit_window_s=window_s)
        async with MesClient(mes_config(sim.url, limit, window_s)) as client:
            began = time.monotonic()
            await asyncio.gather(*(client.probe() for _ in range(requests)))
            return time.monotonic() - began, int(sim.ledger()["rate_limited"])


# -- recovery -----------------------------------------------------------------------------------


async def first_delivery_after_recovery() -> float:
    tag = uuid.uuid4().hex[:8]
    host, port = ingest.MOSQUITTO
    with MesSimulator() as sim, tempfile.TemporaryDirectory(prefix="bench-recovery-") as data:
        config = BridgeConfig(
            bridge_id=f"bench-{tag}",
            data_dir=Path(data),
            log_level="WARNING",
            mqtt={"host": host, "port": port, "topic_prefix": f"bench-{tag}"},
            mes={"url": sim.url, "username": "admin", "password": "admin-pass", "timeout_s": 5},
            outbox={"retry_min_s": 0.05, "retry_max_s": 0.2, "probe_interval_s": RECOVERY_PROBE_S},
            stations=[{"id": station} for station in STATIONS],
        )
        topics = Topics(config.mqtt.topic_prefix)
        async with ingest.running(config), aiomqtt.Client(host, port) as tablet:
            await tablet.subscribe(topics.status(STATIONS[0]), qos=1)
            sim.set_faults(mode="unavailable")
            for station, wip in zip(STATIONS, sim.wip_ids, strict=False):
                start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
                await tablet.publish(topics.inbound(station, Inbound.START), json.dumps(start))
            async for message in tablet.messages:  # until the bridge calls the MES offline
                if json.loads(message.payload or b"{}").get("mes") == "offline":  # type: ignore[arg-type]
                    break
            await asyncio.sleep(1.0)  # well into the outage
            sim.set_faults(mode="ok")
            back = time.monotonic()
            while not sim.ledger()["starts"]:  # noqa: ASYNC110 (no event to await)
                await asyncio.sleep(0.005)
            return time.monotonic() - back


# -- the run ------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> None:
    limit, window, requests = args.limit, args.window, args.requests
    print(f"simulator limit: {limit} per {window:g} s; {requests} requests; {args.repeat} repeats")
    print(f"{'run':>4} {'429 restart, log':>17} {'429 restart, no log':>20}")
    for run in range(1, args.repeat + 1):
        with_log = await restart_429s(limit, window, requests, logged=True)
        without = await restart_429s(limit, window, requests, logged=False)
        print(f"{run:>4} {with_log:>17} {without:>20}")
    ideal = (requests - 1) // limit * window  # the last request's window, at the earliest
    drains = []
    for run in range(1, args.repeat + 1):
        took, limited = await drain(limit, window, requests)
        drains.append(took)
        print(
            f"drain {run}: {took:.2f} s, {limited} x 429; ideal {ideal:.2f} s: {took / ideal:.3f}"
        )
    print(f"drain / ideal, median: {statistics.median(drains) / ideal:.3f}")
    firsts = [await first_delivery_after_recovery() for _ in range(args.repeat)]
    print(
        "first delivery after recovery: "
        + ", ".join(f"{f:.2f} s" for f in firsts)
        + f"; median {statistics.median(firsts):.2f} s, probe interval {RECOVERY_PROBE_S:g} s"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="requests per window (100)")
    parser.add_argument("--window", type=float, default=6.0, help="the window in seconds (6)")
    parser.add_argument("--requests", type=int, default=300, help="requests in all (300)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats (3)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        url, limit, window, count, log = args.worker
        asyncio.run(worker(url, int(limit), float(window), int(count), log))
        return 0
    asyncio.run(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
