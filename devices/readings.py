"""What a gauge line turns into: a `Reading`, a `GaugeError`, or an `Ignored` line.

- `Reading`: one or more named values, each with its unit; what the bridge records.
- `GaugeError`: the gauge said something is wrong (overload, underload, device error, busy) or the
  reading cannot be trusted (unit mismatch). The bridge is told (`DeviceEvents.gauge_error`).
- `Ignored`: a line that is not recorded and not worth an operator's attention on its own: garbage
  (`UNPARSEABLE`) or an unstable value that the device does not record (`GAUGE_UNSTABLE`). The
  reader only logs and counts these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypedDict


class GaugeErrorCode(StrEnum):
    GAUGE_OVERLOAD = "GAUGE_OVERLOAD"
    GAUGE_UNDERLOAD = "GAUGE_UNDERLOAD"
    GAUGE_ERROR = "GAUGE_ERROR"
    GAUGE_BUSY = "GAUGE_BUSY"
    GAUGE_UNSTABLE = "GAUGE_UNSTABLE"
    UNIT_MISMATCH = "UNIT_MISMATCH"
    UNPARSEABLE = "UNPARSEABLE"


# Operator-facing wording, English and Korean; the codes are the stable part.
_MESSAGES: dict[GaugeErrorCode, tuple[str, str]] = {
    GaugeErrorCode.GAUGE_OVERLOAD: (
        "The gauge is overloaded (above its range)",
        "계측기 과부하 (측정 범위 초과)",
    ),
    GaugeErrorCode.GAUGE_UNDERLOAD: (
        "The gauge is underloaded (below its range)",
        "계측기 측정 범위 미달",
    ),
    GaugeErrorCode.GAUGE_ERROR: ("The gauge reported an error", "계측기가 오류를 보고했습니다"),
    GaugeErrorCode.GAUGE_BUSY: (
        "The gauge cannot measure now (busy, or not stable in time)",
        "계측기가 지금 측정할 수 없습니다 (작업 중 또는 안정화 시간 초과)",
    ),
    GaugeErrorCode.GAUGE_UNSTABLE: ("The reading is not stable", "측정값이 안정되지 않았습니다"),
    GaugeErrorCode.UNIT_MISMATCH: (
        "The gauge sent a unit other than the configured one",
        "계측기 단위가 설정된 단위와 다릅니다",
    ),
    GaugeErrorCode.UNPARSEABLE: (
        "The gauge sent a line that cannot be read",
        "계측기 데이터를 해석할 수 없습니다",
    ),
}


class MeasurementValue(TypedDict):
    value: float
    unit: str | None


@dataclass(frozen=True)
class Measured:
    """One value of a reading, already scaled, with the unit to record (None when unknown)."""

    value: float
    unit: str | None = None


@dataclass(frozen=True)
class Reading:
    """One accepted line: measurement name → value.

    For the regex, and, sics formats there is exactly one value, named `device.measurement`;
    for keyvalue one per `name=value` pair on the line. `stable` is False only when the device
    records unstable values (`record_unstable: true`).

    `measurements()` is the shape to record in a batch and to publish live:
    `{"torque": {"value": 1.52, "unit": "Nm"}, "angle": {"value": 35.2, "unit": "deg"}}`.
    """

    values: dict[str, Measured]
    stable: bool = True

    def measurements(self) -> dict[str, MeasurementValue]:
        return {
            name: MeasurementValue(value=item.value, unit=item.unit)
            for name, item in self.values.items()
        }


@dataclass(frozen=True)
class GaugeError:
    """The gauge reported a problem instead of a value; `detail` says what it sent."""

    code: GaugeErrorCode
    message: str
    message_ko: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "code": self.code.value,
            "message": self.message,
            "message_ko": self.message_ko,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Ignored:
    """A line that is neither recorded nor reported: garbage, or a filtered unstable value."""

    code: GaugeErrorCode
    detail: str
    line: str = field(default="", compare=False)


def gauge_error(code: GaugeErrorCode, detail: str = "") -> GaugeError:
    message, message_ko = _MESSAGES[code]
    return GaugeError(code=code, message=message, message_ko=message_ko, detail=detail)


def unparseable(detail: str, line: str = "") -> Ignored:
    return Ignored(code=GaugeErrorCode.UNPARSEABLE, detail=detail, line=line)


ParseResult = Reading | GaugeError | Ignored
