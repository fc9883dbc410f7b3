"""Request validation, shaped like the deployed MES's (FastAPI + pydantic) 422 answers.

Each parser returns the parsed value and a list of :class:`FieldError`; the adapter gathers the
lists of path, query and body and refuses them together, as FastAPI does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Annotated, TypeVar

from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .model import PROCESS_COUNT, FieldError

M = TypeVar("M", bound=BaseModel)

PositiveInt = Annotated[int, Field(gt=0)]
Notes = Annotated[str, Field(max_length=5000)]


def _process_id_in_range(value: int, info: ValidationInfo) -> int:
    """The published schema bounds process_id to 1..6. With an id offset (process rows that
    were not created in order) those bounds would refuse every real id, so the MES's rows
    decide instead: an id without a row is a 404 from the model."""
    if isinstance(info.context, dict) and info.context.get("process_id_offset"):
        return value
    if value < 1:
        raise PydanticCustomError(
            "greater_than_equal", "Input should be greater than or equal to {ge}", {"ge": 1}
        )
    if value > PROCESS_COUNT:
        raise PydanticCustomError(
            "less_than_equal", "Input should be less than or equal to {le}", {"le": PROCESS_COUNT}
        )
    return value


class StartBody(BaseModel):
    process_id: int
    operator_id: PositiveInt
    equipment_id: PositiveInt | None = None
    process_session_id: int | None = None
    started_at: datetime | None = None

    _process_range = field_validator("process_id")(_process_id_in_range)


class CompleteQuery(BaseModel):
    process_id: int
    operator_id: PositiveInt

    _process_range = field_validator("process_id")(_process_id_in_range)


class CompleteBody(BaseModel):
    result: Annotated[str, Field(pattern=r"^(PASS|FAIL|REWORK)$")]
    measurements: dict[str, object] | None = None
    defects: list[object] | None = None
    notes: Notes | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @field_validator("result", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class ConvertBody(BaseModel):
    operator_id: PositiveInt
    notes: Notes | None = None


class ScanQuery(BaseModel):
    process_id: int | None = None


class GenerateQuery(BaseModel):
    wip_id: str
    print_label: bool = True


class LoginForm(BaseModel):
    username: str
    password: str
    grant_type: Annotated[str, Field(pattern=r"^password$")] | None = None


class LoginBody(BaseModel):
    username: Annotated[str, Field(min_length=1)]
    password: Annotated[str, Field(min_length=1)]
    station_id: str | None = None


class RefreshBody(BaseModel):
    refresh_token: str
    station_id: str | None = None


_PATH_INT: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(gt=0)])


def _errors(error: ValidationError, where: str) -> list[FieldError]:
    """FastAPI's errors as the deployed MES words them: the field's name without its location
    (`process_id`, not `query.process_id`); a whole missing body is `body`."""
    return [
        FieldError(
            field=".".join(str(part) for part in item["loc"]) or where,
            message=item["msg"],
            code=item["type"],
        )
        for item in error.errors(include_url=False)
    ]


def path_int(segment: str, name: str = "wip_id") -> tuple[int | None, list[FieldError]]:
    try:
        return _PATH_INT.validate_python(segment), []
    except ValidationError as error:
        return None, [FieldError(name, item["msg"], item["type"]) for item in error.errors()]


def query(
    model: type[M], params: Mapping[str, str], context: Mapping[str, object] | None = None
) -> tuple[M | None, list[FieldError]]:
    try:
        return model.model_validate(dict(params), context=dict(context or {})), []
    except ValidationError as error:
        return None, _errors(error, "query")


def json_body(
    model: type[M], raw: bytes, context: Mapping[str, object] | None = None
) -> tuple[M | None, list[FieldError]]:
    if not raw.strip():
        return None, [FieldError("body", "Field required", "missing")]
    try:
        return model.model_validate_json(raw, context=dict(context or {})), []
    except ValidationError as error:
        return None, [_at_offset(found, raw) for found in _errors(error, "body")]


def _at_offset(error: FieldError, raw: bytes) -> FieldError:
    """FastAPI names malformed JSON by the character offset where decoding failed."""
    if error.code != "json_invalid":
        return error
    try:
        json.loads(raw)
    except ValueError as decoding:
        return replace(error, field=str(getattr(decoding, "pos", 0)))
    return error


def form_body(model: type[M], fields: Mapping[str, str]) -> tuple[M | None, list[FieldError]]:
    try:
        return model.model_validate(dict(fields)), []
    except ValidationError as error:
        return None, _errors(error, "body")


def json_object(raw: bytes) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is not one."""
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
