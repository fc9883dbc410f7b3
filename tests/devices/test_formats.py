"""Every parser, as tables of real line shapes → outcome; then the device's rules on top."""

from __future__ import annotations

import re

import pytest

from devices import GaugeError, GaugeErrorCode, Ignored, Measured, Reading, parse_line
from devices.formats import parse_and, parse_keyvalue, parse_number, parse_regex, parse_sics
from devices.readings import ParseResult

from .support import make_device

OVERLOAD = GaugeErrorCode.GAUGE_OVERLOAD
UNDERLOAD = GaugeErrorCode.GAUGE_UNDERLOAD
ERROR = GaugeErrorCode.GAUGE_ERROR
BUSY = GaugeErrorCode.GAUGE_BUSY
UNPARSEABLE = GaugeErrorCode.UNPARSEABLE


def one(value: float, unit: str | None, *, stable: bool = True, name: str = "w") -> Reading:
    return Reading(values={name: Measured(value, unit)}, stable=stable)


def outcome(result: ParseResult) -> Reading | GaugeErrorCode:
    """A Reading as it is, an error or ignored line by its code (messages are tested apart)."""
    return result if isinstance(result, Reading) else result.code


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+00123.45", 123.45),
        ("-0012.345", -12.345),
        ("  42 ", 42.0),
        ("- 1.5", -1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1.2.3", None),
        ("nan", None),
        ("inf", None),
        ("-Infinity", None),
        ("1e999", None),
        ("9" * 400, None),
        ("", None),
        ("0x10", None),
        ("12,5", None),
    ],
)
def test_parse_number_accepts_finite_decimals_only(text: str, expected: float | None) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+00123,45", 123.45),
        ("- 0,5", -0.5),
        ("12.5", 12.5),  # a point still reads as one
        ("1,234.5", None),
        ("1,2,3", None),
        (",", None),
    ],
)
def test_parse_number_with_a_decimal_comma(text: str, expected: float | None) -> None:
    assert parse_number(text, decimal_comma=True) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ST,+00123,45  g", one(123.45, "g")),
        ("ST,+00012,34,  g", one(12.34, "g")),  # the CSV variant
        ("US,-00001,20 kg", one(-1.2, "kg", stable=False)),
        ("QT,+00012345 PC", one(12345.0, "PCS")),
        ("ST,+00012.34,  g", one(12.34, "g")),
        ("ST,+001,2,3  g", UNPARSEABLE),
        ("ST,+,  g", UNPARSEABLE),
    ],
)
def test_and_lines_with_a_decimal_comma(line: str, expected: Reading | GaugeErrorCode) -> None:
    assert outcome(parse_and(line, name="w", decimal_comma=True)) == expected


def test_a_decimal_comma_is_garbage_unless_the_device_allows_it() -> None:
    assert outcome(parse_and("ST,+00123,45  g", name="w")) == UNPARSEABLE
    assert outcome(parse_sics("S S     123,45 g", name="w")) == UNPARSEABLE
    assert outcome(parse_sics("S S     123,45 g", name="w", decimal_comma=True)) == one(123.45, "g")
    pattern = re.compile(r"^DCV (?P<value>\S+) V$")
    assert outcome(parse_regex("DCV +1,25 V", pattern=pattern, name="w")) == UNPARSEABLE
    comma = parse_regex("DCV +1,25 V", pattern=pattern, name="w", decimal_comma=True)
    assert outcome(comma) == one(1.25, None)


def test_parse_line_reads_a_decimal_comma_behind_the_device_option() -> None:
    device = make_device(decimal_comma=True, unit="g")
    assert parse_line(device, "ST,+00123,45  g") == one(123.45, "g", name="weight")
    assert isinstance(parse_line(make_device(), "ST,+00123,45  g"), Ignored)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ST,+00123.45  g", one(123.45, "g")),
        ("ST,+00123.45  g\r\n", one(123.45, "g")),
        ("ST,-00001.20 kg", one(-1.2, "kg")),
        ("ST,+0000.1278  g", one(0.1278, "g")),
        ("US,-00183.96  g", one(-183.96, "g", stable=False)),
        ("QT,+00012345 PC", one(12345.0, "PCS")),
        ("QT,+00012345", one(12345.0, "PCS")),
        ("US,+00012340 PC", one(12340.0, "PCS", stable=False)),
        ("ST,+00123.4  %", one(123.4, "%")),
        ("ST,+0001.234 kg", one(1.234, "kg")),
        ("ST,NT,+0012.34kg", one(12.34, "kg")),
        ("ST,OK,+0001.234 kg", one(1.234, "kg")),
        ("ST,+00012.34,  g", one(12.34, "g")),
        ("ST,+00001.52  N", one(1.52, "N")),
        ("\x02ST,+00001.00  g\x03", one(1.0, "g")),
        ("ST,+00001.00", one(1.0, None)),
        ("OL,+9999999E+19", OVERLOAD),
        ("OL,+999999.9  g", OVERLOAD),
        ("OL,GS,+    .  kg", OVERLOAD),
        ("OL,-99999999 PC", UNDERLOAD),
        ("", UNPARSEABLE),
        ("ST,", UNPARSEABLE),
        ("ST,+001", one(1.0, None)),
        ("ST,+00123.45  g extra", UNPARSEABLE),
        ("XX,+00123.45  g", UNPARSEABLE),
        ("st,+00123.45  g", UNPARSEABLE),
        ("ST,+001.2.3  g", UNPARSEABLE),
        ("ST,nan  g", UNPARSEABLE),
        ("ST," + "9" * 400 + "  g", UNPARSEABLE),
        ("\x00\xff\ufffd\ufffd", UNPARSEABLE),
        ("S S     100.00 g", UNPARSEABLE),
    ],
)
def test_and_lines(line: str, expected: Reading | GaugeErrorCode) -> None:
    assert outcome(parse_and(line, name="w")) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("S S     100.00 g", one(100.0, "g")),
        ("S S      -0.12 kg", one(-0.12, "kg")),
        ("S D      99.98 g", one(99.98, "g", stable=False)),
        ("SI S     100.00 g", one(100.0, "g")),
        ("SU S       3.53 oz", one(3.53, "oz")),
        ("S S     100.00", one(100.0, None)),
        ("S I", BUSY),
        ("S +", OVERLOAD),
        ("S -", UNDERLOAD),
        ("S L", ERROR),
        ("ES", ERROR),
        ("ET", ERROR),
        ("EL", ERROR),
        ("Z A", UNPARSEABLE),
        ('I4 A "B123456789"', UNPARSEABLE),
        ("S", UNPARSEABLE),
        ("SI", UNPARSEABLE),
        ("S S", UNPARSEABLE),
        ("S X 100.00 g", UNPARSEABLE),
        ("S S abc g", UNPARSEABLE),
        ("S S nan g", UNPARSEABLE),
        ("S S 1e999 g", UNPARSEABLE),
        ("S S 100.00 g extra", UNPARSEABLE),
        ("S S 100.", one(100.0, None)),
        ("", UNPARSEABLE),
        ("ST,+00123.45  g", UNPARSEABLE),
    ],
)
def test_sics_lines(line: str, expected: Reading | GaugeErrorCode) -> None:
    assert outcome(parse_sics(line, name="w")) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("torque=1.52 Nm angle=35.2 deg", {"torque": (1.52, "Nm"), "angle": (35.2, "deg")}),
        ("torque=1.52,angle=35.2", {"torque": (1.52, None), "angle": (35.2, None)}),
        ("torque=1.52 Nm; angle=35.2 deg", {"torque": (1.52, "Nm"), "angle": (35.2, "deg")}),
        ("torque = -0.5 Nm", {"torque": (-0.5, "Nm")}),
        ("torque=1.52Nm", {"torque": (1.52, "Nm")}),
        ("v=1e3 mV", {"v": (1000.0, "mV")}),
        ("temp=21.5 °C", {"temp": (21.5, "°C")}),
        ("ok=1", {"ok": (1.0, None)}),
    ],
)
def test_keyvalue_lines(line: str, expected: dict[str, tuple[float, str | None]]) -> None:
    values = {name: Measured(value, unit) for name, (value, unit) in expected.items()}
    assert parse_keyvalue(line) == Reading(values=values)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "hello",
        "torque=",
        "torque=abc",
        "torque=nan Nm",
        "torque=1e999",
        "torque=1.5 Nm N",
        "torque=1.5 angle=2 torque=3",
        "=1.5",
        "1torque=1.5",
        "Nm torque=1.5",
        "torque=1.5 12",
        "torque=1,5",
        "\x00\xff=\x01",
    ],
)
def test_keyvalue_garbage_is_unparseable(line: str) -> None:
    assert outcome(parse_keyvalue(line)) == UNPARSEABLE


def test_keyvalue_prefix_names_each_value() -> None:
    result = parse_keyvalue("torque=1.5 angle=2", prefix="driver1")
    assert isinstance(result, Reading)
    assert list(result.values) == ["driver1_torque", "driver1_angle"]


PATTERN = re.compile(r"^(?P<status>[A-Z+-]+)?\s*T=(?P<value>\S+)\s*(?P<unit>[A-Za-z]+)?$")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("T=1.52 Nm", one(1.52, "Nm")),
        ("T=1.52", one(1.52, None)),
        ("ST T=1.52 Nm", one(1.52, "Nm")),
        ("stable T=1.52 Nm", UNPARSEABLE),  # the status is matched by [A-Z+-]: no lowercase
        ("US T=1.52 Nm", one(1.52, "Nm", stable=False)),
        ("D T=1.52 Nm", one(1.52, "Nm", stable=False)),
        ("OL T=99999 Nm", OVERLOAD),
        ("+ T=0 Nm", OVERLOAD),
        ("UL T=0 Nm", UNDERLOAD),
        ("ERR T=0", ERROR),
        ("XYZ T=1.52 Nm", UNPARSEABLE),
        ("T=nan Nm", UNPARSEABLE),
        ("T=1e999", UNPARSEABLE),
        ("T=", UNPARSEABLE),
        ("garbage", UNPARSEABLE),
        ("", UNPARSEABLE),
    ],
)
def test_regex_lines(line: str, expected: Reading | GaugeErrorCode) -> None:
    assert outcome(parse_regex(line, pattern=PATTERN, name="w")) == expected


def test_regex_searches_the_line_when_the_pattern_is_not_anchored() -> None:
    result = parse_regex("Peak: 12.5 N (max)", pattern=re.compile(r"(?P<value>[\d.]+) N"), name="w")
    assert result == one(12.5, None)


def test_regex_status_is_case_insensitive() -> None:
    pattern = re.compile(r"(?P<status>\w+) (?P<value>\S+)")
    assert outcome(parse_regex("stable 1", pattern=pattern, name="w")) == one(1.0, None)
    assert outcome(parse_regex("Overload 1", pattern=pattern, name="w")) == OVERLOAD


# --- the device's rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "line", "expected"),
    [
        ({}, "ST,+00123.45  g", one(123.45, "g", name="weight")),
        ({}, "US,+00123.45  g", GaugeErrorCode.GAUGE_UNSTABLE),
        (
            {"record_unstable": True},
            "US,+00123.45  g",
            one(123.45, "g", stable=False, name="weight"),
        ),
        ({"unit": "g"}, "ST,+00123.45  g", one(123.45, "g", name="weight")),
        ({"unit": "g"}, "ST,+00123.45 kg", GaugeErrorCode.UNIT_MISMATCH),
        ({"unit": "g"}, "US,+00123.45 kg", GaugeErrorCode.GAUGE_UNSTABLE),
        ({"unit": "g"}, "ST,+00123.45", one(123.45, "g", name="weight")),
        ({"unit": "PCS"}, "QT,+00000012 PC", one(12.0, "PCS", name="weight")),
        ({"scale": 0.001, "unit": "kg"}, "ST,+01500.00", one(1.5, "kg", name="weight")),
        ({"scale": 1e305}, "ST,+99999.00  g", UNPARSEABLE),
        ({}, "OL,+9999999E+19", OVERLOAD),
        ({}, "garbage", UNPARSEABLE),
        ({"format": "sics"}, "S D 1.00 g", GaugeErrorCode.GAUGE_UNSTABLE),
        ({"format": "sics"}, "S S 1.00 g", one(1.0, "g", name="weight")),
        (
            {"format": "regex", "pattern": r"^(?P<value>\S+) (?P<unit>\S+)$", "scale": 2},
            "1.25 Nm",
            one(2.5, "Nm", name="weight"),
        ),
    ],
)
def test_parse_line_applies_filter_unit_and_scale(
    overrides: dict[str, object], line: str, expected: Reading | GaugeErrorCode
) -> None:
    assert outcome(parse_line(make_device(**overrides), line)) == expected


def test_parse_line_keyvalue_uses_the_names_on_the_line_and_the_optional_prefix() -> None:
    plain = make_device(format="keyvalue", measurement=None)
    prefixed = make_device(format="keyvalue", measurement="driver1", scale=10)
    line = "torque=1.5 Nm angle=2 deg"
    assert parse_line(plain, line) == Reading(
        values={"torque": Measured(1.5, "Nm"), "angle": Measured(2.0, "deg")}
    )
    assert parse_line(prefixed, line) == Reading(
        values={"driver1_torque": Measured(15.0, "Nm"), "driver1_angle": Measured(20.0, "deg")}
    )


def test_parse_line_keyvalue_unit_applies_to_every_value() -> None:
    device = make_device(format="keyvalue", measurement=None, unit="Nm")
    result = parse_line(device, "torque=1.5 Nm angle=2 deg")
    assert isinstance(result, GaugeError)
    assert result.code is GaugeErrorCode.UNIT_MISMATCH
    assert "angle" in result.detail


def test_gauge_errors_carry_english_and_korean_messages() -> None:
    result = parse_line(make_device(), "OL,+9999999E+19")
    assert isinstance(result, GaugeError)
    assert result.to_json() == {
        "code": "GAUGE_OVERLOAD",
        "message": "The gauge is overloaded (above its range)",
        "message_ko": "계측기 과부하 (측정 범위 초과)",
        "detail": "OL,+9999999E+19",
    }


def test_every_error_code_has_both_messages() -> None:
    from devices.readings import gauge_error

    for code in GaugeErrorCode:
        error = gauge_error(code)
        assert error.message and error.message_ko and error.message != error.message_ko


def test_ignored_lines_keep_the_line_for_the_log() -> None:
    result = parse_line(make_device(), "garbage")
    assert isinstance(result, Ignored)
    assert result.line == "garbage"


def test_reading_measurements_is_the_shape_the_bridge_records() -> None:
    reading = Reading(values={"torque": Measured(1.52, "Nm"), "count": Measured(3.0, None)})
    assert reading.measurements() == {
        "torque": {"value": 1.52, "unit": "Nm"},
        "count": {"value": 3.0, "unit": None},
    }
