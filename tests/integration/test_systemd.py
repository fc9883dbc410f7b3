"""`station-bridge run` as systemd runs deploy/station-bridge.service: a `Type=notify` unit with
`WatchdogSec=` (the test binds the notify socket, a real Unix datagram socket, and reads what a
real bridge process sends to it), hardened as `systemd-analyze security` rates it, and with
memory that is never writable and executable at once (`MemoryDenyWriteExecute=`)."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
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
UNIT = Path(__file__).resolve().parents[2] / "deploy" / "station-bridge.service"
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1  # linux/prctl.h, Linux 6.3


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


def start_bridge(
    config: BridgeConfig, tmp_path: Path, notify: str, *, write_xor_execute: bool = False
) -> subprocess.Popen[bytes]:
    data = config.model_dump(mode="json")
    data["mes"]["password"] = "admin-pass"  # model_dump hides secrets
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump(data))
    environ = {**os.environ, "NOTIFY_SOCKET": notify, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with (tmp_path / "bridge.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            preexec_fn=_refuse_writable_executable_memory if write_xor_execute else None,
        )


def _refuse_writable_executable_memory() -> None:
    """What MemoryDenyWriteExecute= asks of the kernel (systemd does it with seccomp)."""
    if ctypes.CDLL(None).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_MDWE) failed")


def _write_xor_execute_supported() -> bool:
    return int(ctypes.CDLL(None).prctl(PR_GET_MDWE, 0, 0, 0, 0)) >= 0


def received(sock: socket.socket) -> list[str]:
    """The fields of the next datagram (waits for it, up to the socket's timeout)."""
    return sock.recv(4096).decode().split("\n")


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
@pytest.mark.parametrize(
    "write_xor_execute",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not _write_xor_execute_supported(), reason="the kernel has no PR_SET_MDWE"
            ),
        ),
    ],
    ids=["plain", "memory never writable and executable"],
)
def test_ready_once_connected_then_the_watchdog_then_stopping(
    sim: MesSimulator,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, str],
    write_xor_execute: bool,
) -> None:
    sock, path = notify_socket
    host, port = MOSQUITTO
    config = bridge_config(sim, tmp_path / "data", host=host, port=port)
    bridge = start_bridge(config, tmp_path, path, write_xor_execute=write_xor_execute)
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


def _offline_security_supported() -> bool:
    if shutil.which("systemd-analyze") is None:
        return False
    done = subprocess.run(
        ["systemd-analyze", "security", "--help"], capture_output=True, text=True, check=False
    )
    return "--offline" in done.stdout


@pytest.mark.skipif(
    not _offline_security_supported(), reason="no systemd-analyze security --offline here"
)
def test_the_unit_is_rated_ok_by_systemd_analyze_security() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    rating = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert rating is not None, done.stdout + done.stderr
    assert float(rating[1]) <= 2.5 and rating[2] == "OK", rating[0]


def test_the_unit_still_reaches_serial_ports() -> None:
    lines = {line.strip() for line in UNIT.read_text().splitlines()}
    assert "SupplementaryGroups=dialout" in lines
    assert "DevicePolicy=closed" in lines
    assert {"DeviceAllow=char-ttyUSB rw", "DeviceAllow=char-ttyACM rw"} <= lines
    assert "PrivateDevices=yes" not in lines  # it would hide /dev/ttyUSB* too
