"""The shipped Mosquitto set-up (deploy/mosquitto/) keeps every station in its own lane: a real
Mosquitto with that config and ACL, an account per station, and a running bridge behind it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bridge.adapters.broker import find_free_port
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind, Topics
from mes_sim import MesSimulator

from .harness import OPERATOR, bridge_config, running

MOSQUITTO = Path("/usr/sbin/mosquitto")
DEPLOY = Path(__file__).parents[2] / "deploy" / "mosquitto"
ACCOUNTS = {"station-bridge": "bridge-secret", "3": "three-secret", "4": "four-secret"}

pytestmark = pytest.mark.skipif(
    not MOSQUITTO.exists() or shutil.which("mosquitto_passwd") is None,
    reason="Mosquitto is not installed",
)


def config_for(directory: Path, port: int) -> str:
    """The shipped config with this test's port and files; `user root` keeps a broker started
    by root (CI) from dropping to the mosquitto user, who cannot read the test's directory."""
    text = (DEPLOY / "station-bridge.conf").read_text()
    text = text.replace("listener 1883\n", f"listener {port} 127.0.0.1\n")
    text = text.replace("/etc/mosquitto/", f"{directory}/")
    assert f"listener {port} 127.0.0.1" in text and str(directory) in text
    return text + ("user root\n" if os.geteuid() == 0 else "")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto of this test's own on a free loopback port, with the shipped config and ACL."""
    passwords = tmp_path / "station-bridge.passwd"
    for number, (user, password) in enumerate(ACCOUNTS.items()):
        create = ["-c"] if number == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(passwords), user, password], check=True
        )
    shutil.copy(DEPLOY / "station-bridge.acl", tmp_path / "station-bridge.acl")
    port = find_free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(config_for(tmp_path, port))
    log = (tmp_path / "mosquitto.log").open("w")
    process = subprocess.Popen([str(MOSQUITTO), "-c", str(config)], stdout=log, stderr=log)
    try:
        wait_listening(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until the port takes a connection, for up to 100 tries of 0.05 s each."""
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)  # returns at once if it exited
            assert process.poll() is None, "mosquitto exited"
    raise AssertionError("mosquitto did not listen within 5 s")


@asynccontextmanager
async def client(port: int, user: str, password: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password, identifier=f"test-{user}"
    ) as connected:
        yield connected


def config_behind(broker: int, sim: MesSimulator, tmp_path: Path) -> BridgeConfig:
    """A bridge that logs in to the test's broker with the bridge's account."""
    return bridge_config(
        sim,
        tmp_path / "data",
        host="127.0.0.1",
        port=broker,
        mqtt={
            "host": "127.0.0.1",
            "port": broker,
            "username": "station-bridge",
            "password": ACCOUNTS["station-bridge"],
        },
        stations=[{"id": "3"}, {"id": "4"}],
    )


async def test_a_station_publishes_only_under_its_own_id(
    broker: int, sim: MesSimulator, tmp_path: Path
) -> None:
    config = config_behind(broker, sim, tmp_path)
    topics = Topics()
    seen: list[tuple[str, Any]] = []
    arrived = asyncio.Condition()

    async def collect(station: aiomqtt.Client, name: str) -> None:
        async for message in station.messages:
            assert isinstance(message.payload, bytes)
            async with arrived:
                seen.append((f"{name} {message.topic.value}", json.loads(message.payload)))
                arrived.notify_all()

    async with (
        running(config),
        client(broker, "3", ACCOUNTS["3"]) as three,
        client(broker, "4", ACCOUNTS["4"]) as four,
    ):
        for station in (three, four):
            await station.subscribe(topics.results("+"), qos=1)  # every station's, if it could
        readers = [
            asyncio.create_task(collect(three, "3")),
            asyncio.create_task(collect(four, "4")),
        ]
        try:
            # Station 3's account publishes a start as station 4: the broker drops it.
            forged = {"wip_id": sim.wip_ids[0], "process_id": 1, "operator_id": OPERATOR}
            await three.publish(topics.inbound("4", Inbound.START), json.dumps(forged), qos=1)
            # Then as itself, with a broken payload: answered, to station 3 only.
            await three.publish(topics.inbound("3", Inbound.START), b"{", qos=1)
            error_for_3 = f"3 {topics.result('3', ResultKind.ERROR)}"
            async with asyncio.timeout(15), arrived:
                await arrived.wait_for(lambda: any(t == error_for_3 for t, _ in seen))
            # And station 4 itself is still heard and answered.
            await four.publish(topics.inbound("4", Inbound.START), b"{", qos=1)
            error_for_4 = f"4 {topics.result('4', ResultKind.ERROR)}"
            async with asyncio.timeout(15), arrived:
                await arrived.wait_for(lambda: any(t == error_for_4 for t, _ in seen))
        finally:
            for reader in readers:
                reader.cancel()

    # Station 3 read only its own answers, station 4 only its own; nothing was started.
    assert {topic for topic, _ in seen} == {error_for_3, error_for_4}
    assert [p["error"]["code"] for _, p in seen] == ["INVALID_JSON", "INVALID_JSON"]
    assert sim.ledger()["starts"] == []


async def test_a_wrong_password_is_refused(broker: int) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(broker, "3", "not-the-password"):
            pass


async def test_the_broker_drops_what_is_past_its_limit_and_the_bridge_answers_the_rest(
    broker: int, sim: MesSimulator, tmp_path: Path
) -> None:
    config = config_behind(broker, sim, tmp_path)
    topics = Topics()
    huge = json.dumps({"name": "n", "value": "x" * 300_000}).encode()  # > message_size_limit
    large = json.dumps({"name": "n", "value": "x" * 100_000}).encode()  # > max_message_bytes
    async with running(config), client(broker, "3", ACCOUNTS["3"]) as three:
        await three.subscribe(topics.result("3", ResultKind.ERROR), qos=1)
        await three.publish(topics.inbound("3", Inbound.MEASUREMENT), huge, qos=1)
        await three.publish(topics.inbound("3", Inbound.MEASUREMENT), large, qos=1)
        await three.publish(topics.inbound("3", Inbound.MEASUREMENT), b"{", qos=1)
        answers = []
        async with asyncio.timeout(15):
            async for message in three.messages:
                assert isinstance(message.payload, bytes)
                answers.append(json.loads(message.payload)["error"])
                if answers[-1]["code"] == "INVALID_JSON":  # the last one sent: all are in
                    break
    # The broker dropped the 300 kB message: only the 100 kB one was answered before the last.
    assert [a["code"] for a in answers] == ["MESSAGE_TOO_LARGE", "INVALID_JSON"]
    assert str(len(large)) in answers[0]["detail"]
