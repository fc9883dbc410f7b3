"""The GaugeSimulator drives a real GaugeReader, and `gauge-sim` runs and stops on a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices import GaugeErrorCode, GaugeReader, GaugeSimulator, Measured

from .support import Recorder, make_device, running


def linked(path: str | Path) -> bool:
    return os.path.lexists(path)


@pytest.fixture
def and_sim() -> Iterator[GaugeSimulator]:
    with GaugeSimulator(format="and", rate_hz=100, value=100.0) as sim:
        yield sim


async def test_an_and_stream_is_read_and_unstable_lines_are_not_recorded(
    and_sim: GaugeSimulator,
) -> None:
    events = Recorder()
    async with running(GaugeReader(make_device(port=and_sim.path, unit="g"), events)):
        await events.wait_state("connected")
        assert await events.next_value() == 100.0
        and_sim.set_value(12.5, settle_lines=3)
        seen = [await events.next_value()]
        while seen[-1] != 12.5:
            seen.append(await events.next_value())
    assert set(seen) <= {100.0, 12.5}  # the settling US values never arrive


async def test_an_and_overload_on_request_is_a_gauge_error(and_sim: GaugeSimulator) -> None:
    events = Recorder()
    async with running(GaugeReader(make_device(port=and_sim.path), events)):
        await events.wait_state("connected")
        await events.next_value()
        and_sim.set_overload()
        assert (await events.next_error()).code is GaugeErrorCode.GAUGE_OVERLOAD
        and_sim.set_value(3.0)
        while await events.next_value() != 3.0:
            pass


async def test_a_sics_balance_answers_the_readers_polls() -> None:
    with GaugeSimulator(format="sics", value=250.0) as sim:
        events = Recorder()
        device = make_device(port=sim.path, format="sics", poll={"interval_s": 0.05})
        async with running(GaugeReader(device, events)):
            await events.wait_state("connected")
            reading = await events.next_reading()
            assert reading.values == {"weight": Measured(250.0, "g")}
            sim.set_overload()
            assert (await events.next_error()).code is GaugeErrorCode.GAUGE_OVERLOAD
        assert sim.commands[:2] == ["SI", "SI"]


async def test_a_sics_balance_is_silent_until_asked() -> None:
    with GaugeSimulator(format="sics", value=250.0) as sim:
        events = Recorder()
        async with running(GaugeReader(make_device(port=sim.path, format="sics"), events)):
            await events.wait_state("connected")
            sim.send_line("S S      1.00 g")  # what the balance says when its print key is hit
            assert await events.next_value() == 1.0
        assert events.readings.empty()
        assert sim.commands == []


async def test_a_keyvalue_driver_stream_gives_named_values() -> None:
    with GaugeSimulator(format="keyvalue", rate_hz=100, value=1.5) as sim:
        events = Recorder()
        device = make_device(port=sim.path, format="keyvalue", measurement=None)
        async with running(GaugeReader(device, events)):
            await events.wait_state("connected")
            reading = await events.next_reading()
    assert reading.measurements() == {
        "torque": {"value": 1.5, "unit": "Nm"},
        "angle": {"value": 34.7, "unit": "deg"},
    }


async def test_the_simulator_unplugs_and_replugs_behind_its_link(tmp_path: Path) -> None:
    with GaugeSimulator(format="and", rate_hz=100, link=tmp_path / "ttySIM") as sim:
        events = Recorder()
        async with running(GaugeReader(make_device(port=sim.path), events)):
            await events.wait_state("connected")
            await events.next_value()
            sim.unplug()
            assert not linked(sim.path)
            await events.wait_state("disconnected")
            sim.replug()
            await events.wait_state("connected")
            sim.set_value(7.0)
            while await events.next_value() != 7.0:
                pass
    assert events.states() == ["connected", "disconnected", "connected"]
    assert not linked(tmp_path / "ttySIM")  # stop() removes the link


def test_the_simulator_refuses_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown simulator format"):
        GaugeSimulator(format="csv")  # type: ignore[arg-type]


def test_gauge_sim_prints_the_port_first_and_exits_0_on_sigint() -> None:
    code = (
        "import sys; from devices import run_gauge_sim; "
        "sys.exit(run_gauge_sim(format='and', rate_hz=5, out=sys.stdout))"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as process:
        try:
            assert process.stdout is not None
            path = process.stdout.readline().strip()
            explanation = process.stdout.readline()
            assert os.path.exists(path)
            assert "A&D balance streaming" in explanation
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
