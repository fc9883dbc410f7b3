"""The `station-bridge` command as a user runs it: real processes, real loopback HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mes_sim import MesSimulator

EXE = [sys.executable, "-m", "bridge.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_mes_check_against_the_simulator(sim: MesSimulator, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("admin-pass\n")
    config = write_config(
        tmp_path, f"mes:\n  url: {sim.url}\n  username: admin\n  password_file: {tmp_path / 'pw'}\n"
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
        tmp_path, f"mes:\n  url: {sim.url}\n  username: admin\n  password: not-the-password\n"
    )
    done = run("mes-check", "--config", str(config))
    assert done.returncode == 1
    assert "login" in done.stdout and "AUTH" in done.stdout and "MES 인증 실패" in done.stdout
    assert "not-the-password" not in done.stdout + done.stderr


def test_mes_check_never_prints_a_password_in_the_url(sim: MesSimulator, tmp_path: Path) -> None:
    url = sim.url.replace("http://", "http://proxyuser:proxy-secret@")
    config = write_config(tmp_path, f"mes:\n  url: {url}\n")
    done = run("mes-check", "--config", str(config))
    assert "proxy-secret" not in done.stdout + done.stderr
    assert "proxyuser:**********@" in done.stdout


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
    for event in (
        "expires every access token",
        "answer is lost",
        "not sent again",
        "sent as FAIL",
        "unavailable",
        "serial conversion",
    ):
        assert event in done.stdout
