"""Where the bridge's time goes per measurement message: one bridge phase of `ingest.py`, with
timers wrapped around the steps of `Lifecycle.handle` (in this process only; no bridge code is
changed).

    .venv/bin/python bench/breakdown.py [--messages N] [--broker mosquitto|embedded]

Each line is the total time spent in one step over the run, per message, and as a share of the
timed span (first publish to the status saying all N are recorded). The steps nest: `handle`
contains the others; `store thread` is the part of `Store.commit` spent in the store's worker
thread (SQLite, file writes, fsync), the rest of `Store.commit` is the hand-off to that thread and
back. What `handle` does not cover is the MQTT side (paho, aiomqtt, the ack) and the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import ingest

import bridge.adapters.store
import bridge.core.batches
import bridge.core.outbox
import bridge.core.payloads
import bridge.engine.lifecycle
import bridge.engine.state

_P = ParamSpec("_P")
_T = TypeVar("_T")

spent: defaultdict[str, float] = defaultdict(float)


def timed(name: str, function: Callable[_P, _T]) -> Callable[_P, _T]:
    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - began

    return wrapper


def timed_async(name: str, function: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    @functools.wraps(function)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        began = time.perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - began

    return wrapper


STEPS = {
    "handle": "Lifecycle.handle (all of it)",
    "parse": "parse_payload: json.loads + pydantic MeasurementIn",
    "select": "select_batch",
    "record": "record: the batch with the new values (Batch.model_copy)",
    "writes": "Change.writes: the batch header and the new row",
    "commit": "Store.commit (awaited, wall time)",
    "thread": "  of which in the store thread (SQLite, files, fsync)",
    "status": "status publish (coalesced)",
}


def patch(owner: object, name: str, replacement: object) -> None:
    setattr(owner, name, replacement)


def instrument() -> None:
    lifecycle, store = bridge.engine.lifecycle.Lifecycle, bridge.adapters.store.Store
    # lifecycle.py imported these functions by name: replace its references.
    patch(
        bridge.engine.lifecycle,
        "parse_payload",
        timed(STEPS["parse"], bridge.core.payloads.parse_payload),
    )
    patch(
        bridge.engine.lifecycle,
        "select_batch",
        timed(STEPS["select"], bridge.core.batches.select_batch),
    )
    patch(bridge.engine.lifecycle, "record", timed(STEPS["record"], bridge.core.batches.record))
    patch(
        bridge.core.outbox.Change,
        "writes",
        timed(STEPS["writes"], bridge.core.outbox.Change.writes),
    )
    patch(store, "commit", timed_async(STEPS["commit"], store.commit))
    patch(lifecycle, "handle", timed_async(STEPS["handle"], lifecycle.handle))
    state = bridge.engine.state.State
    patch(state, "_flush_status", timed(STEPS["status"], state._flush_status))
    run = store._run

    async def run_timed(self: bridge.adapters.store.Store, work: Callable[[], Any]) -> Any:
        return await run(self, timed(STEPS["thread"], work))

    patch(store, "_run", run_timed)


async def measure(kind: ingest.BrokerKind, messages: int) -> float:
    async with ingest.broker(kind) as endpoint:
        return await ingest.run_bridge_ingest(endpoint, messages)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000, help="(5000)")
    parser.add_argument("--broker", choices=["mosquitto", "embedded"], default="mosquitto")
    args = parser.parse_args(argv)
    instrument()
    rate = asyncio.run(measure(args.broker, args.messages))
    span = args.messages / rate
    per_message = span * 1e3 / args.messages
    print(f"{args.messages} messages, {args.broker}: {rate:.0f} msg/s, {per_message:.3f} ms/msg")
    for name in STEPS.values():
        total = spent.get(name, 0.0)
        print(f"  {name:55} {total * 1e3 / args.messages:7.3f} ms/msg {100 * total / span:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
