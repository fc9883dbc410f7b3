"""Idle RSS of the bridge, next to a bare process holding the same libraries and one MQTT
connection, and with a full outbox.

    .venv/bin/python bench/memory.py [--stations S] [--pending N] [--settle SECONDS]

Each figure is a fresh child process (this script run with `--role`), so none shares a heap:

* bare: imports aiomqtt, httpx, pydantic, pydantic_settings, yaml and diskcache, and holds one
  MQTT connection to Mosquitto (127.0.0.1:1883);
* idle: the bridge (`run_bridge`) with S stations and an empty outbox, the MES down (a closed
  loopback port: nothing else is loaded into the process);
* full: the same with N pending requests on disk when it starts (bench/full_outbox.py).

Each child waits `--settle` seconds after it is ready, then reports its VmRSS (and the largest
it reached, VmHWM). A measurement, no thresholds: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path


def rss_kb() -> dict[str, int]:
    status = Path("/proc/self/status").read_text()
    return {
        key: int(re.search(rf"{key}:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        for key in ("VmRSS", "VmHWM")
    }


async def bare(settle: float) -> dict[str, int]:
    import aiomqtt
    import diskcache  # noqa: F401
    import httpx  # noqa: F401
    import pydantic  # noqa: F401
    import pydantic_settings  # noqa: F401
    import yaml  # noqa: F401
    from full_outbox import MOSQUITTO

    async with aiomqtt.Client(*MOSQUITTO, identifier="bench-memory-bare"):
        await asyncio.sleep(settle)
        return rss_kb()


async def bridge(settle: float, stations: int, data_dir: Path) -> dict[str, int]:
    from full_outbox import config

    from bridge.app import run_bridge, stop

    made = config(data_dir, f"mem-{uuid.uuid4().hex[:8]}", stations)
    ready = asyncio.Event()
    running = asyncio.create_task(run_bridge(made, ready=ready))
    await asyncio.wait_for(ready.wait(), 60)
    await asyncio.sleep(settle)
    measured = rss_kb()
    await stop(running)
    return measured


def child(role: str, args: argparse.Namespace, pending: int = 0) -> dict[str, int]:
    """The figure of a fresh process; the outbox is filled here, before it starts, so that the
    child's heap holds only what the bridge loads."""
    from full_outbox import config, fill

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as data_dir:
        asyncio.run(fill(config(Path(data_dir), "fill", args.stations), pending))
        command = [sys.executable, __file__, "--role", role, "--settle", str(args.settle)]
        command += ["--stations", str(args.stations), "--data-dir", data_dir]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["bare", "idle", "full"])
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    if args.role == "bare":
        print(json.dumps(asyncio.run(bare(args.settle))))
    elif args.role is not None:
        print(json.dumps(asyncio.run(bridge(args.settle, args.stations, args.data_dir))))
    else:
        from ingest import machine

        print(machine())
        figures = {
            "bare": child("bare", args),
            "idle": child("idle", args),
            "full": child("full", args, args.pending),
        }
        base = figures["bare"]["VmRSS"]
        print(f"{'process':<8} {'RSS MB':>8} {'peak MB':>8} {'RSS/bare':>9}")
        for role, kb in figures.items():
            print(
                f"{role:<8} {kb['VmRSS'] / 1024:>8.1f} {kb['VmHWM'] / 1024:>8.1f} "
                f"{kb['VmRSS'] / base:>9.2f}"
            )
        print(f"full/idle: {figures['full']['VmRSS'] / figures['idle']['VmRSS']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
