"""bridge.core.payloads: bytes from a station in, a validated payload or a Problem out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.core.domain import Result
from bridge.core.limits import Measured
from bridge.core.payloads import (
    BatchAbort,
    BatchComplete,
    BatchStart,
    MeasurementIn,
    Payload,
    WipConvert,
    _finite,
    _float_sized,
    _not_json,
    parse_payload,
)
from bridge.core.problems import Problem, ProblemCode
from bridge.core.topics import Inbound

MAX = 65536
KST = timezone(timedelta(hours=9))


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def parse(kind: Inbound, data: Any) -> Payload | Problem:
    return parse_payload(kind, raw(data), max_bytes=MAX)


START = {"wip_id": "WIP-KR01PSA261102-001", "process_id": 3, "operator_id": 7}


# -- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data", "model", "fields"),
    [
        (
            Inbound.START,
            START,
            BatchStart,
            {
                "wip_id": "WIP-KR01PSA261102-001",
                "process_id": 3,
                "operator_id": 7,
                "equipment_id": None,
                "batch_id": None,
                "started_at": None,
            },
        ),
        (
            Inbound.START,
            {
                **START,
                "equipment_id": 12,
                "batch_id": "B-1:a.b_c",
                "started_at": "2026-11-26T09:00:00Z",
            },
            BatchStart,
            {
                "equipment_id": 12,
                "batch_id": "B-1:a.b_c",
                "started_at": datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
            },
        ),
        (
            Inbound.START,
            {**START, "started_at": "2026-11-26T18:00:00+09:00"},
            BatchStart,
            {"started_at": datetime(2026, 11, 26, 18, 0, tzinfo=KST)},
        ),
        (Inbound.START, {**START, "process_id": 1}, BatchStart, {"process_id": 1}),
        (Inbound.START, {**START, "process_id": 100}, BatchStart, {"process_id": 100}),
        (Inbound.START, {**START, "wip_id": "W" * 50}, BatchStart, {"wip_id": "W" * 50}),
        (
            Inbound.MEASUREMENT,
            {"name": "torque", "value": 1.5},
            MeasurementIn,
            {"name": "torque", "value": 1.5, "unit": None, "measurements": None, "defects": []},
        ),
        (
            Inbound.MEASUREMENT,
            {"name": "torque", "value": 1.5, "unit": "Nm", "batch_id": "B1"},
            MeasurementIn,
            {"name": "torque", "value": 1.5, "unit": "Nm", "batch_id": "B1"},
        ),
        (
            Inbound.MEASUREMENT,
            {"name": "label", "value": "OK-42"},
            MeasurementIn,
            {"name": "label", "value": "OK-42"},
        ),
        (
            Inbound.MEASUREMENT,
            {"name": "flag", "value": False},
            MeasurementIn,
            {"name": "flag", "value": False},
        ),
        (
            Inbound.MEASUREMENT,
            {"name": "curve", "value": [1, 2, {"x": 3}]},
            MeasurementIn,
            {"value": [1, 2, {"x": 3}]},
        ),
        (
            Inbound.MEASUREMENT,
            {"measurements": {"a": 1, "b": "two", "c": None}},
            MeasurementIn,
            {"name": None, "measurements": {"a": 1, "b": "two", "c": None}},
        ),
        (
            Inbound.MEASUREMENT,
            {"defects": ["SCRATCH", "DENT"]},
            MeasurementIn,
            {"name": None, "measurements": None, "defects": ["SCRATCH", "DENT"]},
        ),
        (
            Inbound.MEASUREMENT,
            {"name": "torque", "value": 0, "defects": ["LOW"]},
            MeasurementIn,
            {"value": 0, "defects": ["LOW"]},
        ),
        (
            Inbound.MEASUREMENT,
            {"measurements": {"a": 1}, "defects": ["X"]},
            MeasurementIn,
            {"measurements": {"a": 1}, "defects": ["X"]},
        ),
        (
            Inbound.COMPLETE,
            {},
            BatchComplete,
            {"batch_id": None, "result": None, "defects": [], "notes": "", "completed_at": None},
        ),
        (
            Inbound.COMPLETE,
            {
                "batch_id": "B1",
                "result": "FAIL",
                "defects": ["D1"],
                "notes": "n" * 5000,
                "completed_at": "2026-11-26T09:30:00Z",
            },
            BatchComplete,
            {
                "result": Result.FAIL,
                "defects": ["D1"],
                "notes": "n" * 5000,
                "completed_at": datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
            },
        ),
        (Inbound.COMPLETE, {"result": "PASS"}, BatchComplete, {"result": Result.PASS}),
        (Inbound.COMPLETE, {"result": "REWORK"}, BatchComplete, {"result": Result.REWORK}),
        (Inbound.ABORT, {"reason": "dropped"}, BatchAbort, {"reason": "dropped", "batch_id": None}),
        (
            Inbound.ABORT,
            {"reason": "r", "batch_id": "B1"},
            BatchAbort,
            {"reason": "r", "batch_id": "B1"},
        ),
        (
            Inbound.CONVERT,
            {"wip_id": "WIP-1", "operator_id": 7},
            WipConvert,
            {"wip_id": "WIP-1", "operator_id": 7, "notes": ""},
        ),
        (
            Inbound.CONVERT,
            {"wip_id": "WIP-1", "operator_id": 7, "notes": "final"},
            WipConvert,
            {"notes": "final"},
        ),
    ],
    ids=[
        "start-minimal",
        "start-full",
        "start-kst-offset",
        "start-process-1",
        "start-process-100",
        "start-wip-50-chars",
        "measurement-name-value",
        "measurement-with-unit-and-batch",
        "measurement-string-value",
        "measurement-false-value",
        "measurement-structured-value",
        "measurement-dict",
        "measurement-defects-only",
        "measurement-zero-value-and-defects",
        "measurement-dict-and-defects",
        "complete-empty",
        "complete-full",
        "complete-pass",
        "complete-rework",
        "abort",
        "abort-with-batch",
        "convert",
        "convert-with-notes",
    ],
)
def test_good_payloads_are_accepted(
    kind: Inbound, data: dict[str, Any], model: type[Payload], fields: dict[str, Any]
) -> None:
    payload = parse(kind, data)
    assert isinstance(payload, model), payload
    for name, expected in fields.items():
        assert getattr(payload, name) == expected, name


def test_payload_of_exactly_max_bytes_is_accepted() -> None:
    body = raw({"reason": "x"})
    padded = body[:-1] + b" " * 10 + b"}"
    payload = parse_payload(Inbound.ABORT, padded, max_bytes=len(padded))
    assert isinstance(payload, BatchAbort)


@pytest.mark.parametrize(
    ("data", "values"),
    [
        ({"name": "torque", "value": 1.5}, {"torque": 1.5}),
        ({"measurements": {"a": 1, "b": 2}}, {"a": 1, "b": 2}),
        ({"defects": ["X"]}, {}),
    ],
    ids=["single", "dict", "defects-only"],
)
def test_measurement_values_in_either_form(data: dict[str, Any], values: dict[str, Any]) -> None:
    payload = parse(Inbound.MEASUREMENT, data)
    assert isinstance(payload, MeasurementIn)
    assert {name: got.value for name, got in payload.values().items()} == values


def test_a_single_measurement_keeps_its_unit() -> None:
    payload = parse(Inbound.MEASUREMENT, {"name": "torque", "value": 1.5, "unit": "Nm"})
    assert isinstance(payload, MeasurementIn)
    assert payload.values() == {"torque": Measured(value=1.5, unit="Nm")}


# -- refused -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "code", "detail"),
    [
        (Inbound.START, b"", ProblemCode.INVALID_JSON, ""),
        (Inbound.START, b"not json", ProblemCode.INVALID_JSON, ""),
        (Inbound.START, b'{"wip_id": "W",', ProblemCode.INVALID_JSON, ""),
        (Inbound.START, b"{'wip_id': 'W'}", ProblemCode.INVALID_JSON, ""),
        (
            Inbound.MEASUREMENT,
            b'{"name": "t\xff\xfe", "value": 1}',
            ProblemCode.INVALID_JSON,
            "utf-8",
        ),
        (Inbound.ABORT, b'{"reason": "\xc3"}', ProblemCode.INVALID_JSON, "utf-8"),
        (Inbound.START, b"[1, 2]", ProblemCode.INVALID_PAYLOAD, "JSON object"),
        (Inbound.START, b'"a string"', ProblemCode.INVALID_PAYLOAD, "JSON object"),
        (Inbound.START, b"42", ProblemCode.INVALID_PAYLOAD, "JSON object"),
        (Inbound.START, b"null", ProblemCode.INVALID_PAYLOAD, "JSON object"),
        (Inbound.COMPLETE, b"[]", ProblemCode.INVALID_PAYLOAD, "JSON object"),
    ],
    ids=[
        "empty",
        "not-json",
        "truncated",
        "single-quotes",
        "not-utf8",
        "truncated-utf8-sequence",
        "array",
        "string",
        "number",
        "null",
        "complete-array",
    ],
)
def test_not_a_json_object_is_refused(
    kind: Inbound, body: bytes, code: ProblemCode, detail: str
) -> None:
    problem = parse_payload(kind, body, max_bytes=MAX)
    assert isinstance(problem, Problem)
    assert problem.code is code
    assert detail.lower() in problem.detail.lower()


@pytest.mark.parametrize(
    ("body", "max_bytes"),
    [
        (raw({"reason": "x" * 100}), 50),
        (raw(START), len(raw(START)) - 1),
        (b"x" * 1000, 999),
    ],
    ids=["much-too-large", "one-byte-over", "garbage-too-large-checked-first"],
)
def test_too_large_is_refused(body: bytes, max_bytes: int) -> None:
    problem = parse_payload(Inbound.START, body, max_bytes=max_bytes)
    assert isinstance(problem, Problem)
    assert problem.code is ProblemCode.MESSAGE_TOO_LARGE
    assert str(len(body)) in problem.detail and str(max_bytes) in problem.detail


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        # missing fields
        (Inbound.START, _without(START, "wip_id"), "wip_id"),
        (Inbound.START, _without(START, "process_id"), "process_id"),
        (Inbound.START, _without(START, "operator_id"), "operator_id"),
        (Inbound.START, {}, "wip_id"),
        (Inbound.ABORT, {}, "reason"),
        (Inbound.ABORT, {"batch_id": "B1"}, "reason"),
        (Inbound.CONVERT, {"operator_id": 7}, "wip_id"),
        (Inbound.CONVERT, {"wip_id": "W"}, "operator_id"),
        # wrong types
        (Inbound.START, {**START, "wip_id": 123}, "wip_id"),
        (Inbound.START, {**START, "process_id": "three"}, "process_id"),
        (Inbound.START, {**START, "process_id": 3.5}, "process_id"),
        (Inbound.START, {**START, "operator_id": None}, "operator_id"),
        (Inbound.START, {**START, "operator_id": [7]}, "operator_id"),
        (Inbound.START, {**START, "equipment_id": "eq-1"}, "equipment_id"),
        (Inbound.START, {**START, "started_at": "yesterday"}, "started_at"),
        (Inbound.MEASUREMENT, {"name": 5, "value": 1}, "name"),
        (Inbound.MEASUREMENT, {"measurements": [1, 2]}, "measurements"),
        (Inbound.MEASUREMENT, {"defects": "SCRATCH"}, "defects"),
        (Inbound.MEASUREMENT, {"defects": [1]}, "defects.0"),
        (Inbound.COMPLETE, {"result": "OK"}, "result"),
        (Inbound.COMPLETE, {"result": 1}, "result"),
        (Inbound.COMPLETE, {"defects": ["A", ""]}, "defects.1"),
        (Inbound.COMPLETE, {"notes": 5}, "notes"),
        (Inbound.CONVERT, {"wip_id": "W", "operator_id": "seven"}, "operator_id"),
        # out of range / too long
        (Inbound.START, {**START, "process_id": 0}, "process_id"),
        (Inbound.START, {**START, "process_id": -1}, "process_id"),
        (Inbound.START, {**START, "process_id": 101}, "process_id"),
        (Inbound.START, {**START, "operator_id": 0}, "operator_id"),
        (Inbound.START, {**START, "equipment_id": 0}, "equipment_id"),
        (Inbound.START, {**START, "wip_id": ""}, "wip_id"),
        (Inbound.START, {**START, "wip_id": "W" * 51}, "wip_id"),
        (Inbound.START, {**START, "batch_id": "has space"}, "batch_id"),
        (Inbound.START, {**START, "batch_id": "a/b"}, "batch_id"),
        (Inbound.START, {**START, "batch_id": ""}, "batch_id"),
        (Inbound.START, {**START, "batch_id": "b" * 65}, "batch_id"),
        (Inbound.MEASUREMENT, {"name": "", "value": 1}, "name"),
        (Inbound.MEASUREMENT, {"name": "n" * 101, "value": 1}, "name"),
        (Inbound.MEASUREMENT, {"name": "t", "value": 1, "unit": "u" * 33}, "unit"),
        (Inbound.MEASUREMENT, {"defects": ["d" * 65]}, "defects.0"),
        (Inbound.COMPLETE, {"notes": "n" * 5001}, "notes"),
        (Inbound.ABORT, {"reason": ""}, "reason"),
        (Inbound.ABORT, {"reason": "r" * 501}, "reason"),
        (Inbound.CONVERT, {"wip_id": "W", "operator_id": 7, "notes": "n" * 5001}, "notes"),
        # naive datetimes
        (Inbound.START, {**START, "started_at": "2026-11-26T09:00:00"}, "started_at"),
        (Inbound.COMPLETE, {"completed_at": "2026-11-26T09:00:00"}, "completed_at"),
        # extra (misspelt) fields
        (Inbound.START, {**START, "proces_id": 3}, "proces_id"),
        (Inbound.START, {**START, "startedAt": "2026-11-26T09:00:00Z"}, "startedAt"),
        (Inbound.MEASUREMENT, {"name": "t", "value": 1, "units": "mm"}, "units"),
        (Inbound.COMPLETE, {"reslt": "PASS"}, "reslt"),
        (Inbound.ABORT, {"reason": "r", "note": "x"}, "note"),
        (Inbound.CONVERT, {"wip_id": "W", "operator_id": 7, "operator": 7}, "operator"),
    ],
    ids=[
        "start-missing-wip",
        "start-missing-process",
        "start-missing-operator",
        "start-empty",
        "abort-empty",
        "abort-missing-reason",
        "convert-missing-wip",
        "convert-missing-operator",
        "wip-int",
        "process-word",
        "process-fraction",
        "operator-null",
        "operator-list",
        "equipment-string",
        "started-at-word",
        "measurement-name-int",
        "measurements-list",
        "defects-string",
        "defects-int-item",
        "result-unknown",
        "result-int",
        "complete-empty-defect",
        "notes-int",
        "convert-operator-word",
        "process-0",
        "process-negative",
        "process-101",
        "operator-0",
        "equipment-0",
        "wip-empty",
        "wip-51-chars",
        "batch-id-space",
        "batch-id-slash",
        "batch-id-empty",
        "batch-id-65-chars",
        "measurement-name-empty",
        "measurement-name-101-chars",
        "unit-33-chars",
        "defect-65-chars",
        "complete-notes-5001",
        "abort-reason-empty",
        "abort-reason-501",
        "convert-notes-5001",
        "naive-started-at",
        "naive-completed-at",
        "misspelt-proces-id",
        "camel-case-started-at",
        "misspelt-units",
        "misspelt-reslt",
        "abort-extra-note",
        "convert-extra-operator",
    ],
)
def test_bad_fields_are_refused_naming_the_field(
    kind: Inbound, data: dict[str, Any], field: str
) -> None:
    problem = parse(kind, data)
    assert isinstance(problem, Problem), problem
    assert problem.code is ProblemCode.INVALID_PAYLOAD
    assert f"{field}: " in problem.detail, problem.detail


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"name": "t", "value": 1, "measurements": {"a": 1}}, "not both"),
        ({"name": "t"}, "needs a value"),
        ({"name": "t", "value": None}, "needs a value"),
        ({"name": "t", "unit": "mm"}, "needs a value"),
        ({"unit": "mm", "measurements": {"a": 1}}, "unit goes with name/value"),
        ({"unit": "mm", "defects": ["X"]}, "unit goes with name/value"),
        ({"value": 1}, "value goes with name"),
        ({"value": 1, "defects": ["X"]}, "value goes with name"),
        ({"value": None, "defects": ["X"]}, "value goes with name"),
        ({"value": 1, "measurements": {"a": 1}}, "value goes with name"),
        ({}, "give name/value, measurements or defects"),
        ({"batch_id": "B1"}, "give name/value, measurements or defects"),
        ({"defects": []}, "give name/value, measurements or defects"),
    ],
    ids=[
        "both-forms",
        "name-without-value",
        "name-with-null-value",
        "name-and-unit-without-value",
        "unit-with-dict",
        "unit-without-name",
        "value-without-name",
        "value-without-name-with-defects",
        "null-value-without-name-with-defects",
        "value-without-name-with-dict",
        "empty",
        "batch-id-only",
        "empty-defects-only",
    ],
)
def test_measurement_forms_are_refused(data: dict[str, Any], says: str) -> None:
    problem = parse(Inbound.MEASUREMENT, data)
    assert isinstance(problem, Problem), problem
    assert problem.code is ProblemCode.INVALID_PAYLOAD
    assert says in problem.detail


def test_every_bad_field_is_listed() -> None:
    problem = parse(Inbound.START, {"wip_id": "", "process_id": 0, "operator_id": 0})
    assert isinstance(problem, Problem)
    assert problem.detail.count("; ") == 2
    for field in ("wip_id: ", "process_id: ", "operator_id: "):
        assert field in problem.detail


# -- numbers and encodings that are not what they seem -------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "t", "value": NaN}',
        b'{"name": "t", "value": Infinity}',
        b'{"measurements": {"t": -Infinity}}',
        b'{"name": "t", "value": 1e999}',
        b'{"measurements": {"t": -2.5e400}}',
    ],
    ids=["nan", "infinity", "minus-infinity-in-dict", "overflow", "overflow-negative"],
)
def test_non_standard_json_numbers_are_refused(body: bytes) -> None:
    problem = parse_payload(Inbound.MEASUREMENT, body, max_bytes=MAX)
    assert isinstance(problem, Problem)
    assert problem.code in {ProblemCode.INVALID_JSON, ProblemCode.INVALID_PAYLOAD}


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        (Inbound.START, {**START, "process_id": True}, "process_id"),
        (Inbound.START, {**START, "operator_id": True}, "operator_id"),
        (Inbound.START, {**START, "equipment_id": True}, "equipment_id"),
        (Inbound.CONVERT, {"wip_id": "W", "operator_id": True}, "operator_id"),
    ],
    ids=["start-process-true", "start-operator-true", "start-equipment-true", "convert-op-true"],
)
def test_booleans_for_integer_fields_are_refused(
    kind: Inbound, data: dict[str, Any], field: str
) -> None:
    problem = parse(kind, data)
    assert isinstance(problem, Problem), problem
    assert f"{field}: " in problem.detail


def test_utf16_payload_is_refused() -> None:
    body = json.dumps(START).encode("utf-16")
    problem = parse_payload(Inbound.START, body, max_bytes=MAX)
    assert isinstance(problem, Problem)
    assert problem.code is ProblemCode.INVALID_JSON


# -- hostile input: every one gets a code and a reason ------------------------------------------


def nested(depth: int) -> bytes:
    return b'{"name":"n","value":' + b"[" * depth + b"]" * depth + b"}"


START_AT = b'{"wip_id":"W","process_id":1,"operator_id":2,"started_at":%s}'


@pytest.mark.parametrize(
    ("kind", "body", "code", "says"),
    [
        (Inbound.MEASUREMENT, nested(40), ProblemCode.INVALID_JSON, "nested deeper than 32"),
        (Inbound.MEASUREMENT, nested(1_000), ProblemCode.INVALID_JSON, "nested deeper than 32"),
        (Inbound.MEASUREMENT, nested(30_000), ProblemCode.INVALID_JSON, "nested deeper than 32"),
        (
            Inbound.MEASUREMENT,
            b'{"measurements":{"a":' + b'{"b":' * 40 + b"1" + b"}" * 41 + b"}",
            ProblemCode.INVALID_JSON,
            "nested deeper than 32",
        ),
        (
            Inbound.START,
            START_AT % b'"9999-12-31T23:59:59-14:00"',
            ProblemCode.INVALID_PAYLOAD,
            "started_at: Value error, is out of range",
        ),
        (
            Inbound.COMPLETE,
            b'{"completed_at":"0001-01-01T00:00:00+14:00"}',
            ProblemCode.INVALID_PAYLOAD,
            "completed_at: Value error, is out of range",
        ),
        (Inbound.START, START_AT % b"0", ProblemCode.INVALID_PAYLOAD, "started_at: "),
        (Inbound.START, START_AT % b"1.5", ProblemCode.INVALID_PAYLOAD, "started_at: "),
        (Inbound.START, START_AT % b'"1700000000"', ProblemCode.INVALID_PAYLOAD, "ISO 8601"),
        (Inbound.COMPLETE, b'{"completed_at":1700000000}', ProblemCode.INVALID_PAYLOAD, "ISO"),
        (
            Inbound.START,
            b'{"wip_id":"\\ud800","process_id":1,"operator_id":2}',
            ProblemCode.INVALID_JSON,
            "lone surrogate",
        ),
        (
            Inbound.MEASUREMENT,
            b'{"measurements":{"\\udfff":1}}',
            ProblemCode.INVALID_JSON,
            "lone surrogate",
        ),
        (
            Inbound.COMPLETE,
            b'{"notes":"ok \\ud83d"}',
            ProblemCode.INVALID_JSON,
            "lone surrogate",
        ),
        (
            Inbound.START,
            b'{"wip_id":"W","process_id":1,"operator_id":1' + b"0" * 400 + b"}",
            ProblemCode.INVALID_JSON,
            "out of range",
        ),
        (
            Inbound.MEASUREMENT,
            b'{"name":"n","value":-1' + b"0" * 400 + b"}",
            ProblemCode.INVALID_JSON,
            "out of range",
        ),
        (
            Inbound.START,
            b'{"wip_id":"W","process_id":1,"operator_id":2147483648}',
            ProblemCode.INVALID_PAYLOAD,
            "operator_id: ",
        ),
        (
            Inbound.START,
            b'{"wip_id":"W","process_id":1,"operator_id":2,"equipment_id":2147483648}',
            ProblemCode.INVALID_PAYLOAD,
            "equipment_id: ",
        ),
        (
            Inbound.START,
            b'{"wip_id":"W\\r\\nX","process_id":1,"operator_id":2}',
            ProblemCode.INVALID_PAYLOAD,
            "wip_id: Value error, must not contain control",
        ),
        (
            Inbound.CONVERT,
            b'{"wip_id":"W\\u202eX","operator_id":2}',
            ProblemCode.INVALID_PAYLOAD,
            "wip_id: Value error, must not contain control",
        ),
        (
            Inbound.MEASUREMENT,
            b'{"name":"a\\u0000b","value":1}',
            ProblemCode.INVALID_PAYLOAD,
            "name: Value error, must not contain control",
        ),
        (
            Inbound.MEASUREMENT,
            b'{"defects":["OK","BAD\\n"]}',
            ProblemCode.INVALID_PAYLOAD,
            "defects.1: Value error, must not contain control",
        ),
    ],
    ids=[
        "nested-40",
        "nested-1000",
        "nested-30000",
        "nested-objects",
        "last-datetime-in-minus-14",
        "first-datetime-in-plus-14",
        "unix-time-zero",
        "unix-time-float",
        "unix-time-text",
        "unix-time-completed",
        "lone-surrogate-wip",
        "lone-surrogate-key",
        "half-a-surrogate-pair",
        "operator-beyond-a-float",
        "value-beyond-a-float",
        "operator-beyond-32-bits",
        "equipment-beyond-32-bits",
        "crlf-in-wip",
        "rtl-override-in-wip",
        "nul-in-name",
        "newline-in-defect",
    ],
)
def test_hostile_payloads_get_a_code_and_a_reason(
    kind: Inbound, body: bytes, code: ProblemCode, says: str
) -> None:
    problem = parse_payload(kind, body, max_bytes=1 << 20)
    assert isinstance(problem, Problem), problem
    assert problem.code is code
    assert says in problem.detail, problem.detail


@pytest.mark.parametrize(
    "wip_id", ["../../etc", "WIP%2F1", "WIP#1", "WIP?x=1", "한국-WIP", "W" * 50]
)
def test_odd_but_printable_wip_ids_are_accepted(wip_id: str) -> None:
    # They are quoted as one URL path segment by the MES client, so they cannot reach other paths.
    parsed = parse(Inbound.START, {**START, "wip_id": wip_id})
    assert isinstance(parsed, BatchStart) and parsed.wip_id == wip_id


def test_nesting_up_to_the_bound_is_accepted() -> None:
    parsed = parse_payload(Inbound.MEASUREMENT, nested(31), max_bytes=MAX)
    assert isinstance(parsed, MeasurementIn)


def test_a_large_integer_within_a_float_is_a_measurement() -> None:
    parsed = parse_payload(
        Inbound.MEASUREMENT, b'{"name":"n","value":' + b"9" * 300 + b"}", max_bytes=MAX
    )
    assert isinstance(parsed, MeasurementIn)


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"name": "t", "value": 1}',
        b'{"name": "t", "value": 1',
        b'{"name": "t", "value": NaN}',
        b'{"name": "t", "value": 1e999}',
        b'{"name": "t", "value": ' + b"9" * 400 + b"}",
        b"",
    ],
    ids=["utf8-bom", "truncated", "nan", "float-overflow", "beyond-a-float", "empty"],
)
def test_bad_json_is_refused_in_json_loads_own_words(body: bytes) -> None:
    # The decoders are made once rather than by json.loads per message: what they say is the same.
    long = b"9" * 309 in body
    hooks: dict[str, Any] = {"parse_int": _float_sized} if long else {}
    with pytest.raises(ValueError) as expected:
        json.loads(body.decode(), parse_constant=_not_json, parse_float=_finite, **hooks)
    problem = parse_payload(Inbound.MEASUREMENT, body, max_bytes=MAX)
    assert isinstance(problem, Problem)
    assert (problem.code, problem.detail) == (ProblemCode.INVALID_JSON, str(expected.value))
