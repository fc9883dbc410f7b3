"""GaugeReader on real pseudo-terminals: pyserial opens the slave exactly as it opens a USB port."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devices import DeviceConfig, DeviceStatus, GaugeErrorCode, GaugeReader, Reading
from devices.reader import backoff_delay, classify_open_error

from .support import Pty, Recorder, make_device, pty_refuses_parity, running


@pytest.fixture
def pty() -> Iterator[Pty]:
    terminal = Pty()
    yield terminal
    terminal.close()


def and_lines(values: list[float]) -> bytes:
    return b"".join(f"ST,{value:+09.2f}  g\r\n".encode() for value in values)


async def test_many_readings_fired_quickly_all_arrive_in_order(pty: Pty) -> None:
    events = Recorder()
    reader = GaugeReader(make_device(port=pty.path), events)
    async with running(reader):
        await events.wait_state("connected")
        values = [float(index) for index in range(500)]
        await pty.write(and_lines(values))
        received = [await events.next_value() for _ in values]
    assert received == values
    assert reader.counters.readings == 500


async def test_unplug_and_replug_reconnects_and_readings_resume(tmp_path: Path) -> None:
    link = tmp_path / "ttyGAUGE"
    first = Pty()
    link.symlink_to(first.path)
    events = Recorder()
    reader = GaugeReader(make_device(port=str(link)), events)
    async with running(reader):
        await events.wait_state("connected")
        await first.write(and_lines([1.0]))
        assert await events.next_value() == 1.0

        first.close()  # the cable is pulled: the pty is gone...
        link.unlink()  # ...and so is its path
        lost = await events.wait_state("disconnected")
        assert lost.last_reading_at is not None

        second = Pty()  # plugged back in: a new device behind the same path
        try:
            link.symlink_to(second.path)
            await events.wait_state("connected")
            await second.write(and_lines([2.0]))
            assert await events.next_value() == 2.0
        finally:
            second.close()
    assert events.states() == ["connected", "disconnected", "connected"]
    assert reader.counters.connects == 2


async def test_noise_and_overlong_lines_do_not_stop_good_lines(pty: Pty) -> None:
    events = Recorder()
    reader = GaugeReader(make_device(port=pty.path, max_line_bytes=32), events)
    async with running(reader):
        await events.wait_state("connected")
        await pty.write(b"\x00\xff\xfe\x80noise\r\n")  # not UTF-8
        await pty.write(b"Z" * 5000)  # babbling, no terminator
        await pty.write(b"\r\n" + b"Q" * 100 + b"\r\nST,+00001.00  g\r")
        await pty.write(b"\nST,+00nan.00  g\r\nST,+00002.00  g\r\n")
        assert await events.next_value() == 1.0
        assert await events.next_value() == 2.0
    assert reader.counters.overlong == 2
    assert reader.counters.unparseable == 2
    assert events.errors.empty()  # garbage is counted and logged, not reported


async def test_a_polled_gauge_is_asked_and_its_answers_are_read(pty: Pty) -> None:
    events = Recorder()
    device = make_device(port=pty.path, format="sics", poll={"interval_s": 0.05})
    reader = GaugeReader(device, events)
    async with running(reader):
        await events.wait_state("connected")
        await pty.read_until(b"SI\r\n")
        await pty.write(b"S S      12.34 g\r\n")
        assert await events.next_value() == 12.34
        sent = await pty.read_until(b"SI\r\nSI\r\nSI\r\n")  # it keeps asking
        await pty.write(b"S +\r\n")
        assert (await events.next_error()).code is GaugeErrorCode.GAUGE_OVERLOAD
    assert set(sent.split(b"\r\n")) == {b"SI", b""}


async def test_a_repeated_gauge_error_is_reported_once_until_a_value_comes(pty: Pty) -> None:
    events = Recorder()
    reader = GaugeReader(make_device(port=pty.path), events)
    overload = b"OL,+9999999E+19\r\n"
    async with running(reader):
        await events.wait_state("connected")
        await pty.write(overload * 3 + and_lines([5.0]) + overload * 2 + and_lines([6.0]))
        assert (await events.next_error()).code is GaugeErrorCode.GAUGE_OVERLOAD
        assert await events.next_value() == 5.0
        assert (await events.next_error()).code is GaugeErrorCode.GAUGE_OVERLOAD
        assert await events.next_value() == 6.0
    assert events.errors.empty()
    assert (reader.counters.gauge_errors, reader.counters.repeated_errors) == (2, 3)


async def test_unstable_values_are_not_reported_unless_the_device_records_them(pty: Pty) -> None:
    events = Recorder()
    reader = GaugeReader(make_device(port=pty.path), events)
    async with running(reader):
        await events.wait_state("connected")
        await pty.write(b"US,+00001.00  g\r\nUS,+00001.50  g\r\nST,+00002.00  g\r\n")
        assert await events.next_value() == 2.0
    assert reader.counters.unstable == 2


async def test_a_unit_mismatch_is_a_gauge_error_with_the_reading_time(pty: Pty) -> None:
    events = Recorder()
    moment = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    reader = GaugeReader(make_device(port=pty.path, unit="g"), events, clock=lambda: moment)
    async with running(reader):
        await events.wait_state("connected")
        await pty.write(b"ST,+00001.00 kg\r\nST,+00001.00  g\r\n")
        error = await events.next_error()
        _, at = await asyncio.wait_for(events.readings.get(), 10)
    assert error.code is GaugeErrorCode.UNIT_MISMATCH
    assert at == moment
    assert reader.status is not None and reader.status.last_reading_at == moment


async def test_a_failing_bridge_handler_loses_one_event_and_reading_goes_on(pty: Pty) -> None:
    class Flaky(Recorder):
        failed = False

        async def reading(self, device: DeviceConfig, reading: Reading, at: datetime) -> None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("bridge bug")
            await super().reading(device, reading, at)

    events = Flaky()
    reader = GaugeReader(make_device(port=pty.path), events)
    async with running(reader):
        await events.wait_state("connected")
        await pty.write(and_lines([1.0, 2.0]))
        assert await events.next_value() == 2.0
    assert events.states() == ["connected"]


async def test_a_missing_port_is_disconnected_until_it_appears(tmp_path: Path) -> None:
    link = tmp_path / "ttyLATER"
    events = Recorder()
    reader = GaugeReader(make_device(port=str(link)), events)
    async with running(reader):
        missing = await events.wait_state("disconnected")
        assert missing.detail == f"port {link} not found"
        later = Pty()
        try:
            link.symlink_to(later.path)
            await events.wait_state("connected")
        finally:
            later.close()
    assert events.states()[:2] == ["disconnected", "connected"]


async def test_a_port_held_by_another_reader_is_an_error(pty: Pty) -> None:
    first, second = Recorder(), Recorder()
    device = make_device(port=pty.path)
    async with running(GaugeReader(device, first)):
        await first.wait_state("connected")
        async with running(GaugeReader(device, second)):
            busy = await second.wait_state("error")
    assert busy.detail == f"port {pty.path} is in use by another program"


@pytest.mark.skipif(not pty_refuses_parity(), reason="this kernel's ptys accept parity")
async def test_a_port_that_refuses_the_settings_is_an_error_not_a_failure(pty: Pty) -> None:
    events = Recorder()
    async with running(GaugeReader(make_device(port=pty.path, parity="E"), events)):
        refused = await events.wait_state("error")
    assert refused.detail.startswith(f"port {pty.path} refuses these settings: ")
    assert "unexpected" not in refused.detail


async def test_cancelling_run_closes_the_port(pty: Pty) -> None:
    events = Recorder()
    device = make_device(port=pty.path)
    async with running(GaugeReader(device, events)):
        await events.wait_state("connected")
    again = Recorder()
    async with running(GaugeReader(device, again)):  # the exclusive lock was released
        await again.wait_state("connected")


async def test_the_path_going_away_ends_a_silent_session(tmp_path: Path, pty: Pty) -> None:
    # The pty stays alive (no read error); only its path disappears, as when udev removes a
    # by-id link. The reader notices within its watch interval (1 s).
    link = tmp_path / "ttyWATCHED"
    link.symlink_to(pty.path)
    events = Recorder()
    async with running(GaugeReader(make_device(port=str(link)), events)):
        await events.wait_state("connected")
        link.unlink()
        gone = await events.wait_state("disconnected")
    assert gone.detail == f"port {link} is gone"


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        (0, 1.0, 0.5),
        (0, 0.0, 0.5),  # never below the minimum
        (1, 1.0, 1.0),
        (1, 0.0, 0.5),
        (3, 1.0, 4.0),
        (3, 0.5, 3.0),
        (10, 1.0, 30.0),  # capped
        (10, 0.0, 15.0),
        (10_000, 1.0, 30.0),  # no overflow
    ],
)
def test_backoff_is_capped_exponential_with_jitter(
    attempt: int, jitter: float, expected: float
) -> None:
    assert backoff_delay(attempt, min_s=0.5, max_s=30.0, jitter=jitter) == expected


@pytest.mark.parametrize(
    ("error", "state", "detail"),
    [
        (OSError(errno.ENOENT, "No such file"), "disconnected", "port /dev/x not found"),
        (OSError(errno.ENXIO, "No such device"), "disconnected", "port /dev/x not found"),
        (OSError(errno.EACCES, "Permission denied"), "error", "dialout group"),
        (OSError(errno.EAGAIN, "locked"), "error", "in use by another program"),
        (OSError(errno.EIO, "I/O error"), "error", "cannot open /dev/x"),
        (ValueError("Invalid baud rate"), "error", "Invalid baud rate"),
    ],
)
def test_open_failures_are_classified(error: OSError, state: str, detail: str) -> None:
    got_state, got_detail = classify_open_error("/dev/x", error)
    assert got_state == state
    assert detail in got_detail


def test_status_json_has_utc_timestamps_with_z() -> None:
    status = DeviceStatus(
        state="connected",
        last_reading_at=datetime(2026, 11, 26, 9, 0, 1, 250000, tzinfo=UTC),
        since=datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
    )
    assert status.to_json() == {
        "state": "connected",
        "last_reading_at": "2026-11-26T09:00:01.250Z",
        "detail": "",
        "since": "2026-11-26T09:00:00.000Z",
    }
    assert DeviceStatus(state="disconnected").to_json()["last_reading_at"] is None


def test_a_port_number_is_not_watched_when_it_is_a_url() -> None:
    from devices.reader import _port_identity

    assert _port_identity("socket://127.0.0.1:4001") is None
    assert _port_identity(os.devnull) is not None
