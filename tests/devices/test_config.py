"""DeviceConfig: what a config file may say, and the clear errors for what it may not."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from devices import DeviceConfig

from .support import make_device


def test_defaults_are_the_common_serial_settings() -> None:
    device = DeviceConfig(
        name="scale1", port="/dev/ttyUSB0", station="ST01", measurement="weight", format="and"
    )
    assert (device.baudrate, device.bytesize, device.parity, device.stopbits) == (9600, 8, "N", 1)
    assert device.terminator == "\r\n"
    assert device.max_line_bytes == 256
    assert (device.reconnect_min_s, device.reconnect_max_s) == (0.5, 30.0)
    assert device.record_unstable is False
    assert device.poll is None and device.poll_bytes is None
    assert device.decimal_comma is False
    assert (device.max_silence_s, device.silence_error_s) == (None, None)


def test_a_polled_gauge_is_stale_after_3_missed_polls_and_error_after_10_by_default() -> None:
    poll = make_device(format="sics", poll={}).poll
    assert poll is not None and (poll.stale_after, poll.error_after) == (3, 10)


def test_a_by_id_port_is_kept_as_it_is() -> None:
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    assert make_device(port=port).port == port


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "scale/1"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "scale+"}, "name"),
        ({"station": "ST 01"}, "station"),
        ({"bytesize": 9}, "bytesize"),
        ({"parity": "X"}, "parity"),
        ({"stopbits": 3}, "stopbits must be 1, 1.5 or 2"),
        ({"baudrate": 0}, "baudrate"),
        ({"format": "csv"}, "format"),
        ({"color": "red"}, "Extra inputs are not permitted"),
        ({"format": "regex"}, "needs a pattern with a named group 'value'"),
        ({"format": "regex", "pattern": "(?P<value>[0-9"}, "pattern does not compile"),
        ({"format": "regex", "pattern": r"([0-9.]+)"}, "needs a named group 'value'"),
        ({"format": "regex", "pattern": r"(?P<value>\S+) (?P<units>\S+)"}, "unknown named group"),
        ({"pattern": r"(?P<value>\S+)"}, "pattern is only used with format: regex"),
        ({"measurement": None}, "needs measurement"),
        ({"measurement": "a b"}, "measurement"),
        ({"poll": {"interval_s": 1}}, "poll.command is required for format and"),
        ({"poll": {"command": "Q", "interval_s": 0}}, "interval_s"),
        ({"poll": {"command": "Q\r\n"}}, "command"),
        ({"terminator": ""}, "terminator must not be empty"),
        ({"terminator": "\\q"}, "terminator"),
        ({"terminator": "\u00e9"}, "ASCII"),
        ({"scale": float("nan")}, "finite"),
        ({"scale": 0}, "must not be 0"),
        ({"max_line_bytes": 4}, "max_line_bytes"),
        ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "reconnect_max_s must be at least"),
        ({"reconnect_min_s": 0}, "reconnect_min_s"),
        ({"format": "keyvalue", "measurement": None, "decimal_comma": True}, "separates pairs"),
        ({"poll": {"command": "Q", "stale_after": 0}}, "stale_after"),
        ({"poll": {"command": "Q", "stale_after": 5, "error_after": 2}}, "error_after must be"),
        ({"max_silence_s": 0}, "max_silence_s"),
        ({"silence_error_s": 10}, "silence_error_s needs max_silence_s"),
        ({"max_silence_s": 10, "silence_error_s": 5}, "silence_error_s must be at least"),
        ({"max_silence_s": 5, "poll": {"command": "Q"}}, "watched by its missed polls"),
    ],
)
def test_invalid_settings_are_refused_with_a_message(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        make_device(**overrides)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("\r\n", "\r\n"),
        ("\\r\\n", "\r\n"),
        ("\\n", "\n"),
        ("\\r", "\r"),
        ("\\x03", "\x03"),
        ("\n", "\n"),
    ],
)
def test_terminator_accepts_backslash_escapes(given: str, expected: str) -> None:
    assert make_device(terminator=given).terminator == expected


def test_terminator_from_yaml_single_and_double_quotes_mean_the_same() -> None:
    single = yaml.safe_load("terminator: '\\r\\n'")["terminator"]
    double = yaml.safe_load('terminator: "\\r\\n"')["terminator"]
    assert single != double  # YAML itself disagrees...
    assert make_device(terminator=single).terminator == make_device(terminator=double).terminator


def test_sics_poll_command_defaults_to_si() -> None:
    device = make_device(format="sics", poll={"interval_s": 0.5})
    assert device.poll is not None
    assert device.poll.command == "SI"
    assert device.poll_bytes == b"SI\r\n"


def test_poll_bytes_use_the_device_terminator() -> None:
    device = make_device(poll={"command": "Q", "interval_s": 1}, terminator="\\r")
    assert device.poll_bytes == b"Q\r"


def test_keyvalue_needs_no_measurement() -> None:
    assert make_device(format="keyvalue", measurement=None).measurement is None


def test_stopbits_one_and_a_half_is_accepted() -> None:
    assert make_device(stopbits=1.5).stopbits == 1.5


def test_the_config_is_frozen() -> None:
    device = make_device()
    with pytest.raises(ValidationError):
        device.baudrate = 19200  # type: ignore[misc]


def test_a_yaml_devices_list_loads() -> None:
    text = """
devices:
  - name: scale1
    port: /dev/serial/by-id/usb-AND_GX-A_ABC123-if00
    station: ST01
    measurement: weight_g
    format: and
    unit: g
  - name: driver1
    port: /dev/ttyUSB1
    station: ST01
    format: keyvalue
    baudrate: 115200
    terminator: '\\n'
  - name: balance2
    port: /dev/ttyUSB2
    station: ST02
    measurement: mass
    format: sics
    poll: {interval_s: 0.5}
"""
    devices = [DeviceConfig.model_validate(item) for item in yaml.safe_load(text)["devices"]]
    assert [device.name for device in devices] == ["scale1", "driver1", "balance2"]
    assert devices[1].terminator == "\n"
    assert devices[2].poll_bytes == b"SI\r\n"
