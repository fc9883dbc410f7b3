"""The `station-bridge` command as a user runs it: real processes, real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.config import load_config
from bridge.core.topics import Inbound, ResultKind
from mes_sim import MesSimulator

from .harness import OPERATOR, Tablet, mosquitto_running, running

EXE = [sys.executable, "-m", "bridge"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


ONE_STATION = "stations: [{id: '1'}]\n"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_mes_check_against_the_simulator(sim: MesSimulator, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("admin-pass\n")
    config = write_config(
        tmp_path,
        f"mes:\n  url: {sim.url}\n  username: admin\n  password_file: {tmp_path / 'pw'}\n"
        + ONE_STATION,
    )
    done = run("mes-check", "--config", str(config), "--wip", sim.wip_ids[0])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "health" in done.stdout and "✓ healthy" in done.stdout
    assert "1→1 2→2 3→3 4→4 5→5 6→6" in done.stdout
    assert f"scan {sim.wip_ids[0]}" in done.stdout and "CREATED" in done.stdout
    assert "admin-pass" not in done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("OK")


def test_mes_check_reports_a_wrong_password_without_printing_it(
    sim: MesSimulator, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        f"mes:\n  url: {sim.url}\n  username: admin\n  password: not-the-password\n" + ONE_STATION,
    )
    done = run("mes-check", "--config", str(config))
    assert done.returncode == 1
    assert "login" in done.stdout and "AUTH" in done.stdout and "MES 인증 실패" in done.stdout
    assert "not-the-password" not in done.stdout + done.stderr


def test_a_password_in_the_mes_url_is_refused_without_printing_it(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # httpx would send it as Basic auth instead of the bearer token, and log it at DEBUG.
    url = sim.url.replace("http://", "http://proxyuser:proxy-secret@")
    config = write_config(tmp_path, f"mes:\n  url: {url}\n" + ONE_STATION)
    for command in ("mes-check", "check"):
        done = run(command, "--config", str(config))
        assert done.returncode == 2
        assert "mes.url" in done.stderr and "must not hold a user name or password" in done.stderr
        assert "proxy-secret" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mes:\n  rate_limit: 0\n", "mes.rate_limit: Input should be greater than or equal to 1"),
        ("mes:\n  convert_via: magic\n", "mes.convert_via: Input should be"),
        ("mes:\n  pasword: x\n", "mes.pasword: Extra inputs are not permitted"),
        ("mes: [1, 2\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_a_bad_config_names_the_field_not_a_traceback(
    tmp_path: Path, text: str, expected: str
) -> None:
    done = run("mes-check", "--config", str(write_config(tmp_path, text)))
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_config_file(tmp_path: Path) -> None:
    done = run("mes-check", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "No such file" in done.stderr


@pytest.fixture
def mes_sim_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [*EXE, "mes-sim", "--port", "0", "--wips", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    seen = ""
    for line in process.stdout:  # wait for the announcement, not for a guessed delay
        seen += line
        if match := re.search(r"http://127\.0\.0\.1:\d+", line):
            break
    else:
        process.kill()
        pytest.fail(f"mes-sim printed no URL: {seen}")
    yield process, match.group(0)
    if process.poll() is None:
        process.kill()
        process.wait()


def test_mes_sim_serves_until_terminated(
    mes_sim_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = mes_sim_process
    login = httpx.post(
        f"{url}/api/v1/auth/login/json",
        json={"username": "operator1", "password": "operator1-pass"},
    )
    assert login.status_code == 200
    token = login.json()["access_token"]
    scan = httpx.post(
        f"{url}/api/v1/wip-items/WIP-KR01PSA261102-003/scan",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert scan.status_code == 200 and scan.json()["status"] == "CREATED"
    assert len(httpx.get(f"{url}/sim/ledger").json()["wips"]) == 3
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--wips", "0"], "wips must be between 1 and 999"),
        (["--lot", "kr-01"], "lot must be"),
        (["--process-id-offset", "-5"], "offset"),
    ],
)
def test_mes_sim_refuses_bad_options_clearly(args: list[str], expected: str) -> None:
    done = run("mes-sim", "--port", "0", *args, timeout=20)
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr


def test_mes_sim_on_a_taken_port(sim: MesSimulator) -> None:
    port = sim.url.rsplit(":", 1)[1]
    done = run("mes-sim", "--port", port, timeout=20)
    assert done.returncode == 2
    assert "Address already in use" in done.stderr and "Traceback" not in done.stderr


def test_demo_runs_to_ok() -> None:
    done = run("demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("OK: 3 WIPs")
    for seen in (
        "PROCESS_STARTED_OFFLINE",  # the outage: the stations keep working
        "SEQUENCE_COMPLETE_OFFLINE",
        "SYNCED",  # and the outbox delivers it afterwards
        "answer is lost",
        "expires every access token",
        "gauge balance              connected",
        "g → batch",  # a serial reading recorded into a batch
        "SERIAL_CREATED",
        "(+1 FAIL)",  # the rework, sent as FAIL
        "0 pending, 0 dead letters",
    ):
        assert seen in done.stdout, seen
    assert "Traceback" not in done.stdout + done.stderr


def test_check_prints_the_effective_config_without_secrets(tmp_path: Path) -> None:
    (tmp_path / "mqtt-pw").write_text("broker-secret\n")
    config = write_config(
        tmp_path,
        "bridge_id: line2\n"
        "mqtt: {host: broker.local, password_file: " + str(tmp_path / "mqtt-pw") + "}\n"
        "mes: {url: 'http://mes.local:8000', username: admin,"
        " password: mes-secret}\n"
        "stations:\n"
        "  - {id: '1', limits: {1: {torque_nm: {min: 1, max: 2, defect: TQ}}}}\n",
    )
    env = {**os.environ, "STATION_BRIDGE_MQTT__PORT": "8883"}
    done = subprocess.run(
        [*EXE, "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    assert "bridge_id: line2" in shown and "host: broker.local" in shown
    assert "port: 8883" in shown  # the environment over the file
    assert "defect: TQ" in shown
    for secret in ("broker-secret", "mes-secret"):
        assert secret not in shown + done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stations: [{id: 'a b'}]", "stations.0.id"),
        (
            "stations: [{id: '1', limits: {1: {t: {min: 3, max: 1, defect: X}}}}]",
            "stations.0.limits.1.t: Value error, min 3.0 is above max 1.0",
        ),
        ("mqtt: {port: 70000}", "mqtt.port"),
        ("outbox: {max_pending: 0}", "outbox.max_pending"),
        ("stations: [{id: '1'}, {id: '1'}]", "station ids must be unique"),
        (
            ONE_STATION
            + "devices: [{name: s, port: /dev/x, station: '9', measurement: m, format: and}]",
            "unknown station",
        ),
        ("mqtt: {port: 1883}", "no stations configured"),
    ],
    ids=["station-id", "limits", "port", "bound", "duplicate", "device-station", "no-stations"],
)
def test_check_names_the_bad_field(tmp_path: Path, text: str, expected: str) -> None:
    done = run("check", "--config", str(write_config(tmp_path, text)))
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr


def test_outbox_list_shows_pending_and_dead_letters_with_reasons(
    sim: MesSimulator, tmp_path: Path
) -> None:
    if not mosquitto_running():
        pytest.skip("Mosquitto is not running")
    prefix = f"cli-{os.getpid()}"
    config_file = write_config(
        tmp_path,
        f"bridge_id: {prefix}\ndata_dir: {tmp_path / 'data'}\n"
        f"mqtt: {{topic_prefix: {prefix}}}\n"
        f"mes: {{url: '{sim.url}', username: admin, password: admin-pass}}\n"
        "outbox: {retry_min_s: 0.05, retry_max_s: 0.2, probe_interval_s: 0.1}\n"
        "stations: [{id: '1'}]\n",
    )
    config = load_config(config_file)

    async def scenario() -> None:
        async with Tablet(config) as tablet, running(config):
            refused = {"wip_id": sim.wip_ids[0], "process_id": 4, "operator_id": OPERATOR}
            sim.set_faults(mode="unavailable")
            await tablet.send("1", Inbound.START, {**refused, "batch_id": "doomed"})
            await tablet.send("1", Inbound.COMPLETE, {"result": "PASS"})
            await tablet.expect("1", ResultKind.COMPLETED)
            await tablet.send("1", Inbound.START, {**refused, "wip_id": sim.wip_ids[1]})
            await tablet.expect(
                "1", ResultKind.STARTED, where=lambda p: p["wip_id"] != refused["wip_id"]
            )
            listing = run("outbox", "list", "--config", str(config_file))
            assert "3 pending, 0 dead-lettered" in listing.stdout, listing.stdout + listing.stderr
            sim.set_faults(mode="ok")
            await tablet.expect(
                "1", ResultKind.ERROR, where=lambda p: p["error"]["code"] == "BLOCKED"
            )
            # Lanes are let go one at a time after a recovery: wait for the other WIP's too.
            await tablet.expect(
                "1", ResultKind.ERROR, where=lambda p: p.get("wip_id") == sim.wip_ids[1]
            )
            # While it runs, the bridge itself answers (test_operations.py has the rest).
            live = await asyncio.to_thread(
                run, "outbox", "drop", "--config", str(config_file), "999"
            )
            assert live.returncode == 2 and "there is no request #999" in live.stderr

    asyncio.run(scenario())
    listing = run("outbox", "list", "--config", str(config_file))
    assert listing.returncode == 0, listing.stderr
    assert "0 pending, 3 dead-lettered" in listing.stdout
    assert "PREREQUISITE_NOT_MET" in listing.stdout and "BLOCKED" in listing.stdout
    assert "batch doomed" in listing.stdout
    as_json = run("outbox", "list", "--config", str(config_file), "--json")
    entries = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(entries) == 3
    start, blocked, other = sorted(entries, key=lambda e: e["seq"])
    assert blocked["dead_reason"]["code"] == "BLOCKED" and blocked["batch_id"] == "doomed"

    def outbox(*args: object) -> subprocess.CompletedProcess[str]:
        return run("outbox", *(str(arg) for arg in args), "--config", str(config_file))

    refused = outbox("retry", blocked["seq"])
    assert refused.returncode == 2 and "retry that one" in refused.stderr
    retried = outbox("retry", start["seq"])
    assert retried.returncode == 0, retried.stderr
    assert (
        f"#{start['seq']} start" in retried.stdout
        and f"#{blocked['seq']} complete" in retried.stdout
    )
    dropped = outbox("drop", other["seq"])
    assert dropped.returncode == 0 and f"dropped: #{other['seq']} start" in dropped.stdout
    assert "2 pending, 0 dead-lettered" in outbox("list").stdout
    assert "is not a dead letter" in outbox("drop", start["seq"]).stderr
    assert "there is no request #999" in outbox("retry", 999).stderr


def test_outbox_list_without_data(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"data_dir: {tmp_path / 'nothing'}\n" + ONE_STATION)
    done = run("outbox", "list", "--config", str(config))
    assert done.returncode == 2 and "no bridge data here" in done.stderr


def test_gauge_sim_plays_a_balance_on_a_pty_until_terminated() -> None:
    process = subprocess.Popen(
        [*EXE, "gauge-sim", "--format", "and", "--rate", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        path = process.stdout.readline().strip()  # the first line is the port, for scripts
        assert path.startswith("/dev/pts/"), path
        port = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            seen = b""
            deadline = 100  # reads of at most 0.1 s: the gauge sends 50 lines a second
            while b"ST,+" not in seen and deadline:
                ready, _, _ = select.select([port], [], [], 0.1)
                if ready:
                    seen += os.read(port, 1024)
                deadline -= 1
            assert re.search(rb"ST,\+\d+\.\d+ +g", seen), seen
        finally:
            os.close(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
