"""What goes to the MES and what comes back.

Requests are plain JSON-serialisable records (an outbox can store and replay them unchanged);
`process` is the process number 1..6 as the station knows it, never the MES's row id. Responses
are parsed leniently (unknown fields ignored) because the deployed MES and the integration spec
disagree on wrappers and extras.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.core.domain import ProcessNumber, Result, UserId, UtcDatetime, WipString


class WipStatus(StrEnum):
    CREATED = "CREATED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CONVERTED = "CONVERTED"


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    wip_id: WipString


class StartProcess(_Request):
    """착공: start `process` on a WIP."""

    kind: Literal["start"] = "start"
    process: ProcessNumber
    operator_id: UserId
    started_at: UtcDatetime
    equipment_id: Annotated[int, Field(gt=0)] | None = None


class CompleteProcess(_Request):
    """완공: record the result of `process`. `started_at` is the bridge's own start time."""

    kind: Literal["complete"] = "complete"
    process: ProcessNumber
    operator_id: UserId
    result: Result
    started_at: UtcDatetime
    completed_at: UtcDatetime
    measurements: dict[str, Any] = Field(default_factory=dict)
    defects: list[Any] = Field(default_factory=list)
    notes: Annotated[str, Field(max_length=5000)] = ""


class ConvertToSerial(_Request):
    """Final completion: turn a COMPLETED WIP into a serial number."""

    kind: Literal["convert"] = "convert"
    operator_id: UserId
    notes: Annotated[str, Field(max_length=5000)] = ""


MesRequest = Annotated[
    StartProcess | CompleteProcess | ConvertToSerial, Field(discriminator="kind")
]


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WipItem(_Response):
    id: int
    wip_id: str
    status: WipStatus
    current_process_id: int | None = None
    serial_id: int | None = None
    has_pass_for_process: bool | None = None
    pass_warning_message: str | None = None


class ProcessRecord(_Response):
    id: int | None = None
    process_id: int | None = None
    operator_id: int | None = None
    result: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None


class Completion(_Response):
    """What a 완공 returned: the recorded row and the WIP's status after it."""

    process_history: ProcessRecord | None = None
    wip_item: WipItem
    sent_result: Result = Result.PASS

    @property
    def wip_status(self) -> WipStatus:
        return self.wip_item.status

    @property
    def can_convert(self) -> bool:
        return self.wip_item.status is WipStatus.COMPLETED


class Serial(_Response):
    wip_id: str
    serial_number: str


class TraceEntry(_Response):
    process_number: int | None = None
    result: str | None = None
    # As the MES wrote them: its forms vary (`bridge.mes.instants` compares them), and one it
    # did not foresee must not make the whole trace unreadable.
    start_time: str | None = None
    complete_time: str | None = None
    duration_seconds: float | None = None
    measurements: dict[str, Any] | None = None
    defects: list[Any] | None = None
    notes: str | None = None


class WipTrace(_Response):
    wip_id: str
    status: WipStatus
    serial_id: int | None = None
    process_history: list[TraceEntry] = Field(default_factory=list)

    def results_for(self, process: int) -> list[str]:
        """Every result recorded for one process number, oldest first."""
        return [
            (entry.result or "").upper()
            for entry in self.process_history
            if entry.process_number == process
        ]


@dataclass(frozen=True)
class Recorded:
    """A request the MES turned out to hold already, and the WIP's status read to find it."""

    wip_status: WipStatus


class Process(_Response):
    id: int
    process_number: int
    process_code: str = ""
    is_active: bool = True
