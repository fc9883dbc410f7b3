"""bridge.core.outcomes and bridge.core.problems: result-topic payloads and operator wording."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.core.outcomes import TOPIC, Event, outcome
from bridge.core.problems import Problem, ProblemCode
from bridge.core.topics import ResultKind
from bridge.mes.errors import MesError, MesErrorCode

AT = datetime(2026, 11, 26, 9, 0, 5, tzinfo=UTC)
HANGUL = re.compile(r"[\uac00-\ud7a3]")

FIELDS: dict[str, Any] = {
    "station_id": "s1",
    "batch_id": "B1",
    "wip_id": "WIP-1",
    "process_id": 3,
    "result": "PASS",
    "serial_number": "KR01PSA261101001",
    "action": "complete",
}
ERROR = Problem(ProblemCode.WIP_BUSY, "WIP-1 is in batch B0").to_dict()


def fields_for(event: Event) -> dict[str, Any]:
    if event is Event.SEQUENCE_ERROR:
        return {**FIELDS, "error": ERROR}
    return FIELDS


@pytest.mark.parametrize("event", list(Event), ids=[event.name for event in Event])
def test_every_event_has_english_and_korean(event: Event) -> None:
    body = outcome(event, at=AT, **fields_for(event))
    assert body["event"] == event.value
    assert isinstance(body["message"], str) and body["message"].strip()
    assert isinstance(body["message_ko"], str) and body["message_ko"].strip()
    assert HANGUL.search(body["message_ko"]), body["message_ko"]
    assert "{" not in body["message"] and "{" not in body["message_ko"]


@pytest.mark.parametrize("event", list(Event), ids=[event.name for event in Event])
def test_every_event_has_a_result_topic(event: Event) -> None:
    assert isinstance(TOPIC[event], ResultKind)


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (Event.PROCESS_STARTED, ResultKind.STARTED),
        (Event.PROCESS_STARTED_OFFLINE, ResultKind.STARTED),
        (Event.SEQUENCE_COMPLETE, ResultKind.COMPLETED),
        (Event.SEQUENCE_COMPLETE_OFFLINE, ResultKind.COMPLETED),
        (Event.BATCH_ABORTED, ResultKind.COMPLETED),
        (Event.SERIAL_CREATED, ResultKind.SERIAL),
        (Event.SERIAL_CREATED_OFFLINE, ResultKind.SERIAL),
        (Event.SEQUENCE_ERROR, ResultKind.ERROR),
        (Event.SYNCED, ResultKind.SYNCED),
        (Event.SYNC_FAILED, ResultKind.SYNCED),
    ],
    ids=lambda value: str(value),
)
def test_topic_of_each_event(event: Event, kind: ResultKind) -> None:
    assert TOPIC[event] is kind


@pytest.mark.parametrize(
    ("event", "fields", "english", "korean"),
    [
        (
            Event.PROCESS_STARTED,
            {"wip_id": "W1", "process_id": 3},
            "W1: process 3 started",
            "W1: 공정 3 착공 완료",
        ),
        (
            Event.SEQUENCE_COMPLETE,
            {"wip_id": "W1", "process_id": 3, "result": "FAIL"},
            "W1: process 3 completed, FAIL",
            "W1: 공정 3 완공, FAIL",
        ),
        (
            Event.SERIAL_CREATED,
            {"wip_id": "W1", "serial_number": "SN1"},
            "W1: serial number SN1",
            "W1: 시리얼 번호 SN1 발행",
        ),
        (
            Event.SERIAL_CREATED,
            {"wip_id": "W1", "serial_number": None},
            "W1: serial number (look it up in the MES)",
            "W1: 시리얼 번호 (MES에서 확인) 발행",
        ),
        (
            Event.BATCH_ABORTED,
            {"wip_id": "W1", "batch_id": "B7"},
            "W1: batch B7 aborted without completion",
            "W1: 배치 B7 완공 없이 중단",
        ),
        (
            Event.SYNCED,
            {"wip_id": "W1", "process_id": 2, "action": "start"},
            "W1: queued start (착공) of process 2 reached the MES",
            "W1: 대기 중이던 공정 2 착공 전송 완료",
        ),
        (
            Event.SYNCED,
            {"wip_id": "W1", "process_id": 2, "action": "complete"},
            "W1: queued completion (완공) of process 2 reached the MES",
            "W1: 대기 중이던 공정 2 완공 전송 완료",
        ),
        (
            Event.SYNC_FAILED,
            {"wip_id": "W1", "action": "convert"},
            "W1: queued serial conversion was refused by the MES",
            "W1: 대기 중이던 시리얼 변환이(가) MES에서 거부됨",
        ),
        (
            Event.SYNCED,
            {"wip_id": "W1"},
            "W1: queued request reached the MES",
            "W1: 대기 중이던 요청 전송 완료",
        ),
        (Event.PROCESS_STARTED, {}, "?: process ? started", "?: 공정 ? 착공 완료"),
    ],
    ids=[
        "started",
        "completed",
        "serial",
        "serial-number-unknown",
        "aborted",
        "synced-start",
        "synced-complete",
        "sync-failed-convert",
        "synced-no-action",
        "no-fields",
    ],
)
def test_sentences(event: Event, fields: dict[str, Any], english: str, korean: str) -> None:
    body = outcome(event, at=AT, **fields)
    assert (body["message"], body["message_ko"]) == (english, korean)


@pytest.mark.parametrize(
    "error",
    [
        Problem(ProblemCode.NO_ACTIVE_BATCH, "station s1 has no active batch").to_dict(),
        MesError(MesErrorCode.DUPLICATE_PASS, status=400, detail="BR-004").to_dict(),
    ],
    ids=["problem", "mes-error"],
)
def test_sequence_error_takes_the_errors_words(error: dict[str, Any]) -> None:
    body = outcome(Event.SEQUENCE_ERROR, at=AT, wip_id="W1", error=error)
    assert body["message"] == error["message"]
    assert body["message_ko"] == error["message_ko"]
    assert body["error"] == error


def test_other_events_keep_their_own_words_beside_an_error() -> None:
    error = MesError(MesErrorCode.VALIDATION, status=422).to_dict()
    body = outcome(Event.SYNC_FAILED, at=AT, wip_id="W1", action="start", process_id=1, error=error)
    assert body["error"] == error
    assert body["message"] == "W1: queued start (착공) of process 1 was refused by the MES"


def test_none_fields_are_dropped_and_others_kept() -> None:
    body = outcome(
        Event.SEQUENCE_COMPLETE,
        at=AT,
        station_id="s1",
        batch_id=None,
        wip_id="W1",
        process_id=3,
        result="PASS",
        wip_status=None,
        can_convert=False,
        serial_number=None,
    )
    assert set(body) == {
        "event",
        "station_id",
        "wip_id",
        "process_id",
        "result",
        "can_convert",
        "message",
        "message_ko",
        "at",
    }
    assert body["can_convert"] is False


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (AT, "2026-11-26T09:00:05Z"),
        (
            datetime(2026, 11, 26, 18, 0, 5, tzinfo=timezone(timedelta(hours=9))),
            "2026-11-26T09:00:05Z",
        ),
        (datetime(2026, 11, 26, 9, 0, 5, 123000, tzinfo=UTC), "2026-11-26T09:00:05.123000Z"),
        (
            datetime(2026, 11, 26, 4, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2026-11-26T09:00:00Z",
        ),
    ],
    ids=["utc", "kst", "microseconds", "negative-offset"],
)
def test_at_is_iso_utc_with_z(at: datetime, text: str) -> None:
    assert outcome(Event.PROCESS_STARTED, at=at, wip_id="W1")["at"] == text


def test_sequence_error_without_an_error_still_has_words() -> None:
    body = outcome(Event.SEQUENCE_ERROR, at=AT, wip_id="W1", error=None)
    assert body["message"] and body["message_ko"]
