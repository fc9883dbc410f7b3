"""serve(): what a person starting the simulator sees, and a clean stop."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import httpx

from mes_sim import serve

from .support import eventually

ROOT = Path(__file__).resolve().parents[2]


def test_serve_prints_the_seed_and_stops_on_request() -> None:
    out = io.StringIO()
    stop = threading.Event()
    runner = threading.Thread(
        target=serve,
        kwargs={
            "host": "127.0.0.1",
            "port": 0,
            "wips": 5,
            "lot": "KR01PSA261102",
            "semantics": "deployed",
            "process_id_offset": 10,
            "out": out,
            "stop": stop,
        },
    )
    runner.start()
    try:
        eventually(lambda: "Press Ctrl+C" in out.getvalue())
        text = out.getvalue()
        url = re.search(r"http://127\.0\.0\.1:\d+", text)
        assert url is not None
        assert httpx.get(f"{url.group()}/health").json()["status"] == "healthy"
        for expected in (
            "admin / admin-pass (id 1)",
            "operator1 / operator1-pass (id 2)",
            "1→11",
            "6→16",
            "WIP-KR01PSA261102-001",
            "WIP-KR01PSA261102-005",
            "5 (CREATED)",
            "sim-station-key",
            "/sim/ledger",
            "/sim/faults",
            "/sim/reset",
        ):
            assert expected in text
    finally:
        stop.set()
        runner.join(timeout=5)
    assert not runner.is_alive()
    assert "stopped" in out.getvalue()
