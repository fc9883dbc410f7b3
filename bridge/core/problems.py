"""What the bridge itself refuses, in words an operator understands (English and Korean).

MES refusals are `bridge.mes.MesError`; these are the bridge's own. Both turn into the same
`"error": {"code", "message", "message_ko", "detail"}` shape on `result/error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ProblemCode(StrEnum):
    INVALID_JSON = "INVALID_JSON"
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    UNKNOWN_STATION = "UNKNOWN_STATION"
    PROCESS_NOT_AT_STATION = "PROCESS_NOT_AT_STATION"
    CONVERT_NOT_ALLOWED = "CONVERT_NOT_ALLOWED"
    TOO_MANY_MEASUREMENTS = "TOO_MANY_MEASUREMENTS"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    NO_ACTIVE_BATCH = "NO_ACTIVE_BATCH"
    SEVERAL_ACTIVE_BATCHES = "SEVERAL_ACTIVE_BATCHES"
    UNKNOWN_BATCH = "UNKNOWN_BATCH"
    DUPLICATE_BATCH = "DUPLICATE_BATCH"
    WIP_BUSY = "WIP_BUSY"
    OUTBOX_FULL = "OUTBOX_FULL"
    STORAGE_FAILED = "STORAGE_FAILED"
    BLOCKED = "BLOCKED"
    TOO_LARGE_TO_SEND = "TOO_LARGE_TO_SEND"
    RETAINED = "RETAINED"


_WORDS: dict[ProblemCode, tuple[str, str]] = {
    ProblemCode.INVALID_JSON: ("The message is not valid JSON", "메시지가 올바른 JSON이 아닙니다"),
    ProblemCode.INVALID_PAYLOAD: (
        "The message has missing or wrong fields",
        "메시지의 필드가 없거나 잘못되었습니다",
    ),
    ProblemCode.MESSAGE_TOO_LARGE: ("The message is too large", "메시지가 너무 큽니다"),
    ProblemCode.UNKNOWN_STATION: (
        "This station is not configured on the bridge",
        "브리지에 설정되지 않은 스테이션입니다",
    ),
    ProblemCode.PROCESS_NOT_AT_STATION: (
        "This station does not run that process",
        "이 스테이션에서 수행하지 않는 공정입니다",
    ),
    ProblemCode.CONVERT_NOT_ALLOWED: (
        "This station may not convert WIPs to serial numbers",
        "이 스테이션은 시리얼 변환을 할 수 없습니다",
    ),
    ProblemCode.TOO_MANY_MEASUREMENTS: (
        "The batch has as many measurements as it may hold: nothing of this message was recorded",
        "배치의 측정값 개수가 한도에 도달했습니다: 이 메시지는 기록되지 않았습니다",
    ),
    ProblemCode.REQUEST_TOO_LARGE: (
        "The completion (완공) would be too large for the MES: "
        "nothing of this message was recorded",
        "완공 요청이 MES로 보내기에 너무 큽니다: 이 메시지는 기록되지 않았습니다",
    ),
    ProblemCode.NO_ACTIVE_BATCH: (
        "No batch is running on this station: scan a WIP first",
        "진행 중인 배치가 없습니다: 먼저 WIP를 스캔하세요",
    ),
    ProblemCode.SEVERAL_ACTIVE_BATCHES: (
        "Several batches are running on this station: give batch_id",
        "여러 배치가 진행 중입니다: batch_id를 지정하세요",
    ),
    ProblemCode.UNKNOWN_BATCH: (
        "No running batch has this batch_id",
        "해당 batch_id의 진행 중인 배치가 없습니다",
    ),
    ProblemCode.DUPLICATE_BATCH: (
        "A batch with this batch_id is already running on this station",
        "이 스테이션에서 같은 batch_id의 배치가 이미 진행 중입니다",
    ),
    ProblemCode.WIP_BUSY: (
        "This WIP is already in a running batch",
        "이 WIP는 이미 진행 중인 배치에 있습니다",
    ),
    ProblemCode.OUTBOX_FULL: (
        "Too many records are waiting for the MES: new batches are refused until it catches up",
        "MES 전송 대기 기록이 너무 많습니다: 전송될 때까지 새 배치를 시작할 수 없습니다",
    ),
    ProblemCode.STORAGE_FAILED: (
        "The bridge could not save this on its disk: try again or call maintenance",
        "브리지 디스크에 저장하지 못했습니다: 다시 시도하거나 관리자에게 문의하세요",
    ),
    ProblemCode.RETAINED: (
        "A retained message is an old command: publish commands without the retain flag",
        "보관(retain)된 메시지는 이전 명령입니다: retain 없이 발행하세요",
    ),
    ProblemCode.BLOCKED: (
        "Not sent to the MES because the batch's start (착공) was refused",
        "착공이 거부되어 MES로 전송하지 않았습니다",
    ),
    ProblemCode.TOO_LARGE_TO_SEND: (
        "Not sent to the MES because the request is larger than the bridge may send",
        "요청이 전송 한도보다 커서 MES로 전송하지 않았습니다",
    ),
}


@dataclass(frozen=True)
class Problem:
    """A refusal by the bridge: a stable code, operator wording and what exactly was wrong."""

    code: ProblemCode
    detail: str = ""

    @property
    def message(self) -> str:
        return _WORDS[self.code][0]

    @property
    def message_ko(self) -> str:
        return _WORDS[self.code][1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": str(self.code),
            "message": self.message,
            "message_ko": self.message_ko,
            "detail": self.detail,
        }
