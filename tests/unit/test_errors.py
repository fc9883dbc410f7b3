"""Every error shape of mes-contract.md §4 (and the spec's format) maps to one typed error."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.mes.errors import MesError, MesErrorCode, classify_response, classify_transport

C = MesErrorCode


def deployed(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error_code": code, "message": message, "timestamp": "2026-11-26T08:00:00Z", **extra}


CASES: list[tuple[str, int, Any, MesErrorCode]] = [
    # contract §4, business-rule messages of the deployed MES
    (
        "wip not found",
        404,
        deployed("RES_001", "WIP Item with ID WIP-X-001 not found"),
        C.WIP_NOT_FOUND,
    ),
    (
        "prerequisite",
        400,
        deployed(
            "VAL_004",
            "WIP WIP-KR01PSA261102-001 cannot start process 2. "
            "Previous process 1 must be completed with PASS result.",
        ),
        C.PREREQUISITE_NOT_MET,
    ),
    (
        "scan pre-check",
        400,
        deployed(
            "VAL_001",
            "WIP WIP-KR01PSA261102-001 cannot start "
            "process 3. Previous process 2 must be completed with PASS result.",
        ),
        C.PREREQUISITE_NOT_MET,
    ),
    (
        "status for start",
        400,
        deployed(
            "VAL_004",
            "WIP WIP-A must be in CREATED, IN_PROGRESS, "
            "or FAILED status to start process 1. Current status: COMPLETED",
        ),
        C.INVALID_WIP_STATUS,
    ),
    (
        "status for convert",
        400,
        deployed(
            "VAL_004",
            "WIP WIP-A must be in COMPLETED status for "
            "serial conversion. Current status: IN_PROGRESS",
        ),
        C.INVALID_WIP_STATUS,
    ),
    (
        "converted status",
        400,
        deployed(
            "VAL_004",
            "WIP WIP-A must be in COMPLETED status for "
            "serial conversion. Current status: CONVERTED",
        ),
        C.ALREADY_CONVERTED,
    ),
    (
        "duplicate pass",
        400,
        deployed(
            "VAL_004",
            "WIP WIP-A already has PASS result for process 1. "
            "Duplicate PASS results are not allowed (BR-004).",
        ),
        C.DUPLICATE_PASS,
    ),
    (
        "incomplete",
        400,
        deployed(
            "VAL_004",
            "WIP WIP-A cannot be converted to serial. Missing "
            "PASS results for MANUFACTURING processes: [5, 6] (BR-005)",
        ),
        C.INCOMPLETE_PROCESSES,
    ),
    (
        "already converted",
        400,
        deployed("VAL_004", "WIP WIP-A is already converted to serial"),
        C.ALREADY_CONVERTED,
    ),
    (
        "already converted number",
        400,
        deployed("VAL_004", "WIP WIP-A already converted to serial number KR01PSA261102001"),
        C.ALREADY_CONVERTED,
    ),
    # contract §4, the status table
    (
        "validation 422",
        422,
        deployed(
            "VAL_001",
            "Request validation failed",
            details=[{"field": "query.process_id", "message": "Field required", "code": "missing"}],
        ),
        C.VALIDATION,
    ),
    ("inactive user", 400, deployed("VAL_001", "User account is inactive"), C.VALIDATION),
    ("login failed", 401, deployed("AUTH_001", "Incorrect username or password"), C.AUTH),
    ("token expired", 401, deployed("AUTH_002", "Invalid or expired token"), C.AUTH),
    ("token missing", 401, deployed("AUTH_002", "Authentication token is missing"), C.AUTH),
    ("user gone", 404, deployed("RES_006", "User not found"), C.AUTH),
    ("process not found", 404, deployed("RES_001", "Process with ID 9 not found"), C.VALIDATION),
    (
        "unknown operator",
        409,
        deployed("CONF_002", "Referenced resource does not exist"),
        C.CONFLICT,
    ),
    ("rework rejected", 409, deployed("CONF_002", "Database constraint violation"), C.CONFLICT),
    ("conf_001", 409, deployed("CONF_001", "Duplicate key"), C.CONFLICT),
    ("val_002", 409, deployed("VAL_002", "Conflict"), C.CONFLICT),
    (
        "rate limited",
        429,
        deployed("RATE_LIMIT_EXCEEDED", "Rate limit exceeded", retry_after=7),
        C.RATE_LIMITED,
    ),
    ("srv_001", 500, deployed("SRV_001", "Internal server error"), C.SERVER),
    ("srv_002", 500, deployed("SRV_002", "Database error"), C.SERVER),
    ("503 html", 503, "<html>Service Unavailable</html>", C.SERVER),
    # FastAPI's own {"detail": ...}: a wrong path is a configuration problem, not a WIP's
    ("unknown route", 404, {"detail": "Not Found"}, C.SERVER),
    ("wrong method", 405, {"detail": "Method Not Allowed"}, C.SERVER),
    ("fastapi 422", 422, {"detail": [{"loc": ["body", "result"], "msg": "bad"}]}, C.VALIDATION),
    # the integration spec's format, for a fixed future MES
    (
        "spec not found",
        404,
        {"error": "WIP_NOT_FOUND", "message": "WIP 'X' not found"},
        C.WIP_NOT_FOUND,
    ),
    (
        "spec prerequisite",
        400,
        {
            "error": "PREREQUISITE_NOT_MET",
            "message": "Process 1 must have PASS result before starting Process 2 (BR-003)",
        },
        C.PREREQUISITE_NOT_MET,
    ),
    (
        "spec status",
        400,
        {
            "error": "INVALID_WIP_STATUS",
            "message": "Cannot start process on WIP with status 'FAILED'",
        },
        C.INVALID_WIP_STATUS,
    ),
    (
        "spec duplicate",
        400,
        {
            "error": "DUPLICATE_PASS",
            "message": "Duplicate PASS results are not allowed for process 1 (BR-004)",
        },
        C.DUPLICATE_PASS,
    ),
    (
        "spec not started",
        400,
        {"error": "PROCESS_NOT_STARTED", "message": "Process must be started before completion"},
        C.PROCESS_NOT_STARTED,
    ),
    (
        "spec incomplete",
        400,
        {
            "error": "INCOMPLETE_PROCESSES",
            "message": "Missing PASS results for processes: [3, 5, 6] (BR-005)",
        },
        C.INCOMPLETE_PROCESSES,
    ),
    (
        "spec converted",
        400,
        {"error": "ALREADY_CONVERTED", "message": "WIP has already been converted to serial"},
        C.ALREADY_CONVERTED,
    ),
    ("spec unknown code", 400, {"error": "SOMETHING_NEW", "message": "?"}, C.VALIDATION),
    (
        "spec message only",
        400,
        {"error": "BAD", "message": "Previous process 1 must be completed with PASS result."},
        C.PREREQUISITE_NOT_MET,
    ),
    ("empty body 400", 400, None, C.VALIDATION),
    ("forbidden", 403, {"detail": "Not authenticated"}, C.AUTH),
    ("redirect to https", 301, "", C.SERVER),
    ("temporary redirect", 307, None, C.SERVER),
    # Too large to take in: never retried; whatever words the body has are not a business rule.
    ("too large, proxy page", 413, "<html>413 Request Entity Too Large</html>", C.VALIDATION),
    (
        "too large, rule-like words",
        413,
        deployed("ERR_413", "Previous process 1 must be completed with PASS result."),
        C.VALIDATION,
    ),
    ("too large, spec code", 413, {"error": "WIP_NOT_FOUND", "message": "?"}, C.VALIDATION),
]


@pytest.mark.parametrize(
    ("status", "body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_classify_response(status: int, body: Any, expected: MesErrorCode) -> None:
    error = classify_response(status, body)
    assert error.code is expected
    assert error.status == status


RETRYABLE = {C.NETWORK, C.TIMEOUT, C.SERVER, C.RATE_LIMITED, C.AUTH, C.TLS}


@pytest.mark.parametrize("code", list(MesErrorCode))
def test_every_code_has_a_retry_decision_and_both_languages(code: MesErrorCode) -> None:
    error = MesError(code)
    assert error.retryable is (code in RETRYABLE)
    assert error.message and error.message_ko
    assert error.message != error.message_ko


def test_spec_table_korean_wording() -> None:
    # integration spec §6.1
    assert MesError(C.WIP_NOT_FOUND).message_ko == "WIP를 찾을 수 없습니다"
    assert MesError(C.PREREQUISITE_NOT_MET).message_ko == "이전 공정을 먼저 완료하세요"
    assert MesError(C.DUPLICATE_PASS).message_ko == "이미 완료된 공정입니다"
    assert MesError(C.NETWORK).message_ko == "오프라인 모드로 전환됨"
    assert MesError(C.TIMEOUT).message_ko == "서버 응답 지연"


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        ("12", {}, 12.0),
        (None, {"retry_after": 3}, 3.0),
        ("soon", {"retry_after": "4"}, 4.0),
        (None, {}, None),
        ("-1", {}, None),
        ("nan", {}, None),
    ],
)
def test_retry_after(header: str | None, body: dict[str, Any], expected: float | None) -> None:
    error = classify_response(
        429, {"error_code": "RATE_LIMIT_EXCEEDED", **body}, retry_after=header
    )
    assert error.code is C.RATE_LIMITED
    assert error.retry_after == expected


def test_error_keeps_the_mes_detail_and_serialises() -> None:
    error = classify_response(400, deployed("VAL_004", "Duplicate PASS results are not allowed"))
    assert error.mes_code == "VAL_004"
    assert "Duplicate PASS" in error.detail
    as_dict = error.to_dict()
    assert as_dict["code"] == "DUPLICATE_PASS"
    assert as_dict["message_ko"] == "이미 완료된 공정입니다"
    assert as_dict["retryable"] is False
    assert "DUPLICATE_PASS" in str(error) and "HTTP 400" in str(error)


@pytest.mark.parametrize(
    ("kind", "sent", "code"),
    [
        ("timeout", True, C.TIMEOUT),
        ("timeout", False, C.TIMEOUT),
        ("network", True, C.NETWORK),
        ("network", False, C.NETWORK),
        ("tls", False, C.TLS),
    ],
)
def test_classify_transport(kind: str, sent: bool, code: MesErrorCode) -> None:
    error = classify_transport(kind, sent=sent, detail="x")
    assert error.code is code
    assert error.maybe_applied is sent
    assert error.retryable and error.status is None
