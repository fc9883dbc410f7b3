"""What stations, PLCs and tablets send, validated (pure: bytes in, a payload or a Problem out).

Field names follow the integration spec; `process_id` is the process number as the station
knows it (1..6 on the MES today), never the MES's row id.
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)

from bridge.core.domain import ProcessNumber, Result, UserId, WipString
from bridge.core.limits import Measured
from bridge.core.problems import Problem, ProblemCode
from bridge.core.topics import Inbound

# Nesting deeper than this is refused before validation: a measurement value is data, not a tree,
# and a deep one would cost recursion in every later step (validation, the store, the MES client).
MAX_DEPTH = 32
# Ids are database integers at the MES; one beyond 32 bits can only be a mistake (or an attack).
MAX_ID = 2**31 - 1
_LONG_DIGITS = re.compile(r"\d{309}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _printable(text: str) -> str:
    # A WIP id, a name or a code with CR/LF, NUL or an RTL mark is never a real barcode or name;
    # it could only forge log lines or confuse the operator's screen.
    if not text.isprintable():
        raise ValueError("must not contain control or format characters (CR, LF, RTL marks, …)")
    return text


def _iso_text(value: Any) -> Any:
    # Lax pydantic would read 0, 1.5 or "1700000000" as Unix time: the contract says ISO 8601.
    if isinstance(value, datetime):  # made in Python, not read from a message
        return value
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an ISO 8601 datetime text such as 2026-11-26T09:00:00Z")
    return value


def _in_utc_range(moment: datetime) -> datetime:
    try:
        moment.astimezone(UTC)  # 9999-12-31T23:59:59-14:00 is past the last UTC datetime
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    return moment


# Strict: JSON `true` is not process 1, nor operator 1.
Process = Annotated[ProcessNumber, Field(strict=True)]
Operator = Annotated[UserId, Field(strict=True, le=MAX_ID)]
EquipmentId = Annotated[int, Field(gt=0, le=MAX_ID, strict=True)]
Wip = Annotated[WipString, AfterValidator(_printable)]
BatchId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
DefectCode = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
MeasurementName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]
Unit = Annotated[str, Field(max_length=32), AfterValidator(_printable)]
Notes = Annotated[str, Field(max_length=5000)]
Moment = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_in_utc_range)]


class _Payload(BaseModel):
    # A misspelt field is refused, not silently dropped: the tablet learns about the typo.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchStart(_Payload):
    wip_id: Wip
    process_id: Process
    operator_id: Operator
    equipment_id: EquipmentId | None = None
    batch_id: BatchId | None = None
    started_at: Moment | None = None


class MeasurementIn(_Payload):
    """One measurement (`name`, `value`, `unit`) or several (`measurements`), maybe defects."""

    batch_id: BatchId | None = None
    name: MeasurementName | None = None
    value: JsonValue = None
    unit: Unit | None = None
    measurements: dict[MeasurementName, JsonValue] | None = None
    defects: list[DefectCode] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_form(self) -> MeasurementIn:
        single = self.name is not None
        if single and self.measurements is not None:
            raise ValueError("give either name/value or measurements, not both")
        if single and self.value is None:
            raise ValueError("a measurement with a name needs a value")
        if not single and "value" in self.model_fields_set:
            raise ValueError("value goes with name")
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
    completed_at: Moment | None = None


class BatchAbort(_Payload):
    batch_id: BatchId | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class WipConvert(_Payload):
    wip_id: Wip
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
        text = raw.decode("utf-8")
        # Checking every integer costs a Python call each; only 309 digits in a row or more can
        # be beyond a float.
        decoder = _DECODER_LONG if _LONG_DIGITS.search(text) else _DECODER
        if text.startswith("\ufeff"):  # refused as json.loads refuses it (the decoder does not)
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        data = decoder.decode(text)
    except (UnicodeDecodeError, ValueError) as error:
        return Problem(ProblemCode.INVALID_JSON, str(error))
    except RecursionError:
        return Problem(ProblemCode.INVALID_JSON, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        return Problem(ProblemCode.INVALID_PAYLOAD, f"expected a JSON object, got {data!r:.80}")
    # Deep nesting needs that many brackets, and a lone surrogate a \\u escape (UTF-8 itself
    # cannot carry one): most messages have neither, and skip the walk.
    if text.count("[") + text.count("{") > MAX_DEPTH or "\\u" in text:
        unsendable = _unsendable(data)
        if unsendable is not None:
            return unsendable
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


def _float_sized(text: str) -> int:
    number = int(text)
    if abs(number) > sys.float_info.max:  # 1 followed by 400 zeros: no MES field can take it
        raise ValueError(f"{text:.20}… is out of range for a number")
    return number


def _unsendable(data: dict[str, Any]) -> Problem | None:
    """Refuses what json.loads accepts but no later step can carry: deep nesting, and strings
    with lone surrogates (`"\\ud800"`), which cannot be encoded as UTF-8 for the disk or the
    MES. Iterative, so that depth costs no recursion here."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return Problem(ProblemCode.INVALID_JSON, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return Problem(
                    ProblemCode.INVALID_JSON, "a string holds a lone surrogate (\\ud800…)"
                )
    return None


# What json.loads would build anew on every call with these hooks.
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)
_DECODER_LONG = json.JSONDecoder(
    parse_constant=_not_json, parse_float=_finite, parse_int=_float_sized
)


def describe(error: ValidationError) -> str:
    """`field: what is wrong; other: ...` — short enough for a tablet's status line."""
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "payload"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)
