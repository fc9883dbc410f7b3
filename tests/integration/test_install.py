"""deploy/install.sh as an operator runs it on a Pi, in a throwaway root.

The root is this machine's own Debian 12 root file system (Raspberry Pi OS 64-bit is Debian 12
for arm64) under a copy-on-write overlay, in a mount namespace of its own: the script runs in a
chroot there as root, with the real useradd, pip, install and `systemctl enable` (which works on
files when systemd is not running), and every change is thrown away with the namespace. What it
cannot show is systemd itself starting the unit: here the test plays systemd's part (the service
user, the unit's environment, the credential copy, the notify socket).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mes_sim import MesSimulator

from .harness import mosquitto_running

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "/src/deploy/install.sh"
VENV_BIN = "/opt/station-bridge/.venv/bin"
CONFIG = "/etc/station-bridge/config.yaml"
AS_SERVICE_USER = ["setpriv", "--reuid=station-bridge", "--regid=station-bridge", "--init-groups"]
CREDENTIALS = "/run/credentials/station-bridge.service"

SETUP = """
set -e
T=$1; SRC=$2; SHARED=$3
mount -t tmpfs tmpfs "$T"
mkdir "$T/upper" "$T/work" "$T/root"
R=$T/root
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
mkdir -p "$R/src" "$R/run/shared"
mount --bind "$SRC" "$R/src"
mount --bind "$SHARED" "$R/run/shared"
echo ready
exec sleep infinity
"""


def _overlay_possible() -> bool:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "nsenter", "setpriv")):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


pytestmark = [
    pytest.mark.skipif(not _overlay_possible(), reason="needs root, unshare and mounts"),
    pytest.mark.timeout(300),
]


class PiRoot:
    """A throwaway copy of this machine's root; `run` runs a command chrooted into it."""

    def __init__(self, namespace: subprocess.Popen[str], root: str, shared: Path) -> None:
        self._namespace = namespace
        self.root = root
        self.shared = shared  # a host directory, seen inside as /run/shared

    def command(self, *argv: str) -> list[str]:
        return [
            *("nsenter", f"--target={self._namespace.pid}", "--mount", "--"),
            *("chroot", self.root, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
            *("HOME=/root", *argv),
        ]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(*argv), capture_output=True, text=True, timeout=240, check=False
        )
        if check:
            assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, check=check)

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0


@pytest.fixture
def pi() -> Iterator[PiRoot]:
    with (
        tempfile.TemporaryDirectory(prefix="pi-") as scratch,
        tempfile.TemporaryDirectory(prefix="pi-shared-") as shared,
    ):
        os.chmod(shared, 0o755)
        unshare = ["unshare", "--mount", "--propagation=private", "sh", "-c", SETUP, "setup"]
        namespace = subprocess.Popen(
            [*unshare, scratch, str(ROOT), shared],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert namespace.stdout is not None
            line = namespace.stdout.readline()  # waits for the mounts (or for the shell to end)
            assert line == "ready\n", namespace.communicate()[1]
            yield PiRoot(namespace, f"{scratch}/root", Path(shared))
        finally:
            namespace.kill()  # the namespace, its mounts and the overlay's changes go with it
            namespace.wait()


def stat(pi: PiRoot, path: str) -> str:
    return pi.run("stat", "--format=%U:%G %a", path).stdout.strip()


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
def test_install_then_run_as_the_unit_would(pi: PiRoot, sim: MesSimulator) -> None:
    installed = pi.run("sh", INSTALL)
    assert "created the system user station-bridge" in installed.stdout
    assert "enabled /etc/systemd/system/station-bridge.service" in installed.stdout

    groups = pi.run("id", "-nG", "station-bridge").stdout.split()
    assert set(groups) == {"station-bridge", "dialout"}
    assert stat(pi, "/etc/station-bridge") == "root:station-bridge 750"
    assert stat(pi, CONFIG) == "root:station-bridge 640"
    assert stat(pi, "/etc/station-bridge/mes-password") == "root:root 600"
    assert stat(pi, "/var/lib/station-bridge") == "station-bridge:station-bridge 750"
    assert pi.run("systemctl", "is-enabled", "station-bridge").stdout.strip() == "enabled"
    assert pi.run(f"{VENV_BIN}/station-bridge", "check", "--config", CONFIG).returncode == 0

    # The service user cannot read the password where root keeps it ...
    denied = pi.run(
        *AS_SERVICE_USER, f"{VENV_BIN}/station-bridge", "check", "--config", CONFIG, check=False
    )
    assert denied.returncode == 2 and "Permission denied" in denied.stderr

    # ... but reads systemd's copy of it (LoadCredential=), which the unit names with %d.
    pi.sh(
        f"install -d -m 0500 -o station-bridge {CREDENTIALS} && "
        f"printf admin-pass > {CREDENTIALS}/mes-password && "
        f"chown station-bridge {CREDENTIALS}/mes-password && chmod 0400 {CREDENTIALS}/mes-password"
    )
    tag = f"test-{uuid.uuid4().hex[:8]}"
    environment = {  # the unit's Environment=, and what keeps this run off other tests' topics
        "STATION_BRIDGE_DATA_DIR": "/var/lib/station-bridge",
        "STATION_BRIDGE_MES__PASSWORD_FILE": f"{CREDENTIALS}/mes-password",
        "STATION_BRIDGE_MES__URL": sim.url,
        "STATION_BRIDGE_MES__USERNAME": "admin",
        "STATION_BRIDGE_BRIDGE_ID": tag,
        "STATION_BRIDGE_MQTT__TOPIC_PREFIX": tag,
        "NOTIFY_SOCKET": "/run/shared/notify",
        "WATCHDOG_USEC": "3000000",
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(pi.shared / "notify"))
        os.chmod(pi.shared / "notify", 0o777)  # the service user sends to it
        notify.settimeout(60)
        argv = [f"{key}={value}" for key, value in environment.items()]
        bridge = subprocess.Popen(
            pi.command(
                *AS_SERVICE_USER,
                "env",
                *argv,
                f"{VENV_BIN}/station-bridge",
                "run",
                "--config",
                CONFIG,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while "READY=1" not in notify.recv(4096).decode().split("\n"):
                pass
            bridge.send_signal(signal.SIGTERM)
            _, log = bridge.communicate(timeout=60)
            assert bridge.returncode == 0, log
        finally:
            bridge.kill()
            bridge.wait()
    assert "cannot" not in log and "admin-pass" not in log
    assert stat(pi, "/var/lib/station-bridge/store/cache.db").startswith("station-bridge:")
    listing = pi.run(f"{VENV_BIN}/station-bridge", "outbox", "list", "--config", CONFIG)
    assert "0 pending, 0 dead-lettered" in listing.stdout


def test_upgrade_keeps_config_and_copies_data_then_remove_and_purge(pi: PiRoot) -> None:
    pi.run("sh", INSTALL)
    pi.sh(f"echo '# edited by the operator' >> {CONFIG}")
    pi.sh("echo secret > /etc/station-bridge/mes-password")
    pi.run(
        *AS_SERVICE_USER,
        "sh",
        "-c",
        "mkdir /var/lib/station-bridge/store && echo kept > /var/lib/station-bridge/store/marker",
    )

    upgraded = pi.run("sh", INSTALL)
    assert "created the system user" not in upgraded.stdout
    assert "wrote" not in upgraded.stdout  # neither the config nor the password file
    assert pi.run("tail", "-n1", CONFIG).stdout == "# edited by the operator\n"
    assert pi.run("cat", "/etc/station-bridge/mes-password").stdout == "secret\n"
    backups = pi.run("ls", "/var/backups/station-bridge").stdout.split()
    assert len(backups) == 1 and f"/var/backups/station-bridge/{backups[0]}" in upgraded.stdout
    copy = f"/var/backups/station-bridge/{backups[0]}/store/marker"
    assert pi.run("cat", copy).stdout == "kept\n"
    assert stat(pi, copy).startswith("station-bridge:station-bridge")
    assert stat(pi, "/var/backups/station-bridge") == "root:root 700"

    pi.run("sh", INSTALL, "--remove")
    assert not pi.exists("/opt/station-bridge")
    assert not pi.exists("/etc/systemd/system/station-bridge.service")
    assert not pi.exists("/etc/systemd/system/multi-user.target.wants/station-bridge.service")
    assert pi.exists(CONFIG) and pi.exists("/var/lib/station-bridge/store/marker")
    assert pi.run("id", "station-bridge", check=False).returncode == 0

    pi.run("sh", INSTALL, "--remove", "--purge")
    for path in ("/etc/station-bridge", "/var/lib/station-bridge", "/var/backups/station-bridge"):
        assert not pi.exists(path), path
    assert pi.run("id", "station-bridge", check=False).returncode != 0
