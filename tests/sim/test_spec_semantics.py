"""The integration spec's stricter MES (semantics="spec") over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mes_sim import MesSimulator

from .support import FakeClock, Mes


@pytest.fixture
def spec(sim_factory: Callable[..., MesSimulator], connect: Callable[..., Mes]) -> Iterator[Mes]:
    yield connect(sim_factory(semantics="spec", clock=FakeClock()))


def refused(answer: httpx.Response, status: int, code: str, message: str = "") -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["error"] == code and message in body["message"]
    assert "error_code" not in body and "trace_id" not in body
    return body


def test_business_rules_in_the_spec_format(spec: Mes) -> None:
    wip = spec.sim.wip_ids[0]
    body = refused(spec.scan("WIP-NOPE"), 404, "WIP_NOT_FOUND")
    assert set(body) == {"error", "message"}
    refused(
        spec.start(101, 2),
        400,
        "PREREQUISITE_NOT_MET",
        "Process 1 must have PASS result before starting Process 2 (BR-003)",
    )
    refused(spec.scan(wip, process_id=2), 400, "PREREQUISITE_NOT_MET")
    refused(
        spec.complete(101, 1),
        400,
        "PROCESS_NOT_STARTED",
        "Process must be started before completion",
    )
    started = spec.start(101, 1)
    assert started.status_code == 200
    assert started.json()["message"] == "Process started successfully"
    assert started.json()["wip_item"]["status"] == "IN_PROGRESS"
    rework = spec.complete(101, 1, "REWORK")
    assert rework.status_code == 200
    assert rework.json()["wip_item"]["status"] == "IN_PROGRESS"
    assert spec.run(101, 1).status_code == 200
    refused(
        spec.complete(101, 1),
        400,
        "DUPLICATE_PASS",
        "Duplicate PASS results are not allowed for process 1 (BR-004)",
    )
    refused(
        spec.convert(101),
        400,
        "INCOMPLETE_PROCESSES",
        "Missing PASS results for processes: [2, 3, 4, 5, 6] (BR-005)",
    )
    assert spec.run(102, 1, "FAIL").status_code == 200
    refused(
        spec.start(102, 1),
        400,
        "INVALID_WIP_STATUS",
        "Cannot start process on WIP with status 'FAILED'",
    )


def test_conversion_works_and_answers_201(spec: Mes) -> None:
    spec.run_all(101)
    converted = spec.convert(101)
    assert converted.status_code == 201
    assert converted.json()["wip_item"]["status"] == "CONVERTED"
    assert converted.json()["serial"]["serial_number"] == "KR01PSA261102001"
    refused(spec.convert(101), 400, "ALREADY_CONVERTED")
    refused(spec.start(101, 1), 400, "INVALID_WIP_STATUS")
    spec.sim.set_faults(convert="broken")
    spec.run_all(102)
    refused(spec.convert(102), 500, "INTERNAL_ERROR")


def test_auth_validation_and_limits_in_the_spec_format(spec: Mes) -> None:
    http = spec.http
    refused(http.get("/api/v1/wip-items/WIP-X/trace"), 401, "UNAUTHORIZED")
    refused(
        http.post("/api/v1/auth/login/json", json={"username": "admin", "password": "no"}),
        401,
        "UNAUTHORIZED",
    )
    body = refused(spec.start(101, 0), 422, "VALIDATION_ERROR")
    assert body["details"] == [
        {
            "field": "process_id",
            "message": "Input should be greater than or equal to 1",
            "code": "greater_than_equal",
        }
    ]
    spec.sim.set_faults(rate_limit_per_min=1)
    http.get("/api/v1/processes/active")
    limited = http.get("/api/v1/processes/active")
    assert refused(limited, 429, "RATE_LIMITED")["retry_after"] == 60
    assert limited.headers["retry-after"] == "60"
    assert http.get("/api/health").json() == {"detail": "Not Found"}
