"""Requests are stored and replayed as JSON: they must round-trip exactly, in aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from bridge.core.domain import Result, format_utc
from bridge.mes.models import CompleteProcess, ConvertToSerial, MesRequest, StartProcess, WipTrace

KST = timezone(timedelta(hours=9))
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
REQUESTS = TypeAdapter(MesRequest)


def test_format_utc_converts_to_z() -> None:
    assert format_utc(datetime(2026, 11, 26, 18, 0, tzinfo=KST)) == "2026-11-26T09:00:00Z"


@pytest.mark.parametrize(
    "request_",
    [
        StartProcess(
            wip_id="WIP-KR01PSA261102-001", process=1, operator_id=2, started_at=T0, equipment_id=3
        ),
        CompleteProcess(
            wip_id="WIP-KR01PSA261102-001",
            process=6,
            operator_id=2,
            result=Result.FAIL,
            started_at=T0,
            completed_at=T0 + timedelta(minutes=2),
            measurements={"torque_nm": 1.5, "lots": {"a": "b"}},
            defects=["DEF001"],
            notes="scratch",
        ),
        ConvertToSerial(wip_id="WIP-KR01PSA261102-001", operator_id=2, notes="ok"),
    ],
)
def test_requests_round_trip_through_json(request_: object) -> None:
    stored = REQUESTS.dump_json(request_)  # type: ignore[arg-type]
    assert REQUESTS.validate_json(stored) == request_


def test_stored_times_are_utc_with_z() -> None:
    start = StartProcess(
        wip_id="W", process=1, operator_id=1, started_at=datetime(2026, 11, 26, 18, 0, tzinfo=KST)
    )
    assert start.model_dump(mode="json")["started_at"] == "2026-11-26T09:00:00Z"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        StartProcess(wip_id="W", process=1, operator_id=1, started_at=datetime(2026, 11, 26, 9, 0))  # noqa: DTZ001


@pytest.mark.parametrize(
    "fields",
    [{"process": 0}, {"operator_id": 0}, {"wip_id": ""}, {"wip_id": "W" * 51}, {"extra": 1}],
)
def test_invalid_start_fields_are_refused(fields: dict[str, object]) -> None:
    base: dict[str, object] = {"wip_id": "W", "process": 1, "operator_id": 1, "started_at": T0}
    with pytest.raises(ValidationError):
        StartProcess.model_validate({**base, **fields})


def test_notes_longer_than_the_mes_accepts_are_refused() -> None:
    with pytest.raises(ValidationError):
        ConvertToSerial(wip_id="W", operator_id=1, notes="x" * 5001)


def test_trace_results_for_a_process() -> None:
    trace = WipTrace.model_validate(
        {
            "wip_id": "W",
            "status": "FAILED",
            "unknown": 1,
            "process_history": [
                {"process_number": 1, "result": "pass"},
                {"process_number": 2, "result": "FAIL"},
                {"process_number": 1, "result": "FAIL"},
            ],
        }
    )
    assert trace.results_for(1) == ["PASS", "FAIL"]
    assert trace.results_for(3) == []
