"""The deployed MES over real loopback HTTP: routes, shapes, every error row of contract §4,
request validation and the authentication rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from mes_sim import MesSimulator

from .support import OP, Mes

WIP_FIELDS = {
    "id",
    "wip_id",
    "lot_id",
    "sequence_in_lot",
    "status",
    "current_process_id",
    "serial_id",
    "created_at",
    "updated_at",
    "completed_at",
    "converted_at",
}
ERROR_FIELDS = {"error_code", "message", "timestamp", "path", "trace_id"}


def error(answer: httpx.Response, status: int, code: str, message: str = "") -> dict[str, Any]:
    """Assert a deployed-format error and return its body."""
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) >= ERROR_FIELDS, body
    assert body["error_code"] == code
    assert message in body["message"]
    assert body["timestamp"].endswith("Z")
    return body


# -- the flow and the shapes -------------------------------------------------------------------


def test_scan_start_complete_generate(sim: MesSimulator, mes: Mes) -> None:
    wip = sim.wip_ids[0]
    scanned = mes.scan(wip, process_id=1)
    assert scanned.status_code == 200
    body = scanned.json()
    assert set(body) == WIP_FIELDS | {"has_pass_for_process", "pass_warning_message"}
    assert (body["id"], body["sequence_in_lot"], body["status"]) == (101, 1, "CREATED")
    assert body["has_pass_for_process"] is False and body["created_at"].endswith("Z")

    started = mes.start(body["id"], 1, started_at="2025-06-02T09:00:00Z", equipment_id=3)
    assert started.status_code == 200
    assert set(started.json()) == WIP_FIELDS  # the bare WIP: no wrapper, no message
    assert (started.json()["status"], started.json()["current_process_id"]) == ("IN_PROGRESS", 1)

    done = mes.complete(
        101,
        1,
        "pass",  # case-insensitive
        measurements={"torque_nm": 1.5},
        defects=[],
        notes="ok",
        started_at="2025-06-02T09:00:00Z",
        completed_at="2025-06-02T09:00:30+00:00",
    )
    assert done.status_code == 200, done.text
    history, item = done.json()["process_history"], done.json()["wip_item"]
    assert history["result"] == "PASS" and history["duration_seconds"] == 30
    assert (history["started_at"], history["completed_at"]) == (
        "2025-06-02T09:00:00Z",
        "2025-06-02T09:00:30Z",
    )
    assert (history["wip_item_id"], history["operator_id"], item["status"]) == (
        101,
        OP,
        "IN_PROGRESS",
    )

    again = mes.scan(wip, process_id=1).json()
    assert again["has_pass_for_process"] is True and "PASS" in again["pass_warning_message"]

    for n in range(2, 7):
        assert mes.run(101, n).status_code == 200
    assert mes.http.get("/api/v1/wip-items/101", headers=mes.auth).json()["status"] == "COMPLETED"

    serial = mes.generate(wip, print_label="false")
    assert serial.status_code == 201
    number = serial.json()["serial_number"]
    assert re.fullmatch(r"[A-Z0-9]{13}\d{3}", number) and number == "KR01PSA261102001"
    (row,) = [w for w in sim.ledger()["wips"] if w["wip_id"] == wip]
    assert (row["status"], row["serial_number"]) == ("CONVERTED", number)


def test_trace_lists_the_history(sim: MesSimulator, mes: Mes) -> None:
    wip = sim.wip_ids[0]
    mes.run(101, 1, "FAIL")
    mes.start(101, 1, started_at="2025-06-02T09:00:00Z")
    done = mes.complete(
        101,
        1,
        measurements={"v": 3.7},
        started_at="2025-06-02T09:00:00Z",
        completed_at="2025-06-02T09:01:00Z",
    )
    assert done.status_code == 200, done.text
    trace = mes.trace(wip)
    assert trace.status_code == 200
    body = trace.json()
    assert (body["wip_id"], body["status"], body["serial_id"]) == (wip, "IN_PROGRESS", None)
    assert [(h["process_number"], h["result"]) for h in body["process_history"]] == [
        (1, "FAIL"),
        (1, "PASS"),
    ]
    last = body["process_history"][-1]
    assert {
        "start_time",
        "complete_time",
        "duration_seconds",
        "measurements",
        "defects",
        "notes",
    } <= set(last)
    assert (last["start_time"], last["complete_time"], last["duration_seconds"]) == (
        "2025-06-02T09:00:00Z",
        "2025-06-02T09:01:00Z",
        60,
    )
    assert last["measurements"] == {"v": 3.7}


def test_health_and_processes_need_no_auth(sim: MesSimulator) -> None:
    with httpx.Client(base_url=sim.url) as http:
        assert http.get("/health").json()["status"] == "healthy"
        processes = http.get("/api/v1/processes/active").json()
    assert [(p["process_number"], p["id"]) for p in processes] == [(n, n) for n in range(1, 7)]
    required = {"process_code", "process_name_ko", "process_name_en", "sort_order", "created_at"}
    assert all(required <= set(p) and p["process_type"] == "MANUFACTURING" for p in processes)


def test_unknown_routes_and_methods(sim: MesSimulator) -> None:
    with httpx.Client(base_url=sim.url) as http:
        for path in ("/api/health", "/api/v1/nothing", "/", "/api/v1/wip-items/101/scan/x"):
            answer = http.get(path)
            assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"}), path
        for method, path in (
            ("POST", "/health"),
            ("GET", "/api/v1/wip-items/101/start-process"),
            ("DELETE", "/api/v1/wip-items/101"),
        ):
            answer = http.request(method, path)
            assert (answer.status_code, answer.json()) == (405, {"detail": "Method Not Allowed"})


def test_connection_is_kept_alive(sim: MesSimulator, mes: Mes) -> None:
    first = mes.scan(sim.wip_ids[0])
    second = mes.http.get("/api/v1/processes/active")
    assert first.headers["content-length"] == str(len(first.content))
    assert second.extensions["network_stream"] is first.extensions["network_stream"]


def test_hostile_barcode_is_one_unknown_wip(sim: MesSimulator, mes: Mes) -> None:
    for barcode in ("../../auth/me#", "WIP?x=1&y=2", "a/b", "..", "WIP 한글"):
        escaped = quote(barcode, safe="").replace(".", "%2E")
        answer = mes.scan(escaped)
        error(answer, 404, "RES_001", f"WIP Item with ID {barcode} not found")
    assert sim.ledger()["starts"] == []


def test_process_id_offset(
    sim_factory: Callable[..., MesSimulator], connect: Callable[..., Mes]
) -> None:
    sim = sim_factory(process_id_offset=10)
    mes = connect(sim)
    processes = mes.http.get("/api/v1/processes/active").json()
    assert [(p["process_number"], p["id"]) for p in processes] == [(n, n + 10) for n in range(1, 7)]
    error(mes.start(101, 1), 404, "RES_001", "Process with ID 1 not found")
    error(mes.complete(101, 17), 404, "RES_001", "Process with ID 17 not found")
    error(mes.scan(sim.wip_ids[0], process_id=3), 404, "RES_001", "Process with ID 3 not found")
    assert mes.run(101, 11).status_code == 200
    assert mes.scan(sim.wip_ids[0], process_id=12).status_code == 200
    assert mes.start(101, 12).json()["current_process_id"] == 12
    ledger = sim.ledger()
    assert [(h["process_number"], h["process_id"]) for h in ledger["history"]] == [(1, 11)]
    assert [(s["process_number"], s["open"]) for s in ledger["starts"]] == [(1, False), (2, True)]


# -- contract §4, row by row -------------------------------------------------------------------


def test_400_val_004_business_rules(sim: MesSimulator, mes: Mes) -> None:
    wip = sim.wip_ids[0]
    error(
        mes.start(101, 2),
        400,
        "VAL_004",
        f"WIP {wip} cannot start process 2. Previous process 1 must be completed with PASS result.",
    )
    mes.run(101, 1)
    error(
        mes.complete(101, 1),
        400,
        "VAL_004",
        f"WIP {wip} already has PASS result for process 1. "
        "Duplicate PASS results are not allowed (BR-004).",
    )
    error(
        mes.convert(101),
        400,
        "VAL_004",
        f"WIP {wip} must be in COMPLETED status for serial conversion. Current status: IN_PROGRESS",
    )
    mes.run_all(102)
    error(mes.start(102, 1), 400, "VAL_004", "must be in CREATED, IN_PROGRESS, or FAILED status")
    assert mes.generate(sim.wip_ids[1]).status_code == 201
    error(mes.convert(102), 400, "VAL_004", "Current status: CONVERTED")
    error(mes.generate(sim.wip_ids[1]), 400, "VAL_004", "already converted to serial number")
    error(mes.start(102, 3), 400, "VAL_004", "is already converted to serial")


def test_400_val_001_scan_precheck(sim: MesSimulator, mes: Mes) -> None:
    error(
        mes.scan(sim.wip_ids[0], process_id=2),
        400,
        "VAL_001",
        "cannot start process 2. Previous process 1 must be completed with PASS result.",
    )


def test_401_auth(sim: MesSimulator, mes: Mes) -> None:
    http = mes.http
    bad = http.post("/api/v1/auth/login/json", json={"username": "admin", "password": "nope"})
    error(bad, 401, "AUTH_001")
    form_bad = http.post("/api/v1/auth/login", data={"username": "ghost", "password": "x"})
    error(form_bad, 401, "AUTH_001")
    missing = http.post(
        "/api/v1/wip-items/101/start-process", json={"process_id": 1, "operator_id": 2}
    )
    error(missing, 401, "AUTH_002", "Authentication token is missing")
    assert missing.headers["www-authenticate"] == "Bearer"
    forged = http.get(
        f"/api/v1/wip-items/{sim.wip_ids[0]}/trace", headers={"Authorization": "Bearer forged"}
    )
    error(forged, 401, "AUTH_002", "Invalid or expired token")
    assert sim.ledger()["starts"] == []


def test_404_res_001(sim: MesSimulator, mes: Mes) -> None:
    error(
        mes.scan("WIP-NOPE0000000-999"),
        404,
        "RES_001",
        "WIP Item with ID WIP-NOPE0000000-999 not found",
    )
    error(mes.start(999, 1), 404, "RES_001", "WIP Item with ID 999 not found")
    error(mes.trace("WIP-NOPE"), 404, "RES_001")
    error(mes.generate("WIP-NOPE"), 404, "RES_001")
    error(mes.http.get("/api/v1/wip-items/5", headers=mes.auth), 404, "RES_001")


def test_409_conf_002(sim: MesSimulator, mes: Mes) -> None:
    error(mes.start(101, 1, operator_id=99), 409, "CONF_002", "Referenced resource does not exist")
    mes.start(101, 1, started_at="2025-06-02T09:00:00Z")
    error(mes.complete(101, 1, "REWORK"), 409, "CONF_002", "Database constraint violation")
    error(
        mes.complete(101, 1, operator_id=99), 409, "CONF_002", "Referenced resource does not exist"
    )
    early = mes.complete(
        101, 1, started_at="2025-06-02T08:00:00Z", completed_at="2025-06-02T08:30:00Z"
    )
    error(early, 409, "CONF_002", "Database constraint violation")
    assert sim.ledger()["history"] == []
    mes.run_all(102)
    error(mes.convert(102, operator_id=77), 409, "CONF_002")


def test_422_validation(sim: MesSimulator, mes: Mes) -> None:
    # Fields are named without their location, as the deployed MES says them (contract §4).
    def fields(answer: httpx.Response) -> dict[str, str]:
        body = error(answer, 422, "VAL_001", "Request validation failed")
        assert all(set(d) == {"field", "message", "code"} for d in body["details"])
        return {d["field"]: d["code"] for d in body["details"]}

    post = mes.http.post
    assert fields(mes.start("WIP-KR01PSA261102-001", 1)) == {"wip_id": "int_parsing"}
    assert fields(mes.start(101, 7, operator_id=0)) == {
        "process_id": "less_than_equal",
        "operator_id": "greater_than",
    }
    assert fields(mes.start(101, 1, started_at="yesterday")) == {
        "started_at": "datetime_from_date_parsing"
    }
    # process_id and operator_id only in the body: the deployed MES wants them in the query
    only_body = post(
        "/api/v1/wip-items/101/complete-process",
        headers=mes.auth,
        json={"result": "PASS", "process_id": 1, "operator_id": 2},
    )
    assert fields(only_body) == {"process_id": "missing", "operator_id": "missing"}
    assert fields(mes.complete(101, 1, "MAYBE")) == {"result": "string_pattern_mismatch"}
    assert fields(mes.complete(101, 1, notes="x" * 5001)) == {"notes": "string_too_long"}
    assert fields(mes.complete(101, 1, measurements=[1])) == {"measurements": "dict_type"}
    assert fields(mes.complete(101, 1, operator_id=0)) == {"operator_id": "greater_than"}
    no_body = post(
        "/api/v1/wip-items/101/complete-process?process_id=1&operator_id=2", headers=mes.auth
    )
    assert fields(no_body) == {"body": "missing"}
    broken_json = post(
        "/api/v1/wip-items/101/convert-to-serial", headers=mes.auth, content=b"{nope"
    )
    assert fields(broken_json) == {"1": "json_invalid"}  # the offset where decoding failed
    assert fields(mes.http.post("/api/v1/serials/generate-from-wip")) == {"wip_id": "missing"}
    assert fields(mes.generate(sim.wip_ids[0], print_label="perhaps")) == {
        "print_label": "bool_parsing"
    }
    assert sim.ledger()["history"] == [] and sim.ledger()["starts"] == []


def test_500_srv_001(sim: MesSimulator, mes: Mes) -> None:
    mes.run_all(101)
    error(mes.convert(101), 500, "SRV_001")  # the deployed bug: nothing changes
    assert mes.scan(sim.wip_ids[0]).json()["status"] == "COMPLETED"
    mes.start(102, 1)
    naive = mes.complete(102, 1, started_at="2025-06-02T09:00:00")
    error(naive, 500, "SRV_001")
    assert len(sim.ledger()["history"]) == 6


def test_convert_working(sim: MesSimulator, mes: Mes) -> None:
    mes.run_all(101)
    assert sim.set_faults(convert="working")["convert"] == "working"
    answer = mes.convert(101)
    assert answer.status_code == 200
    serial, item = answer.json()["serial"], answer.json()["wip_item"]
    assert item["status"] == "CONVERTED" and item["serial_id"] == serial["id"]
    assert re.fullmatch(r"[A-Z0-9]{13}\d{3}", serial["serial_number"])
    error(mes.convert(101), 400, "VAL_004", "Current status: CONVERTED")


def test_labels_printed_by_default(sim: MesSimulator, mes: Mes) -> None:
    assert mes.generate(sim.wip_ids[0]).status_code == 201  # print_label defaults to true
    assert mes.generate(sim.wip_ids[1], print_label="false").status_code == 201
    assert mes.generate(sim.wip_ids[2], print_label="true").status_code == 201
    assert sim.ledger()["labels_printed"] == 2


# -- who may call what -------------------------------------------------------------------------


def test_scan_accepts_a_station_key_and_nothing_else_does(sim: MesSimulator) -> None:
    mes = Mes(sim)
    key = {"X-API-Key": "sim-station-key"}
    try:
        assert mes.scan(sim.wip_ids[0], headers=key).status_code == 200
        error(mes.scan(sim.wip_ids[0], headers={"X-API-Key": "guess"}), 401, "AUTH_002")
        error(mes.scan(sim.wip_ids[0], headers={}), 401, "AUTH_002", "token is missing")
        start = mes.http.post(
            "/api/v1/wip-items/101/start-process",
            headers=key,
            json={"process_id": 1, "operator_id": 2},
        )
        error(start, 401, "AUTH_002", "Authentication token is missing")
        as_bearer = mes.http.get(
            f"/api/v1/wip-items/{sim.wip_ids[0]}/trace",
            headers={"Authorization": "Bearer sim-station-key"},
        )
        error(as_bearer, 401, "AUTH_002", "Invalid or expired token")
    finally:
        mes.close()


def test_login_forms_and_issued_station_keys(sim: MesSimulator) -> None:
    with httpx.Client(base_url=sim.url) as http:
        form = http.post(
            "/api/v1/auth/login", data={"username": "operator1", "password": "operator1-pass"}
        )
        assert form.status_code == 200
        body = form.json()
        assert (body["token_type"], body["expires_in"], body["user"]["id"]) == ("bearer", 1800, 2)
        assert "station_api_key" not in body and body["refresh_token"]
        login = http.post(
            "/api/v1/auth/login/json",
            json={"username": "admin", "password": "admin-pass", "station_id": "ST-01"},
        )
        key = login.json()["station_api_key"]
        scan = http.post(f"/api/v1/wip-items/{sim.wip_ids[0]}/scan", headers={"X-API-Key": key})
        assert scan.status_code == 200
        refreshed = http.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
        assert refreshed.status_code == 200
        again = refreshed.json()
        assert again["refresh_token"] == body["refresh_token"]  # not rotated
        assert again["access_token"] != body["access_token"] and again["user"]["id"] == 2
        bad = http.post("/api/v1/auth/refresh", json={"refresh_token": body["access_token"]})
        error(bad, 401, "AUTH_002")
        empty = http.post("/api/v1/auth/login/json", json={"username": "", "password": "x"})
        assert empty.status_code == 422
    ledger = sim.ledger()
    assert (ledger["logins"], ledger["refreshes"]) == (2, 1)


def test_operator_is_recorded_not_the_logged_in_user(sim: MesSimulator, mes: Mes) -> None:
    mes.start(101, 1, operator_id=1)
    mes.complete(101, 1, operator_id=2)
    ledger = sim.ledger()
    assert ledger["starts"][0]["operator_id"] == 1
    assert ledger["history"][0]["operator_id"] == 2


def test_repeated_start_overwrites(sim: MesSimulator, mes: Mes) -> None:
    assert mes.start(101, 1, operator_id=1, started_at="2025-06-02T09:00:00Z").status_code == 200
    assert mes.start(101, 1, operator_id=2, started_at="2025-06-02T09:05:00Z").status_code == 200
    (start,) = sim.ledger()["starts"]
    assert (start["operator_id"], start["started_at"]) == (2, "2025-06-02T09:05:00Z")


def test_complete_without_started_at_records_zero_duration(sim: MesSimulator, mes: Mes) -> None:
    mes.start(101, 1, started_at="2025-06-02T09:00:00Z")
    done = mes.complete(101, 1, completed_at="2099-01-01T00:00:00Z").json()["process_history"]
    assert done["started_at"] == done["completed_at"] and done["duration_seconds"] == 0
