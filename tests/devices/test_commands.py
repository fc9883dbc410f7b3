"""`station-bridge discover` and `gauge-watch` as a user runs them: real processes, real ptys."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devices import DeviceConfig, GaugeReader, GaugeSimulator
from devices.line import LineSettings

from .support import TIMEOUT_S, Recorder, make_device, running

EXE = [sys.executable, "-m", "bridge"]
ROOT = Path(__file__).parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_discover_prints_the_settings_readings_and_a_ready_entry() -> None:
    with GaugeSimulator(format="sics", value=42.5, line=LineSettings(19200)) as sim:
        done = run(
            "discover", sim.path, "--baud", "9600,19200", "--framing", "8N1", "--timeout", "0.3"
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "9600 8N1: nothing readable" in done.stdout
    assert "found: 19200 8N1, CR LF: format sics, answers SI; confidence high" in done.stdout
    assert "'S S      42.50 g'" in done.stdout and "value 42.5 g (stable)" in done.stdout
    entry = yaml.safe_load(done.stdout[done.stdout.index("devices:") :])["devices"][0]
    device = DeviceConfig.model_validate(entry)
    assert (device.port, device.baudrate, device.format, device.unit) == (
        sim.path,
        19200,
        "sics",
        "g",
    )
    assert device.poll is not None and device.poll.command == "SI"


def test_discover_exits_1_and_shows_the_lines_when_no_format_reads_them() -> None:
    with GaugeSimulator(format="noise", rate_hz=20) as sim:
        done = run("discover", sim.path, "--baud", "9600", "--framing", "8N1", "--timeout", "0.3")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no known format; the clearest lines came at 9600 8N1 (CR LF)" in done.stdout
    assert "format: regex" in done.stdout and "devices:" not in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--framing", "7X1"], "unknown framing '7X1'"),
        (["--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_discover_refuses_bad_options(args: list[str], message: str) -> None:
    done = run("discover", "/dev/null", *args)
    assert done.returncode == 2 and message in done.stderr


def test_discover_of_a_missing_port_exits_2() -> None:
    done = run("discover", "/dev/does-not-exist", "--baud", "9600", "--timeout", "0.1")
    assert done.returncode == 2
    assert "port /dev/does-not-exist not found" in done.stderr


@pytest.fixture
def quiet_balance() -> Iterator[GaugeSimulator]:
    """An A&D balance in command mode: it sends only what the test makes it send."""
    with GaugeSimulator(format="and", stream=False) as sim:
        yield sim


def write_config(tmp_path: Path, port: str, **device: object) -> Path:
    entry = {"name": "scale1", "port": port, "station": "ST01", "measurement": "weight"}
    entry |= {"format": "and", "unit": "g", **device}
    config = {"stations": [{"id": "ST01"}], "devices": [entry], "data_dir": str(tmp_path)}
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_gauge_watch_shows_value_unit_stability_and_the_raw_line(
    tmp_path: Path, quiet_balance: GaugeSimulator
) -> None:
    config = write_config(tmp_path, quiet_balance.path)
    with subprocess.Popen(
        [*EXE, "gauge-watch", "--config", str(config), "scale1", "--count", "4"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as watch:
        try:
            assert watch.stdout is not None
            header = watch.stdout.readline()
            assert f"scale1 on {quiet_balance.path}: and, 9600 8N1" in header
            assert watch.stdout.readline().endswith("-- connected\n")
            for line in ("US,+00012.00  g", "ST,+00012.50  g", "OL,+9999999E+19", "hello"):
                quiet_balance.send_line(line)
            output = watch.stdout.read()
            assert watch.wait(timeout=TIMEOUT_S) == 0
        finally:
            watch.kill()
    shown = [line.split("  ", 1)[1] for line in output.splitlines()]
    assert shown[0].startswith("weight 12 g  UNSTABLE") and shown[0].endswith("'US,+00012.00  g'")
    assert shown[1].startswith("weight 12.5 g  stable") and shown[1].endswith("'ST,+00012.50  g'")
    assert shown[2].startswith("GAUGE_OVERLOAD: OL,+9999999E+19")
    assert shown[3].startswith("not read: not an A&D line") and shown[3].endswith("'hello'")


async def test_gauge_watch_refuses_a_port_the_bridge_reads(
    tmp_path: Path, quiet_balance: GaugeSimulator
) -> None:
    config = write_config(tmp_path, quiet_balance.path)
    events = Recorder()
    async with running(GaugeReader(make_device(port=quiet_balance.path), events)):
        await events.wait_state("connected")
        # Run off the event loop, so that the reader in this loop keeps the port.
        done = await asyncio.to_thread(run, "gauge-watch", "--config", str(config), "scale1")
    assert done.returncode == 2
    assert "in use by another program" in done.stdout
    assert "follow station/ST01/measurement/live instead" in done.stdout


def test_gauge_watch_names_the_configured_devices_when_the_name_is_unknown(tmp_path: Path) -> None:
    config = write_config(tmp_path, "/dev/null")
    done = run("gauge-watch", "--config", str(config), "scale2")
    assert done.returncode == 2
    assert "no device named scale2; configured: ST01/scale1" in done.stderr


def test_gauge_sim_refuses_an_unknown_framing() -> None:
    done = run("gauge-sim", "--format", "and", "--baud", "2400", "--framing", "7X1")
    assert done.returncode == 2
    assert "unknown framing '7X1'" in done.stderr
