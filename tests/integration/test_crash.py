"""`station-bridge run` killed with SIGKILL in the middle of a run, then restarted: the MES ends up
with every batch recorded exactly once, and nothing the stations sent is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.config import BridgeConfig
from bridge.core.topics import Inbound
from bridge.faults import ENV
from mes_sim import MesSimulator

from .harness import MOSQUITTO, OPERATOR, Tablet, bridge_config, mosquitto_running

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")

WIPS = 4
PROCESSES = range(1, 7)


class BridgeProcess:
    """The bridge as a separate OS process, so that it can really be killed."""

    def __init__(self, config_file: Path, log: Path) -> None:
        self._config_file = config_file
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, faults: str = "") -> None:
        """Start it; `faults` arms its seams (`STATION_BRIDGE_FAULTS`, e.g. after_commit=kill@3)."""
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "run",
                    "--config",
                    str(self._config_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2],
                env={**os.environ, ENV: faults},
            )

    def wait_dead(self, timeout: float) -> int:
        assert self._process is not None
        return self._process.wait(timeout=timeout)

    def kill(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=10)

    def terminate(self) -> int:
        assert self._process is not None
        self._process.terminate()
        return self._process.wait(timeout=30)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


@pytest.fixture
def config(sim: MesSimulator, tmp_path: Path) -> BridgeConfig:
    host, port = MOSQUITTO
    return bridge_config(sim, tmp_path / "data", host=host, port=port)


@pytest.fixture
def bridge_process(config: BridgeConfig, tmp_path: Path) -> Iterator[BridgeProcess]:
    config_file = tmp_path / "bridge.yaml"
    data = config.model_dump(mode="json")
    data["mes"]["password"] = "admin-pass"  # model_dump hides secrets
    config_file.write_text(yaml.safe_dump(data))
    process = BridgeProcess(config_file, tmp_path / "bridge.log")
    yield process
    process.stop()


async def send_processes(tablet: Tablet, wips: list[str], processes: range) -> None:
    """What the stations send for these processes of every WIP: start, a reading, complete."""
    for process in processes:
        for station, wip in zip(("1", "2", "3", "1"), wips, strict=True):
            batch = f"{wip}-{process}"
            start = {"wip_id": wip, "process_id": process, "operator_id": OPERATOR}
            await tablet.send(station, Inbound.START, {**start, "batch_id": batch})
            reading = {"batch_id": batch, "name": "torque_nm", "value": process + 0.5}
            await tablet.send(station, Inbound.MEASUREMENT, reading)
            await tablet.send(station, Inbound.COMPLETE, {"batch_id": batch, "result": "PASS"})


@pytest.mark.timeout(180)
async def test_sigkill_mid_run_loses_nothing_and_duplicates_nothing(
    sim: MesSimulator, config: BridgeConfig, bridge_process: BridgeProcess
) -> None:
    wips = sim.wip_ids[:WIPS]
    availability = f"{config.mqtt.topic_prefix}/bridge/{config.bridge_id}/availability"

    def recorded() -> int:
        return len(sim.ledger()["history"])

    sim.set_faults(mode="slow", delay_s=0.05)  # so that the kill lands with requests in flight
    async with Tablet(config) as tablet:
        bridge_process.start()
        await tablet.latest(availability, lambda p: p == "online", within=30)
        await send_processes(tablet, wips, PROCESSES[:3])

        def completed() -> int:
            return sum(
                1
                for _, p in tablet.seen
                if isinstance(p, dict) and p.get("event") == "SEQUENCE_COMPLETE"
            )

        await tablet.until(lambda: completed() >= 3, within=60)
        bridge_process.kill()
        await tablet.latest(availability, lambda p: p == "offline", within=30)  # the last will
        killed_at = recorded()
        assert killed_at < WIPS * 3, "the kill came too late to test anything"
        await send_processes(tablet, wips, PROCESSES[3:])  # while the bridge is dead

        bridge_process.start()
        for station in ("1", "2", "3"):
            await tablet.status(
                station,
                lambda s: s["outbox"]["pending_total"] == 0 and s["active_batches"] == [],
                within=120,
            )

    history = sim.ledger()["history"]
    per_batch = Counter((row["wip_id"], row["process_number"], row["result"]) for row in history)
    assert per_batch == Counter({(w, p, "PASS"): 1 for w in wips for p in PROCESSES})
    for row in history:
        assert row["measurements"]["torque_nm"] == row["process_number"] + 0.5
    assert {w["wip_id"]: w["status"] for w in sim.ledger()["wips"] if w["wip_id"] in wips} == {
        wip: "COMPLETED" for wip in wips
    }


async def send_unnamed(tablet: Tablet, station: str, wip: str, processes: range) -> None:
    """A station that never names its batches: each message goes to its only active batch, so
    a message applied twice would land in the wrong one. Each process's reading has a name of
    its own, so a reading in the wrong batch shows in the MES."""
    for process in processes:
        start = {"wip_id": wip, "process_id": process, "operator_id": OPERATOR}
        await tablet.send(station, Inbound.START, start)
        await tablet.send(station, Inbound.MEASUREMENT, {"name": f"m{process}", "value": process})
        await tablet.send(station, Inbound.COMPLETE, {"result": "PASS"})


@pytest.mark.timeout(180)
async def test_sigkills_between_commit_and_ack_apply_nothing_twice(
    sim: MesSimulator, config: BridgeConfig, bridge_process: BridgeProcess
) -> None:
    # Each kill lands exactly after a group was committed and before the broker got its acks:
    # the broker sends that group again to the restarted bridge. What the stations send while
    # the bridge is dead reaches it at once on restart, in large groups.
    wips = sim.wip_ids[:3]
    stations = ("1", "2", "3")
    availability = f"{config.mqtt.topic_prefix}/bridge/{config.bridge_id}/availability"
    async with Tablet(config) as tablet:
        bridge_process.start()  # once, so that the broker keeps a session for it
        await tablet.latest(availability, lambda p: p == "online", within=30)
        bridge_process.kill()
        for aimed, processes in (
            ("after_commit=kill@1", range(1, 3)),
            ("after_commit=kill@1", range(3, 5)),
        ):
            await tablet.latest(availability, lambda p: p == "offline", within=30)
            for station, wip in zip(stations, wips, strict=True):
                await send_unnamed(tablet, station, wip, processes)
            bridge_process.start(faults=aimed)
            assert await asyncio.to_thread(bridge_process.wait_dead, 60) == -signal.SIGKILL
        bridge_process.start()
        await tablet.latest(availability, lambda p: p == "online", within=30)
        for station, wip in zip(stations, wips, strict=True):
            await send_unnamed(tablet, station, wip, range(5, 7))
        for station in stations:
            await tablet.status(
                station,
                lambda s: s["outbox"]["pending_total"] == 0 and s["active_batches"] == [],
                within=120,
            )
    history = sim.ledger()["history"]
    recorded = Counter((row["wip_id"], row["process_number"]) for row in history)
    assert recorded == Counter({(w, p): 1 for w in wips for p in PROCESSES})
    for row in history:
        process = row["process_number"]
        assert row["result"] == "PASS"
        assert {k: v for k, v in row["measurements"].items() if k != "cycle_time_ms"} == {
            f"m{process}": process
        }


async def test_sigterm_stops_cleanly_and_says_offline(
    config: BridgeConfig, bridge_process: BridgeProcess
) -> None:
    availability = f"{config.mqtt.topic_prefix}/bridge/{config.bridge_id}/availability"
    async with Tablet(config) as tablet:
        bridge_process.start()
        await tablet.latest(availability, lambda p: p == "online", within=30)
        assert bridge_process.terminate() == 0
        await tablet.latest(availability, lambda p: p == "offline", within=10)


def test_an_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(f"data_dir: {tmp_path / 'a-file' / 'data'}\nstations: [{{id: '1'}}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot run" in done.stderr and "a-file" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_second_bridge_on_the_same_data_dir_refuses_to_start(
    config: BridgeConfig, bridge_process: BridgeProcess, tmp_path: Path
) -> None:
    availability = f"{config.mqtt.topic_prefix}/bridge/{config.bridge_id}/availability"
    async with Tablet(config) as tablet:
        bridge_process.start()
        await tablet.latest(availability, lambda p: p == "online", within=30)
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "--config",
            str(tmp_path / "bridge.yaml"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(second.communicate(), timeout=60)
        assert second.returncode == 2
        assert b"in use by another station-bridge" in stderr
        await tablet.latest(availability, lambda p: p == "online")  # the first one runs on
