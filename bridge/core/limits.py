"""PASS or FAIL from the configured limits (pure), as the spec's `_determine_result`,
`_extract_measurements` and `_extract_defects` meant it, with limits instead of a sequence."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue

from bridge.config import Limit
from bridge.core.domain import Result


class Measured(BaseModel):
    """One gathered measurement: its latest value and the unit it came with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: JsonValue
    unit: str | None = None


@dataclass(frozen=True)
class Verdict:
    result: Result
    measurements: dict[str, Any]
    defects: list[str]


def unique(codes: Iterable[str]) -> list[str]:
    """De-duplicated, first occurrence kept (the spec's `list(set(...))` lost the order)."""
    return list(dict.fromkeys(codes))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float: not a measurement
        return None
    return number if math.isfinite(number) else None


def limit_defects(measured: Mapping[str, Measured], limits: Mapping[str, Limit]) -> list[str]:
    """The defect code of every limit that the gathered measurements break."""
    defects = []
    for name, limit in limits.items():
        got = measured.get(name)
        if got is None:
            if limit.required:
                defects.append(limit.missing_defect or f"MISSING_{name.upper()}")
            continue
        value = _number(got.value)
        wrong_unit = limit.unit is not None and got.unit is not None and got.unit != limit.unit
        if (
            value is None
            or wrong_unit
            or (limit.min is not None and value < limit.min)
            or (limit.max is not None and value > limit.max)
        ):
            defects.append(limit.defect)
    return defects


def decide(
    *,
    measured: Mapping[str, Measured],
    reported_defects: Iterable[str],
    limits: Mapping[str, Limit],
    stated: Result | None,
    cycle_time_ms: int,
) -> Verdict:
    """The 완공 to send.

    A result the station states is final (the station ran its own sequence); otherwise any defect,
    reported or from a broken limit, makes it a FAIL. `cycle_time_ms` is added to the
    measurements, as the spec's `_extract_measurements` does.
    """
    reported = list(reported_defects)
    if stated is not None:
        result, defects = stated, unique(reported)
    else:
        defects = unique([*reported, *limit_defects(measured, limits)])
        result = Result.FAIL if defects else Result.PASS
    values = {name: got.value for name, got in measured.items()}
    values["cycle_time_ms"] = cycle_time_ms
    return Verdict(result=result, measurements=values, defects=defects)
