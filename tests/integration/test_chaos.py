"""A small chaos run (bench/chaos.py) as the suite's proof of exactly-once: a Mosquitto of its own
with persistence (restarted once), the bridge as its own process (SIGKILLed three times, two of
them aimed at the commit-to-ack seam), an MES outage, a 5xx burst and lost answers. The MES's ledger
must hold every record the stations sent, once each, in order."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None, reason="Mosquitto's binary is missing"
)


@pytest.mark.timeout(120)
def test_a_small_chaos_run_loses_duplicates_and_reorders_nothing(tmp_path: Path) -> None:
    figures_file = tmp_path / "figures.json"
    run = subprocess.run(
        [
            sys.executable,
            "bench/chaos.py",
            *("--wips", "3", "--stations", "3", "--pace", "1.5", "--seed", "8", "--quick"),
            *("--kills", "3", "--aimed", "2", "--broker-restarts", "1"),
            *("--outages", "1", "--bursts", "1", "--lost-answers", "0.08"),
            *("--drain-timeout", "60", "--json", str(figures_file)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    report = run.stdout + run.stderr
    assert figures_file.exists(), report
    figures = json.loads(figures_file.read_text())

    # the faults really happened
    assert figures["kills"] == 3 and figures["aimed_fired"] >= 1, report
    assert figures["sent_while_down"] > 0, report
    assert figures["broker_restarts"] == 1 and figures["outages"] == 1, report
    assert figures["reconnects_missed"] == 0, report  # the bridge came back by itself
    assert figures["bursts"] == 1 and figures["answers_dropped"] >= 1, report
    # and the MES holds exactly what the stations sent
    assert figures["expected"] > 0 and figures["recorded"] == figures["expected"], report
    assert (figures["lost"], figures["duplicated"], figures["out_of_order"]) == (0, 0, 0), report
    assert figures["mismatched"] == 0, report
    assert figures["dead_letters"] == {"WIP_NOT_FOUND": 2}, report  # the provoked refusals
    assert figures["pending_left"] == 0 and figures["drain_s"] is not None, report
    assert run.returncode == 0, report
