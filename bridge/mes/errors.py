"""The MES error taxonomy: one exception type, classified from what the MES answered.

Pure: `classify_response` turns a status, a parsed body and a `Retry-After` header into a
`MesError`; `classify_transport` does the same for a request that got no answer. Nothing here does
I/O, so the whole mapping is tested with tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class MesErrorCode(StrEnum):
    WIP_NOT_FOUND = "WIP_NOT_FOUND"
    PREREQUISITE_NOT_MET = "PREREQUISITE_NOT_MET"
    INVALID_WIP_STATUS = "INVALID_WIP_STATUS"
    DUPLICATE_PASS = "DUPLICATE_PASS"
    INCOMPLETE_PROCESSES = "INCOMPLETE_PROCESSES"
    ALREADY_CONVERTED = "ALREADY_CONVERTED"
    PROCESS_NOT_STARTED = "PROCESS_NOT_STARTED"
    VALIDATION = "VALIDATION"
    CONFLICT = "CONFLICT"
    AUTH = "AUTH"
    RATE_LIMITED = "RATE_LIMITED"
    SERVER = "SERVER"
    TIMEOUT = "TIMEOUT"
    NETWORK = "NETWORK"
    TLS = "TLS"


@dataclass(frozen=True)
class _Meaning:
    retryable: bool
    en: str
    ko: str


# Operator-facing wording. The Korean for the first rows is the integration spec's §6.1 table.
# AUTH is retryable on purpose: a wrong password or an expired station key is fixed in the
# bridge's config, and the records waiting for that fix must not be thrown away meanwhile.
_MEANINGS: dict[MesErrorCode, _Meaning] = {
    MesErrorCode.WIP_NOT_FOUND: _Meaning(False, "WIP not found", "WIP를 찾을 수 없습니다"),
    MesErrorCode.PREREQUISITE_NOT_MET: _Meaning(
        False, "Complete the previous process first", "이전 공정을 먼저 완료하세요"
    ),
    MesErrorCode.DUPLICATE_PASS: _Meaning(
        False, "This process is already completed with PASS", "이미 완료된 공정입니다"
    ),
    MesErrorCode.NETWORK: _Meaning(
        True, "MES unreachable: switched to offline mode", "오프라인 모드로 전환됨"
    ),
    MesErrorCode.TIMEOUT: _Meaning(True, "The MES is responding slowly", "서버 응답 지연"),
    MesErrorCode.INVALID_WIP_STATUS: _Meaning(
        False,
        "The WIP's status does not allow this step",
        "WIP 상태가 이 작업을 허용하지 않습니다",
    ),
    MesErrorCode.INCOMPLETE_PROCESSES: _Meaning(
        False,
        "Not every process of this WIP has a PASS yet",
        "모든 공정이 PASS로 완료되지 않았습니다",
    ),
    MesErrorCode.ALREADY_CONVERTED: _Meaning(
        False,
        "This WIP is already converted to a serial number",
        "이미 시리얼로 변환된 WIP입니다",
    ),
    MesErrorCode.PROCESS_NOT_STARTED: _Meaning(
        False,
        "The process was not started (착공) before completion",
        "착공되지 않은 공정입니다",
    ),
    MesErrorCode.VALIDATION: _Meaning(
        False, "The MES rejected the request as invalid", "MES가 요청 값을 거부했습니다"
    ),
    MesErrorCode.CONFLICT: _Meaning(
        False,
        "The MES refused the record (data conflict)",
        "MES가 기록을 거부했습니다 (데이터 충돌)",
    ),
    MesErrorCode.AUTH: _Meaning(
        True,
        "MES login failed: check the bridge's MES account",
        "MES 인증 실패: 브리지의 MES 계정 설정을 확인하세요",
    ),
    MesErrorCode.RATE_LIMITED: _Meaning(
        True,
        "MES request limit reached: retrying shortly",
        "MES 요청 한도 초과: 잠시 후 다시 시도합니다",
    ),
    MesErrorCode.SERVER: _Meaning(
        True, "MES server error: will retry", "MES 서버 오류: 잠시 후 다시 시도합니다"
    ),
    # Retryable like AUTH: the fix is in the bridge's config (mes.ca_file) or the MES's
    # certificate, and the records waiting for it must be kept.
    MesErrorCode.TLS: _Meaning(
        True,
        "The MES's certificate is not trusted: check mes.ca_file and mes.url",
        "MES 인증서를 신뢰할 수 없습니다: mes.ca_file과 mes.url을 확인하세요",
    ),
}

# The deployed MES tells business rules apart only by message text (contract §4). First match
# wins, so "Current status: CONVERTED" is read as ALREADY_CONVERTED before the status rule.
_FRAGMENTS: tuple[tuple[str, MesErrorCode], ...] = (
    ("duplicate pass", MesErrorCode.DUPLICATE_PASS),
    ("(br-004)", MesErrorCode.DUPLICATE_PASS),
    ("already converted", MesErrorCode.ALREADY_CONVERTED),
    ("current status: converted", MesErrorCode.ALREADY_CONVERTED),
    ("has already been converted", MesErrorCode.ALREADY_CONVERTED),
    ("missing pass results", MesErrorCode.INCOMPLETE_PROCESSES),
    ("(br-005)", MesErrorCode.INCOMPLETE_PROCESSES),
    ("previous process", MesErrorCode.PREREQUISITE_NOT_MET),
    ("must have pass result before starting", MesErrorCode.PREREQUISITE_NOT_MET),
    ("must be in created, in_progress, or failed status", MesErrorCode.INVALID_WIP_STATUS),
    ("must be in completed status", MesErrorCode.INVALID_WIP_STATUS),
    ("cannot start process on wip with status", MesErrorCode.INVALID_WIP_STATUS),
    ("must be started before completion", MesErrorCode.PROCESS_NOT_STARTED),
)

# Deployed `error_code`s whose meaning does not depend on the message.
_MES_CODES: dict[str, MesErrorCode] = {
    "AUTH_001": MesErrorCode.AUTH,
    "AUTH_002": MesErrorCode.AUTH,
    "RES_006": MesErrorCode.AUTH,  # the token's user no longer exists
    "RATE_LIMIT_EXCEEDED": MesErrorCode.RATE_LIMITED,
    "CONF_001": MesErrorCode.CONFLICT,
    "CONF_002": MesErrorCode.CONFLICT,
    "VAL_002": MesErrorCode.CONFLICT,
}


class MesError(Exception):
    """Anything the MES refused, or a request that did not get an answer.

    `retryable` says whether the same request may succeed later unchanged. `maybe_applied` is set
    when the request left this machine and what came back is not a clean refusal (a read
    timeout, a dropped connection, a 5xx, an answer that cannot be read): the MES may have
    recorded it, so a resend must first check (trace) or be idempotent. `unsettled` is set when,
    on top of that, the MES may still be working on it (nothing came back from the MES itself:
    a timeout, a dropped connection, a proxy's 502/504): the check must wait until it cannot be.
    """

    def __init__(
        self,
        code: MesErrorCode,
        *,
        status: int | None = None,
        mes_code: str | None = None,
        detail: str = "",
        retry_after: float | None = None,
        maybe_applied: bool = False,
        unsettled: bool = False,
    ) -> None:
        meaning = _MEANINGS[code]
        self.code = code
        self.status = status
        self.mes_code = mes_code
        self.detail = detail
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied or unsettled
        self.unsettled = unsettled
        self.retryable = meaning.retryable
        self.message = meaning.en
        self.message_ko = meaning.ko
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        what = f" {self.mes_code}" if self.mes_code else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.code} ({where}{what}){detail}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used on result topics and in dead letters."""
        return {
            "code": str(self.code),
            "message": self.message,
            "message_ko": self.message_ko,
            "retryable": self.retryable,
            "status": self.status,
            "mes_code": self.mes_code,
            "detail": self.detail,
        }


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return str(value)


def _retry_after(header: str | None, body: dict[str, Any]) -> float | None:
    for raw in (header, body.get("retry_after")):
        try:
            seconds = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def classify_response(status: int, body: Any, *, retry_after: str | None = None) -> MesError:
    """Classify a non-2xx answer.

    Reads the deployed format (`{"error_code", "message"}`), the integration spec's
    (`{"error": "WIP_NOT_FOUND", "message"}`) and FastAPI's bare `{"detail": …}`.
    """
    fields: dict[str, Any] = body if isinstance(body, dict) else {}
    mes_code = _text(fields.get("error_code") or fields.get("error")) or None
    message = _text(fields.get("message") or fields.get("detail") or body)

    def error(code: MesErrorCode, **extra: Any) -> MesError:
        return MesError(code, status=status, mes_code=mes_code, detail=message, **extra)

    if status == 429 or mes_code == "RATE_LIMIT_EXCEEDED":
        return error(MesErrorCode.RATE_LIMITED, retry_after=_retry_after(retry_after, fields))
    if status == 401 or status == 403:
        return error(MesErrorCode.AUTH)
    if status >= 500:
        # Not a refusal: the MES (or the proxy in front of it) may have applied the request
        # before it failed. A proxy's own answer means the MES may even be at it still.
        unsettled = status in (502, 504) or not isinstance(body, dict)
        return error(MesErrorCode.SERVER, maybe_applied=True, unsettled=unsettled)
    if 300 <= status < 400:
        # A redirect means mes.url is out of date (http -> https, a moved proxy): no request
        # is wrong, so it waits for the configuration to be fixed rather than being dropped.
        return error(MesErrorCode.SERVER)
    if status == 413:  # too large to take in: the same request will never fit, dead-letter it
        return error(MesErrorCode.VALIDATION)
    if mes_code is not None and mes_code in MesErrorCode.__members__:
        return error(MesErrorCode(mes_code))

    lowered = message.lower()
    for fragment, code in _FRAGMENTS:
        if fragment in lowered:
            return error(code)
    if mes_code in _MES_CODES:
        return error(_MES_CODES[mes_code])
    if status == 404:
        # RES_001 names the WIP; a bare {"detail": "Not Found"} means the path itself is wrong
        # (a bad mes.url), which no WIP can fix: retry once the configuration is corrected.
        if mes_code == "RES_001" and "wip item" in lowered:
            return error(MesErrorCode.WIP_NOT_FOUND)
        if mes_code is None:
            return error(MesErrorCode.SERVER)
        return error(MesErrorCode.VALIDATION)
    if status == 409:
        return error(MesErrorCode.CONFLICT)
    if status == 405:
        return error(MesErrorCode.SERVER)
    return error(MesErrorCode.VALIDATION)


def classify_transport(kind: str, *, sent: bool, detail: str = "") -> MesError:
    """Classify a request that got no HTTP answer.

    `kind` is "timeout", "network" or "tls" (the TLS handshake failed: an untrusted or
    mismatched certificate); `sent` is whether the request may have reached the MES (a read
    timeout or a connection dropped after writing, as opposed to a refused connect).
    """
    codes = {"timeout": MesErrorCode.TIMEOUT, "tls": MesErrorCode.TLS}
    code = codes.get(kind, MesErrorCode.NETWORK)
    return MesError(code, detail=detail, unsettled=sent)
