"""bridge.core.outbox: the order of entries, Change's writes, and a reload of what was written."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.core.batches import Batch
from bridge.core.domain import Result
from bridge.core.limits import Measured
from bridge.core.outbox import NEXT_SEQ_KEY, Change, Entry, Outbox, batch_key, load_state, new_entry
from bridge.mes.models import CompleteProcess, ConvertToSerial, MesRequest, StartProcess

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
KST = timezone(timedelta(hours=9))


def start(wip: str = "WIP-1", process: int = 2) -> StartProcess:
    return StartProcess(wip_id=wip, process=process, operator_id=7, started_at=T0)


def complete(wip: str = "WIP-1", result: Result = Result.PASS) -> CompleteProcess:
    return CompleteProcess(
        wip_id=wip,
        process=2,
        operator_id=7,
        result=result,
        started_at=T0,
        completed_at=T0 + timedelta(minutes=3),
        measurements={"torque": 1.5, "curve": [1, 2, {"x": None}], "cycle_time_ms": 180_000},
        defects=["SCRATCH"],
        notes="노트 ok",
    )


def convert(wip: str = "WIP-1") -> ConvertToSerial:
    return ConvertToSerial(wip_id=wip, operator_id=7, notes="final")


def entry(seq: int, request: MesRequest, **fields: Any) -> Entry:
    data: dict[str, Any] = {
        "seq": seq,
        "request": request,
        "station_id": "s1",
        "batch_id": "B1",
        "enqueued_at": T0,
    }
    data.update(fields)
    return Entry.model_validate(data)


DEAD = {"dead_at": T0, "dead_reason": {"code": "VALIDATION"}}


# -- head and order ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "wip", "head"),
    [
        ([], "WIP-1", None),
        ([entry(1, start())], "WIP-1", 1),
        ([entry(3, convert()), entry(1, start()), entry(2, complete())], "WIP-1", 1),
        ([entry(1, start("WIP-2")), entry(5, start())], "WIP-1", 5),
        ([entry(1, start(), **DEAD), entry(2, complete())], "WIP-1", 2),
        ([entry(1, start(), **DEAD), entry(2, complete(), **DEAD)], "WIP-1", None),
        ([entry(1, start("WIP-2"))], "WIP-1", None),
        ([entry(4, start(), **DEAD), entry(9, convert()), entry(7, complete())], "WIP-1", 7),
    ],
    ids=[
        "empty",
        "only-one",
        "lowest-seq-whatever-the-input-order",
        "other-wip-does-not-count",
        "dead-head-skipped",
        "all-dead",
        "only-other-wips",
        "dead-skipped-then-lowest",
    ],
)
def test_head_is_the_lowest_pending_seq_of_the_wip(
    entries: list[Entry], wip: str, head: int | None
) -> None:
    found = Outbox(entries).head(wip)
    assert (found.seq if found is not None else None) == head


def test_iteration_pending_and_dead_are_in_seq_order() -> None:
    outbox = Outbox(
        [
            entry(3, convert()),
            entry(1, start(), **DEAD),
            entry(2, complete()),
            entry(5, start("WIP-2"), **DEAD),
        ]
    )
    assert [e.seq for e in outbox] == [1, 2, 3, 5]
    assert [e.seq for e in outbox.pending()] == [2, 3]
    assert [e.seq for e in outbox.dead()] == [1, 5]
    assert outbox.get(3) is not None and outbox.get(4) is None


@pytest.mark.parametrize(
    ("entries", "wips"),
    [
        ([], set()),
        ([entry(1, start()), entry(2, complete())], {"WIP-1"}),
        ([entry(1, start()), entry(2, start("WIP-2"))], {"WIP-1", "WIP-2"}),
        ([entry(1, start()), entry(2, start("WIP-2"), **DEAD)], {"WIP-1"}),
        ([entry(1, start(), **DEAD)], set()),
    ],
    ids=["empty", "one-wip", "two-wips", "dead-wip-not-waiting", "only-dead"],
)
def test_waiting_wips(entries: list[Entry], wips: set[str]) -> None:
    assert Outbox(entries).waiting_wips() == wips


OUTBOX_FOR_COUNTS = [
    entry(1, start(), station_id="s1"),
    entry(2, complete(), station_id="s1"),
    entry(3, start("WIP-2"), station_id="s2"),
    entry(4, start("WIP-3"), station_id="s1", **DEAD),
    entry(5, start("WIP-4"), station_id="s3", **DEAD),
]


@pytest.mark.parametrize(
    ("station_id", "count"),
    [(None, 3), ("s1", 2), ("s2", 1), ("s3", 0), ("nowhere", 0)],
    ids=["all", "s1-dead-not-counted", "s2", "only-dead", "unknown"],
)
def test_pending_count(station_id: str | None, count: int) -> None:
    assert Outbox(OUTBOX_FOR_COUNTS).pending_count(station_id) == count


@pytest.mark.parametrize(
    ("entries", "stalled"),
    [
        ([], False),
        ([entry(1, start())], False),
        ([entry(1, start(), last_error={"code": "NETWORK"})], True),
        ([entry(1, start()), entry(2, complete(), last_error={"code": "NETWORK"})], False),
        ([entry(1, start(), last_error={"code": "X"}, **DEAD), entry(2, complete())], False),
        ([entry(1, start(), **DEAD), entry(2, complete(), last_error={"code": "X"})], True),
        ([entry(1, start("WIP-2"), last_error={"code": "X"})], False),
    ],
    ids=[
        "empty",
        "fresh-head",
        "head-failed",
        "later-entry-failed-head-fresh",
        "dead-head-failed-next-fresh",
        "dead-head-next-failed",
        "other-wip-failed",
    ],
)
def test_stalled(entries: list[Entry], stalled: bool) -> None:
    assert Outbox(entries).stalled("WIP-1") is stalled


SAME_BATCH = [
    entry(1, start(), batch_id="B1", batch_uid="U1"),
    entry(2, start("WIP-2"), batch_id="B2", batch_uid="U2"),
    entry(3, complete(), batch_id="B1", batch_uid="U1"),
    entry(4, complete(), batch_id="B1", batch_uid="U1", **DEAD),
    entry(5, convert(), batch_id=None),
    entry(6, complete(), batch_id="B1", batch_uid="U1"),
    # A later batch that reused the id B1 (a rework): not part of the first one.
    entry(7, complete(), batch_id="B1", batch_uid="U7"),
]


@pytest.mark.parametrize(
    ("of", "after"),
    [
        (1, [3, 6]),
        (3, [6]),
        (6, []),
        (2, []),
        (5, []),
    ],
    ids=["start-has-later-of-batch", "middle", "last", "other-batch-alone", "no-batch-id"],
)
def test_same_batch_after(of: int, after: list[int]) -> None:
    outbox = Outbox(SAME_BATCH)
    found = outbox.get(of)
    assert found is not None
    assert [e.seq for e in outbox.same_batch_after(found)] == after


# -- sequence numbers and apply ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "first"),
    [([], 1), ([entry(1, start())], 2), ([entry(7, start()), entry(3, complete(), **DEAD)], 8)],
    ids=["empty-starts-at-1", "after-one", "after-highest-even-dead"],
)
def test_new_seq_continues_after_the_highest(entries: list[Entry], first: int) -> None:
    outbox = Outbox(entries)
    assert [outbox.new_seq(), outbox.new_seq()] == [first, first + 1]


def test_new_entry_takes_the_next_seq() -> None:
    outbox = Outbox([entry(4, start())])
    batch = Batch(
        batch_id="B9",
        uid="U9",
        station_id="s2",
        wip_id="WIP-1",
        process=1,
        operator_id=1,
        started_at=T0,
    )
    made = new_entry(
        outbox, complete(), station_id="s2", batch=batch, now=T0, announced=True, note="n"
    )
    assert made == Entry(
        seq=5,
        request=complete(),
        station_id="s2",
        batch_id="B9",
        batch_uid="U9",
        enqueued_at=T0,
        announced=True,
        note="n",
    )
    assert made.attempts == 0 and not made.in_flight and not made.maybe_applied
    assert outbox.get(5) is None  # made, not yet applied


@pytest.mark.parametrize(
    ("batch_uid", "expected"),
    [("U1", [1]), ("U2", []), ("U7", [7]), ("nope", [])],
    ids=["untried-of-batch", "tried-is-kept", "reused-batch-id-is-another-batch", "unknown"],
)
def test_unattempted_finds_a_batch_by_its_uid(batch_uid: str, expected: list[int]) -> None:
    outbox = Outbox(
        [
            entry(1, start(), batch_id="B1", batch_uid="U1"),
            entry(2, start("WIP-2"), batch_id="B2", batch_uid="U2", attempts=1),
            entry(3, complete(), batch_id="B1", batch_uid="U1", **DEAD),
            entry(7, start("WIP-3"), batch_id="B1", batch_uid="U7"),
        ]
    )
    assert [e.seq for e in outbox.unattempted(batch_uid)] == expected


def test_apply_adds_replaces_and_drops() -> None:
    outbox = Outbox([entry(1, start()), entry(2, complete()), entry(3, convert())])
    retried = entry(2, complete(), attempts=3, last_error={"code": "SERVER"})
    outbox.apply(
        Change(
            entries=[retried, entry(4, start("WIP-2"))],
            dropped_entries=[entry(1, start()), entry(99, start())],
        )
    )
    assert [e.seq for e in outbox] == [2, 3, 4]
    assert outbox.get(2) == retried
    assert outbox.head("WIP-1") == retried
    assert outbox.head("WIP-2") is not None


def test_apply_of_a_dead_letter_keeps_it_out_of_pending() -> None:
    outbox = Outbox([entry(1, start()), entry(2, complete())])
    outbox.apply(Change(entries=[entry(1, start(), **DEAD)]))
    assert [e.seq for e in outbox.pending()] == [2]
    assert [e.seq for e in outbox.dead()] == [1]


# -- Change.writes -------------------------------------------------------------------------------

BATCH = Batch(
    batch_id="B1",
    uid="u1",
    station_id="s1",
    wip_id="WIP-1",
    process=2,
    operator_id=7,
    equipment_id=42,
    started_at=datetime(2026, 11, 26, 18, 0, tzinfo=KST),
    measurements={
        "torque": Measured(value=1.5, unit="Nm"),
        "label": Measured(value="A1"),
        "curve": Measured(value=[1, {"x": None}]),
    },
    defects=["SCRATCH", "DENT"],
)


def test_empty_change_writes_nothing() -> None:
    assert Change().writes() == {}


@pytest.mark.parametrize(
    "change",
    [
        Change(entries=[entry(1, start())]),
        Change(batches=[BATCH]),
        Change(measured=[(BATCH, ["torque"])]),
        Change(dropped_batches=[BATCH]),
        Change(dropped_entries=[entry(1, start())]),
    ],
    ids=["entry", "batch", "measured", "dropped-batch", "dropped-entry"],
)
def test_any_change_writes_something(change: Change) -> None:
    assert change.writes()


B0 = Batch(
    batch_id="B0",
    uid="u0",
    station_id="s1",
    wip_id="WIP-0",
    process=1,
    operator_id=7,
    started_at=datetime(2026, 11, 26, 17, 0, tzinfo=KST),
    measurements={"gap": Measured(value=0.2)},
)


def test_writes_keys_and_json_values() -> None:
    change = Change(
        entries=[entry(12, complete())],
        batches=[BATCH],
        dropped_batches=[B0],
        dropped_entries=[entry(3, start())],
    )
    writes = change.writes()
    assert set(writes) == {
        "outbox/000000000012",
        "batch/u1",
        "measurement/u1/torque",
        "measurement/u1/label",
        "measurement/u1/curve",
        "batch/u0",
        "measurement/u0/gap",
        "outbox/000000000003",
    }
    assert writes["batch/u0"] is None and writes["measurement/u0/gap"] is None
    assert writes["outbox/000000000003"] is None
    stored_entry = writes["outbox/000000000012"]
    stored_batch = writes["batch/u1"]
    stored_torque = writes["measurement/u1/torque"]
    assert stored_entry is not None and stored_batch is not None and stored_torque is not None
    entry_json = json.loads(stored_entry)
    assert entry_json["seq"] == 12
    assert entry_json["request"]["kind"] == "complete"
    assert entry_json["request"]["started_at"] == "2026-11-26T09:00:00Z"
    assert entry_json["enqueued_at"] == "2026-11-26T09:00:00Z"
    assert entry_json["next_attempt_at"] is None
    batch_json = json.loads(stored_batch)
    assert batch_json["started_at"] == "2026-11-26T09:00:00Z"
    assert "measurements" not in batch_json  # each is a row of its own
    assert batch_json["defects"] == ["SCRATCH", "DENT"]
    assert json.loads(stored_torque) == {"value": 1.5, "unit": "Nm"}


def test_new_measurements_write_only_themselves_and_the_header() -> None:
    writes = Change(measured=[(BATCH, ["label"])]).writes()
    assert set(writes) == {"batch/u1", "measurement/u1/label"}


def test_readings_that_leave_the_header_as_it_was_write_only_themselves() -> None:
    # A row fewer per measurement: the header is written when it changes (a new defect), not
    # again with every reading.
    writes = Change(readings=[(BATCH, ["label"])]).writes()
    assert set(writes) == {"measurement/u1/label"}
    assert Change(readings=[(BATCH, ["label"])]).updated_batches() == [BATCH]


def test_a_measurement_name_may_hold_slashes() -> None:
    batch = B0.model_copy(update={"measurements": {"step/3/torque": Measured(value=1.0)}})
    rows = {k: v for k, v in Change(batches=[batch]).writes().items() if v is not None}
    assert "measurement/u0/step/3/torque" in rows
    batches, _ = load_state(rows)
    assert batches["u0"] == batch


@pytest.mark.parametrize(
    ("seq", "key"),
    [(1, "outbox/000000000001"), (123_456_789_012, "outbox/123456789012")],
    ids=["small", "twelve-digits"],
)
def test_entry_keys_sort_by_seq(seq: int, key: str) -> None:
    assert entry(seq, start()).key() == key


def test_batches_are_kept_by_uid_not_by_their_stations_batch_id() -> None:
    assert batch_key("0f3a9c") == "batch/0f3a9c"
    other = BATCH.model_copy(update={"uid": "u9", "station_id": "s2"})  # the same batch_id
    writes = Change(batches=[BATCH, other]).writes()
    assert writes["batch/u1"] is not None and writes["batch/u9"] is not None
    assert writes["measurement/u1/torque"] is not None
    assert writes["measurement/u9/torque"] is not None
    batches, _ = load_state({k: v for k, v in writes.items() if v is not None})
    assert batches == {"u1": BATCH, "u9": other}


def test_a_batch_written_and_dropped_in_one_change_is_written() -> None:
    writes = Change(batches=[BATCH], dropped_batches=[BATCH]).writes()
    assert writes["batch/u1"] is not None and writes["measurement/u1/torque"] is not None


# -- load_state ----------------------------------------------------------------------------------

ENTRIES = [
    entry(1, start(), station_id="s1", batch_id="B1"),
    entry(
        2,
        complete(),
        attempts=4,
        in_flight=True,
        maybe_applied=True,
        next_attempt_at=datetime(2026, 11, 26, 18, 10, tzinfo=KST),
        last_error={"code": "TIMEOUT", "status": None, "retryable": True},
        announced=True,
    ),
    entry(3, complete("WIP-2", Result.FAIL), batch_id="B2"),
    entry(4, convert(), batch_id=None, **DEAD),
    entry(
        5,
        StartProcess(wip_id="WIP-3", process=1, operator_id=1, started_at=T0, equipment_id=9),
        station_id="s2",
    ),
]
BATCHES = [
    BATCH,
    Batch(
        batch_id="B2",
        uid="u2",
        station_id="s2",
        wip_id="WIP-2",
        process=1,
        operator_id=3,
        started_at=T0,
    ),
]


def test_load_state_reloads_what_writes_stored_unchanged() -> None:
    rows = Change(entries=ENTRIES, batches=BATCHES).writes()
    stored = {key: value for key, value in rows.items() if value is not None}
    batches, outbox = load_state(stored)
    assert batches == {"u1": BATCHES[0], "u2": BATCHES[1]}
    assert list(outbox) == ENTRIES
    assert [type(e.request) for e in outbox] == [
        StartProcess,
        CompleteProcess,
        CompleteProcess,
        ConvertToSerial,
        StartProcess,
    ]
    reloaded = outbox.get(2)
    assert reloaded is not None and reloaded.request == complete()
    # stored again, the JSON is byte for byte what it was
    again = Change(entries=list(outbox), batches=list(batches.values())).writes()
    assert again == rows


def test_load_state_continues_seq_and_order() -> None:
    rows = Change(entries=ENTRIES).writes()
    _, outbox = load_state({k: v for k, v in rows.items() if v is not None})
    assert outbox.new_seq() == 6
    assert outbox.head("WIP-1") is not None and outbox.head("WIP-1") == ENTRIES[0]
    assert [e.seq for e in outbox.dead()] == [4]


def test_a_number_is_never_given_twice_across_restarts() -> None:
    # Every entry up to #9 was delivered (removed) before the restart: #10 is next, not #1.
    _, outbox = load_state({NEXT_SEQ_KEY: "10"})
    assert outbox.new_seq() == 10 and outbox.next_seq == 11
    _, outbox = load_state({**stored(ENTRIES), NEXT_SEQ_KEY: "2"})  # entries win over the counter
    assert outbox.new_seq() == 6


def stored(entries: list[Entry]) -> dict[str, str]:
    return {k: v for k, v in Change(entries=entries).writes().items() if v is not None}


def test_load_state_ignores_other_keys_and_empty() -> None:
    batches, outbox = load_state({"meta/version": "1", "other": "{}"})
    assert batches == {} and list(outbox) == []


@pytest.mark.parametrize("request_", [start(), complete(), convert()], ids=lambda r: r.kind)
def test_an_entry_kept_compressed_reads_back_equal_and_small(request_: MesRequest) -> None:
    made = entry(
        12,
        request_,
        batch_uid="u-12",
        attempts=3,
        next_attempt_at=T0,
        last_error={"code": "NETWORK", "message": "connection refused"},
    )
    outbox = Outbox([made])
    outbox._parsed.clear()  # read it back from what is kept, not from the parsed copy
    assert outbox.get(12) == made
    # Against the sample entries, most of the JSON is what they share.
    assert len(outbox._texts[12]) < len(made.model_dump_json()) / 2


def test_entry_properties() -> None:
    made = entry(7, complete("WIP-9"))
    assert made.wip_id == "WIP-9"
    assert made.action == "complete"
    assert not made.dead and entry(7, convert(), **DEAD).dead
    assert made.describe() == "#7 complete process 2 WIP-9"
    assert entry(8, convert("WIP-9")).describe() == "#8 convert WIP-9"


def naive(entries: list[Entry]) -> dict[str, Any]:
    """What the indexes must answer, by scanning everything."""
    pending = sorted((e for e in entries if not e.dead), key=lambda e: e.seq)
    return {
        "heads": {
            w: next(e for e in pending if e.wip_id == w) for w in {e.wip_id for e in pending}
        },
        "lanes": {w: [e for e in pending if e.wip_id == w] for w in {e.wip_id for e in pending}},
        "pending": {s: sum(e.station_id == s for e in pending) for s in ("s1", "s2", "s3")},
        "dead": {s: sum(e.dead and e.station_id == s for e in entries) for s in ("s1", "s2", "s3")},
        "batches": {b: [e for e in pending if e.batch_uid == b] for b in ("u1", "u2", "u3")},
        "stations": {e.station_id for e in entries},
        "under_way": {
            w: next(e for e in pending if e.wip_id == w).in_flight
            for w in {e.wip_id for e in pending}
        },
        "oldest": (pending[:2], sorted((e for e in entries if e.dead), key=lambda e: e.seq)[:2]),
    }


def indexed(outbox: Outbox) -> dict[str, Any]:
    wips = outbox.waiting_wips()
    return {
        "heads": {w: outbox.head(w) for w in wips},
        "lanes": {w: outbox.lane(w) for w in wips},
        "pending": {s: outbox.pending_count(s) for s in ("s1", "s2", "s3")},
        "dead": {s: outbox.dead_count(s) for s in ("s1", "s2", "s3")},
        "batches": {b: outbox.unattempted(b) for b in ("u1", "u2", "u3")},
        "stations": outbox.stations(),
        "under_way": {w: w in outbox.under_way() for w in wips},
        "oldest": (outbox.pending(2), outbox.dead(2)),
    }


@pytest.mark.parametrize("seed", range(20))
def test_the_indexes_agree_with_a_scan_after_any_changes(seed: int) -> None:
    # Random adds, replacements (dead or alive, other station or batch), drops and undos, in and
    # out of seq order; after each, every indexed answer equals a scan of all entries.
    rng = random.Random(seed)
    outbox, model = Outbox(), {}
    for _ in range(300):
        seq = rng.randint(1, 40)
        if rng.random() < 0.3:
            outbox.put(seq, None)
            model.pop(seq, None)
            continue
        made = entry(
            seq,
            start(rng.choice(["W1", "W2", "W3", "W4"])),
            station_id=rng.choice(["s1", "s2", "s3"]),
            batch_uid=rng.choice(["u1", "u2", "u3", None]),
            in_flight=rng.random() < 0.3,
            **(DEAD if rng.random() < 0.2 else {}),
        )
        if rng.random() < 0.5:
            outbox.apply(Change(entries=[made]))
        else:
            outbox.put(seq, made)
        model[seq] = made
        assert indexed(outbox) == naive(list(model.values()))
        assert outbox.pending_count() == sum(not e.dead for e in model.values())
        assert outbox.dead_count() == sum(e.dead for e in model.values())
