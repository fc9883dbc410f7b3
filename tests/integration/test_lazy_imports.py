"""amqtt (the embedded broker) and the HTTP endpoint (and its aiohttp) are loaded only when the
config asks for them: a bridge on Mosquitto without `http.listen` runs without either, and one
that asks for them and cannot listen still exits 2 with a clear message."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.adapters.broker import find_free_port

from .harness import MOSQUITTO, mosquitto_running

# Runs the bridge until it is connected, then says which of those modules it had loaded.
LOADED = """
import asyncio, sys
from pathlib import Path
from bridge.app import run_bridge, stop
from bridge.config import load_config

async def main():
    ready = asyncio.Event()
    bridge = asyncio.create_task(run_bridge(load_config(Path(sys.argv[1])), ready=ready))
    await asyncio.wait_for(ready.wait(), 30)
    print(sorted(m for m in sys.modules if m.split(".")[0] == "amqtt" or m in sys.argv[2:]))
    await stop(bridge)

asyncio.run(main())
"""
# aiohttp is the endpoint's web server (the live admin socket does without it).
OPTIONAL = ["bridge.adapters.broker", "bridge.web.endpoint", "aiohttp"]


def config(tmp_path: Path, mqtt: str, extra: str = "") -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"mqtt: {{{mqtt}, topic_prefix: lazy-{tmp_path.name}}}\n"
        f"mes: {{url: 'http://127.0.0.1:{find_free_port()}', username: a, password: b}}\n"
        "stations: [{id: '1'}]\n" + extra
    )
    return path


def loaded(path: Path) -> str:
    """Which of the optional modules a bridge run with the config at `path` had loaded."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED, str(path), *OPTIONAL],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
def test_a_bridge_on_mosquitto_without_an_endpoint_loads_neither(tmp_path: Path) -> None:
    host, port = MOSQUITTO
    path = config(tmp_path, f"host: {host}, port: {port}")
    assert loaded(path) == "[]"


def test_an_embedded_broker_and_an_endpoint_are_loaded_when_asked_for(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        f"embedded: true, host: 127.0.0.1, port: {find_free_port()}",
        f"http: {{listen: '127.0.0.1:{find_free_port()}'}}\n",
    )
    found = loaded(path)
    assert "'amqtt.broker'" in found and all(repr(name) in found for name in OPTIONAL)


@pytest.mark.parametrize("what", ["embedded broker", "http endpoint"])
def test_a_taken_port_still_stops_the_bridge_with_exit_2(tmp_path: Path, what: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if what == "embedded broker":
            path = config(tmp_path, f"embedded: true, host: 127.0.0.1, port: {port}")
        else:
            host, mqtt_port = MOSQUITTO
            if not mosquitto_running():
                pytest.skip("Mosquitto is not running")
            path = config(
                tmp_path,
                f"host: {host}, port: {mqtt_port}",
                f"http: {{listen: '127.0.0.1:{port}'}}\n",
            )
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert "cannot run" in done.stderr and "Traceback" not in done.stderr
