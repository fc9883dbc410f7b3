"""`discover`: the judgement of a capture (tables), then sweeps over simulated gauges on ptys.

A pty garbles nothing at a wrong baud rate; the simulator is given the settings it "really"
talks at (`line=`) and garbles its bytes unless the pty's termios, as the sweep set them, match
(devices/line.py). A pty keeps the baud rate and odd parity only, so the framings swept here are
told apart by parity O versus E; 7E1 against 8N1 cannot be shown on a pty.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import serial
import yaml

from devices import DeviceConfig, GaugeReader, GaugeSimulator
from devices.discover import DiscoveryError, discover, sweep_settings
from devices.discovery import detect_terminator, device_entry, judge
from devices.line import LineSettings

from .support import Recorder, make_device, pty_refuses_parity, running

AT_9600 = LineSettings(9600)
DOCUMENTED_QUERIES = {"SI", "Q"}
FAST = 0.3  # seconds per setting: the sims answer in milliseconds


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"ST,+00001.00  g\r\n", "\r\n"),
        (b"S S 1.00 g\rS S 1.00 g\r", "\r"),
        (b"torque=1\n", "\n"),
        (b"\x80\xf3\xfe", None),
        (b"", None),
    ],
)
def test_the_terminator_is_read_from_the_bytes(data: bytes, expected: str | None) -> None:
    assert detect_terminator(data) == expected


@pytest.mark.parametrize(
    ("data", "poll", "expected"),
    [
        (b"ST,+00001.00  g\r\n" * 4, None, ("and", "\r\n", False, "high", 4, 4)),
        # the first line cut by the start of listening is left out
        (b"0  g\r\n" + b"ST,+00001.00  g\r\n" * 3, None, ("and", "\r\n", False, "high", 3, 3)),
        (b"ST,+00001,00  g\r\n" * 3, None, ("and", "\r\n", True, "high", 3, 3)),
        (b"S S     1,50 g\r" * 3, None, ("sics", "\r", True, "high", 3, 3)),
        (b"S S      1.50 g\r\n" * 2 + b"S +\r\n", "SI", ("sics", "\r\n", False, "high", 3, 3)),
        (b"S S      1.50 g\r\n", "SI", ("sics", "\r\n", False, "medium", 1, 1)),
        (b"torque=1.5 Nm angle=3 deg\n" * 3, None, ("keyvalue", "\n", False, "high", 3, 3)),
        (b"ST,+00001.00  g\r\n" + b"#$%&\r\n" * 3, "Q", ("and", "\r\n", False, "low", 1, 4)),
        (b"ST,+00001.00  g\r\n" * 2 + b"#$%&\r\n", "Q", ("and", "\r\n", False, "medium", 2, 3)),
        (b"#$%&\r\nq!x\r\nzz\r\n", None, (None, "\r\n", False, "low", 0, 3)),
    ],
)
def test_a_capture_is_judged_by_the_share_of_lines_a_format_reads(
    data: bytes, poll: str | None, expected: tuple[Any, ...]
) -> None:
    finding = judge(data, settings=AT_9600, poll=poll)
    assert finding is not None
    got = (finding.format, finding.terminator, finding.decimal_comma, finding.confidence)
    assert (*got, finding.read, finding.lines) == expected
    assert finding.poll == poll


@pytest.mark.parametrize("data", [b"", b"\x81\xfe\xc3" * 50, b"\r\n\r\n"])
def test_silence_and_bytes_without_lines_are_nothing(data: bytes) -> None:
    assert judge(data, settings=AT_9600) is None


def test_the_sweep_changes_baud_rate_fastest() -> None:
    order = [str(s) for s in sweep_settings(baudrates=[1200, 9600], framings=["7E1", "8N1"])]
    assert order == ["1200 7E1", "9600 7E1", "1200 8N1", "9600 8N1"]


def test_an_unknown_framing_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown framing '7X1'"):
        sweep_settings(framings=["7X1"])


def load_entry(text: str, **overrides: Any) -> DeviceConfig:
    [entry] = yaml.safe_load(text)["devices"]
    return DeviceConfig.model_validate({**entry, **overrides})


# (simulator options, baud rates and framings to sweep) → what discover must find.
GAUGES = [
    pytest.param(
        {"format": "and", "line": LineSettings(2400), "decimal_comma": True},
        ([1200, 2400, 9600], ["8N1"]),
        {"format": "and", "baudrate": 2400, "decimal_comma": True, "unit": "g"},
        id="and-stream-2400-decimal-comma",
    ),
    pytest.param(
        {"format": "sics", "line": LineSettings(9600), "terminator": "\r"},
        ([4800, 9600], ["8N1"]),
        {"format": "sics", "baudrate": 9600, "terminator": "\r", "poll_command": "SI"},
        id="sics-answers-only-when-polled-9600-CR",
    ),
    pytest.param(
        {"format": "and", "line": LineSettings(4800), "stream": False},
        ([2400, 4800], ["8N1"]),
        {"format": "and", "baudrate": 4800, "poll_command": "Q"},
        id="and-in-command-mode-answers-Q",
    ),
    pytest.param(
        {"format": "keyvalue", "line": LineSettings(19200), "terminator": "\n"},
        ([9600, 19200], ["8N1"]),
        {"format": "keyvalue", "baudrate": 19200, "terminator": "\n"},
        id="keyvalue-stream-19200-LF",
    ),
]


@pytest.mark.parametrize(("sim_options", "sweep", "expected"), GAUGES)
async def test_discover_finds_the_gauge_and_its_entry_reads_it(
    sim_options: dict[str, Any], sweep: tuple[list[int], list[str]], expected: dict[str, Any]
) -> None:
    baudrates, framings = sweep
    with GaugeSimulator(rate_hz=20, value=12.5, **sim_options) as sim:
        settings = sweep_settings(baudrates=baudrates, framings=framings)
        found = discover(sim.path, settings=settings, timeout_s=FAST).best
        assert found is not None and found.confidence == "high"
        device = load_entry(device_entry(found, port=sim.path), reconnect_min_s=0.05)
        got = {key: getattr(device, key) for key in expected if key != "poll_command"}
        if "poll_command" in expected:
            assert device.poll is not None
            got["poll_command"] = device.poll.command
        assert got == expected
        assert set(sim.commands) <= DOCUMENTED_QUERIES  # discover wrote nothing else

        # The printed entry is ready: a reader configured by it reads the gauge.
        events = Recorder()
        async with running(GaugeReader(device, events)):
            reading = await events.next_reading()
    assert {round(m.value, 2) for m in reading.values.values()} <= {12.5, 288.8}


def test_discover_tells_odd_parity_from_even() -> None:
    # Only the settings: a GaugeReader cannot open a pty with parity or 7 data bits on Linux
    # (pyserial-asyncio-fast reconfigures the open port, and the pty answers EINVAL).
    with GaugeSimulator(format="and", rate_hz=20, line=LineSettings.of(2400, "7O1")) as sim:
        settings = sweep_settings(baudrates=[1200, 2400, 9600], framings=["7E1", "7O1"])
        sweep = discover(sim.path, settings=settings, timeout_s=FAST)
    assert sweep.best is not None and sweep.best.confidence == "high"
    assert str(sweep.best.settings) == "2400 7O1"
    assert sweep.tried == 5  # it stopped at the first confident finding
    device = load_entry(device_entry(sweep.best, port=sim.path))
    assert (device.baudrate, device.bytesize, device.parity, device.stopbits) == (2400, 7, "O", 1)


def test_a_streaming_gauge_is_not_sent_anything() -> None:
    with GaugeSimulator(format="and", rate_hz=20, line=LineSettings(9600)) as sim:
        sweep = discover(sim.path, settings=sweep_settings(baudrates=[9600]), timeout_s=FAST)
        assert sweep.best is not None and sweep.best.format == "and"
        assert sim.commands == []


def test_a_gauge_sending_garbage_is_heard_but_not_read() -> None:
    with GaugeSimulator(format="noise", rate_hz=20) as sim:
        settings = sweep_settings(baudrates=[9600], framings=["8N1"])
        sweep = discover(sim.path, settings=settings, timeout_s=FAST)
        assert set(sim.commands) <= DOCUMENTED_QUERIES
    assert sweep.best is not None
    assert sweep.best.format is None and sweep.best.confidence == "low"
    with pytest.raises(ValueError, match="format: regex"):
        device_entry(sweep.best, port="/dev/x")


def test_a_gauge_at_another_baud_rate_is_nothing_readable() -> None:
    with GaugeSimulator(format="and", rate_hz=20, line=LineSettings(115200)) as sim:
        settings = sweep_settings(baudrates=[2400, 9600], framings=["8N1"])
        sweep = discover(sim.path, settings=settings, timeout_s=FAST)
    assert sweep.findings == [] and sweep.tried == 2


@pytest.fixture
def and_sim() -> Iterator[GaugeSimulator]:
    with GaugeSimulator(format="and", rate_hz=20) as sim:
        yield sim


def test_the_port_is_released_when_discover_ends(and_sim: GaugeSimulator) -> None:
    discover(and_sim.path, settings=sweep_settings(baudrates=[9600]), timeout_s=FAST)
    with serial.Serial(and_sim.path, 9600, exclusive=True):  # would fail while still locked
        pass


async def test_a_port_a_bridge_reader_holds_is_refused_and_nothing_is_written() -> None:
    with GaugeSimulator(format="sics") as sim:
        events = Recorder()
        async with running(GaugeReader(make_device(port=sim.path, format="sics"), events)):
            await events.wait_state("connected")
            with pytest.raises(DiscoveryError, match="in use by another program"):
                discover(sim.path, settings=sweep_settings(), timeout_s=FAST)
        assert sim.commands == []


def test_a_slow_stream_is_listened_to_longer_and_never_queried() -> None:
    with GaugeSimulator(format="and", rate_hz=4, line=LineSettings(9600)) as sim:
        settings = sweep_settings(baudrates=[9600], framings=["8N1"])
        sweep = discover(sim.path, settings=settings, timeout_s=FAST)
        assert sim.commands == []
    assert sweep.best is not None and sweep.best.format == "and"
    assert sweep.best.poll is None and sweep.best.read >= 2


@pytest.mark.skipif(not pty_refuses_parity(), reason="this kernel's ptys accept parity")
def test_a_setting_the_port_refuses_is_skipped_and_the_sweep_goes_on() -> None:
    with GaugeSimulator(format="and", rate_hz=20, line=LineSettings(9600)) as sim:
        serial.Serial(sim.path, 9600).close()  # the pty is at 9600 8N1: 8E1 at 9600 keeps nothing
        settings = [LineSettings.of(9600, "8E1"), LineSettings(4800), LineSettings(9600)]
        notes: list[str] = []
        sweep = discover(
            sim.path,
            settings=settings,
            timeout_s=FAST,
            progress=lambda s, f, note: notes.append(note),
        )
    assert [str(s) for s in sweep.refused] == ["9600 8E1"]
    assert notes[0].startswith("the port refuses this setting")
    assert sweep.best is not None and str(sweep.best.settings) == "9600 8N1"
