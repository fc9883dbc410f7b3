"""Result-topic payloads (pure): the spec's event names, with a sentence in English and Korean."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from bridge.core.domain import format_utc
from bridge.core.topics import ResultKind


class Event(StrEnum):
    PROCESS_STARTED = "PROCESS_STARTED"
    PROCESS_STARTED_OFFLINE = "PROCESS_STARTED_OFFLINE"
    SEQUENCE_COMPLETE = "SEQUENCE_COMPLETE"
    SEQUENCE_COMPLETE_OFFLINE = "SEQUENCE_COMPLETE_OFFLINE"
    SERIAL_CREATED = "SERIAL_CREATED"
    SERIAL_CREATED_OFFLINE = "SERIAL_CREATED_OFFLINE"
    SEQUENCE_ERROR = "SEQUENCE_ERROR"
    BATCH_ABORTED = "BATCH_ABORTED"
    SYNCED = "SYNCED"
    SYNC_FAILED = "SYNC_FAILED"


TOPIC: dict[Event, ResultKind] = {
    Event.PROCESS_STARTED: ResultKind.STARTED,
    Event.PROCESS_STARTED_OFFLINE: ResultKind.STARTED,
    Event.SEQUENCE_COMPLETE: ResultKind.COMPLETED,
    Event.SEQUENCE_COMPLETE_OFFLINE: ResultKind.COMPLETED,
    Event.BATCH_ABORTED: ResultKind.COMPLETED,
    Event.SERIAL_CREATED: ResultKind.SERIAL,
    Event.SERIAL_CREATED_OFFLINE: ResultKind.SERIAL,
    Event.SEQUENCE_ERROR: ResultKind.ERROR,
    Event.SYNCED: ResultKind.SYNCED,
    Event.SYNC_FAILED: ResultKind.SYNCED,
}

# The answer to a request, by its action: delivered at the first attempt, or queued.
LIVE_EVENT = {"start": Event.PROCESS_STARTED, "complete": Event.SEQUENCE_COMPLETE}
OFFLINE_EVENT = {
    "start": Event.PROCESS_STARTED_OFFLINE,
    "complete": Event.SEQUENCE_COMPLETE_OFFLINE,
    "convert": Event.SERIAL_CREATED_OFFLINE,
}

# What each action is called in a sentence.
_ACTION = {
    "start": ("start (착공) of process {process_id}", "공정 {process_id} 착공"),
    "complete": ("completion (완공) of process {process_id}", "공정 {process_id} 완공"),
    "convert": ("serial conversion", "시리얼 변환"),
}

_SENTENCES: dict[Event, tuple[str, str]] = {
    Event.PROCESS_STARTED: (
        "{wip_id}: process {process_id} started",
        "{wip_id}: 공정 {process_id} 착공 완료",
    ),
    Event.PROCESS_STARTED_OFFLINE: (
        "{wip_id}: process {process_id} started offline; the MES is told when it is back",
        "{wip_id}: 공정 {process_id} 오프라인 착공 (MES 연결 시 자동 전송)",
    ),
    Event.SEQUENCE_COMPLETE: (
        "{wip_id}: process {process_id} completed, {result}",
        "{wip_id}: 공정 {process_id} 완공, {result}",
    ),
    Event.SEQUENCE_COMPLETE_OFFLINE: (
        "{wip_id}: process {process_id} completed offline, {result}; "
        "the MES is told when it is back",
        "{wip_id}: 공정 {process_id} 오프라인 완공, {result} (MES 연결 시 자동 전송)",
    ),
    Event.SERIAL_CREATED: (
        "{wip_id}: serial number {serial_number}",
        "{wip_id}: 시리얼 번호 {serial_number} 발행",
    ),
    Event.SERIAL_CREATED_OFFLINE: (
        "{wip_id}: serial conversion queued; the MES is asked when it is back",
        "{wip_id}: 시리얼 변환 대기 (MES 연결 시 자동 전송)",
    ),
    Event.SEQUENCE_ERROR: ("{wip_id}: refused", "{wip_id}: 거부됨"),
    Event.BATCH_ABORTED: (
        "{wip_id}: batch {batch_id} aborted without completion",
        "{wip_id}: 배치 {batch_id} 완공 없이 중단",
    ),
    Event.SYNCED: (
        "{wip_id}: queued {action} reached the MES",
        "{wip_id}: 대기 중이던 {action} 전송 완료",
    ),
    Event.SYNC_FAILED: (
        "{wip_id}: queued {action} was refused by the MES",
        "{wip_id}: 대기 중이던 {action}이(가) MES에서 거부됨",
    ),
}


def outcome(event: Event, *, at: datetime, **fields: Any) -> dict[str, Any]:
    """One result-topic payload. `fields` are the spec's: station_id, batch_id, wip_id,
    process_id, result, wip_status, can_convert, serial_number, error (a to_dict())."""
    body: dict[str, Any] = {"event": str(event)}
    body.update({key: value for key, value in fields.items() if value is not None})
    error = body.get("error")
    if event is Event.SEQUENCE_ERROR and isinstance(error, dict):
        body["message"], body["message_ko"] = error.get("message"), error.get("message_ko")
    else:
        body["message"], body["message_ko"] = _sentences(event, body)
    body["at"] = format_utc(at)
    return body


def _sentences(event: Event, body: dict[str, Any]) -> tuple[str, str]:
    values = {
        "wip_id": body.get("wip_id", "?"),
        "process_id": body.get("process_id", "?"),
        "batch_id": body.get("batch_id", "?"),
        "result": body.get("result", "?"),
    }
    serial = body.get("serial_number")
    en_action, ko_action = _ACTION.get(str(body.get("action")), ("request", "요청"))
    en, ko = _SENTENCES[event]
    return (
        en.format(
            **values,
            serial_number=serial or "(look it up in the MES)",
            action=en_action.format(**values),
        ),
        ko.format(
            **values, serial_number=serial or "(MES에서 확인)", action=ko_action.format(**values)
        ),
    )
