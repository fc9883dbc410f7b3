"""`outbox retry` must not replay a dead letter over something newer the MES recorded since:
the decision, from the dead letter and the MES's trace of its WIP (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.commands.admin import stale_reason
from bridge.core.domain import Result
from bridge.core.outbox import Entry
from bridge.mes import CompleteProcess, ConvertToSerial, StartProcess, WipTrace
from bridge.mes.models import MesRequest

T = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
WIP = "WIP-1"


def dead(request: MesRequest) -> Entry:
    return Entry(
        seq=5,
        request=request,
        station_id="1",
        enqueued_at=T,
        dead_at=T + timedelta(hours=1),
        dead_reason={"code": "CONFLICT"},
    )


def fail(process: int = 1, at: datetime = T) -> Entry:
    return dead(
        CompleteProcess(
            wip_id=WIP,
            process=process,
            operator_id=2,
            result=Result.FAIL,
            started_at=at - timedelta(minutes=1),
            completed_at=at,
        )
    )


def start(process: int = 1, at: datetime = T) -> Entry:
    return dead(StartProcess(wip_id=WIP, process=process, operator_id=2, started_at=at))


def record(process: int, result: str, at: str | None) -> dict[str, Any]:
    return {"process_number": process, "result": result, "complete_time": at}


def trace(
    *records: dict[str, Any], status: str = "IN_PROGRESS", serial: int | None = None
) -> WipTrace:
    return WipTrace.model_validate(
        {"wip_id": WIP, "status": status, "serial_id": serial, "process_history": list(records)}
    )


@pytest.mark.parametrize(
    ("entry", "mes", "stale"),
    [
        (fail(), trace(), None),  # nothing at the MES: replay
        (fail(), trace(record(1, "FAIL", "2026-11-26T08:00:00Z")), None),  # only older records
        (fail(), trace(record(2, "PASS", "2026-11-26T10:00:00Z")), None),  # another process
        (fail(), trace(record(1, "PASS", "2026-11-26T10:00:00Z")), "PASS of process 1"),
        (fail(), trace(record(1, "FAIL", "2026-11-26T18:00:00+09:00")), "FAIL of process 1"),
        (fail(), trace(record(1, "FAIL", "2026-11-26 09:00:00")), "FAIL of process 1"),  # itself
        (fail(), trace(record(1, "PASS", "2026-11-26T09:00:00.000001Z")), "PASS of process 1"),
        (fail(), trace(record(1, "PASS", None)), None),
        (start(), trace(record(1, "PASS", "2026-11-26T09:30:00Z")), "PASS of process 1"),
        (start(), trace(record(1, "PASS", "2026-11-26T08:59:59Z")), None),
        (fail(), trace(status="CONVERTED", serial=3), "the WIP is already converted"),
        (dead(ConvertToSerial(wip_id=WIP, operator_id=2)), trace(status="COMPLETED"), None),
        (
            dead(ConvertToSerial(wip_id=WIP, operator_id=2)),
            trace(status="CONVERTED", serial=3),
            "it is already converted",
        ),
    ],
    ids=[
        "empty-trace",
        "older-only",
        "other-process",
        "newer-pass",
        "newer-in-another-offset",
        "itself-already-recorded",
        "one-microsecond-newer",
        "record-without-time",
        "start-after-newer-completion",
        "start-after-older-completion",
        "converted",
        "convert-completed",
        "convert-already-done",
    ],
)
def test_stale_reason(entry: Entry, mes: WipTrace, stale: str | None) -> None:
    reason = stale_reason(entry, mes)
    if stale is None:
        assert reason is None
    else:
        assert reason is not None and stale in reason
