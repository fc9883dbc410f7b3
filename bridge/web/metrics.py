"""Prometheus metrics, collected at the bridge's edges: what comes in over MQTT (the handler),
what goes out on the result topics (the publish callable), the MES exchanges (httpx event hooks),
the disk commits (the store), the gauges (their events) and the event loop. Outbox and batch
counts are read from the `State` when scraped.

One registry per bridge (no process-wide default): two bridges in one test process don't mix.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.adapters.store import Store, StoreError
from bridge.core.topics import Received, Topics
from bridge.engine.state import Publish, State

_STARTED = "station_bridge_started"
_LOOP_TICK_S = 1.0

# The MES's paths with the WIP (a scanned string or the MES's id) taken out: a label per WIP
# would grow without end. Not anchored: mes.url may have a path of its own.
_WIP_SEGMENT = re.compile(r"(/api/v1/wip-items/)[^/]+(/|$)")


def endpoint(path: str) -> str:
    return _WIP_SEGMENT.sub(r"\1{wip}\2", path)


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_in = Counter(
            "station_bridge_messages_received",
            "inbound MQTT messages, by kind",
            ["kind"],
            registry=r,
        )
        self.outcomes = Counter(
            "station_bridge_outcomes",
            "result-topic messages published, by event",
            ["event"],
            registry=r,
        )
        self.mes_sent = Counter(
            "station_bridge_mes_requests_sent",
            "requests sent to the MES (answered or not)",
            ["endpoint"],
            registry=r,
        )
        self.mes_answers = Counter(
            "station_bridge_mes_responses",
            "answers from the MES, by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.mes_latency = Histogram(
            "station_bridge_mes_response_seconds",
            "time from request to the MES's answer",
            ["endpoint"],
            registry=r,
        )
        self.mes_rate_limited = Counter(
            "station_bridge_mes_rate_limited", "429 answers from the MES", registry=r
        )
        self.commit_latency = Histogram(
            "station_bridge_store_commit_seconds",
            "one synced disk commit",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.gauge_readings = Counter(
            "station_bridge_gauge_readings",
            "accepted serial-gauge readings",
            ["device"],
            registry=r,
        )
        self.gauge_errors = Counter(
            "station_bridge_gauge_errors",
            "overloads and errors a gauge reported",
            ["device"],
            registry=r,
        )
        self.gauge_reconnects = Counter(
            "station_bridge_gauge_reconnects",
            "a gauge's port connected again after a loss",
            ["device"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "station_bridge_event_loop_lag_seconds",
            "how late the event loop woke a 1 s timer, last time",
            registry=r,
        )

    def watch_state(self, state: State) -> None:
        self.registry.register(_StateCollector(state))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- the edges ----------------------------------------------------------------------------

    def counting_handler(
        self, handler: Callable[[Sequence[Received]], Awaitable[None]], topics: Topics
    ) -> Callable[[Sequence[Received]], Awaitable[None]]:
        async def handle(messages: Sequence[Received]) -> None:
            # Counted a kind at a time: a labelled counter's lookup and lock cost more than the
            # counting, and a group is mostly of one kind (a gauge's readings).
            kinds = collections.Counter(
                parsed[1].value if (parsed := topics.parse(message.topic)) else "other"
                for message in messages
            )
            for kind, count in kinds.items():
                self.messages_in.labels(kind=kind).inc(count)
            await handler(messages)

        return handle

    def counting_publish(self, publish: Publish) -> Publish:
        def counted(topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
            if "/result/" in topic and isinstance(payload.get("event"), str):
                self.outcomes.labels(event=payload["event"]).inc()
            publish(topic, payload, retain=retain)

        return counted

    def mes_hooks(self) -> dict[str, list[Callable[..., Any]]]:
        async def on_request(request: httpx.Request) -> None:
            request.extensions[_STARTED] = time.perf_counter()
            self.mes_sent.labels(endpoint=endpoint(request.url.path)).inc()

        async def on_response(response: httpx.Response) -> None:
            request = response.request
            where = endpoint(request.url.path)
            self.mes_answers.labels(endpoint=where, status=str(response.status_code)).inc()
            started = request.extensions.get(_STARTED)
            if isinstance(started, float):
                self.mes_latency.labels(endpoint=where).observe(time.perf_counter() - started)
            if response.status_code == 429:
                self.mes_rate_limited.inc()

        return {"request": [on_request], "response": [on_response]}

    async def watch_loop_lag(self) -> None:
        """Sleep a second at a time and record how late each wake-up was."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(_LOOP_TICK_S)
            self.loop_lag.set(max(loop.time() - before - _LOOP_TICK_S, 0.0))


class MeteredStore(Store):
    """The store, timing each commit and remembering whether the last one failed (`/readyz`)."""

    def __init__(self, directory: Path, *, metrics: BridgeMetrics) -> None:
        super().__init__(directory)
        self._metrics = metrics
        self.last_commit_failed = False

    async def commit(self, writes: Mapping[str, str | None]) -> None:
        if not writes:
            return
        try:
            with self._metrics.commit_latency.time():
                await super().commit(writes)
        except StoreError:
            self.last_commit_failed = True
            raise
        self.last_commit_failed = False


class _StateCollector(Collector):
    """Outbox and batch counts per station, read from the state at each scrape."""

    def __init__(self, state: State) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        pending = GaugeMetricFamily(
            "station_bridge_outbox_pending", "requests waiting for the MES", labels=["station"]
        )
        dead = GaugeMetricFamily(
            "station_bridge_outbox_dead", "dead letters (refused for good)", labels=["station"]
        )
        batches = GaugeMetricFamily(
            "station_bridge_active_batches", "batches started and not yet ended", labels=["station"]
        )
        outbox = self._state.outbox
        stations = {station.id for station in self._state.config.stations}
        # The outbox's counters, not its entries: a long outage's thousands would each be parsed
        # (tens of MB at once, kept by the allocator after) at every scrape.
        stations |= outbox.stations()
        stations |= {batch.station_id for batch in self._state.batches.values()}
        for station in sorted(stations):
            pending.add_metric([station], outbox.pending_count(station))
            dead.add_metric([station], outbox.dead_count(station))
            active = sum(1 for b in self._state.batches.values() if b.station_id == station)
            batches.add_metric([station], active)
        yield from (pending, dead, batches)
