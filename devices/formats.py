"""Pure parsers: one gauge line in, a `Reading`, `GaugeError` or `Ignored` out.

No I/O, no clock. `parse_line(device, line)` is what the reader calls: it parses by
`device.format`, then applies the device's rules in this order: unstable filter, unit check,
scale. The per-format parsers are public for tests and tools.

Line shapes (see docs/devices.md for the full tables):
- and (A&D standard format): `ST,+00123.45  g`, `US,-00001.20 kg`, `QT,+00001234 PC`,
  `OL,+9999999E+19`; an optional second header (`ST,NT,+0012.34 kg`, `ST,OK,...`) is skipped.
- sics (MT-SICS): `S S      100.00 g`, `S D       99.98 g`, `S I`, `S +`, `S -`, `ES`, `ET`,
  `EL`; the IDs of the other weight commands (`SI`, `SU`, `SIU`, `SIR`, ...) are accepted too.
- keyvalue: `torque=1.52 Nm angle=35.2 deg`; pairs separated by spaces, commas or semicolons.
- regex: the device's pattern, searched in the line, with groups value, unit, status.
"""

from __future__ import annotations

import math
import re

from devices.config import DeviceConfig
from devices.readings import (
    GaugeErrorCode,
    Ignored,
    Measured,
    ParseResult,
    Reading,
    gauge_error,
    unparseable,
)

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_UNIT = re.compile(r"[A-Za-z%°µΩ][^\s=,;]{0,15}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
# Framing bytes some gauges wrap a line in (STX/ETX), and whatever the terminator left over.
_STRIP = " \t\r\n\x00\x02\x03"


def parse_number(text: str, *, decimal_comma: bool = False) -> float | None:
    """A finite decimal number, as gauges print them ("+00123.45", "- 1.5", "1e3"), or None.

    With `decimal_comma`, one comma may stand for the point ("+00123,45"); a number with both is
    refused (a thousands separator is never what a gauge means).
    """
    compact = re.sub(r"^([-+])\s+", r"\1", text.strip())
    if decimal_comma and "," in compact:
        if "." in compact or compact.count(",") > 1:
            return None
        compact = compact.replace(",", ".")
    if not _NUMBER.fullmatch(compact):
        return None
    value = float(compact)
    return value if math.isfinite(value) else None


def _single(name: str, value: float, unit: str | None, *, stable: bool) -> Reading:
    return Reading(values={name: Measured(value=value, unit=unit or None)}, stable=stable)


# --- A&D standard format -------------------------------------------------------------------

_AND_LINE = re.compile(r"(?P<header>ST|US|QT|OL)(?:,(?P<header2>[A-Z-]{2}))?,(?P<rest>.*)")
_AND_UNIT = r"\s*,?\s*(?P<unit>" + _UNIT.pattern + r")?"
_AND_DATA = re.compile(r"(?P<value>[-+]?\s*[0-9.]+)" + _AND_UNIT)
# With a decimal comma the data is "+00123,45" (and the CSV variant "+00123,45,  g").
_AND_DATA_COMMA = re.compile(r"(?P<value>[-+]?\s*[0-9]*(?:[.,][0-9]*)?)" + _AND_UNIT)


def parse_and(line: str, *, name: str, decimal_comma: bool = False) -> ParseResult:
    """A&D: header ST (stable), US (unstable), QT (stable count, unit PCS), OL (out of range).

    OL with a minus sign is out of range below (underload); any other OL is an overload.
    """
    text = line.strip(_STRIP)
    match = _AND_LINE.fullmatch(text)
    if match is None:
        return unparseable("not an A&D line (ST/US/QT/OL header)", text)
    header, rest = match["header"], match["rest"].strip()
    if header == "OL":
        code = (
            GaugeErrorCode.GAUGE_UNDERLOAD
            if rest.startswith("-")
            else GaugeErrorCode.GAUGE_OVERLOAD
        )
        return gauge_error(code, text)
    data = (_AND_DATA_COMMA if decimal_comma else _AND_DATA).fullmatch(rest)
    value = parse_number(data["value"], decimal_comma=decimal_comma) if data else None
    if data is None or value is None:
        return unparseable("A&D data is not a finite number", text)
    unit = data["unit"]
    # Count data: QT always, and US with the PC unit (A&D prints the 3-character "PC").
    if header == "QT" or unit in ("PC", "PCS"):
        unit = "PCS"
    return _single(name, value, unit, stable=header != "US")


# --- Mettler Toledo MT-SICS ----------------------------------------------------------------

_SICS_WEIGHT_IDS = frozenset({"S", "SI", "SU", "SIU", "SIR", "SIRU", "SR", "SRU", "SNR", "SNRU"})
_SICS_GENERAL_ERRORS = {
    "ES": "ES: syntax error (the gauge did not recognise the command)",
    "ET": "ET: transmission error (the gauge received a garbled command)",
    "EL": "EL: logical error (the command cannot be executed)",
}
_SICS_STATUS_ERRORS = {
    "I": (GaugeErrorCode.GAUGE_BUSY, "command not executable (busy, or stability not reached)"),
    "+": (GaugeErrorCode.GAUGE_OVERLOAD, "balance in overload range"),
    "-": (GaugeErrorCode.GAUGE_UNDERLOAD, "balance in underload range"),
    "L": (GaugeErrorCode.GAUGE_ERROR, "logical error (command or parameter not allowed)"),
}


def parse_sics(line: str, *, name: str, decimal_comma: bool = False) -> ParseResult:
    """MT-SICS: `S S <value> <unit>` stable, `S D ...` dynamic (unstable), error replies."""
    text = line.strip(_STRIP)
    tokens = text.split()
    if len(tokens) == 1 and tokens[0] in _SICS_GENERAL_ERRORS:
        return gauge_error(GaugeErrorCode.GAUGE_ERROR, _SICS_GENERAL_ERRORS[tokens[0]])
    if len(tokens) < 2 or tokens[0] not in _SICS_WEIGHT_IDS:
        return unparseable("not an MT-SICS weight reply", text)
    status = tokens[1]
    if len(tokens) == 2 and status in _SICS_STATUS_ERRORS:
        code, meaning = _SICS_STATUS_ERRORS[status]
        return gauge_error(code, f"{text}: {meaning}")
    if status not in ("S", "D") or len(tokens) not in (3, 4):
        return unparseable("not an MT-SICS weight reply", text)
    value = parse_number(tokens[2], decimal_comma=decimal_comma)
    if value is None:
        return unparseable("MT-SICS weight is not a finite number", text)
    unit = tokens[3] if len(tokens) == 4 else None
    return _single(name, value, unit, stable=status == "S")


# --- key=value -----------------------------------------------------------------------------

_KV_VALUE = re.compile(r"(?P<value>" + _NUMBER.pattern + r")(?P<unit>" + _UNIT.pattern + r")?")


def parse_keyvalue(line: str, *, prefix: str | None = None) -> ParseResult:
    """`name=value[ unit]` pairs; the unit may also be glued on (`torque=1.52Nm`).

    Separators between pairs are spaces, commas or semicolons, so the decimal mark is a point.
    A name may appear once per line. With `prefix`, `torque` is recorded as `{prefix}_torque`.
    """
    text = line.strip(_STRIP)
    tokens = [token for token in re.split(r"[\s,;]+", re.sub(r"\s*=\s*", "=", text)) if token]
    pairs: list[tuple[str, float, str | None]] = []
    for token in tokens:
        if "=" not in token:
            if not pairs or pairs[-1][2] is not None or not _UNIT.fullmatch(token):
                return unparseable(f"stray token {token[:32]!r}", text)
            pairs[-1] = (pairs[-1][0], pairs[-1][1], token)
            continue
        name, _, raw = token.partition("=")
        match = _KV_VALUE.fullmatch(raw)
        value = parse_number(match["value"]) if match else None
        if not _NAME.fullmatch(name) or match is None or value is None:
            return unparseable(f"bad pair {token[:32]!r}", text)
        pairs.append((name, value, match["unit"]))
    if not pairs:
        return unparseable("no name=value pair", text)
    names = [name for name, _, _ in pairs]
    if len(set(names)) != len(names):
        return unparseable("a name appears twice", text)
    values = {
        (f"{prefix}_{name}" if prefix else name): Measured(value=value, unit=unit)
        for name, value, unit in pairs
    }
    return Reading(values=values, stable=True)


# --- regex ---------------------------------------------------------------------------------

_REGEX_STATUS: dict[str, GaugeErrorCode | bool] = {
    **dict.fromkeys(("S", "ST", "STABLE"), True),
    **dict.fromkeys(("D", "U", "US", "UNSTABLE", "DYNAMIC"), False),
    **dict.fromkeys(("+", "OL", "OVER", "OVERLOAD"), GaugeErrorCode.GAUGE_OVERLOAD),
    **dict.fromkeys(("-", "UL", "UNDER", "UNDERLOAD"), GaugeErrorCode.GAUGE_UNDERLOAD),
    **dict.fromkeys(("E", "ERR", "ERROR"), GaugeErrorCode.GAUGE_ERROR),
}


def parse_regex(
    line: str, *, pattern: re.Pattern[str], name: str, decimal_comma: bool = False
) -> ParseResult:
    """The first match of `pattern` in the line (`search`: anchor it with ^...$ to be strict).

    An empty or absent `status` group means stable; other status texts are looked up,
    case-insensitively, in the table above (docs/devices.md lists it); an unknown one is garbage.
    """
    text = line.strip(_STRIP)
    match = pattern.search(text)
    if match is None:
        return unparseable("does not match the pattern", text)
    groups = match.groupdict()
    status = (groups.get("status") or "").strip().upper()
    if status and status not in _REGEX_STATUS:
        return unparseable(f"unknown status {status[:16]!r}", text)
    stable = _REGEX_STATUS.get(status, True)
    if isinstance(stable, GaugeErrorCode):
        return gauge_error(stable, text)
    raw_value = groups.get("value")
    value = parse_number(raw_value, decimal_comma=decimal_comma) if raw_value is not None else None
    if value is None:
        return unparseable("value is not a finite number", text)
    unit = (groups.get("unit") or "").strip() or None
    return _single(name, value, unit, stable=stable)


# --- the device's rules --------------------------------------------------------------------


def parse_line(device: DeviceConfig, line: str) -> ParseResult:
    """Parse one framed line for `device`, then filter, check the unit and scale."""
    parsed = _parse_format(device, line)
    if not isinstance(parsed, Reading):
        return parsed
    if not parsed.stable and not device.record_unstable:
        return Ignored(code=GaugeErrorCode.GAUGE_UNSTABLE, detail="unstable value", line=line)
    values: dict[str, Measured] = {}
    for name, item in parsed.values.items():
        if device.unit is not None and item.unit is not None and item.unit != device.unit:
            detail = f"{name}: gauge sent {item.unit!r}, configured {device.unit!r}"
            return gauge_error(GaugeErrorCode.UNIT_MISMATCH, detail)
        value = item.value * device.scale if device.scale is not None else item.value
        if not math.isfinite(value):
            return unparseable(f"{name}: scaled value is not finite", line)
        values[name] = Measured(value=value, unit=device.unit or item.unit)
    return Reading(values=values, stable=parsed.stable)


def _parse_format(device: DeviceConfig, line: str) -> ParseResult:
    # The config guarantees measurement for the single-value formats and a valid regex pattern.
    name = device.measurement or ""
    comma = device.decimal_comma
    match device.format:
        case "and":
            return parse_and(line, name=name, decimal_comma=comma)
        case "sics":
            return parse_sics(line, name=name, decimal_comma=comma)
        case "keyvalue":
            return parse_keyvalue(line, prefix=device.measurement)
        case "regex":
            pattern = re.compile(device.pattern or "")
            return parse_regex(line, pattern=pattern, name=name, decimal_comma=comma)
