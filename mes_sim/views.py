"""JSON shapes of the simulated MES: entities as the OpenAPI document draws them, error bodies in
both formats, and the simulator's ledger. Pure functions of the state."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from .model import (
    HistoryRecord,
    MesError,
    MesState,
    Process,
    ScanView,
    Semantics,
    Serial,
    User,
    Wip,
)

JSONObject = dict[str, object]


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the MES writes every datetime."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def wip_json(wip: Wip) -> JSONObject:
    return {
        "id": wip.id,
        "wip_id": wip.wip_id,
        "lot_id": wip.lot_id,
        "sequence_in_lot": wip.sequence_in_lot,
        "status": str(wip.status),
        "current_process_id": wip.current_process_id,
        "serial_id": wip.serial_id,
        "created_at": iso(wip.created_at),
        "updated_at": iso(wip.updated_at),
        "completed_at": iso(wip.completed_at),
        "converted_at": iso(wip.converted_at),
    }


def scan_json(view: ScanView) -> JSONObject:
    return {
        **wip_json(view.wip),
        "has_pass_for_process": view.has_pass_for_process,
        "pass_warning_message": view.pass_warning_message,
    }


def process_json(process: Process) -> JSONObject:
    return {
        "id": process.id,
        "process_number": process.number,
        "process_code": process.code,
        "process_name_ko": process.name_ko,
        "process_name_en": process.name_en,
        "description": process.description,
        "estimated_duration_seconds": process.estimated_duration_seconds,
        "quality_criteria": {},
        "is_active": process.is_active,
        "sort_order": process.sort_order,
        "auto_print_label": False,
        "label_template_type": None,
        "process_type": process.process_type,
        "defect_items": list(process.defect_items),
        "created_at": iso(process.created_at),
        "updated_at": iso(process.created_at),
    }


def history_json(record: HistoryRecord) -> JSONObject:
    return {
        "id": record.id,
        "wip_item_id": record.wip_pk,
        "process_id": record.process_id,
        "operator_id": record.operator_id,
        "result": str(record.result),
        "measurements": record.measurements,
        "defects": record.defects,
        "notes": record.notes,
        "started_at": iso(record.started_at),
        "completed_at": iso(record.completed_at),
        "duration_seconds": record.duration_seconds,
        "created_at": iso(record.created_at),
    }


def serial_json(serial: Serial) -> JSONObject:
    return {
        "id": serial.id,
        "serial_number": serial.serial_number,
        "lot_id": serial.lot_id,
        "sequence_in_lot": serial.sequence_in_lot,
        "status": "CREATED",
        "rework_count": 0,
        "failure_reason": None,
        "created_at": iso(serial.created_at),
        "updated_at": iso(serial.created_at),
        "completed_at": None,
    }


def user_json(user: User) -> JSONObject:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "full_name": user.full_name,
        "role": user.role,
        "is_active": user.is_active,
    }


def trace_json(state: MesState, wip: Wip) -> JSONObject:
    serial = state.serial(wip.serial_id)
    entries: list[JSONObject] = []
    for record in state.history_of(wip.id):
        process = state.process(record.process_id)
        entries.append(
            {
                "process_number": process.number,
                "process_id": process.id,
                "process_code": process.code,
                "process_name": process.name_ko,
                "operator_id": record.operator_id,
                "result": str(record.result),
                "start_time": iso(record.started_at),
                "complete_time": iso(record.completed_at),
                "duration_seconds": record.duration_seconds,
                "measurements": record.measurements,
                "defects": record.defects,
                "notes": record.notes,
            }
        )
    return {
        "wip_id": wip.wip_id,
        "id": wip.id,
        "lot_id": wip.lot_id,
        "status": str(wip.status),
        "serial_id": wip.serial_id,
        "serial_number": serial.serial_number if serial else None,
        "created_at": iso(wip.created_at),
        "completed_at": iso(wip.completed_at),
        "converted_at": iso(wip.converted_at),
        "process_history": entries,
    }


def error_body(
    error: MesError, semantics: Semantics, *, path: str, now: datetime, trace_id: str
) -> JSONObject:
    details = [{"field": d.field, "message": d.message, "code": d.code} for d in error.details]
    if semantics == "spec":
        body: JSONObject = {"error": error.spec_code, "message": error.message}
    else:
        body = {"error_code": error.code, "message": error.message}
    if details:
        body["details"] = details
    if error.retry_after is not None:
        body["retry_after"] = error.retry_after
    if semantics == "deployed":
        body.update(timestamp=iso(now), path=path, trace_id=trace_id)
    return body


def ledger_json(
    state: MesState, counters: Mapping[str, object], faults: Mapping[str, object]
) -> JSONObject:
    """What the simulator holds, in the station's terms: WIP strings and process numbers."""

    def wip_id(wip_pk: int) -> str:
        return state.wip(wip_pk).wip_id

    def number(process_id: int) -> int:
        return state.process(process_id).number

    history = [
        {
            "id": h.id,
            "wip_id": wip_id(h.wip_pk),
            "process_number": number(h.process_id),
            "process_id": h.process_id,
            "operator_id": h.operator_id,
            "result": str(h.result),
            "measurements": h.measurements,
            "defects": h.defects,
            "notes": h.notes,
            "started_at": iso(h.started_at),
            "completed_at": iso(h.completed_at),
            "duration_seconds": h.duration_seconds,
        }
        for h in state.history
    ]
    starts = [
        {
            "wip_id": wip_id(s.wip_pk),
            "process_number": number(s.process_id),
            "process_id": s.process_id,
            "operator_id": s.operator_id,
            "started_at": iso(s.started_at),
            "open": s.open,
        }
        for s in state.starts
    ]
    wips = []
    for wip in state.wips.values():
        serial = state.serial(wip.serial_id)
        wips.append(
            {
                "id": wip.id,
                "wip_id": wip.wip_id,
                "status": str(wip.status),
                "serial_number": serial.serial_number if serial else None,
            }
        )
    return {
        "history": history,
        "starts": starts,
        "wips": wips,
        **counters,
        "semantics": state.semantics,
        "faults": dict(faults),
    }
