"""A serial gauge on a real pseudo-terminal, through the bridge, into the MES's ledger."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bridge.core.topics import Inbound, ResultKind
from devices import GaugeSimulator
from mes_sim import MesSimulator

from .harness import (
    MOSQUITTO,
    OPERATOR,
    Tablet,
    bridge_config,
    ledger_rows,
    mosquitto_running,
    running,
)

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")


async def test_a_balance_reading_ends_up_in_the_mes_record(
    sim: MesSimulator, tmp_path: Path
) -> None:
    wip = sim.wip_ids[0]
    with GaugeSimulator(format="and", rate_hz=20, value=123.45, unit="g") as gauge:
        host, port = MOSQUITTO
        device = {
            "name": "scale1",
            "port": gauge.path,
            "station": "1",
            "measurement": "mass_g",
            "format": "and",
            "unit": "g",
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
        }
        config = bridge_config(sim, tmp_path / "data", host=host, port=port, devices=[device])
        async with Tablet(config) as tablet, running(config):
            status = await tablet.latest(
                tablet.topics.device_status("1", "scale1"), lambda s: s["state"] == "connected"
            )
            assert status["device"] == "scale1"
            idle = await tablet.expect_on(tablet.topics.live("1"), lambda p: True)
            assert idle["recorded"] is False  # no batch yet: shown, not recorded
            assert idle["measurements"]["mass_g"] == {"value": 123.45, "unit": "g"}

            await tablet.send(
                "1", Inbound.START, {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
            )
            started = await tablet.expect("1", ResultKind.STARTED)
            gauge.set_value(130.5)
            live = await tablet.expect_on(
                tablet.topics.live("1"),
                lambda p: p["recorded"] and p["measurements"]["mass_g"]["value"] == 130.5,
            )
            assert live["batch_id"] == started["batch_id"] and live["wip_id"] == wip
            gauge.set_overload()
            overload = await tablet.expect("1", ResultKind.ERROR)
            assert overload["error"]["code"] == "GAUGE_OVERLOAD" and overload["device"] == "scale1"
            await tablet.send("1", Inbound.COMPLETE, {"result": "PASS"})
            await tablet.expect("1", ResultKind.COMPLETED)
    [row] = ledger_rows(sim, wip)
    assert row["measurements"]["mass_g"] == 130.5


async def test_an_unplugged_gauge_shows_in_its_status_and_comes_back(
    sim: MesSimulator, tmp_path: Path
) -> None:
    link = tmp_path / "by-id" / "usb-AND_GX-A_scale-if00"  # a stable name, as /dev/serial/by-id
    link.parent.mkdir()
    with GaugeSimulator(format="and", rate_hz=20, value=50.0, unit="g", link=link) as gauge:
        host, port = MOSQUITTO
        device = {
            "name": "scale1",
            "port": str(link),
            "station": "2",
            "measurement": "mass_g",
            "format": "and",
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
        }
        config = bridge_config(sim, tmp_path / "data", host=host, port=port, devices=[device])
        async with Tablet(config) as tablet, running(config):
            status = tablet.topics.device_status("2", "scale1")
            await tablet.latest(status, lambda s: s["state"] == "connected")
            await tablet.expect_on(tablet.topics.live("2"), lambda p: True)  # it was heard
            gauge.unplug()
            gone = await tablet.latest(status, lambda s: s["state"] == "disconnected")
            assert gone["last_reading_at"] is not None  # when it was last heard
            gauge.replug()
            await tablet.latest(status, lambda s: s["state"] == "connected")
            gauge.set_value(61.0)
            await tablet.expect_on(
                tablet.topics.live("2"), lambda p: p["measurements"]["mass_g"]["value"] == 61.0
            )


async def test_a_polled_gauge_that_stops_answering_is_stale_in_its_retained_status(
    sim: MesSimulator, tmp_path: Path
) -> None:
    with GaugeSimulator(format="sics", value=80.0) as gauge:
        host, port = MOSQUITTO
        device = {
            "name": "balance1",
            "port": gauge.path,
            "station": "3",
            "measurement": "mass_g",
            "format": "sics",
            "poll": {"interval_s": 0.05, "stale_after": 3, "error_after": 6},
        }
        config = bridge_config(sim, tmp_path / "data", host=host, port=port, devices=[device])
        async with Tablet(config) as tablet, running(config):
            status = tablet.topics.device_status("3", "balance1")
            await tablet.latest(status, lambda s: s["state"] == "connected")
            gauge.set_silent()
            error = await tablet.latest(status, lambda s: s["state"] == "error")
            assert error["detail"] == "no answer to 6 polls in a row"
            [stale] = [p for t, p in tablet.seen if t == status and p["state"] == "stale"]
            assert stale["detail"] == "no answer to 3 polls in a row"
            assert stale["last_reading_at"] is not None
            gauge.set_silent(False)
            await tablet.latest(status, lambda s: s["state"] == "connected")
            await tablet.expect_on(
                tablet.topics.live("3"), lambda p: p["measurements"]["mass_g"]["value"] == 80.0
            )


async def test_discover_refuses_the_port_of_a_running_bridge_and_writes_nothing(
    sim: MesSimulator, tmp_path: Path
) -> None:
    with GaugeSimulator(format="sics", value=80.0) as gauge:
        host, port = MOSQUITTO
        device = {
            "name": "balance1",
            "port": gauge.path,
            "station": "1",
            "measurement": "mass_g",
            "format": "sics",
        }
        config = bridge_config(sim, tmp_path / "data", host=host, port=port, devices=[device])
        async with Tablet(config) as tablet, running(config):
            status = tablet.topics.device_status("1", "balance1")
            await tablet.latest(status, lambda s: s["state"] == "connected")
            discover = await asyncio.create_subprocess_exec(
                *[
                    sys.executable,
                    "-m",
                    "bridge",
                    "discover",
                    gauge.path,
                    "--timeout",
                    "0.2",
                ],
                stderr=asyncio.subprocess.PIPE,
            )
            _, output = await asyncio.wait_for(discover.communicate(), 60)
        assert discover.returncode == 2
        assert b"is in use by another program (a running bridge reads from it?" in output
        assert gauge.commands == []  # the bridge does not poll this one, and discover wrote nothing


async def test_a_reading_past_the_batch_bound_is_shown_but_not_recorded(
    sim: MesSimulator, tmp_path: Path
) -> None:
    wip = sim.wip_ids[1]
    link = tmp_path / "scale"
    with GaugeSimulator(format="and", rate_hz=20, value=10.0, unit="g", link=link) as gauge:
        host, port = MOSQUITTO
        device = {
            "name": "scale1",
            "port": str(link),
            "station": "1",
            "measurement": "mass_g",
            "format": "and",
            "unit": "g",
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
        }
        config = bridge_config(
            sim,
            tmp_path / "data",
            host=host,
            port=port,
            devices=[device],
            batches={"max_measurements": 1},
        )
        async with Tablet(config) as tablet, running(config):
            status = tablet.topics.device_status("1", "scale1")
            await tablet.latest(status, lambda s: s["state"] == "connected")
            gauge.unplug()  # no reading until the batch holds its one measurement
            await tablet.latest(status, lambda s: s["state"] == "disconnected")
            await tablet.send(
                "1", Inbound.START, {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
            )
            started = await tablet.expect("1", ResultKind.STARTED)
            await tablet.send("1", Inbound.MEASUREMENT, {"name": "length_mm", "value": 5})
            await tablet.status(
                "1", lambda s: bool(s["active_batches"]) and s["active_batches"][0]["measurements"]
            )
            gauge.replug()
            gauge.set_value(12.5)
            shown = await tablet.expect_on(
                tablet.topics.live("1"), lambda p: p["measurements"]["mass_g"]["value"] == 12.5
            )
            assert shown["recorded"] is False and "batch_id" not in shown
            await tablet.send("1", Inbound.COMPLETE, {"result": "PASS"})
            done = await tablet.expect("1", ResultKind.COMPLETED)
            assert done["batch_id"] == started["batch_id"]
            assert not tablet.results("1", ResultKind.ERROR)  # no error per reading
    [row] = ledger_rows(sim, wip)
    assert set(row["measurements"]) == {"length_mm", "cycle_time_ms"}
