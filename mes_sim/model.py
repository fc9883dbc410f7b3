"""The simulated MES's state and business rules: no sockets, no clock, no sleeping.

Two rule sets live side by side. ``deployed`` is the F2X NeuroHub backend as it runs in the
factory (mes-contract.md), quirks included; ``spec`` is the stricter behaviour of the integration
spec (batch-lifecycle-integration.ko.md §2). Every refusal is a :class:`MesError` carrying the
deployed ``error_code`` and the spec's code side by side, so the HTTP adapter can render either
format and the tables in the tests can name the spec's meaning even for the deployed wording.

Every time is passed in as ``now`` (aware UTC). The one place where the deployed MES is not
atomic (BR-004) is split into :meth:`MesState.prepare_completion` and
:meth:`MesState.commit_completion`, so the adapter can open the race window between them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

Semantics = Literal["deployed", "spec"]
SEMANTICS: tuple[Semantics, ...] = ("deployed", "spec")

DEFAULT_LOT = "KR01PSA261102"
STATION_API_KEY = "sim-station-key"
PROCESS_COUNT = 6
WIP_PK_BASE = 100  # WIP n has id 100 + n: a client mixing up id and sequence gets caught
SERIAL_PK_BASE = 500
LOT_PK = 1
REFRESH_TTL = timedelta(days=7)


class WipStatus(enum.StrEnum):
    CREATED = "CREATED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CONVERTED = "CONVERTED"


class Result(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    REWORK = "REWORK"


# -- errors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One request-validation problem, as the deployed MES lists it in ``details``."""

    field: str
    message: str
    code: str


class MesError(Exception):
    """A refusal. ``code`` is the deployed MES's ``error_code``; ``spec_code`` is what the
    integration spec calls the same situation (and what a client should recover from the
    deployed message). ``message`` is already worded for the semantics it was raised under."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        spec_code: str,
        details: Sequence[FieldError] = (),
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.spec_code = spec_code
        self.message = message
        self.details = tuple(details)
        self.retry_after = retry_after


def _worded(sem: Semantics, deployed: str, spec: str) -> str:
    return deployed if sem == "deployed" else spec


def wip_not_found(sem: Semantics, ref: object) -> MesError:
    message = _worded(sem, f"WIP Item with ID {ref} not found", f"WIP '{ref}' not found")
    return MesError(404, "RES_001", message, spec_code="WIP_NOT_FOUND")


def process_not_found(sem: Semantics, process_id: int) -> MesError:
    message = f"Process with ID {process_id} not found"
    return MesError(404, "RES_001", message, spec_code="PROCESS_NOT_FOUND")


def unknown_operator(sem: Semantics, operator_id: int) -> MesError:
    # The deployed MES only sees the foreign-key violation, not which reference failed.
    message = _worded(
        sem, "Referenced resource does not exist", f"Operator {operator_id} does not exist"
    )
    return MesError(409, "CONF_002", message, spec_code="OPERATOR_NOT_FOUND")


def constraint_violation(sem: Semantics, spec_message: str) -> MesError:
    message = _worded(sem, "Database constraint violation", spec_message)
    return MesError(409, "CONF_002", message, spec_code="CONFLICT")


def server_error(sem: Semantics) -> MesError:
    return MesError(500, "SRV_001", "Internal server error", spec_code="INTERNAL_ERROR")


def validation_failed(sem: Semantics, details: Sequence[FieldError]) -> MesError:
    return MesError(
        422, "VAL_001", "Request validation failed", spec_code="VALIDATION_ERROR", details=details
    )


def token_missing(sem: Semantics) -> MesError:
    return MesError(401, "AUTH_002", "Authentication token is missing", spec_code="UNAUTHORIZED")


def token_invalid(sem: Semantics) -> MesError:
    return MesError(401, "AUTH_002", "Invalid or expired token", spec_code="UNAUTHORIZED")


def login_failed(sem: Semantics) -> MesError:
    return MesError(401, "AUTH_001", "Incorrect username or password", spec_code="UNAUTHORIZED")


def rate_limited(sem: Semantics, *, limit: int, window_s: float, retry_after: int) -> MesError:
    message = f"Rate limit exceeded: {limit} per {window_s:g} seconds. Retry after {retry_after}s."
    return MesError(
        429, "RATE_LIMIT_EXCEEDED", message, spec_code="RATE_LIMITED", retry_after=retry_after
    )


def unavailable(sem: Semantics) -> MesError:
    return MesError(
        503, "SRV_002", "Service temporarily unavailable", spec_code="SERVICE_UNAVAILABLE"
    )


@dataclass(frozen=True)
class Refusal:
    """Why a process may not start (BR-003), worded for both semantics; the caller picks the
    deployed error_code (VAL_004 on start-process, VAL_001 on scan's pre-check)."""

    spec_code: str
    deployed: str
    spec: str

    def error(self, sem: Semantics, code: str) -> MesError:
        return MesError(400, code, _worded(sem, self.deployed, self.spec), spec_code=self.spec_code)


# -- entities ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password: str
    full_name: str
    email: str
    role: str
    is_active: bool = True


@dataclass(frozen=True)
class Process:
    id: int
    number: int
    code: str
    name_ko: str
    name_en: str
    description: str
    estimated_duration_seconds: int
    defect_items: tuple[str, ...]
    created_at: datetime
    is_active: bool = True
    process_type: str = "MANUFACTURING"

    @property
    def sort_order(self) -> int:
        return self.number


@dataclass
class Wip:
    id: int
    wip_id: str
    lot_id: int
    sequence_in_lot: int
    created_at: datetime
    updated_at: datetime
    status: WipStatus = WipStatus.CREATED
    current_process_id: int | None = None
    serial_id: int | None = None
    completed_at: datetime | None = None
    converted_at: datetime | None = None


@dataclass
class StartRecord:
    """A 착공 the MES holds. It stays open until a completion of the same process closes it;
    a repeated start overwrites the open one instead of adding another."""

    wip_pk: int
    process_id: int
    operator_id: int
    started_at: datetime
    equipment_id: int | None = None
    open: bool = True


@dataclass(frozen=True)
class HistoryRecord:
    id: int
    wip_pk: int
    process_id: int
    operator_id: int
    result: Result
    measurements: dict[str, object]
    defects: list[object]
    notes: str | None
    started_at: datetime
    completed_at: datetime
    created_at: datetime

    @property
    def duration_seconds(self) -> int:
        return int((self.completed_at - self.started_at).total_seconds())


@dataclass(frozen=True)
class Serial:
    id: int
    serial_number: str
    lot_id: int
    sequence_in_lot: int
    wip_pk: int
    created_at: datetime


# -- commands (already validated by the adapter) --------------------------------------------


@dataclass(frozen=True)
class StartCommand:
    process_id: int
    operator_id: int
    equipment_id: int | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class CompleteCommand:
    process_id: int
    operator_id: int
    result: Result
    measurements: dict[str, object] | None = None
    defects: list[object] | None = None
    notes: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True)
class ConvertCommand:
    operator_id: int
    notes: str | None = None


@dataclass(frozen=True)
class ScanView:
    wip: Wip
    has_pass_for_process: bool
    pass_warning_message: str | None


@dataclass(frozen=True)
class CompletionPlan:
    """A completion that passed the checks made before the insert."""

    wip_pk: int
    process_id: int
    command: CompleteCommand
    started_at: datetime
    completed_at: datetime
    # The deployed MES checks BR-004 with a SELECT and inserts later in another statement.
    duplicate_check_is_racy: bool


def as_utc(moment: datetime) -> datetime:
    """Naive times are read as UTC, as PostgreSQL does for timestamptz in a UTC session."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- seed -------------------------------------------------------------------------------------

SEED_USERS = (
    User(1, "admin", "admin-pass", "System Administrator", "admin@f2x.example", "ADMIN"),
    User(2, "operator1", "operator1-pass", "Operator One", "operator1@f2x.example", "OPERATOR"),
)

# number, code, Korean name, English name, estimated seconds, defect items
_CATALOG: tuple[tuple[int, str, str, str, int, tuple[str, ...]], ...] = (
    (1, "LASER_MARKING", "레이저 마킹", "Laser Marking", 60, ("MARK_BLUR", "MARK_POSITION")),
    (2, "LMA_ASSEMBLY", "LMA 조립", "LMA Assembly", 300, ("MISSING_PART", "LOOSE_SCREW")),
    (3, "SENSOR_INSPECTION", "센서 검사", "Sensor Inspection", 120, ("SENSOR_OUT_OF_RANGE",)),
    (4, "FIRMWARE_UPLOAD", "펌웨어 업로드", "Firmware Upload", 180, ("FLASH_FAILED",)),
    (5, "ROBOT_ASSEMBLY", "로봇 조립", "Robot Assembly", 600, ("TORQUE_LOW", "MISALIGNED")),
    (6, "PERFORMANCE_TEST", "성능 검사", "Performance Test", 240, ("LOW_OUTPUT", "NOISE")),
)


def seed(
    *, semantics: Semantics, lot: str, wips: int, process_id_offset: int, now: datetime
) -> MesState:
    processes = {
        number + process_id_offset: Process(
            id=number + process_id_offset,
            number=number,
            code=code,
            name_ko=ko,
            name_en=en,
            description=f"{en} (process {number} of {PROCESS_COUNT})",
            estimated_duration_seconds=seconds,
            defect_items=defects,
            created_at=now,
        )
        for number, code, ko, en, seconds, defects in _CATALOG
    }
    items = {
        WIP_PK_BASE + n: Wip(
            id=WIP_PK_BASE + n,
            wip_id=f"WIP-{lot}-{n:03d}",
            lot_id=LOT_PK,
            sequence_in_lot=n,
            created_at=now,
            updated_at=now,
        )
        for n in range(1, wips + 1)
    }
    return MesState(
        semantics=semantics,
        lot=lot,
        users={u.id: u for u in SEED_USERS},
        processes=processes,
        wips=items,
    )


# -- state and rules --------------------------------------------------------------------------


@dataclass
class MesState:
    semantics: Semantics
    lot: str
    users: dict[int, User]
    processes: dict[int, Process]
    wips: dict[int, Wip]
    starts: list[StartRecord] = field(default_factory=list)
    history: list[HistoryRecord] = field(default_factory=list)
    serials: list[Serial] = field(default_factory=list)

    # lookups

    def wip(self, wip_pk: int) -> Wip:
        found = self.wips.get(wip_pk)
        if found is None:
            raise wip_not_found(self.semantics, wip_pk)
        return found

    def wip_by_code(self, wip_id: str) -> Wip:
        for item in self.wips.values():
            if item.wip_id == wip_id:
                return item
        raise wip_not_found(self.semantics, wip_id)

    def process(self, process_id: int) -> Process:
        found = self.processes.get(process_id)
        if found is None:
            raise process_not_found(self.semantics, process_id)
        return found

    def process_by_number(self, number: int) -> Process | None:
        return next((p for p in self.processes.values() if p.number == number), None)

    def active_processes(self) -> list[Process]:
        return sorted((p for p in self.processes.values() if p.is_active), key=lambda p: p.number)

    def user_by_name(self, username: str) -> User | None:
        return next((u for u in self.users.values() if u.username == username), None)

    def serial(self, serial_pk: int | None) -> Serial | None:
        return next((s for s in self.serials if s.id == serial_pk), None)

    def history_of(self, wip_pk: int) -> list[HistoryRecord]:
        return [h for h in self.history if h.wip_pk == wip_pk]

    def has_pass(self, wip_pk: int, process_id: int) -> bool:
        return any(
            h.wip_pk == wip_pk and h.process_id == process_id and h.result is Result.PASS
            for h in self.history
        )

    def missing_passes(self, wip_pk: int) -> list[int]:
        """Numbers of the active processes without a PASS for this WIP (BR-005)."""
        return [p.number for p in self.active_processes() if not self.has_pass(wip_pk, p.id)]

    def open_start(self, wip_pk: int, process_id: int) -> StartRecord | None:
        return next(
            (
                s
                for s in self.starts
                if s.open and s.wip_pk == wip_pk and s.process_id == process_id
            ),
            None,
        )

    # BR-003

    def start_refusal(self, wip: Wip, process: Process) -> Refusal | None:
        """Why ``process`` may not start on ``wip`` now, or None when it may."""
        n, status = process.number, wip.status
        previous = self.process_by_number(n - 1)
        prerequisite_met = previous is None or self.has_pass(wip.id, previous.id)
        if self.semantics == "spec":
            if status in (WipStatus.FAILED, WipStatus.CONVERTED) or (
                n == 1 and status not in (WipStatus.CREATED, WipStatus.IN_PROGRESS)
            ):
                return Refusal(
                    "INVALID_WIP_STATUS", "", f"Cannot start process on WIP with status '{status}'"
                )
            if n > 1 and not prerequisite_met:
                return Refusal(
                    "PREREQUISITE_NOT_MET",
                    "",
                    f"Process {n - 1} must have PASS result before starting Process {n} (BR-003)",
                )
            return None
        if status is WipStatus.CONVERTED:
            return Refusal(
                "ALREADY_CONVERTED",
                f"WIP {wip.wip_id} is already converted to serial. Cannot start process {n}.",
                "",
            )
        allowed_first = (WipStatus.CREATED, WipStatus.IN_PROGRESS, WipStatus.FAILED)
        if n == 1 and status not in allowed_first:
            return Refusal(
                "INVALID_WIP_STATUS",
                f"WIP {wip.wip_id} must be in CREATED, IN_PROGRESS, or FAILED status to start "
                f"process 1. Current status: {status}",
                "",
            )
        if n > 1 and not prerequisite_met:
            return Refusal(
                "PREREQUISITE_NOT_MET",
                f"WIP {wip.wip_id} cannot start process {n}. "
                f"Previous process {n - 1} must be completed with PASS result.",
                "",
            )
        return None

    # scan

    def scan(self, wip_id: str, process_id: int | None) -> ScanView:
        wip = self.wip_by_code(wip_id)
        if process_id is None:
            return ScanView(wip, False, None)
        process = self.process(process_id)
        refusal = self.start_refusal(wip, process)
        if refusal is not None:
            raise refusal.error(self.semantics, "VAL_001")
        if not self.has_pass(wip.id, process.id):
            return ScanView(wip, False, None)
        warning = (
            f"{wip.wip_id}은(는) 공정 {process.number}({process.name_ko})에서 이미 PASS 판정을 "
            "받았습니다. 다시 PASS로 완공하면 중복 PASS 오류(BR-004)가 발생합니다."
        )
        return ScanView(wip, True, warning)

    # 착공

    def start_process(self, wip_pk: int, command: StartCommand, now: datetime) -> Wip:
        wip = self.wip(wip_pk)
        process = self.process(command.process_id)
        refusal = self.start_refusal(wip, process)
        if refusal is not None:
            raise refusal.error(self.semantics, "VAL_004")
        if command.operator_id not in self.users:
            raise unknown_operator(self.semantics, command.operator_id)
        started_at = as_utc(command.started_at) if command.started_at is not None else now
        record = self.open_start(wip.id, process.id)
        if record is None:
            self.starts.append(
                StartRecord(
                    wip.id, process.id, command.operator_id, started_at, command.equipment_id
                )
            )
        else:
            record.started_at = started_at
            record.operator_id = command.operator_id
            record.equipment_id = command.equipment_id
        wip.status = WipStatus.IN_PROGRESS
        wip.current_process_id = process.id
        wip.updated_at = now
        return wip

    # 완공

    def prepare_completion(
        self, wip_pk: int, command: CompleteCommand, now: datetime
    ) -> CompletionPlan:
        """The checks the MES makes before it inserts the history row."""
        sem = self.semantics
        wip = self.wip(wip_pk)
        process = self.process(command.process_id)
        if command.result is Result.PASS and self.has_pass(wip.id, process.id):
            # Checked before "not started": a replayed PASS whose first answer was lost must
            # come back as a duplicate, since the first attempt already closed the start.
            raise MesError(
                400,
                "VAL_004",
                _worded(
                    sem,
                    f"WIP {wip.wip_id} already has PASS result for process {process.number}. "
                    "Duplicate PASS results are not allowed (BR-004).",
                    f"Duplicate PASS results are not allowed for process {process.number} (BR-004)",
                ),
                spec_code="DUPLICATE_PASS",
            )
        start = self.open_start(wip.id, process.id)
        completed_at = command.completed_at if command.completed_at is not None else now
        if sem == "spec":
            if start is None:
                raise MesError(
                    400,
                    "VAL_004",
                    "Process must be started before completion",
                    spec_code="PROCESS_NOT_STARTED",
                )
            started_at = command.started_at if command.started_at is not None else start.started_at
        else:
            # Without a started_at in the body the MES takes the completion time: duration 0.
            started_at = command.started_at if command.started_at is not None else completed_at
            if (started_at.tzinfo is None) != (completed_at.tzinfo is None):
                # The MES subtracts the two as given: naive minus aware is a TypeError there.
                raise server_error(sem)
        return CompletionPlan(
            wip_pk=wip.id,
            process_id=process.id,
            command=command,
            started_at=as_utc(started_at),
            completed_at=as_utc(completed_at),
            duplicate_check_is_racy=sem == "deployed" and command.result is Result.PASS,
        )

    def commit_completion(self, plan: CompletionPlan, now: datetime) -> tuple[HistoryRecord, Wip]:
        """The insert and what the database refuses at that point."""
        sem = self.semantics
        command = plan.command
        wip = self.wip(plan.wip_pk)
        process = self.process(plan.process_id)
        if sem == "deployed" and command.result is Result.REWORK:
            # The deployed result column has no REWORK value.
            raise constraint_violation(sem, "REWORK is not accepted")
        if command.operator_id not in self.users:
            raise unknown_operator(sem, command.operator_id)
        start = self.open_start(wip.id, process.id)
        earliest = max(plan.started_at, start.started_at if start is not None else plan.started_at)
        if plan.completed_at < earliest:
            raise constraint_violation(sem, "completed_at must not be earlier than started_at")
        record = HistoryRecord(
            id=len(self.history) + 1,
            wip_pk=wip.id,
            process_id=process.id,
            operator_id=command.operator_id,
            result=command.result,
            measurements=dict(command.measurements or {}),
            defects=list(command.defects or []),
            notes=command.notes,
            started_at=plan.started_at,
            completed_at=plan.completed_at,
            created_at=now,
        )
        self.history.append(record)
        if start is not None:
            start.open = False
        if command.result is Result.PASS:
            if self.missing_passes(wip.id):
                wip.status = WipStatus.IN_PROGRESS
            else:
                wip.status = WipStatus.COMPLETED
                wip.completed_at = now
        elif command.result is Result.FAIL:
            wip.status = WipStatus.FAILED
        else:
            wip.status = WipStatus.IN_PROGRESS  # REWORK (spec only): redo the same process
        wip.current_process_id = process.id
        wip.updated_at = now
        return record, wip

    def complete_process(
        self, wip_pk: int, command: CompleteCommand, now: datetime
    ) -> tuple[HistoryRecord, Wip]:
        """Both halves at once: what a caller that needs no race window uses."""
        return self.commit_completion(self.prepare_completion(wip_pk, command, now), now)

    # serial conversion

    def convert_to_serial(
        self, wip_pk: int, command: ConvertCommand, now: datetime, *, working: bool
    ) -> tuple[Serial, Wip]:
        sem = self.semantics
        wip = self.wip(wip_pk)
        status_error = MesError(
            400,
            "VAL_004",
            _worded(
                sem,
                f"WIP {wip.wip_id} must be in COMPLETED status for serial conversion. "
                f"Current status: {wip.status}",
                "WIP must be in COMPLETED status for serial conversion",
            ),
            # contract §4 reads "Current status: CONVERTED" as ALREADY_CONVERTED
            spec_code="ALREADY_CONVERTED"
            if wip.status is WipStatus.CONVERTED
            else "INVALID_WIP_STATUS",
        )
        converted_error = MesError(
            400,
            "VAL_004",
            _worded(
                sem,
                f"WIP {wip.wip_id} is already converted to serial",
                "WIP has already been converted to serial",
            ),
            spec_code="ALREADY_CONVERTED",
        )
        missing = self.missing_passes(wip.id)
        missing_error = MesError(
            400,
            "VAL_004",
            _worded(
                sem,
                f"WIP {wip.wip_id} cannot be converted to serial. Missing PASS results for "
                f"MANUFACTURING processes: {missing} (BR-005)",
                f"Missing PASS results for processes: {missing} (BR-005)",
            ),
            spec_code="INCOMPLETE_PROCESSES",
        )
        already = wip.status is WipStatus.CONVERTED or wip.serial_id is not None
        if sem == "deployed":
            # The deployed MES looks at the status first, so a CONVERTED WIP is reported as
            # "Current status: CONVERTED"; BR-005 is only reached by a COMPLETED WIP.
            checks = (
                (wip.status is not WipStatus.COMPLETED, status_error),
                (already, converted_error),
                (bool(missing), missing_error),
            )
        else:
            checks = (
                (already, converted_error),
                (bool(missing), missing_error),
                (wip.status is not WipStatus.COMPLETED, status_error),
            )
        for failed, error in checks:
            if failed:
                raise error
        if command.operator_id not in self.users:
            raise unknown_operator(sem, command.operator_id)
        if not working:
            raise server_error(sem)  # the deployed MES's bug: every valid conversion fails
        return self._new_serial(wip, now), wip

    def generate_serial(self, wip_id: str, now: datetime) -> tuple[Serial, Wip]:
        """The web UI's route: no status and no BR-005 check, only "not converted yet"."""
        wip = self.wip_by_code(wip_id)
        existing = self.serial(wip.serial_id)
        if existing is not None:
            message = (
                f"WIP {wip.wip_id} is already converted to serial number {existing.serial_number}"
            )
            raise MesError(400, "VAL_004", message, spec_code="ALREADY_CONVERTED")
        return self._new_serial(wip, now), wip

    def _new_serial(self, wip: Wip, now: datetime) -> Serial:
        sequence = len(self.serials) + 1
        serial = Serial(
            id=SERIAL_PK_BASE + sequence,
            serial_number=f"{self.lot}{sequence:03d}",
            lot_id=wip.lot_id,
            sequence_in_lot=sequence,
            wip_pk=wip.id,
            created_at=now,
        )
        self.serials.append(serial)
        wip.status = WipStatus.CONVERTED
        wip.serial_id = serial.id
        wip.converted_at = now
        wip.updated_at = now
        return serial
