"""What stations, PLCs and tablets send, validated (pure: bytes in, a payload or a Problem out).

Field names follow the integration spec; `process_id` is the process number as the station
knows it (1..6 on the MES today), never the MES's row id.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)

from .mes.models import ProcessNumber, Result, UserId, WipString
from .problems import Problem, ProblemCode
from .results import Measured
from .topics import Inbound

# Strict: JSON `true` is not process 1, nor operator 1.
Process = Annotated[ProcessNumber, Field(strict=True)]
Operator = Annotated[UserId, Field(strict=True)]
EquipmentId = Annotated[int, Field(gt=0, strict=True)]
BatchId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
DefectCode = Annotated[str, Field(min_length=1, max_length=64)]
MeasurementName = Annotated[str, Field(min_length=1, max_length=100)]
Notes = Annotated[str, Field(max_length=5000)]


class _Payload(BaseModel):
    # A misspelt field is refused, not silently dropped: the tablet learns about the typo.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchStart(_Payload):
    wip_id: WipString
    process_id: Process
    operator_id: Operator
    equipment_id: EquipmentId | None = None
    batch_id: BatchId | None = None
    started_at: AwareDatetime | None = None


class MeasurementIn(_Payload):
    """One measurement (`name`, `value`, `unit`) or several (`measurements`), maybe defects."""

    batch_id: BatchId | None = None
    name: MeasurementName | None = None
    value: JsonValue = None
    unit: Annotated[str, Field(max_length=32)] | None = None
    measurements: dict[MeasurementName, JsonValue] | None = None
    defects: list[DefectCode] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_form(self) -> MeasurementIn:
        single = self.name is not None
        if single and self.measurements is not None:
            raise ValueError("give either name/value or measurements, not both")
        if single and self.value is None:
            raise ValueError("a measurement with a name needs a value")
        if not single and self.unit is not None:
            raise ValueError("unit goes with name/value")
        if not single and self.measurements is None and not self.defects:
            raise ValueError("give name/value, measurements or defects")
        return self

    def values(self) -> dict[str, Measured]:
        if self.name is not None:
            return {self.name: Measured(value=self.value, unit=self.unit)}
        return {name: Measured(value=value) for name, value in (self.measurements or {}).items()}


class BatchComplete(_Payload):
    batch_id: BatchId | None = None
    result: Result | None = None
    defects: list[DefectCode] = Field(default_factory=list)
    notes: Notes = ""
    completed_at: AwareDatetime | None = None


class BatchAbort(_Payload):
    batch_id: BatchId | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class WipConvert(_Payload):
    wip_id: WipString
    operator_id: Operator
    notes: Notes = ""


Payload = BatchStart | MeasurementIn | BatchComplete | BatchAbort | WipConvert

MODELS: dict[Inbound, type[Payload]] = {
    Inbound.START: BatchStart,
    Inbound.MEASUREMENT: MeasurementIn,
    Inbound.COMPLETE: BatchComplete,
    Inbound.ABORT: BatchAbort,
    Inbound.CONVERT: WipConvert,
}


def parse_payload(kind: Inbound, raw: bytes, *, max_bytes: int) -> Payload | Problem:
    """Validate one inbound message; a Problem says exactly what was wrong with it."""
    if len(raw) > max_bytes:
        return Problem(
            ProblemCode.MESSAGE_TOO_LARGE, f"{len(raw)} bytes; at most {max_bytes} are accepted"
        )
    try:
        # Decoded first: json.loads would also guess UTF-16/32 from bytes, and MQTT says UTF-8.
        data = json.loads(raw.decode("utf-8"), parse_constant=_not_json, parse_float=_finite)
    except (UnicodeDecodeError, ValueError) as error:
        return Problem(ProblemCode.INVALID_JSON, str(error))
    if not isinstance(data, dict):
        return Problem(ProblemCode.INVALID_PAYLOAD, f"expected a JSON object, got {data!r:.80}")
    try:
        return MODELS[kind].model_validate(data)
    except ValidationError as error:
        return Problem(ProblemCode.INVALID_PAYLOAD, describe(error))


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: valid JSON, but no MES request can carry it
        raise ValueError(f"{text} is out of range for a number")
    return number


def describe(error: ValidationError) -> str:
    """`field: what is wrong; other: ...` — short enough for a tablet's status line."""
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "payload"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)
