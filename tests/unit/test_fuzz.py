"""Fuzz: generated and hostile payloads on every inbound topic, against the documented contract
(docs/topics.md): every message is either refused with a documented code and a reason, or
accepted as something the bridge can store and send; nothing accepted can make a decision fail
or put an unsendable request in the outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import BatchesConfig, StationConfig
from bridge.core.batches import Batch, close_batch, open_batch, record, request_bytes, within_bounds
from bridge.core.outcomes import Event, outcome
from bridge.core.payloads import (
    MODELS,
    BatchAbort,
    BatchComplete,
    BatchStart,
    MeasurementIn,
    Payload,
    WipConvert,
    parse_payload,
)
from bridge.core.problems import Problem, ProblemCode
from bridge.core.topics import Inbound
from bridge.mes import ConvertToSerial, StartProcess

from ..hostile import CORPUS

MAX_BYTES = 65536
BOUNDS = BatchesConfig(max_measurements=50, max_request_bytes=8192)
STATION = StationConfig(id="s1", processes=[1, 2, 3])
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PAYLOAD_CODES = {
    ProblemCode.INVALID_JSON,
    ProblemCode.INVALID_PAYLOAD,
    ProblemCode.MESSAGE_TOO_LARGE,
}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FIELDS = sorted({name for model in MODELS.values() for name in model.model_fields} | {"extra"})
HOSTILE_TEXT = [
    "\ud800",
    "\udfff",
    "a\r\nb",
    "\u202e",
    "\u200f",
    "\x00",
    "../",
    "%2F",
    "#",
    "?",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "2026-11-26T09:00:00Z",
    "2026-11-26T09:00:00",
    "1700000000",
    "PASS",
    "REWORK",
    "",
]
texts = st.one_of(
    st.text(st.characters(codec=None), max_size=40),
    st.sampled_from(HOSTILE_TEXT),
    st.lists(st.sampled_from(HOSTILE_TEXT), max_size=4).map("".join),
)
numbers = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.integers(min_value=-3, max_value=10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1.5, 2**31, 2**53 + 1, 10**308, 10**309]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
objects = st.dictionaries(st.one_of(st.sampled_from(FIELDS), texts), values, max_size=7)


def encode(data: Any, *, ascii_only: bool) -> bytes:
    text = json.dumps(data, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


def sendable(data: Any) -> None:
    """What the store writes and the MQTT link and the MES client send: strict UTF-8 JSON."""
    json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")


def check_refusal(problem: Problem) -> None:
    assert problem.code in PAYLOAD_CODES, problem
    assert problem.detail
    sendable(outcome(Event.SEQUENCE_ERROR, at=NOW, station_id="s1", error=problem.to_dict()))


def running_batch() -> Batch:
    return Batch(
        batch_id="B1",
        uid="U1",
        station_id="s1",
        wip_id="WIP-1",
        process=1,
        operator_id=2,
        started_at=NOW,
    )


def check_decisions(payload: Payload) -> None:
    """The lifecycle's pure decisions on an accepted payload: each ends in a Problem or in
    something the outbox can hold and the MES client can send."""
    payload.model_dump_json().encode("utf-8")
    if isinstance(payload, BatchStart):
        opened = open_batch(
            [], STATION, payload, batch_id=payload.batch_id or "B1", uid="U1", now=NOW
        )
        if isinstance(opened, Problem):
            assert opened.code is ProblemCode.PROCESS_NOT_AT_STATION
            return
        request = StartProcess(
            wip_id=opened.wip_id,
            process=opened.process,
            operator_id=opened.operator_id,
            started_at=opened.started_at,
            equipment_id=opened.equipment_id,
        )
        sendable(request.model_dump(mode="json"))
        sendable(opened.model_dump(mode="json"))
    elif isinstance(payload, MeasurementIn):
        updated = record(running_batch(), payload.values(), defects=payload.defects)
        refused = within_bounds(updated, STATION, bounds=BOUNDS)
        if refused is not None:
            assert refused.code in {
                ProblemCode.TOO_MANY_MEASUREMENTS,
                ProblemCode.REQUEST_TOO_LARGE,
            }
            return
        sendable(updated.model_dump(mode="json"))
        closed = close_batch(updated, BatchComplete(), STATION, now=NOW, bounds=BOUNDS)
        assert isinstance(closed, tuple)
        sendable(closed[0].model_dump(mode="json"))
    elif isinstance(payload, BatchComplete):
        closing = close_batch(running_batch(), payload, STATION, now=NOW, bounds=BOUNDS)
        if isinstance(closing, Problem):
            assert closing.code is ProblemCode.REQUEST_TOO_LARGE
            return
        completed, _ = closing
        sendable(completed.model_dump(mode="json"))
        assert request_bytes(completed) <= BOUNDS.max_request_bytes
    elif isinstance(payload, WipConvert):
        request = ConvertToSerial(
            wip_id=payload.wip_id, operator_id=payload.operator_id, notes=payload.notes
        )
        sendable(request.model_dump(mode="json"))
    else:
        assert isinstance(payload, BatchAbort)
        sendable(payload.model_dump(mode="json"))


def answered(kind: Inbound, raw: bytes) -> None:
    parsed = parse_payload(kind, raw, max_bytes=MAX_BYTES)
    if isinstance(parsed, Problem):
        check_refusal(parsed)
    else:
        assert isinstance(parsed, MODELS[kind])
        check_decisions(parsed)


@pytest.mark.parametrize("kind", list(Inbound))
@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes(kind: Inbound, raw: bytes) -> None:
    answered(kind, raw)


@pytest.mark.parametrize("kind", list(Inbound))
@FUZZ
@given(data=objects, ascii_only=st.booleans())
def test_any_json_object(kind: Inbound, data: dict[str, Any], ascii_only: bool) -> None:
    answered(kind, encode(data, ascii_only=ascii_only))


@pytest.mark.parametrize("kind", list(Inbound))
@FUZZ
@given(data=values)
def test_any_json_value(kind: Inbound, data: Any) -> None:
    answered(kind, encode(data, ascii_only=True))


@pytest.mark.parametrize(("kind", "raw", "code"), CORPUS)
def test_the_hostile_corpus_is_refused_as_documented(
    kind: Inbound, raw: bytes, code: ProblemCode
) -> None:
    parsed = parse_payload(kind, raw, max_bytes=MAX_BYTES)
    if code in PAYLOAD_CODES:
        assert isinstance(parsed, Problem) and parsed.code is code, parsed
        check_refusal(parsed)
    else:  # refused by the station's state (no batch is running), not by the parser
        assert not isinstance(parsed, Problem), parsed
        check_decisions(parsed)
