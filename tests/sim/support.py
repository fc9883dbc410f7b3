"""Helpers for the simulator's own tests: a settable clock, a small MES client, a wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from mes_sim import MesSimulator

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
OP = 2  # operator1


class FakeClock:
    """The MES's clock, moved by hand (thread-safe: the server reads it from its threads)."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


class Mes:
    """Raw HTTP calls against a simulator, with a user token when logged in."""

    def __init__(self, sim: MesSimulator, timeout: float = 5.0) -> None:
        self.sim = sim
        self.http = httpx.Client(base_url=sim.url, timeout=timeout)
        self.token: str | None = None

    def close(self) -> None:
        self.http.close()

    def login(self, username: str = "admin", password: str = "admin-pass") -> dict[str, Any]:
        answer = self.http.post(
            "/api/v1/auth/login/json", json={"username": username, "password": password}
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        self.token = body["access_token"]
        return body

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def pk(self, n: int) -> int:
        """The integer id of the n-th seeded WIP."""
        return 100 + n

    def scan(self, wip: str, process_id: int | None = None, **kw: Any) -> httpx.Response:
        params = {"process_id": process_id} if process_id is not None else None
        kw.setdefault("headers", self.auth)
        return self.http.post(f"/api/v1/wip-items/{wip}/scan", params=params, **kw)

    def start(
        self, pk: int | str, process_id: int, operator_id: int = OP, **body: Any
    ) -> httpx.Response:
        return self.http.post(
            f"/api/v1/wip-items/{pk}/start-process",
            json={"process_id": process_id, "operator_id": operator_id, **body},
            headers=self.auth,
        )

    def complete(
        self, pk: int, process_id: int, result: str = "PASS", operator_id: int = OP, **body: Any
    ) -> httpx.Response:
        return self.http.post(
            f"/api/v1/wip-items/{pk}/complete-process",
            params={"process_id": process_id, "operator_id": operator_id},
            json={"result": result, **body},
            headers=self.auth,
        )

    def run(self, pk: int, process_id: int, result: str = "PASS") -> httpx.Response:
        started = self.start(pk, process_id)
        assert started.status_code == 200, started.text
        return self.complete(pk, process_id, result)

    def run_all(self, pk: int, offset: int = 0) -> None:
        for n in range(1, 7):
            answer = self.run(pk, n + offset)
            assert answer.status_code == 200, answer.text

    def convert(self, pk: int, operator_id: int = OP) -> httpx.Response:
        return self.http.post(
            f"/api/v1/wip-items/{pk}/convert-to-serial",
            json={"operator_id": operator_id},
            headers=self.auth,
        )

    def trace(self, wip: str) -> httpx.Response:
        return self.http.get(f"/api/v1/wip-items/{wip}/trace", headers=self.auth)

    def generate(self, wip: str, print_label: str | None = None) -> httpx.Response:
        params = {"wip_id": wip}
        if print_label is not None:
            params["print_label"] = print_label
        return self.http.post("/api/v1/serials/generate-from-wip", params=params)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the simulator reaches on its own; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
