"""MQTT over TLS: the bridge against our own Mosquitto with a TLS listener, certificates from a
throwaway CA. The test's tablet uses the same broker's plain listener."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app import run_bridge, stop
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind
from mes_sim import MesSimulator

from .harness import Tablet, bridge_config, event, running
from .tls import Pki, Ports, make_pki, tls_mosquitto


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def over_tls(sim: MesSimulator, tmp_path: Path, ports: Ports, **tls: Any) -> BridgeConfig:
    mqtt = {
        "host": "127.0.0.1",
        "port": ports.tls,
        "topic_prefix": f"tls-{uuid.uuid4().hex[:8]}",
        "keepalive_s": 10,
        "tls": tls,
    }
    return bridge_config(sim, tmp_path / "data", host="127.0.0.1", port=ports.tls, mqtt=mqtt)


def tablet_side(config: BridgeConfig, ports: Ports) -> BridgeConfig:
    return config.model_copy(
        update={"mqtt": config.mqtt.model_copy(update={"port": ports.plain, "tls": None})}
    )


class Captured(logging.Handler):
    """The bridge's log records; `wait(n)` returns once n of them match."""

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.DEBUG)
        self._pattern = re.compile(pattern)
        self.matching: list[logging.LogRecord] = []
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self._pattern.search(record.getMessage()):
            self.matching.append(record)
            self._changed.set()

    async def wait(self, count: int, *, within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while len(self.matching) < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured(r"^MQTT broker .*reconnecting in")
    logger = logging.getLogger("bridge")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("mutual", [False, True], ids=["server-cert", "mutual-tls"])
async def test_the_bridge_works_over_tls_with_a_private_ca(
    sim: MesSimulator, pki: Pki, tmp_path: Path, mutual: bool
) -> None:
    client = {"cert_file": pki.client_cert} if mutual else {}
    with tls_mosquitto(pki, tmp_path, require_certificate=mutual) as ports:
        config = over_tls(sim, tmp_path, ports, ca_file=pki.ca_file, **client)
        async with Tablet(tablet_side(config, ports)) as tablet, running(config):
            start = {"wip_id": sim.wip_ids[0], "process_id": 1, "operator_id": 2}
            await tablet.send("1", Inbound.START, start)
            await tablet.expect("1", ResultKind.STARTED, where=event("PROCESS_STARTED"))


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("wrong-ca", "CERTIFICATE_VERIFY_FAILED"),
        ("wrong-name", "CERTIFICATE_VERIFY_FAILED.*mismatch"),
    ],
)
async def test_a_broker_that_cannot_be_trusted_is_refused_with_the_reason_and_backoff(
    sim: MesSimulator, pki: Pki, tmp_path: Path, captured: Captured, case: str, says: str
) -> None:
    ca_file = pki.other_ca_file if case == "wrong-ca" else pki.ca_file
    with tls_mosquitto(pki, tmp_path, misnamed=case == "wrong-name") as ports:
        config = over_tls(sim, tmp_path, ports, ca_file=ca_file)
        bridge = asyncio.create_task(run_bridge(config))
        try:
            await captured.wait(3)
        finally:
            await stop(bridge)
    lines = [record.getMessage() for record in captured.matching]
    assert all(record.levelno == logging.WARNING for record in captured.matching)
    assert all(re.search(says, line) for line in lines), lines
    # Not a fast loop: each wait is drawn from a doubling range (0.5-1 s, 1-2 s, 2-4 s). Only
    # lower bounds: on a busy machine a first attempt may time out instead, and is not counted.
    delays = [float(re.findall(r"reconnecting in ([0-9.]+) s", line)[0]) for line in lines]
    assert all(delay >= 0.5 * 2**k for k, delay in enumerate(delays)), delays
    assert not any("connected to" in record.getMessage() for record in captured.records)


async def test_mutual_tls_without_a_client_certificate_is_refused_with_the_reason(
    sim: MesSimulator,
    pki: Pki,
    tmp_path: Path,
    captured: Captured,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # With TLS 1.3 the broker's refusal arrives after the handshake, as an alert that paho logs
    # (logger "mqtt"); aiomqtt then reports the connect as timed out.
    with tls_mosquitto(pki, tmp_path, require_certificate=True) as ports:
        config = over_tls(sim, tmp_path, ports, ca_file=pki.ca_file)
        bridge = asyncio.create_task(run_bridge(config))
        try:
            await captured.wait(1, within=30)
        finally:
            await stop(bridge)
    refused = [r for r in caplog.records if "CERTIFICATE_REQUIRED" in r.getMessage()]
    assert refused and refused[0].levelno == logging.ERROR
    assert not any("connected to" in record.getMessage() for record in captured.records)


async def test_insecure_accepts_a_certificate_for_another_name_and_says_so(
    sim: MesSimulator, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tls_mosquitto(pki, tmp_path, misnamed=True) as ports:
        config = over_tls(sim, tmp_path, ports, ca_file=pki.ca_file, insecure=True)
        async with Tablet(tablet_side(config, ports)) as tablet, running(config):
            start = {"wip_id": sim.wip_ids[0], "process_id": 1, "operator_id": 2}
            await tablet.send("1", Inbound.START, start)
            await tablet.expect("1", ResultKind.STARTED, where=event("PROCESS_STARTED"))
    warned = [r for r in caplog.records if "mqtt.tls.insecure" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING
