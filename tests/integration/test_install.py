"""deploy/install.sh as an operator runs it on a Pi, in a throwaway root, with and without systemd.

The root is this machine's own Debian 12 root file system (Raspberry Pi OS 64-bit is Debian 12
for arm64) under a copy-on-write overlay, in a mount namespace of its own that is thrown away with
every change made in it. The script runs there as root, chrooted, with the real useradd, pip,
install and systemctl. In one test systemd is not running (a chroot, an image being built); in the
other the root boots systemd 252 itself as PID 1 of a PID namespace, which then starts the unit
for real: credentials, notify, watchdog, sandbox and device policy included. What no test here
shows is a real USB serial adapter: this kernel has no usbserial driver (see the device test).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from bridge.core.topics import Inbound, ResultKind
from mes_sim import MesSimulator

from .harness import MOSQUITTO, OPERATOR, Tablet, bridge_config, mosquitto_running

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "/src/deploy/install.sh"
VENV_BIN = "/opt/station-bridge/.venv/bin"
CONFIG = "/etc/station-bridge/config.yaml"
PASSWORD = "/etc/station-bridge/mes-password"
AS_SERVICE_USER = ["setpriv", "--reuid=station-bridge", "--regid=station-bridge", "--init-groups"]

MOUNTS = """
set -e
T=$1; SRC=$2
mount -t tmpfs tmpfs "$T"
mkdir "$T/upper" "$T/work" "$T/root"
R=$T/root
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
mkdir -p "$R/src"
mount --bind "$SRC" "$R/src"
"""
WITHOUT_SYSTEMD = MOUNTS + "echo ready\nexec sleep infinity\n"
# systemd makes / shared when it boots a machine; in a container that is the container
# manager's job (credentials are mounted in a child namespace and must propagate back).
WITH_SYSTEMD = (
    MOUNTS
    + """
mount --rbind /sys "$R/sys"
mount --make-rshared "$R"
printf '[Unit]\\nDescription=test boot\\nDefaultDependencies=no\\n' \
    > "$R/etc/systemd/system/test-boot.target"
exec chroot "$R" /usr/bin/env -i container=other PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system --unit=test-boot.target
"""
)


def _namespaces_possible() -> bool:
    tools = ("unshare", "nsenter", "setpriv")
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in tools):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


pytestmark = [
    pytest.mark.skipif(not _namespaces_possible(), reason="needs root, unshare and mounts"),
    pytest.mark.timeout(300),
]


class PiRoot:
    """A throwaway copy of this machine's root; `run` runs a command chrooted into it."""

    def __init__(self, *, target: int, root: str, pid_namespace: bool) -> None:
        self._enter = ["nsenter", f"--target={target}", "--mount"]
        if pid_namespace:
            self._enter.append("--pid")
        self.root = root

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [
            *self._enter,
            *("--", "chroot", self.root, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
            *("HOME=/root", *argv),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
        if check:
            assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, check=check)

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0

    def stat(self, path: str) -> str:
        return self.run("stat", "--format=%U:%G %a", path).stdout.strip()

    def write(self, path: str, text: str) -> None:
        done = subprocess.run(
            [*self._enter, "--", "chroot", self.root, "sh", "-c", f"cat > {path}"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def unit(self, *properties: str) -> dict[str, str]:
        shown = self.run("systemctl", "show", "station-bridge", *(f"-p{p}" for p in properties))
        return dict(line.split("=", 1) for line in shown.stdout.splitlines())


@pytest.fixture
def pi() -> Iterator[PiRoot]:
    """The root with systemd not running."""
    with tempfile.TemporaryDirectory(prefix="pi-") as scratch:
        unshare = ["unshare", "--mount", "--propagation=private"]
        namespace = subprocess.Popen(
            [*unshare, "sh", "-c", WITHOUT_SYSTEMD, "setup", scratch, str(ROOT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert namespace.stdout is not None
            line = namespace.stdout.readline()  # waits for the mounts (or for the shell to end)
            assert line == "ready\n", namespace.communicate()[1]
            yield PiRoot(target=namespace.pid, root=f"{scratch}/root", pid_namespace=False)
        finally:
            namespace.kill()  # the namespace, its mounts and the overlay's changes go with it
            namespace.wait()


@pytest.fixture
def booted() -> Iterator[PiRoot]:
    """The root with systemd running as PID 1 of its own PID namespace."""
    with tempfile.TemporaryDirectory(prefix="pi-") as scratch:
        unshare = ["unshare", "--mount", "--propagation=private", "--pid", "--fork"]
        namespace = subprocess.Popen(
            [*unshare, "--kill-child", "sh", "-c", WITH_SYSTEMD, "setup", scratch, str(ROOT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        systemd: int | None = None
        try:
            systemd = _child(namespace)
            pi = PiRoot(target=systemd, root=f"{scratch}/root", pid_namespace=True)
            _wait_for_boot(pi, namespace)
            yield pi
        finally:
            if systemd is not None:
                os.kill(systemd, 9)  # PID 1 of the namespace: everything in it goes too
            namespace.kill()
            namespace.wait()


def _child(process: subprocess.Popen[str]) -> int:
    """The process `unshare --fork` started (it becomes systemd)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        found = children.read_text().split()
        if found:
            return int(found[0])
        time.sleep(0.05)
    raise AssertionError(f"unshare started nothing: {process.communicate()[1]}")


def _wait_for_boot(pi: PiRoot, namespace: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and namespace.poll() is None:
        # fails at once until systemd listens; then waits for the boot to end
        state = pi.run("systemctl", "is-system-running", "--wait", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.1)
    raise AssertionError(f"systemd did not boot: {namespace.poll()}")


def test_install_without_systemd_then_remove_and_purge(pi: PiRoot) -> None:
    installed = pi.run("sh", INSTALL)
    assert "created the system user station-bridge" in installed.stdout
    assert "enabled /etc/systemd/system/station-bridge.service" in installed.stdout
    assert "systemd is not running here" in installed.stdout

    groups = pi.run("id", "-nG", "station-bridge").stdout.split()
    assert set(groups) == {"station-bridge", "dialout"}
    assert pi.stat("/etc/station-bridge") == "root:station-bridge 750"
    assert pi.stat(CONFIG) == "root:station-bridge 640"
    assert pi.stat(PASSWORD) == "root:root 600"
    assert pi.stat("/var/lib/station-bridge") == "station-bridge:station-bridge 750"
    assert pi.run("systemctl", "is-enabled", "station-bridge").stdout.strip() == "enabled"
    modules = pi.run("cat", "/etc/modules-load.d/station-bridge.conf").stdout.split("\n")
    assert {"usbserial", "cdc_acm"} <= set(modules)
    assert pi.run(f"{VENV_BIN}/station-bridge", "check", "--config", CONFIG).returncode == 0
    # the service user cannot read the password where root keeps it (the unit passes a copy)
    denied = pi.run(
        *AS_SERVICE_USER, f"{VENV_BIN}/station-bridge", "check", "--config", CONFIG, check=False
    )
    assert denied.returncode == 2 and "Permission denied" in denied.stderr

    pi.run("sh", INSTALL, "--remove")
    assert not pi.exists("/opt/station-bridge")
    assert not pi.exists("/etc/systemd/system/station-bridge.service")
    assert not pi.exists("/etc/systemd/system/multi-user.target.wants/station-bridge.service")
    assert not pi.exists("/etc/modules-load.d/station-bridge.conf")
    assert pi.exists(CONFIG) and pi.exists(PASSWORD)
    assert pi.run("id", "station-bridge", check=False).returncode == 0

    pi.run("sh", INSTALL, "--remove", "--purge")
    for path in ("/etc/station-bridge", "/var/lib/station-bridge", "/var/backups/station-bridge"):
        assert not pi.exists(path), path
    assert pi.run("id", "station-bridge", check=False).returncode != 0


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
@pytest.mark.skipif(not Path("/lib/systemd/systemd").exists(), reason="systemd is not installed")
async def test_the_unit_under_systemd(booted: PiRoot, sim: MesSimulator, tmp_path: Path) -> None:
    pi = booted
    installed = await asyncio.to_thread(pi.run, "sh", INSTALL)
    assert "next: edit /etc/station-bridge/config.yaml" in installed.stdout

    # The operator's part: the config and the password. Serial ports: a node of the ttyS group
    # (allowed; no such port, so "not found") and one of an unlisted device group (refused).
    host, port = MOSQUITTO
    config = bridge_config(sim, tmp_path, host=host, port=port)
    pi.sh(
        "mkdir /run/devtest && mknod -m 0660 /run/devtest/ttyS6 c 4 70 && "
        "mknod -m 0660 /run/devtest/other c 8 0 && chgrp dialout /run/devtest/*"
    )
    settings = {
        "bridge_id": config.bridge_id,
        "data_dir": "/var/lib/station-bridge",
        "mqtt": {"host": host, "port": port, "topic_prefix": config.mqtt.topic_prefix},
        "mes": {"url": sim.url, "username": "admin", "password_file": PASSWORD},
        "stations": [{"id": "1", "equipment_id": 7}],
        "devices": [
            {"name": name, "port": f"/run/devtest/{name}", "station": "1", "format": "keyvalue"}
            for name in ("ttyS6", "other")
        ],
    }
    pi.write(CONFIG, yaml.safe_dump(settings))
    pi.write(PASSWORD, "admin-pass\n")
    pi.sh("mkdir /etc/systemd/system/station-bridge.service.d")
    pi.write(  # only for speed: a ping a second
        "/etc/systemd/system/station-bridge.service.d/test.conf", "[Service]\nWatchdogSec=3\n"
    )
    pi.run("systemctl", "daemon-reload")

    async with Tablet(config) as tablet:
        await asyncio.to_thread(pi.run, "systemctl", "start", "station-bridge")  # until READY=1
        unit = pi.unit("ActiveState", "StatusText", "WatchdogTimestampMonotonic")
        assert unit["ActiveState"] == "active"
        assert unit["StatusText"] == "connected to the MQTT broker"

        wip = sim.wip_ids[0]  # MQTT in, the MES over HTTP, the store on disk: all in the sandbox
        start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
        await tablet.send("1", Inbound.START, start)
        started = await tablet.expect("1", ResultKind.STARTED, within=30)
        assert started["event"] == "PROCESS_STARTED"

        # allowed: the driver answered (no such port); refused: the device policy did
        topics = tablet.topics
        await tablet.latest(
            topics.device_status("1", "ttyS6"), lambda p: p["state"] == "disconnected"
        )
        refused = await tablet.latest(
            topics.device_status("1", "other"), lambda p: p["state"] == "error"
        )
        assert "permission denied" in refused["detail"], refused

        def pinged() -> bool:
            latest = pi.unit("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
            return latest != unit["WatchdogTimestampMonotonic"]

        await asyncio.to_thread(_poll, pinged)

        # An upgrade: stopped, data copied, started again.
        upgraded = await asyncio.to_thread(pi.run, "sh", INSTALL)
        assert "stopped station-bridge for the upgrade" in upgraded.stdout
        assert "started station-bridge again" in upgraded.stdout
        assert pi.unit("ActiveState")["ActiveState"] == "active"
        backups = pi.run("ls", "/var/backups/station-bridge").stdout.split()
        assert pi.exists(f"/var/backups/station-bridge/{backups[0]}/store/cache.db")

        pi.run("systemctl", "stop", "station-bridge")
        assert pi.unit("ActiveState", "ExecMainStatus") == {
            "ActiveState": "inactive",
            "ExecMainStatus": "0",
        }

    # A bad config: exit 2, and systemd does not restart it every 5 s.
    pi.write(CONFIG, yaml.safe_dump({**settings, "mqtt": {"port": "not a port"}}))
    failed = pi.run("systemctl", "start", "station-bridge", check=False)
    assert failed.returncode != 0
    assert pi.unit("ActiveState", "SubState", "ExecMainStatus", "NRestarts") == {
        "ActiveState": "failed",
        "SubState": "failed",  # not auto-restart
        "ExecMainStatus": "2",
        "NRestarts": "0",
    }


def _poll(condition: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
