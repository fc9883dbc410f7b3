"""`station-bridge run` as systemd runs a `Type=notify` unit with `WatchdogSec=`: the test binds the
notify socket (a real Unix datagram socket) and reads what a real bridge process sends to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.config import BridgeConfig
from mes_sim import MesSimulator

from .harness import MOSQUITTO, bridge_config, mosquitto_running

WATCHDOG_USEC = 600_000  # a heartbeat every 0.2 s: quick to observe


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    # A short directory of its own: a socket path must fit in 108 bytes.
    with (
        tempfile.TemporaryDirectory(prefix="sd-") as directory,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        path = os.path.join(directory, "notify")
        sock.bind(path)
        sock.settimeout(30)
        yield sock, path


def start_bridge(config: BridgeConfig, tmp_path: Path, notify: str) -> subprocess.Popen[bytes]:
    data = config.model_dump(mode="json")
    data["mes"]["password"] = "admin-pass"  # model_dump hides secrets
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump(data))
    environ = {**os.environ, "NOTIFY_SOCKET": notify, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with (tmp_path / "bridge.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "--config", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
        )


def received(sock: socket.socket) -> list[str]:
    """The fields of the next datagram (waits for it, up to the socket's timeout)."""
    return sock.recv(4096).decode().split("\n")


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
def test_ready_once_connected_then_the_watchdog_then_stopping(
    sim: MesSimulator, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    host, port = MOSQUITTO
    bridge = start_bridge(
        bridge_config(sim, tmp_path / "data", host=host, port=port), tmp_path, path
    )
    try:
        before_ready: list[list[str]] = []
        while "READY=1" not in (message := received(sock)):
            before_ready.append(message)
        assert all(m[0].startswith("EXTEND_TIMEOUT_USEC=") for m in before_ready), before_ready
        assert [received(sock), received(sock)] == [["WATCHDOG=1"], ["WATCHDOG=1"]]
        bridge.send_signal(signal.SIGTERM)
        while (message := received(sock)) == ["WATCHDOG=1"]:
            pass
        assert message == ["STOPPING=1"]
        assert bridge.wait(timeout=30) == 0
    finally:
        bridge.kill()
        bridge.wait()


def test_without_a_broker_it_is_not_ready_but_keeps_asking_for_time(
    sim: MesSimulator, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = bridge_config(sim, tmp_path / "data", host="127.0.0.1", port=port)
    bridge = start_bridge(config, tmp_path, path)
    try:
        messages = [received(sock) for _ in range(5)]
        assert all(m[0] == f"EXTEND_TIMEOUT_USEC={WATCHDOG_USEC}" for m in messages), messages
        assert bridge.poll() is None
    finally:
        bridge.kill()
        bridge.wait()
