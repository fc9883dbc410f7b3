"""One serial gauge's configuration: the `devices:` list of the bridge's config file.

Everything a reader needs is checked here, at load time, so that a typo in a pattern or a
terminator is a config error with a clear message and never a reader that silently parses nothing.

Decisions (also in docs/devices.md):
- `measurement` is required for the single-value formats (regex, and, sics). For `keyvalue` the
  names on the line are the measurement names; `measurement`, when set, prefixes them
  (`measurement: driver1` turns `torque=1.5` into `driver1_torque`).
- `terminator` accepts backslash escapes (`'\\r\\n'`, `'\\x03'`), because in YAML only a
  double-quoted string turns `\\r\\n` into CR LF and a single-quoted one is an easy mistake.
- `poll.command` may be left out for `sics` only, where it means `SI` (send the weight now, stable
  or not; the stability filter then decides).
- A gauge that goes quiet is noticed by missed polls (`poll.stale_after`, `poll.error_after`) when
  it is polled, and by `max_silence_s` (and `silence_error_s`) when it streams; one of the two, so
  that a polled gauge is never judged by a clock that its poll interval already sets.
- `decimal_comma` is refused for `keyvalue`, where a comma separates pairs.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    field_validator,
    model_validator,
)

DEVICE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MEASUREMENT_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SICS_DEFAULT_POLL_COMMAND = "SI"

# Named groups a regex pattern may use; anything else is most likely a typo ("units").
REGEX_GROUPS = frozenset({"value", "unit", "status"})

Format = Literal["regex", "keyvalue", "and", "sics"]


def _integer_as_text(value: object) -> object:
    # YAML reads `id: 3` as a number, and station 3's topics are `station/3/...`: the same id.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


StationId = Annotated[str, BeforeValidator(_integer_as_text), Field(pattern=DEVICE_NAME_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PollConfig(_Model):
    """Ask a polled gauge for a value: write `command` + terminator every `interval_s`."""

    command: (
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x20-\x7e]+$")] | None
    ) = None
    interval_s: PositiveFloat = 1.0
    # Unanswered polls in a row before the device's status becomes stale, then error.
    stale_after: Annotated[int, Field(ge=1)] = 3
    error_after: Annotated[int, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _ordered(self) -> PollConfig:
        if self.error_after < self.stale_after:
            raise ValueError("poll.error_after must be at least poll.stale_after")
        return self


class DeviceConfig(_Model):
    """A serial gauge (torque driver, scale, multimeter, push-pull gauge) on one station."""

    name: Annotated[str, Field(pattern=DEVICE_NAME_PATTERN)]
    port: Annotated[str, Field(min_length=1)]
    baudrate: Annotated[int, Field(gt=0)] = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = 1  # 1, 1.5 or 2 (a Literal cannot hold 1.5)
    station: StationId
    measurement: Annotated[str, Field(pattern=MEASUREMENT_NAME_PATTERN)] | None = None
    format: Format
    pattern: str | None = None
    poll: PollConfig | None = None
    unit: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    scale: float | None = None
    terminator: str = "\r\n"
    max_line_bytes: Annotated[int, Field(ge=16, le=65536)] = 256
    record_unstable: bool = False
    reconnect_min_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 30.0
    decimal_comma: bool = False
    max_silence_s: PositiveFloat | None = None
    silence_error_s: PositiveFloat | None = None

    @field_validator("terminator")
    @classmethod
    def _decode_terminator(cls, value: str) -> str:
        value = _unescape(value)
        if not value:
            raise ValueError("terminator must not be empty")
        if not value.isascii() or len(value) > 4:
            raise ValueError("terminator must be 1 to 4 ASCII characters, e.g. '\\r\\n'")
        return value

    @field_validator("stopbits")
    @classmethod
    def _known_stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return value

    @field_validator("scale")
    @classmethod
    def _finite_scale(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("scale must be a finite number")
        if value == 0:
            raise ValueError("scale must not be 0 (every reading would be 0)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeviceConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        self._check_silence()
        if self.decimal_comma and self.format == "keyvalue":
            raise ValueError(
                "decimal_comma cannot be used with format keyvalue (a comma separates pairs)"
            )
        if self.format == "regex":
            _check_pattern(self.pattern)
        elif self.pattern is not None:
            raise ValueError(f"pattern is only used with format: regex (format is {self.format})")
        if self.format != "keyvalue" and self.measurement is None:
            raise ValueError(f"format {self.format} needs measurement (the name a reading gets)")
        if self.poll is not None and self.poll.command is None:
            if self.format != "sics":
                raise ValueError(f"poll.command is required for format {self.format}")
            object.__setattr__(
                self, "poll", self.poll.model_copy(update={"command": SICS_DEFAULT_POLL_COMMAND})
            )
        return self

    def _check_silence(self) -> None:
        if self.silence_error_s is not None:
            if self.max_silence_s is None:
                raise ValueError("silence_error_s needs max_silence_s (when the gauge is stale)")
            if self.silence_error_s < self.max_silence_s:
                raise ValueError("silence_error_s must be at least max_silence_s")
        if self.max_silence_s is not None and self.poll is not None:
            raise ValueError(
                "max_silence_s is for streaming gauges; a polled gauge is watched by its missed "
                "polls (poll.stale_after, poll.error_after)"
            )

    @property
    def poll_bytes(self) -> bytes | None:
        """What the reader writes at each poll: the command and the terminator, or None."""
        if self.poll is None or self.poll.command is None:
            return None
        return (self.poll.command + self.terminator).encode("ascii")


_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[rnt\\]|.?)")
_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}


def _unescape(text: str) -> str:
    """`\\r`, `\\n`, `\\t`, `\\\\` and `\\xHH` to the characters they name; nothing else."""

    def one(match: re.Match[str]) -> str:
        code = match[1]
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise ValueError(f"terminator {text!r}: unknown escape \\{code} (use \\r \\n \\t \\xHH)")

    return _ESCAPE.sub(one, text)


def _check_pattern(pattern: str | None) -> None:
    if pattern is None:
        raise ValueError("format regex needs a pattern with a named group 'value'")
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"pattern does not compile: {error}") from None
    groups = set(compiled.groupindex)
    if "value" not in groups:
        raise ValueError("pattern needs a named group 'value', e.g. (?P<value>[-+]?[0-9.]+)")
    unknown = groups - REGEX_GROUPS
    if unknown:
        raise ValueError(
            f"pattern has unknown named group(s) {sorted(unknown)}; allowed: value, unit, status"
        )
