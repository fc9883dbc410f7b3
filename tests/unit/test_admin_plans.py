"""bridge.commands.admin's plans: what `outbox retry|drop` and `batch end` change, decided from
the state alone (the bridge running or stopped takes the same decision)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.commands.admin import AdminError, plan_drop, plan_end_batch, plan_retry, report_change
from bridge.core.batches import Batch
from bridge.core.domain import Result
from bridge.core.outbox import Entry, Outbox
from bridge.mes.models import CompleteProcess, MesRequest, StartProcess

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
REFUSED = {"code": "PREREQUISITE_NOT_MET", "detail": "process 3 first"}
BLOCKED = {"code": "BLOCKED", "detail": "#1 was refused"}


def start(wip: str = "WIP-1") -> StartProcess:
    return StartProcess(wip_id=wip, process=4, operator_id=2, started_at=T0)


def complete(wip: str = "WIP-1") -> CompleteProcess:
    return CompleteProcess(
        wip_id=wip,
        process=4,
        operator_id=2,
        result=Result.PASS,
        started_at=T0,
        completed_at=T0 + timedelta(minutes=1),
    )


def entry(seq: int, request: MesRequest, **fields: Any) -> Entry:
    data: dict[str, Any] = {"station_id": "1", "batch_id": "b1", "enqueued_at": T0, **fields}
    data.setdefault("batch_uid", f"u-{data['batch_id']}")
    return Entry(seq=seq, request=request, **data)


def dead(seq: int, request: MesRequest, reason: dict[str, Any], **fields: Any) -> Entry:
    return entry(seq, request, dead_at=T0, dead_reason=reason, attempts=1, **fields)


def outbox() -> Outbox:
    return Outbox(
        [
            dead(1, start(), REFUSED),
            dead(2, complete(), BLOCKED),
            dead(3, start("WIP-2"), REFUSED, batch_id="b2"),
            entry(4, start("WIP-3"), batch_id="b3"),
        ]
    )


def test_retry_brings_back_a_refused_start_with_what_it_blocked() -> None:
    change = plan_retry(outbox(), [1])
    assert [e.seq for e in change.entries] == [1, 2]
    assert all(not e.dead and e.dead_reason is None and e.announced for e in change.entries)
    assert change.entries[0].last_error == REFUSED  # the reason stays visible while it waits


@pytest.mark.parametrize(
    ("seqs", "message"),
    [
        ([2], "#2 waits for the request that blocked it: retry that one"),
        ([4], "#4 is not a dead letter"),
        ([99], "there is no request #99"),
    ],
)
def test_retry_refuses(seqs: list[int], message: str) -> None:
    with pytest.raises(AdminError, match=message):
        plan_retry(outbox(), seqs)


def test_drop_deletes_dead_letters_only() -> None:
    assert [e.seq for e in plan_drop(outbox(), [1, 3]).dropped_entries] == [1, 3]
    with pytest.raises(AdminError, match="#4 is not a dead letter"):
        plan_drop(outbox(), [4])


def batch(batch_id: str, wip: str, station: str = "9") -> Batch:
    return Batch(
        batch_id=batch_id,
        uid=f"u-{batch_id}" if station == "9" else f"u-{batch_id}-{station}",
        station_id=station,
        wip_id=wip,
        process=4,
        operator_id=2,
        started_at=T0,
    )


def test_ending_a_batch_drops_its_start_not_yet_sent() -> None:
    box = Outbox(
        [
            entry(4, start("WIP-3"), batch_id="b3"),
            entry(5, start("WIP-4"), batch_id="b4", attempts=1),
        ]
    )
    batches = {"u-b3": batch("b3", "WIP-3"), "u-b4": batch("b4", "WIP-4")}
    unsent = plan_end_batch(batches, box, "b3")
    assert unsent.dropped_batches == [batches["u-b3"]]
    assert [e.seq for e in unsent.dropped_entries] == [4]
    tried = plan_end_batch(batches, box, "b4")  # it may be at the MES: delivered as usual
    assert tried.dropped_batches == [batches["u-b4"]] and tried.dropped_entries == []
    with pytest.raises(AdminError, match="there is no active batch 'b5'"):
        plan_end_batch(batches, box, "b5")


def test_ending_a_batch_whose_id_two_stations_use_needs_the_station() -> None:
    mine, theirs = batch("b3", "WIP-3"), batch("b3", "WIP-4", station="7")
    box = Outbox(
        [
            entry(4, start("WIP-3"), batch_id="b3", station_id="9"),
            entry(5, start("WIP-4"), batch_id="b3", batch_uid=theirs.uid, station_id="7"),
        ]
    )
    batches = {mine.uid: mine, theirs.uid: theirs}
    with pytest.raises(
        AdminError, match=r"stations 7, 9 each have an active batch 'b3'.*--station"
    ):
        plan_end_batch(batches, box, "b3")
    ended = plan_end_batch(batches, box, "b3", "7")
    assert ended.dropped_batches == [theirs]
    assert [e.seq for e in ended.dropped_entries] == [5]
    assert plan_end_batch(batches, box, "b3", "9").dropped_batches == [mine]
    with pytest.raises(AdminError, match="there is no active batch 'b3' on station 8"):
        plan_end_batch(batches, box, "b3", "8")


def test_report_names_each_record() -> None:
    out = io.StringIO()
    report_change(plan_retry(outbox(), [1]), out=out)
    report_change(plan_drop(outbox(), [3]), out=out)
    box = Outbox([entry(4, start("WIP-3"), batch_id="b3")])
    report_change(plan_end_batch({"u-b3": batch("b3", "WIP-3")}, box, "b3"), out=out)
    assert out.getvalue().splitlines() == [
        "back in the queue: #1 start process 4 WIP-1",
        "back in the queue: #2 complete process 4 WIP-1",
        "dropped: #3 start process 4 WIP-2",
        "ended: b3  station 9  WIP-3  process 4  started 2026-11-26 09:00:00Z  0 value(s)",
        "dropped (never sent): #4 start process 4 WIP-3",
    ]
