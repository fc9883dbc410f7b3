"""bridge.core.batches: opening, selecting, filling and closing batches (no clock: `now` is
given)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import BatchesConfig, Limit, StationConfig
from bridge.core.batches import (
    Batch,
    Gathered,
    _item_bytes,
    close_batch,
    is_redelivery,
    open_batch,
    record,
    request_bytes,
    select_batch,
    station_time,
    too_large_to_send,
    within_bounds,
)
from bridge.core.domain import Result
from bridge.core.limits import Measured
from bridge.core.payloads import BatchComplete, BatchStart
from bridge.core.problems import Problem, ProblemCode
from bridge.mes.models import CompleteProcess

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 9, 5, tzinfo=UTC)
KST = timezone(timedelta(hours=9))

STATION = StationConfig(
    id="s1",
    equipment_id=42,
    processes=[2, 3],
    limits={
        2: {"torque": Limit(min=1.0, max=2.0, unit="Nm", defect="TORQUE_OUT")},
        3: {"gap": Limit(max=0.5, defect="GAP_WIDE", missing_defect="NO_GAP")},
    },
)
ANY_PROCESS = StationConfig(id="s2")


def measured(values: dict[str, Any], unit: str | None = None) -> dict[str, Measured]:
    """Values as one message gathers them: every one with the message's unit."""
    return {name: Measured(value=value, unit=unit) for name, value in values.items()}


def start(**fields: Any) -> BatchStart:
    data: dict[str, Any] = {"wip_id": "WIP-1", "process_id": 2, "operator_id": 7}
    data.update(fields)
    return BatchStart.model_validate(data)


def batch(**fields: Any) -> Batch:
    data: dict[str, Any] = {
        "batch_id": "B1",
        "uid": "U1",
        "station_id": "s1",
        "wip_id": "WIP-1",
        "process": 2,
        "operator_id": 7,
        "started_at": T0,
    }
    data.update(fields)
    return Batch.model_validate(data)


# -- open_batch ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("station", "payload", "expected"),
    [
        (
            STATION,
            start(),
            {"process": 2, "equipment_id": 42, "started_at": NOW, "station_id": "s1"},
        ),
        (STATION, start(process_id=3, equipment_id=9), {"process": 3, "equipment_id": 9}),
        (ANY_PROCESS, start(process_id=6), {"process": 6, "equipment_id": None}),
        (ANY_PROCESS, start(equipment_id=5), {"equipment_id": 5, "station_id": "s2"}),
        (
            STATION,
            start(started_at="2026-11-26T08:59:00Z"),
            {"started_at": T0 - timedelta(minutes=1)},
        ),
        (
            STATION,
            start(started_at="2026-11-26T18:00:00+09:00"),
            {"started_at": datetime(2026, 11, 26, 18, 0, tzinfo=KST)},
        ),
    ],
    ids=[
        "station-default-equipment-and-now",
        "payload-equipment-wins",
        "station-without-process-list-runs-any",
        "no-station-default-uses-payload",
        "started-at-given",
        "started-at-given-with-offset",
    ],
)
def test_open_batch(station: StationConfig, payload: BatchStart, expected: dict[str, Any]) -> None:
    opened = open_batch([], station, payload, batch_id="B9", uid="U9", now=NOW)
    assert isinstance(opened, Batch), opened
    assert opened.batch_id == "B9"
    assert opened.wip_id == "WIP-1" and opened.operator_id == 7
    assert opened.measurements == {} and opened.defects == []
    for name, value in expected.items():
        assert getattr(opened, name) == value, name


@pytest.mark.parametrize(
    ("active", "payload", "batch_id", "code", "detail"),
    [
        ([], start(process_id=1), "B9", ProblemCode.PROCESS_NOT_AT_STATION, "not 1"),
        ([], start(process_id=4), "B9", ProblemCode.PROCESS_NOT_AT_STATION, "[2, 3]"),
        ([batch(batch_id="B9", wip_id="WIP-2")], start(), "B9", ProblemCode.DUPLICATE_BATCH, "B9"),
        ([batch(batch_id="B1")], start(), "B9", ProblemCode.WIP_BUSY, "batch B1"),
        (
            [batch(batch_id="B1", station_id="s7", process=5)],
            start(),
            "B9",
            ProblemCode.WIP_BUSY,
            "a batch of another station",
        ),
        (
            [batch(batch_id="B1", wip_id="WIP-0"), batch(batch_id="B2", station_id="s2")],
            start(),
            "B9",
            ProblemCode.WIP_BUSY,
            "a batch of another station",
        ),
    ],
    ids=[
        "process-not-at-station",
        "process-not-at-station-names-list",
        "duplicate-batch-id",
        "wip-busy-here",
        "wip-busy-at-other-station",
        "wip-busy-among-several",
    ],
)
def test_open_batch_refused(
    active: list[Batch], payload: BatchStart, batch_id: str, code: ProblemCode, detail: str
) -> None:
    problem = open_batch(active, STATION, payload, batch_id=batch_id, uid="U9", now=NOW)
    assert isinstance(problem, Problem), problem
    assert problem.code is code
    assert detail in problem.detail


def test_a_refusal_names_nothing_of_another_station() -> None:
    other = batch(batch_id="B-SECRET", station_id="s7", process=5)
    problem = open_batch([other], STATION, start(), batch_id="B9", uid="U9", now=NOW)
    assert isinstance(problem, Problem) and problem.code is ProblemCode.WIP_BUSY, problem
    assert "B-SECRET" not in problem.detail and "s7" not in problem.detail
    assert "process 5" not in problem.detail


@pytest.mark.parametrize(
    "others",
    [
        [batch(batch_id="B-SHARED", wip_id="WIP-2", station_id="s7")],
        [
            batch(batch_id="B-SHARED", wip_id="WIP-2", station_id="s7", uid="U2"),
            batch(batch_id="B-SHARED", wip_id="WIP-3", station_id="s8", uid="U3"),
        ],
    ],
    ids=["one-other-station", "two-other-stations"],
)
def test_a_batch_id_another_station_uses_is_this_stations_to_use(others: list[Batch]) -> None:
    # Refused, it would tell the station that the id is in use somewhere else.
    opened = open_batch(others, STATION, start(), batch_id="B-SHARED", uid="U9", now=NOW)
    assert isinstance(opened, Batch), opened
    assert (opened.batch_id, opened.uid, opened.station_id) == ("B-SHARED", "U9", "s1")


def test_open_batch_beside_other_wips() -> None:
    active = [batch(batch_id="B1", wip_id="WIP-A"), batch(batch_id="B2", wip_id="WIP-B")]
    opened = open_batch(active, STATION, start(), batch_id="B3", uid="U3", now=NOW)
    assert isinstance(opened, Batch) and opened.batch_id == "B3"


# -- select_batch --------------------------------------------------------------------------------

B1 = batch(batch_id="B1", wip_id="WIP-1")
B2 = batch(batch_id="B2", wip_id="WIP-2")
ELSEWHERE = batch(batch_id="B3", wip_id="WIP-3", station_id="s2")


@pytest.mark.parametrize(
    ("active", "batch_id", "expected"),
    [
        ([B1], None, B1),
        ([B1, ELSEWHERE], None, B1),
        ([B1, B2], "B2", B2),
        ([B1, B2, ELSEWHERE], "B1", B1),
        ([B1], "B1", B1),
    ],
    ids=[
        "only-one",
        "only-one-here-another-elsewhere",
        "named-among-several",
        "named-with-another-station-busy",
        "named-only-one",
    ],
)
def test_select_batch(active: list[Batch], batch_id: str | None, expected: Batch) -> None:
    assert select_batch(active, "s1", batch_id) == expected


@pytest.mark.parametrize(
    ("active", "batch_id", "code", "detail"),
    [
        ([B1], "B9", ProblemCode.UNKNOWN_BATCH, "no batch B9 is running on station s1"),
        ([B1, ELSEWHERE], "B3", ProblemCode.UNKNOWN_BATCH, "B3"),
        ([], "B1", ProblemCode.UNKNOWN_BATCH, "B1"),
        ([], None, ProblemCode.NO_ACTIVE_BATCH, "s1"),
        ([ELSEWHERE], None, ProblemCode.NO_ACTIVE_BATCH, "s1"),
        ([B1, B2], None, ProblemCode.SEVERAL_ACTIVE_BATCHES, "B1, B2"),
        ([B1, ELSEWHERE, B2], None, ProblemCode.SEVERAL_ACTIVE_BATCHES, "B1, B2"),
    ],
    ids=[
        "unknown",
        "named-batch-at-another-station",
        "named-none-active",
        "none",
        "none-here-one-elsewhere",
        "several",
        "several-others-not-listed",
    ],
)
def test_select_batch_refused(
    active: list[Batch], batch_id: str | None, code: ProblemCode, detail: str
) -> None:
    problem = select_batch(active, "s1", batch_id)
    assert isinstance(problem, Problem), problem
    assert problem.code is code
    assert detail in problem.detail
    if code is ProblemCode.SEVERAL_ACTIVE_BATCHES:
        assert "B3" not in problem.detail


# -- record --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "measurements", "defects"),
    [
        ([({"torque": 1.5}, "Nm", [])], {"torque": Measured(value=1.5, unit="Nm")}, []),
        (
            [({"torque": 1.5}, "Nm", []), ({"torque": 1.7}, None, [])],
            {"torque": Measured(value=1.7, unit=None)},
            [],
        ),
        (
            [({"a": 1, "b": 2}, None, []), ({"b": 3, "c": 4}, None, [])],
            {"a": Measured(value=1), "b": Measured(value=3), "c": Measured(value=4)},
            [],
        ),
        ([({}, None, ["X"]), ({}, None, ["Y", "X"])], {}, ["X", "Y"]),
        ([({}, None, ["Y", "Y", "X"])], {}, ["Y", "X"]),
        (
            [({"torque": 1.5}, "Nm", ["LOW"]), ({"torque": 0.2}, "Nm", ["LOW", "SCRATCH"])],
            {"torque": Measured(value=0.2, unit="Nm")},
            ["LOW", "SCRATCH"],
        ),
    ],
    ids=[
        "one-value-with-unit",
        "repeated-name-keeps-latest-value-and-unit",
        "dict-form-merges",
        "defects-deduplicated-across-messages",
        "defects-deduplicated-within-message",
        "values-and-defects",
    ],
)
def test_record(
    steps: list[tuple[dict[str, Any], str | None, list[str]]],
    measurements: dict[str, Measured],
    defects: list[str],
) -> None:
    current = batch()
    for values, unit, new_defects in steps:
        current = record(current, measured(values, unit), defects=new_defects)
    assert current.measurements == measurements
    assert current.defects == defects


def test_record_leaves_the_original_batch_unchanged() -> None:
    original = batch()
    updated = record(original, measured({"torque": 1.5}, "Nm"), defects=["X"])
    assert original.measurements == {} and original.defects == []
    assert updated.batch_id == original.batch_id and updated.started_at == original.started_at


@pytest.mark.parametrize(
    ("messages", "defects"),
    [
        ([{"a": 1}, {"b": 2}, {"c": 3}], [[], [], []]),
        ([{"a": 1}, {"a": 2.5}, {"b": "x"}], [["D1"], [], ["D2", "D1"]]),
        ([{f"m{i}": i} for i in range(40)] + [{"m3": "again"}], [[]] * 41),
    ],
    ids=["new-names", "repeated-name-and-defects", "past-several-merges"],
)
def test_record_of_a_group_equals_the_record_of_each_in_turn(
    messages: list[dict[str, Any]], defects: list[list[str]]
) -> None:
    one_by_one = batch()
    for values, codes in zip(messages, defects, strict=True):
        one_by_one = record(one_by_one, measured(values), defects=codes)
    merged = {name: value for values in messages for name, value in values.items()}
    at_once = record(batch(), measured(merged), defects=[c for codes in defects for c in codes])
    assert at_once == one_by_one
    assert list(at_once.measurements) == list(one_by_one.measurements)  # the same order too
    assert at_once.gathered_bytes() == one_by_one.gathered_bytes()


def test_the_sizes_kept_by_record_equal_a_fresh_count_after_many_messages() -> None:
    running = batch()
    for i in range(300):  # past several merges of the measurements, names sent again
        values = {f"m{i % 70}": i / 7, f"s{i % 11}": "한" * (i % 5)}
        running = record(running, measured(values), defects=[f"D{i % 4}"] if i % 9 == 0 else [])
        if i % 37 == 0:
            assert within_bounds(running, STATION, bounds=BatchesConfig()) is None
    fresh = Batch.model_validate_json(running.model_dump_json())  # as loaded from the store
    assert fresh == running and len(fresh.measurements) == len(running.measurements) == 81
    assert running.gathered_bytes() == fresh.gathered_bytes()
    assert counted(running) == counted(fresh)


def test_the_batches_a_batch_was_recorded_from_keep_their_measurements() -> None:
    # Versions share what they hold: each must still read as it was made, also once later ones
    # merged their measurements (what a failed transaction puts back is such an older version).
    versions = [batch()]
    for i in range(60):
        versions.append(record(versions[-1], measured({f"m{i % 25}": i})))
    for i, version in enumerate(versions):
        expected: dict[str, Measured] = {}
        for j in range(i):
            expected[f"m{j % 25}"] = Measured(value=j)
        assert dict(version.measurements) == expected
        assert list(version.measurements) == list(expected) and len(version.measurements) == len(
            expected
        )


@given(
    st.lists(
        st.dictionaries(st.sampled_from("abcdefghijklmnopqrstuvwxyz"), st.integers(), max_size=4),
        max_size=80,
    )
)
def test_gathered_reads_as_the_dicts_it_stands_for(steps: list[dict[str, int]]) -> None:
    # What `{**old, **new}` made every time: the same names, order, values and size, for every
    # version made along the way, read after all of them were made.
    dicts: list[dict[str, Measured]] = [{}]
    versions = [Gathered.of({})]
    for step in steps:
        values = {name: Measured(value=value) for name, value in step.items()}
        dicts.append({**dicts[-1], **values})
        versions.append(versions[-1].with_values(values))
    for plain, version in zip(dicts, versions, strict=True):
        assert version == plain and plain == version
        assert list(version) == list(plain) and list(version.items()) == list(plain.items())
        assert len(version) == len(plain)
        for name in "abz":
            assert (name in version) is (name in plain)
            assert version.get(name) == plain.get(name)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -17,
        10**30,
        True,
        None,
        1.5,
        -0.0,
        1e16,
        -1e-7,
        float("nan"),
        float("inf"),
        "m1",
        "tab\there \u2028 한",
        'quote " and \\',
        [1, "a", {"b": None}],
        {"k": [1.25, False]},
    ],
)
def test_an_item_is_counted_as_json_writes_it(value: Any) -> None:
    compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert _item_bytes(value) == len(compact.encode()) + 1


# -- close_batch ---------------------------------------------------------------------------------


def complete(**fields: Any) -> BatchComplete:
    return BatchComplete.model_validate(fields)


@pytest.mark.parametrize(
    ("stated", "received", "used", "noted"),
    [
        (None, NOW, NOW, None),
        (T0, NOW, T0, None),
        (NOW - timedelta(hours=3), NOW, NOW - timedelta(hours=3), None),
        (NOW + timedelta(seconds=30), NOW, NOW + timedelta(seconds=30), None),
        (NOW + timedelta(seconds=31), NOW, NOW, "ahead by 31 s"),
        (NOW + timedelta(minutes=2), NOW, NOW, "the station said 2026-11-26T09:07:00Z"),
        (datetime(2026, 11, 26, 18, 7, tzinfo=KST), NOW, NOW, "ahead by 120 s"),
    ],
    ids=[
        "not-given",
        "in-the-past",
        "hours-late-at-the-broker",
        "ahead-within-tolerance",
        "ahead-beyond-tolerance",
        "two-minutes-fast",
        "fast-with-offset",
    ],
)
def test_station_time(
    stated: datetime | None, received: datetime, used: datetime, noted: str | None
) -> None:
    at, note = station_time(stated, received, max_skew_s=30, name="started_at")
    assert at == used
    if noted is None:
        assert note is None
    else:
        assert note is not None and noted in note and "started_at" in note


def test_a_fast_tablet_clock_starts_at_the_bridges_time() -> None:
    opened = open_batch(
        [], STATION, start(started_at=NOW + timedelta(minutes=2)), batch_id="B", uid="U", now=NOW
    )
    assert isinstance(opened, Batch)
    assert opened.started_at == NOW
    assert opened.clock_note is not None and "ahead by 120 s" in opened.clock_note


@pytest.mark.parametrize(
    ("completed_at", "started_at", "recorded_at"),
    [
        (T0 - timedelta(microseconds=1), T0, NOW),
        (datetime(2026, 11, 26, 17, 59, tzinfo=KST), T0, NOW),
        (None, NOW + timedelta(seconds=1), NOW + timedelta(seconds=1)),
    ],
    ids=["given-a-moment-early", "given-with-offset-early", "now-before-start-in-future"],
)
def test_a_complete_dated_before_its_start_is_recorded_and_noted(
    completed_at: datetime | None, started_at: datetime, recorded_at: datetime
) -> None:
    closing = close_batch(
        batch(started_at=started_at), BatchComplete(completed_at=completed_at), STATION, now=NOW
    )
    assert not isinstance(closing, Problem)
    closed, note = closing
    assert closed.completed_at == recorded_at >= closed.started_at
    assert note is not None and "before the batch started" in note
    assert note in closed.notes


def test_a_batch_started_by_a_fast_clock_says_so_in_its_complete() -> None:
    skewed = batch(started_at=NOW, clock_note="station clock ahead by 120 s")
    closed, note = close_batch(skewed, complete(notes="ok"), STATION, now=NOW)
    assert note is None
    assert closed.notes == "ok [station clock ahead by 120 s]"


@pytest.mark.parametrize(
    ("process", "values", "unit", "payload", "result", "defects"),
    [
        (2, {"torque": 1.5}, "Nm", {}, Result.PASS, []),
        (2, {"torque": 2.5}, "Nm", {}, Result.FAIL, ["TORQUE_OUT"]),
        (2, {"torque": 1.5}, "kgf", {}, Result.FAIL, ["TORQUE_OUT"]),
        (2, {}, None, {}, Result.FAIL, ["MISSING_TORQUE"]),
        (2, {"gap": 9.0}, None, {"result": "PASS"}, Result.PASS, []),
        (3, {"torque": 99}, "Nm", {}, Result.FAIL, ["NO_GAP"]),
        (3, {"gap": 0.5}, None, {}, Result.PASS, []),
        (3, {"gap": 0.6}, None, {"defects": ["DENT"]}, Result.FAIL, ["DENT", "GAP_WIDE"]),
        (7, {"anything": "x"}, None, {}, Result.PASS, []),
        (7, {}, None, {"defects": ["X", "X"]}, Result.FAIL, ["X"]),
        (7, {}, None, {"result": "FAIL"}, Result.FAIL, []),
        (7, {}, None, {"result": "REWORK"}, Result.REWORK, []),
    ],
    ids=[
        "p2-within",
        "p2-above-max",
        "p2-wrong-unit",
        "p2-missing",
        "p2-stated-pass-wins",
        "p3-limits-not-p2s",
        "p3-exact-max",
        "p3-complete-defect-first",
        "process-without-limits-passes",
        "process-without-limits-defect-fails",
        "stated-fail",
        "stated-rework",
    ],
)
def test_close_batch_verdict_from_that_processs_limits(
    process: int,
    values: dict[str, Any],
    unit: str | None,
    payload: dict[str, Any],
    result: Result,
    defects: list[str],
) -> None:
    gathered = record(batch(process=process), measured(values, unit))
    closed, _ = close_batch(gathered, complete(**payload), STATION, now=NOW)
    assert closed.result is result
    assert closed.defects == defects


def test_close_batch_fills_every_field_of_the_complete() -> None:
    gathered = record(batch(), measured({"torque": 1.5}, "Nm"), defects=["SCRATCH"])
    gathered = record(gathered, measured({"label": "A1"}), defects=["SCRATCH", "DENT"])
    completed_at = T0 + timedelta(minutes=2, seconds=3, milliseconds=456)
    closed, note = close_batch(
        gathered,
        complete(defects=["DENT", "BURR"], notes="line stop", completed_at=completed_at),
        STATION,
        now=NOW,
    )
    assert note is None
    assert closed == CompleteProcess(
        wip_id="WIP-1",
        process=2,
        operator_id=7,
        result=Result.FAIL,
        started_at=T0,
        completed_at=completed_at,
        measurements={"torque": 1.5, "label": "A1", "cycle_time_ms": 123_456},
        defects=["SCRATCH", "DENT", "BURR"],
        notes="line stop",
    )


@pytest.mark.parametrize(
    ("completed_at", "now", "expected_at", "cycle_time_ms"),
    [
        (None, NOW, NOW, 300_000),
        (None, T0, T0, 0),
        (T0 + timedelta(seconds=1), NOW, T0 + timedelta(seconds=1), 1_000),
        (T0 + timedelta(microseconds=1499), NOW, T0 + timedelta(microseconds=1499), 1),
        (datetime(2026, 11, 26, 18, 0, 30, tzinfo=KST), NOW, T0 + timedelta(seconds=30), 30_000),
    ],
    ids=["now", "now-equals-start", "given", "rounded-ms", "given-with-offset"],
)
def test_close_batch_completed_at_and_cycle_time(
    completed_at: datetime | None, now: datetime, expected_at: datetime, cycle_time_ms: int
) -> None:
    closed, _ = close_batch(batch(), BatchComplete(completed_at=completed_at), ANY_PROCESS, now=now)
    assert closed.completed_at == expected_at
    assert closed.started_at == T0
    assert closed.measurements["cycle_time_ms"] == cycle_time_ms


def test_batch_summary() -> None:
    gathered = record(
        batch(started_at=datetime(2026, 11, 26, 18, 0, tzinfo=KST)), measured({"a": 1, "b": 2})
    )
    assert gathered.summary() == {
        "batch_id": "B1",
        "wip_id": "WIP-1",
        "process_id": 2,
        "started_at": "2026-11-26T09:00:00Z",
        "measurements": 2,
    }


# -- bounds: a batch's 완공 stays a request the MES can take in -----------------------------------

BOUNDS = BatchesConfig(max_measurements=3, max_request_bytes=2048)


@pytest.mark.parametrize(
    ("measurements", "defects", "code"),
    [
        ({"a": 1, "b": 2, "c": 3}, [], None),
        ({"a": 1, "b": 2, "c": 3, "d": 4}, [], ProblemCode.TOO_MANY_MEASUREMENTS),
        ({"a": "x" * 1500}, [], None),
        ({"a": "x" * 2000}, [], ProblemCode.REQUEST_TOO_LARGE),
        ({"a": 1}, [f"D{n:03}" for n in range(300)], ProblemCode.REQUEST_TOO_LARGE),
        ({"a": "한" * 550}, [], None),  # 1,650 bytes of UTF-8 (Korean stays unescaped)
        ({"a": "한" * 700}, [], ProblemCode.REQUEST_TOO_LARGE),  # 2,100 bytes
    ],
    ids=[
        "at-the-count",
        "one-name-over-the-count",
        "under-the-size",
        "over-the-size",
        "defects-over-the-size",
        "utf8-under",
        "utf8-over",
    ],
)
def test_within_bounds(
    measurements: dict[str, Any], defects: list[str], code: ProblemCode | None
) -> None:
    updated = record(batch(), measured(measurements), defects=defects)
    problem = within_bounds(updated, STATION, bounds=BOUNDS)
    assert (problem.code if problem else None) is code
    if problem is not None:
        assert "at most" in problem.detail


def counted(running: Batch) -> int:
    """The size within_bounds counts for a batch: the smallest bound it passes."""
    problem = within_bounds(running, STATION, bounds=BatchesConfig(max_request_bytes=1024))
    if problem is None:
        return 0
    return int(problem.detail.split(" bytes")[0].rsplit(" ", 1)[1])


GATHERED = [
    ({"a": "x" * 1000}, []),
    ({"torque": 1e16, "gap": -1e-7, "n": 10**30, "s": "tab\there \u2028 한"}, ["SCRATCH"]),
    ({f"m{i}": i / 3 for i in range(100)}, ["D1", "D2", "D1"]),
]


@pytest.mark.parametrize(("values", "defects"), GATHERED, ids=["long", "odd-values", "many"])
@pytest.mark.parametrize("process", [2, 3])
def test_within_bounds_never_counts_less_than_the_draft(
    values: dict[str, Any], defects: list[str], process: int
) -> None:
    running = record(batch(process=process), measured(values), defects=defects)
    running = record(running, measured({"a": "y" * 1200}))
    closed = close_batch(running, BatchComplete(), STATION, now=NOW + timedelta(days=300))
    assert not isinstance(closed, Problem)
    draft, _ = closed
    size = counted(running)
    # at least the draft (so a complete without notes never crosses the bound after a measure
    # passed), at most the room kept for the result, the cycle time and the limits' defects
    assert request_bytes(draft) <= size <= request_bytes(draft) + 80


@pytest.mark.parametrize(("values", "defects"), GATHERED, ids=["long", "odd-values", "many"])
def test_gathered_bytes_kept_by_record_equal_a_fresh_count(
    values: dict[str, Any], defects: list[str]
) -> None:
    running = batch()
    for name, value in values.items():  # one message per value, some names again
        running = record(running, measured({name: value, "again": name}), defects=defects)
    fresh = Batch.model_validate(running.model_dump())  # as loaded from the store
    assert running.gathered_bytes() == fresh.gathered_bytes()


def test_a_complete_that_would_cross_the_size_is_refused() -> None:
    running = record(batch(), measured({"a": "x" * 1500}))
    assert within_bounds(running, STATION, bounds=BOUNDS) is None
    notes = BatchComplete(notes="n" * 1000)
    problem = close_batch(running, notes, STATION, now=NOW, bounds=BOUNDS)
    assert isinstance(problem, Problem) and problem.code is ProblemCode.REQUEST_TOO_LARGE
    # the same batch completes with shorter notes
    assert isinstance(close_batch(running, BatchComplete(), STATION, now=NOW, bounds=BOUNDS), tuple)


# -- is_redelivery ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("station_id", "payload", "again"),
    [
        ("s1", start(batch_id="B1"), True),
        ("s2", start(batch_id="B1"), False),  # another station's batch id: not its redelivery
        ("s1", start(batch_id="B1", wip_id="WIP-2"), False),
        ("s1", start(batch_id="B1", process_id=3), False),
        ("s1", start(), False),
        ("s1", start(batch_id="B2"), False),
    ],
    ids=["same", "other-station", "other-wip", "other-process", "no-batch-id", "other-batch-id"],
)
def test_is_redelivery(station_id: str, payload: BatchStart, again: bool) -> None:
    assert is_redelivery([batch()], station_id, payload) is again


def test_a_batch_equals_its_copy_from_disk_whatever_it_has_counted() -> None:
    running = record(batch(), measured({"a": 1}), defects=["D"])
    assert within_bounds(running, STATION, bounds=BOUNDS) is None  # sizes now cached
    loaded = Batch.model_validate(running.model_dump())
    assert loaded == running and running == loaded
    assert record(loaded, measured({"b": 2})) != running


# -- too_large_to_send -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "refused"),
    [({"a": 1}, False), ({"a": "x" * 1500}, False), ({"a": "x" * 2100}, True)],
    ids=["small", "under-the-bound", "over-the-bound"],
)
def test_too_large_to_send(values: dict[str, Any], refused: bool) -> None:
    # A 완공 queued before the bound existed: nothing bounded it when it was made.
    request = CompleteProcess(
        wip_id="WIP-1",
        process=2,
        operator_id=7,
        result=Result.PASS,
        started_at=T0,
        completed_at=NOW,
        measurements=values,
    )
    problem = too_large_to_send(request, bounds=BOUNDS)
    if not refused:
        assert problem is None
        return
    assert isinstance(problem, Problem) and problem.code is ProblemCode.TOO_LARGE_TO_SEND
    assert problem.detail == (
        f"the request is {request_bytes(request)} bytes; batches.max_request_bytes is 2048"
    )
