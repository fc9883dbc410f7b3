"""A full disk (a real, tiny tmpfs): the bridge refuses what it cannot save, says so, keeps
running, and carries on once there is room again."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.topics import Inbound, ResultKind
from mes_sim import MesSimulator

from .harness import MOSQUITTO, OPERATOR, Tablet, bridge_config, mosquitto_running, running

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full (ENOSPC); return it."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"\0" * 8192)
    assert full.value.errno == errno.ENOSPC
    return filler


async def test_a_full_disk_refuses_with_an_error_and_recovers(
    sim: MesSimulator, tiny_disk: Path
) -> None:
    host, port = MOSQUITTO
    config = bridge_config(sim, tiny_disk / "data", host=host, port=port)
    first, second = sim.wip_ids[0], sim.wip_ids[1]
    async with Tablet(config) as tablet, running(config):
        filler = fill(tiny_disk)
        start = {"wip_id": first, "process_id": 1, "operator_id": OPERATOR}
        await tablet.send("1", Inbound.START, start)
        refused = await tablet.expect("1", ResultKind.ERROR)
        assert refused["error"]["code"] == "STORAGE_FAILED"
        assert "disk" in refused["error"]["message"] and refused["wip_id"] == first
        assert "full" in refused["error"]["detail"]
        await tablet.status("1", lambda s: s["active_batches"] == [])  # nothing half-done

        filler.unlink()
        await tablet.send("1", Inbound.START, {**start, "wip_id": second})
        started = await tablet.expect("1", ResultKind.STARTED)
        assert started["event"] == "PROCESS_STARTED" and started["wip_id"] == second
        await tablet.send("1", Inbound.COMPLETE, {"result": "PASS"})
        await tablet.expect("1", ResultKind.COMPLETED)
    assert [row["wip_id"] for row in sim.ledger()["history"]] == [second]
