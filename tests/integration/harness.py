"""A tablet (a real MQTT client) and a running bridge, for the integration tests.

Each test gets its own topic prefix and client ids, so tests never see each other's messages on
the shared Mosquitto.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt

from bridge.app import run_bridge, stop
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind, Topics
from bridge.faults import Faults
from mes_sim import MesSimulator

MOSQUITTO = ("127.0.0.1", 1883)
OPERATOR = 2  # operator1 on the simulator
Payload = Any  # a JSON object, or the plain text of availability


def mosquitto_running() -> bool:
    try:
        with socket.create_connection(MOSQUITTO, timeout=1):
            return True
    except OSError:
        return False


def bridge_config(
    sim: MesSimulator, data_dir: Path, *, host: str, port: int, **overrides: Any
) -> BridgeConfig:
    """Fast retries, three stations, a fresh prefix; `overrides` replace top-level sections."""
    tag = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "bridge_id": f"test-{tag}",
        "data_dir": data_dir,
        "mqtt": {"host": host, "port": port, "topic_prefix": f"test-{tag}", "keepalive_s": 10},
        "mes": {"url": sim.url, "username": "admin", "password": "admin-pass", "timeout_s": 2},
        "outbox": {
            "retry_min_s": 0.05,
            "retry_max_s": 0.5,
            "probe_interval_s": 0.2,
            "settle_s": 0.3,  # the simulator answers at once (unless a test makes it slow)
        },
        "stations": [{"id": "1", "equipment_id": 7}, {"id": "2"}, {"id": "3"}],
    }
    fields.update(overrides)
    return BridgeConfig(**fields)


class Tablet:
    """Publishes what stations and tablets publish; collects every result and status."""

    def __init__(
        self, config: BridgeConfig, *, identifier: str | None = None, clean_session: bool = True
    ) -> None:
        """`identifier` and `clean_session=False`: a tablet whose session the broker keeps (what
        is published for it while it is away waits for it)."""
        self.topics = Topics(config.mqtt.topic_prefix)
        self._client = aiomqtt.Client(
            config.mqtt.host,
            config.mqtt.port,
            identifier=identifier or f"tablet-{uuid.uuid4().hex[:8]}",
            clean_session=clean_session,
        )
        self.seen: list[tuple[str, Payload]] = []
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tablet:
        await self._client.__aenter__()
        await self._client.subscribe(self.topics.results(), qos=1)
        await self._client.subscribe(self.topics.status("+"), qos=1)
        await self._client.subscribe(self.topics.live("+"), qos=1)
        await self._client.subscribe(self.topics.device_status("+", "+"), qos=1)
        await self._client.subscribe(self.topics.availability("+"), qos=1)
        await self._client.subscribe(self.topics.bridge_error("+"), qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self._client.messages:
            assert isinstance(message.payload, bytes)
            try:
                payload = json.loads(message.payload) if message.payload else {}
            except ValueError:
                payload = message.payload.decode()  # availability: online / offline
            async with self._changed:
                self.seen.append((message.topic.value, payload))
                self._changed.notify_all()

    async def send(
        self, station: str, kind: Inbound, payload: Payload | bytes, *, retain: bool = False
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        topic = self.topics.inbound(station, kind)
        await self._client.publish(topic, body, qos=1, retain=retain)

    async def expect(
        self,
        station: str,
        kind: ResultKind,
        *,
        where: Callable[[Payload], bool] = lambda _: True,
        within: float = 15.0,
    ) -> Payload:
        """The first result on that topic matching `where` (waits for it)."""
        return await self.expect_on(self.topics.result(station, kind), where, within=within)

    async def expect_on(
        self, topic: str, where: Callable[[Payload], bool], *, within: float = 15.0
    ) -> Payload:
        def found() -> Payload | None:
            return next((p for t, p in self.seen if t == topic and where(p)), None)

        return await self._first(found, within)

    async def latest(
        self, topic: str, where: Callable[[Payload], bool], *, within: float = 15.0
    ) -> Payload:
        """Waits until the latest message on a state topic (status, availability) matches."""

        def current() -> Payload | None:
            payloads = [p for t, p in self.seen if t == topic]
            return payloads[-1] if payloads and where(payloads[-1]) else None

        return await self._first(current, within)

    async def _first(self, pick: Callable[[], Payload | None], within: float) -> Payload:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: pick() is not None)
        result = pick()
        assert result is not None
        return result

    async def status(
        self, station: str, where: Callable[[Payload], bool], *, within: float = 15.0
    ) -> Payload:
        return await self.latest(self.topics.status(station), where, within=within)

    async def until(self, condition: Callable[[], bool], *, within: float = 15.0) -> None:
        """Waits until `condition` (usually over `self.seen`) holds."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(condition)

    def results(self, station: str, kind: ResultKind) -> list[Payload]:
        topic = self.topics.result(station, kind)
        return [payload for t, payload in self.seen if t == topic]


@asynccontextmanager
async def running(config: BridgeConfig, *, faults: Faults | None = None) -> AsyncIterator[None]:
    """The bridge as `station-bridge run` runs it, in this event loop (with `faults` armed)."""
    ready = asyncio.Event()
    task = asyncio.create_task(run_bridge(config, ready=ready, faults=faults))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what stopped it
    assert ready.is_set(), "the bridge did not connect within 15 s"
    try:
        yield
    finally:
        await stop(task)


def event(name: str) -> Callable[[Payload], bool]:
    return lambda payload: payload.get("event") == name


def ledger_rows(sim: MesSimulator, wip_id: str) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = sim.ledger()["history"]
    return [row for row in history if row["wip_id"] == wip_id]


class PrivateMosquitto:
    """A Mosquitto of the test's own, on a free loopback port, that keeps its sessions and queued
    messages on disk across a restart (as a broker on the Pi is configured to)."""

    def __init__(self, directory: Path, port: int) -> None:
        self.port = port
        self._config = directory / "mosquitto.conf"
        directory.mkdir(parents=True, exist_ok=True)
        self._config.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "autosave_interval 0\n"  # written when it stops
            # Run as root, Mosquitto would switch to its own user, which cannot write here.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        )
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            MOSQUITTO_BINARY,
            "-c",
            str(self._config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(500):
            if _listening(self.port):
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on port {self.port}")

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()  # saves what it holds
            await self._process.wait()


MOSQUITTO_BINARY = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
