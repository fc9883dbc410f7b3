"""The pure MES model, with tables: BR-003/004/005, status transitions, times, serials."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from mes_sim.model import (
    CompleteCommand,
    ConvertCommand,
    MesError,
    MesState,
    Result,
    Semantics,
    StartCommand,
    WipStatus,
    seed,
)

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
OP = 2
PK = 101  # WIP-…-001
WIP = "WIP-KR01PSA261102-001"
RUN_ALL = [step for n in range(1, 7) for step in (f"S{n}", f"P{n}")]

# What a client must find in each deployed message to recover the spec's code (contract §4).
FRAGMENT = {
    "PREREQUISITE_NOT_MET": "must be completed with PASS result.",
    "INVALID_WIP_STATUS": "status",
    "ALREADY_CONVERTED": "converted to serial",
    "DUPLICATE_PASS": "Duplicate PASS results are not allowed (BR-004).",
    "INCOMPLETE_PROCESSES": "Missing PASS results for MANUFACTURING processes",
}


def fresh(semantics: Semantics = "deployed", offset: int = 0) -> MesState:
    return seed(semantics=semantics, lot="KR01PSA261102", wips=3, process_id_offset=offset, now=T0)


def given(state: MesState, steps: Sequence[str], pk: int = PK) -> MesState:
    """Apply steps to one WIP: S<n> start, P/F/R<n> complete PASS/FAIL/REWORK, G generate."""
    for step in steps:
        if step == "G":
            state.generate_serial(state.wip(pk).wip_id, T0)
            continue
        process = state.process_by_number(int(step[1:]))
        assert process is not None
        if step[0] == "S":
            state.start_process(pk, StartCommand(process.id, OP), T0)
        else:
            result = {"P": Result.PASS, "F": Result.FAIL, "R": Result.REWORK}[step[0]]
            state.complete_process(pk, CompleteCommand(process.id, OP, result), T0)
    return state


def refusal(call: object) -> MesError | None:
    assert callable(call)
    try:
        call()
    except MesError as error:
        return error
    return None


# -- BR-003: may a process start? ------------------------------------------------------------

START_CASES = [
    # semantics, history, process to start, spec code of the refusal (None: allowed)
    ("deployed", [], 1, None),
    ("deployed", [], 2, "PREREQUISITE_NOT_MET"),
    ("deployed", ["S1"], 2, "PREREQUISITE_NOT_MET"),  # an open start does not count
    ("deployed", ["S1", "P1"], 2, None),
    ("deployed", ["S1", "P1", "S2"], 1, None),  # IN_PROGRESS may (re)start process 1
    ("deployed", ["S1", "F1"], 1, None),  # FAILED may restart: the rework path
    ("deployed", ["S1", "F1"], 2, "PREREQUISITE_NOT_MET"),
    ("deployed", ["S1", "P1", "S2", "F2"], 2, None),  # N > 1: no status check at all
    ("deployed", ["S1", "P1", "S2", "F2"], 3, "PREREQUISITE_NOT_MET"),
    ("deployed", RUN_ALL, 1, "INVALID_WIP_STATUS"),  # COMPLETED
    ("deployed", RUN_ALL, 6, None),
    ("deployed", [*RUN_ALL, "G"], 1, "ALREADY_CONVERTED"),
    ("deployed", [*RUN_ALL, "G"], 4, "ALREADY_CONVERTED"),
    ("spec", [], 1, None),
    ("spec", [], 2, "PREREQUISITE_NOT_MET"),
    ("spec", ["S1"], 2, "PREREQUISITE_NOT_MET"),
    ("spec", ["S1", "P1"], 2, None),
    ("spec", ["S1", "R1"], 1, None),  # REWORK keeps IN_PROGRESS
    ("spec", ["S1", "F1"], 1, "INVALID_WIP_STATUS"),  # FAILED blocks every start
    ("spec", ["S1", "P1", "S2", "F2"], 2, "INVALID_WIP_STATUS"),
    ("spec", RUN_ALL, 1, "INVALID_WIP_STATUS"),
    ("spec", RUN_ALL, 6, None),
    ("spec", [*RUN_ALL, "G"], 3, "INVALID_WIP_STATUS"),
]


@pytest.mark.parametrize(("semantics", "history", "process", "expected"), START_CASES)
def test_br003_start(
    semantics: Semantics, history: list[str], process: int, expected: str | None
) -> None:
    state = given(fresh(semantics), history)
    error = refusal(lambda: state.start_process(PK, StartCommand(process, OP), T0))
    assert (error and error.spec_code) == expected
    if error is None:
        wip = state.wip(PK)
        assert (wip.status, wip.current_process_id) == (WipStatus.IN_PROGRESS, process)
        return
    assert (error.status, error.code) == (400, "VAL_004")
    if semantics == "deployed":
        assert error.message.startswith(f"WIP {WIP} ")
        assert FRAGMENT[expected] in error.message  # type: ignore[index]


def test_br003_deployed_messages_name_the_processes() -> None:
    state = fresh()
    error = refusal(lambda: state.start_process(PK, StartCommand(3, OP), T0))
    assert error is not None and error.message == (
        f"WIP {WIP} cannot start process 3. Previous process 2 must be completed with PASS result."
    )
    given(state, RUN_ALL)
    error = refusal(lambda: state.start_process(PK, StartCommand(1, OP), T0))
    assert error is not None
    assert "must be in CREATED, IN_PROGRESS, or FAILED status" in error.message
    assert error.message.endswith("Current status: COMPLETED")


def test_repeated_start_overwrites_the_open_record() -> None:
    state = fresh()
    state.start_process(PK, StartCommand(1, 1, started_at=T0), T0)
    state.start_process(PK, StartCommand(1, 2, started_at=T0 + timedelta(minutes=5)), T0)
    (record,) = state.starts
    assert (record.operator_id, record.started_at, record.open) == (
        2,
        T0 + timedelta(minutes=5),
        True,
    )
    # once completed, the next start of the same process is a new record
    state.complete_process(PK, CompleteCommand(1, OP, Result.FAIL), T0 + timedelta(minutes=9))
    state.start_process(PK, StartCommand(1, OP), T0 + timedelta(minutes=10))
    assert [(s.open, s.started_at) for s in state.starts] == [
        (False, T0 + timedelta(minutes=5)),
        (True, T0 + timedelta(minutes=10)),  # no started_at sent: the MES's clock
    ]


def test_start_with_unknown_operator_is_a_conflict() -> None:
    error = refusal(lambda: fresh().start_process(PK, StartCommand(1, 99), T0))
    assert error is not None
    assert (error.status, error.code, error.message) == (
        409,
        "CONF_002",
        "Referenced resource does not exist",
    )


# -- completion: BR-004 and status transitions ------------------------------------------------

COMPLETE_CASES = [
    # semantics, history, (result, process), spec code of the refusal or the status after
    ("deployed", [], ("PASS", 1), WipStatus.IN_PROGRESS),  # no start needed
    ("deployed", [], ("PASS", 6), WipStatus.IN_PROGRESS),  # nor any order
    ("deployed", ["P1", "P2", "P3", "P4", "P5"], ("PASS", 6), WipStatus.COMPLETED),
    ("deployed", ["P1"], ("PASS", 1), "DUPLICATE_PASS"),
    ("deployed", ["P1"], ("FAIL", 1), WipStatus.FAILED),
    ("deployed", ["F1"], ("FAIL", 1), WipStatus.FAILED),  # FAIL may repeat
    ("deployed", RUN_ALL, ("FAIL", 3), WipStatus.FAILED),  # no guard on COMPLETED
    ("deployed", [*RUN_ALL, "G"], ("FAIL", 2), WipStatus.FAILED),  # nor on CONVERTED
    ("deployed", ["S1"], ("REWORK", 1), "CONFLICT"),
    ("spec", [], ("PASS", 1), "PROCESS_NOT_STARTED"),
    ("spec", ["S1"], ("PASS", 1), WipStatus.IN_PROGRESS),
    ("spec", ["S1"], ("REWORK", 1), WipStatus.IN_PROGRESS),
    ("spec", ["S1"], ("FAIL", 1), WipStatus.FAILED),
    ("spec", ["S1", "P1"], ("PASS", 1), "DUPLICATE_PASS"),  # before "not started": a replay
    ("spec", RUN_ALL[:-1], ("PASS", 6), WipStatus.COMPLETED),
]


@pytest.mark.parametrize(("semantics", "history", "completion", "expected"), COMPLETE_CASES)
def test_completion(
    semantics: Semantics,
    history: list[str],
    completion: tuple[str, int],
    expected: str | WipStatus,
) -> None:
    state = given(fresh(semantics), history)
    result, process = completion
    command = CompleteCommand(process, OP, Result(result))
    rows_before = len(state.history)
    error = refusal(lambda: state.complete_process(PK, command, T0))
    if isinstance(expected, WipStatus):
        assert error is None
        assert state.wip(PK).status is expected
        assert len(state.history) == rows_before + 1
        return
    assert error is not None and error.spec_code == expected
    assert len(state.history) == rows_before  # a refusal records nothing
    if semantics == "deployed" and expected in FRAGMENT:
        assert FRAGMENT[expected] in error.message


def test_duplicate_pass_message() -> None:
    state = given(fresh(), ["P2"])
    error = refusal(lambda: state.complete_process(PK, CompleteCommand(2, OP, Result.PASS), T0))
    assert error is not None and (error.status, error.code, error.message) == (
        400,
        "VAL_004",
        f"WIP {WIP} already has PASS result for process 2. "
        "Duplicate PASS results are not allowed (BR-004).",
    )


def test_deployed_duplicate_check_is_split_from_the_insert() -> None:
    """Two PASS requests that both pass the check before either inserts both get recorded."""
    state = fresh()
    first = state.prepare_completion(PK, CompleteCommand(1, OP, Result.PASS), T0)
    second = state.prepare_completion(PK, CompleteCommand(1, OP, Result.PASS), T0)
    assert first.duplicate_check_is_racy and second.duplicate_check_is_racy
    state.commit_completion(first, T0)
    state.commit_completion(second, T0)
    assert [h.result for h in state.history] == [Result.PASS, Result.PASS]


def test_spec_duplicate_check_is_atomic() -> None:
    state = given(fresh("spec"), ["S1"])
    plan = state.prepare_completion(PK, CompleteCommand(1, OP, Result.PASS), T0)
    assert not plan.duplicate_check_is_racy


AT = T0 + timedelta(minutes=10)

TIME_CASES = [
    # sent started_at, sent completed_at -> recorded (started, completed) or refusal code
    (None, None, (AT, AT)),  # duration 0: the MES takes its clock for both
    (T0, None, (T0, AT)),
    (T0, T0 + timedelta(seconds=90), (T0, T0 + timedelta(seconds=90))),
    (None, T0 + timedelta(seconds=90), (T0 + timedelta(seconds=90),) * 2),
    (T0, T0 - timedelta(seconds=1), "CONF_002"),  # the check constraint
    (T0 - timedelta(hours=1), T0 - timedelta(minutes=1), "CONF_002"),  # before the open start
    ("naive", None, "SRV_001"),  # naive minus aware inside the MES
    ("naive", "naive", ((T0 - timedelta(hours=1)), T0)),  # both naive: read as UTC
]


@pytest.mark.parametrize(("started", "completed", "expected"), TIME_CASES)
def test_completion_times_deployed(
    started: datetime | str | None,
    completed: datetime | str | None,
    expected: tuple[datetime, ...] | str,
) -> None:
    state = fresh()
    state.start_process(PK, StartCommand(1, OP, started_at=T0), T0)
    naive_start = datetime.fromisoformat("2026-11-26T08:00:00")
    naive_end = datetime.fromisoformat("2026-11-26T09:00:00")
    command = CompleteCommand(
        1,
        OP,
        Result.PASS,
        started_at=naive_start if started == "naive" else started,  # type: ignore[arg-type]
        completed_at=naive_end if completed == "naive" else completed,  # type: ignore[arg-type]
    )
    error = refusal(lambda: state.complete_process(PK, command, AT))
    if isinstance(expected, str):
        assert error is not None and error.code == expected
        assert state.history == []
        return
    assert error is None
    (row,) = state.history
    assert (row.started_at, row.completed_at) == expected
    assert row.started_at.tzinfo is UTC and row.completed_at.tzinfo is UTC
    assert row.duration_seconds == int((expected[-1] - expected[0]).total_seconds())


def test_spec_completion_defaults_to_the_recorded_start() -> None:
    state = fresh("spec")
    state.start_process(PK, StartCommand(1, OP, started_at=T0), T0)
    record, _ = state.complete_process(PK, CompleteCommand(1, OP, Result.PASS), AT)
    assert (record.started_at, record.duration_seconds) == (T0, 600)


def test_completion_with_unknown_operator_is_a_conflict() -> None:
    state = fresh()
    error = refusal(lambda: state.complete_process(PK, CompleteCommand(1, 7, Result.FAIL), T0))
    assert error is not None and (error.status, error.code) == (409, "CONF_002")


# -- BR-005: conversion ------------------------------------------------------------------------

CONVERT_CASES = [
    # semantics, history, spec code of the refusal (None: converted)
    ("deployed", [], "INVALID_WIP_STATUS"),
    ("deployed", ["P1", "P2"], "INVALID_WIP_STATUS"),
    ("deployed", RUN_ALL, None),
    ("deployed", [*RUN_ALL, "F3"], "INVALID_WIP_STATUS"),
    ("deployed", [*RUN_ALL, "G"], "ALREADY_CONVERTED"),  # "Current status: CONVERTED"
    # generated early (no checks there), then completed: COMPLETED yet already converted
    ("deployed", ["G", "P1", "P2", "P3", "P4", "P5", "P6"], "ALREADY_CONVERTED"),
    ("spec", [], "INCOMPLETE_PROCESSES"),
    ("spec", ["S1", "P1", "S2", "P2"], "INCOMPLETE_PROCESSES"),
    ("spec", RUN_ALL, None),
    ("spec", [*RUN_ALL, "S3", "F3"], "INVALID_WIP_STATUS"),
    ("spec", [*RUN_ALL, "G"], "ALREADY_CONVERTED"),
]


@pytest.mark.parametrize(("semantics", "history", "expected"), CONVERT_CASES)
def test_convert_prechecks(semantics: Semantics, history: list[str], expected: str | None) -> None:
    state = given(fresh(semantics), history)
    status_before = state.wip(PK).status
    error = refusal(lambda: state.convert_to_serial(PK, ConvertCommand(OP), T0, working=True))
    assert (error and error.spec_code) == expected
    if error is not None:
        assert (error.status, error.code) == (400, "VAL_004")
        assert state.wip(PK).status is status_before
    else:
        assert state.wip(PK).status is WipStatus.CONVERTED


def test_convert_messages() -> None:
    state = given(fresh(), ["P1"])
    error = refusal(lambda: state.convert_to_serial(PK, ConvertCommand(OP), T0, working=True))
    assert error is not None and error.message == (
        f"WIP {WIP} must be in COMPLETED status for serial conversion. Current status: IN_PROGRESS"
    )
    spec = given(fresh("spec"), ["S1", "P1", "S2", "P2"])
    error = refusal(lambda: spec.convert_to_serial(PK, ConvertCommand(OP), T0, working=True))
    assert error is not None
    assert error.message == "Missing PASS results for processes: [3, 4, 5, 6] (BR-005)"


def test_br005_in_deployed_wording() -> None:
    # Unreachable through the API (COMPLETED implies every PASS); the rule still stands.
    state = given(fresh(), ["P1", "P2", "P4"])
    state.wip(PK).status = WipStatus.COMPLETED
    error = refusal(lambda: state.convert_to_serial(PK, ConvertCommand(OP), T0, working=True))
    assert error is not None and error.message == (
        f"WIP {WIP} cannot be converted to serial. "
        "Missing PASS results for MANUFACTURING processes: [3, 5, 6] (BR-005)"
    )


def test_broken_conversion_is_a_server_error_that_changes_nothing() -> None:
    state = given(fresh(), RUN_ALL)
    error = refusal(lambda: state.convert_to_serial(PK, ConvertCommand(OP), T0, working=False))
    assert error is not None and (error.status, error.code) == (500, "SRV_001")
    assert state.wip(PK).status is WipStatus.COMPLETED and state.serials == []


def test_convert_with_unknown_operator_is_a_conflict() -> None:
    state = given(fresh(), RUN_ALL)
    error = refusal(lambda: state.convert_to_serial(PK, ConvertCommand(42), T0, working=True))
    assert error is not None and error.code == "CONF_002"


def test_generate_serial_checks_nothing_but_an_existing_serial() -> None:
    state = fresh()
    serial, wip = state.generate_serial(WIP, T0)  # a CREATED WIP: no BR-005 here
    assert re.fullmatch(r"[A-Z0-9]{13}\d{3}", serial.serial_number)
    assert serial.serial_number == "KR01PSA261102001"
    assert (wip.status, wip.serial_id, wip.converted_at) == (WipStatus.CONVERTED, serial.id, T0)
    second, _ = state.generate_serial("WIP-KR01PSA261102-002", T0)
    assert second.serial_number == "KR01PSA261102002"
    error = refusal(lambda: state.generate_serial(WIP, T0))
    assert error is not None and error.code == "VAL_004"
    assert "already converted to serial number KR01PSA261102001" in error.message
    error = refusal(lambda: state.generate_serial("WIP-NOPE", T0))
    assert error is not None and (error.status, error.code) == (404, "RES_001")


# -- scan and lookups --------------------------------------------------------------------------


def test_scan_reports_an_earlier_pass_in_korean() -> None:
    state = given(fresh(), ["P1"])
    view = state.scan(WIP, 1)
    assert view.has_pass_for_process is True
    assert view.pass_warning_message and "이미 PASS" in view.pass_warning_message
    assert state.scan(WIP, None).has_pass_for_process is False


def test_scan_precheck_is_val_001() -> None:
    error = refusal(lambda: fresh().scan(WIP, 2))
    assert error is not None and (error.status, error.code) == (400, "VAL_001")
    assert error.spec_code == "PREREQUISITE_NOT_MET"


@pytest.mark.parametrize("semantics", ["deployed", "spec"])
def test_unknown_wip(semantics: Semantics) -> None:
    error = refusal(lambda: fresh(semantics).scan("WIP-X", None))
    assert error is not None and (error.status, error.spec_code) == (404, "WIP_NOT_FOUND")
    if semantics == "deployed":
        assert (error.code, error.message) == ("RES_001", "WIP Item with ID WIP-X not found")


def test_process_id_offset() -> None:
    state = fresh(offset=10)
    assert [(p.number, p.id) for p in state.active_processes()] == [
        (n, n + 10) for n in range(1, 7)
    ]
    error = refusal(lambda: state.start_process(PK, StartCommand(1, OP), T0))
    assert error is not None and error.message == "Process with ID 1 not found"
    state.start_process(PK, StartCommand(11, OP), T0)
    state.complete_process(PK, CompleteCommand(11, OP, Result.PASS), T0)
    state.start_process(PK, StartCommand(12, OP), T0)  # BR-003 follows numbers, not ids
    assert state.wip(PK).current_process_id == 12


def test_seed() -> None:
    state = seed(semantics="deployed", lot="KR01PSA261102", wips=20, process_id_offset=0, now=T0)
    wips = list(state.wips.values())
    assert [w.wip_id for w in wips[:2]] == ["WIP-KR01PSA261102-001", "WIP-KR01PSA261102-002"]
    assert len(wips) == 20 and all(len(w.wip_id) == 21 for w in wips)
    assert all(w.id != w.sequence_in_lot and w.status is WipStatus.CREATED for w in wips)
    assert {(u.id, u.username) for u in state.users.values()} == {(1, "admin"), (2, "operator1")}
