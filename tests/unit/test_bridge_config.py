"""bridge.config: the YAML file, the environment over it, and errors that name the field."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.config import (
    BridgeConfig,
    ConfigError,
    Limit,
    MqttConfig,
    OutboxConfig,
    StationConfig,
    load_config,
)

ENV_PREFIX = "STATION_BRIDGE_"

FILE = """\
bridge_id: file-bridge
mqtt:
  host: file-host
  port: 1884
  topic_prefix: plant1/line2
mes:
  username: svc
  password: file-pw
stations:
  - id: s1
    equipment_id: 3
    processes: [1, 2]
    limits:
      1:
        torque: {min: 1.0, max: 2.0, unit: Nm, defect: TORQUE_OUT}
  - id: s2
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STATION_BRIDGE_* setting of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the file ------------------------------------------------------------------------------------


def test_file_values_are_loaded(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FILE))
    assert config.bridge_id == "file-bridge"
    assert (config.mqtt.host, config.mqtt.port) == ("file-host", 1884)
    assert config.mqtt.topic_prefix == "plant1/line2"
    assert config.mes.password is not None and config.mes.password.get_secret_value() == "file-pw"
    assert [s.id for s in config.stations] == ["s1", "s2"]
    s1 = config.station("s1")
    assert s1 is not None and s1.processes == [1, 2] and s1.equipment_id == 3
    assert s1.limits == {1: {"torque": Limit(min=1, max=2, unit="Nm", defect="TORQUE_OUT")}}
    assert config.station("nope") is None
    assert config.client_id == "station-bridge-file-bridge"


ONE_STATION = "stations: [{id: s1}]\n"


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "{}\n", "stations: []\n"],
    ids=["empty", "comment", "{}", "empty-list"],
)
def test_a_file_without_stations_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"\(top level\): .*no stations configured"):
        load_config(write(tmp_path, text))


def test_a_file_with_only_stations_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ONE_STATION))
    assert config == BridgeConfig(stations=[StationConfig(id="s1")])
    assert config.bridge_id == "bridge"
    assert config.mqtt == MqttConfig() and config.outbox == OutboxConfig()
    assert config.devices == []


def test_station_ids_written_as_yaml_integers_are_the_topic_ids(tmp_path: Path) -> None:
    text = (
        "stations:\n  - id: 3\n  - id: s4\n"
        "devices:\n  - {name: scale, port: /dev/ttyUSB0, station: 3, format: and,"
        " measurement: weight}\n"
    )
    config = load_config(write(tmp_path, text))
    assert [s.id for s in config.stations] == ["3", "s4"]
    assert config.station("3") is not None
    assert config.devices[0].station == "3"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("stations:\n  - id: true\n", "stations.0.id: Input should be a valid string"),
        ("stations:\n  - id: 3.5\n", "stations.0.id: Input should be a valid string"),
        ("stations:\n  - id: 3\n  - id: '3'\n", "station ids must be unique"),
        (
            "stations: [{id: 3}]\n"
            "devices: [{name: g, port: /dev/x, station: 4, format: and, measurement: w}]\n",
            "device 'g' names unknown station '4'",
        ),
    ],
    ids=["bool", "float", "int-and-text-are-one-id", "device-unknown-int-station"],
)
def test_ids_that_are_not_whole_numbers_or_text_are_refused(
    tmp_path: Path, text: str, line: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(line)):
        load_config(write(tmp_path, text))


def test_fixed_client_id_is_used(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "mqtt: {client_id: fixed}\n" + ONE_STATION))
    assert config.client_id == "fixed"


# -- the environment over the file ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "read", "expected"),
    [
        ({"STATION_BRIDGE_MQTT__HOST": "env-host"}, lambda c: c.mqtt.host, "env-host"),
        ({"STATION_BRIDGE_MQTT__HOST": "env-host"}, lambda c: c.mqtt.port, 1884),
        (
            {"STATION_BRIDGE_MQTT__HOST": "env-host"},
            lambda c: c.mqtt.topic_prefix,
            "plant1/line2",
        ),
        ({"STATION_BRIDGE_MQTT__PORT": "1999"}, lambda c: c.mqtt.port, 1999),
        ({"STATION_BRIDGE_BRIDGE_ID": "env-bridge"}, lambda c: c.bridge_id, "env-bridge"),
        (
            {"STATION_BRIDGE_BRIDGE_ID": "env-bridge"},
            lambda c: c.client_id,
            "station-bridge-env-bridge",
        ),
        (
            {"STATION_BRIDGE_MES__PASSWORD": "env-pw"},
            lambda c: c.mes.password.get_secret_value(),
            "env-pw",
        ),
        ({"STATION_BRIDGE_MES__PASSWORD": "env-pw"}, lambda c: c.mes.username, "svc"),
        (
            {"STATION_BRIDGE_STATIONS": '[{"id": "e1", "processes": [5]}]'},
            lambda c: [(s.id, s.processes) for s in c.stations],
            [("e1", [5])],
        ),
        (
            {
                "STATION_BRIDGE_STATIONS": (
                    '[{"id": "e1", "limits": {"4": {"gap": {"max": 0.5, "defect": "GAP"}}}}]'
                )
            },
            lambda c: c.stations[0].limits,
            {4: {"gap": Limit(max=0.5, defect="GAP")}},
        ),
        ({"STATION_BRIDGE_LOG_LEVEL": "DEBUG"}, lambda c: c.log_level, "DEBUG"),
        ({"STATION_BRIDGE_OUTBOX__RETRY_MAX_S": "30"}, lambda c: c.outbox.retry_max_s, 30.0),
    ],
    ids=[
        "mqtt-host-wins",
        "mqtt-port-from-file-kept",
        "mqtt-prefix-from-file-kept",
        "mqtt-port-from-string",
        "bridge-id-wins",
        "client-id-follows-bridge-id",
        "mes-password-wins",
        "mes-username-from-file-kept",
        "stations-json-replaces-file-list",
        "stations-json-limits-keys-become-ints",
        "top-level-key",
        "outbox-key",
    ],
)
def test_environment_wins_over_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    read: Callable[[BridgeConfig], Any],
    expected: Any,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert read(load_config(write(tmp_path, FILE))) == expected


def test_environment_alone_over_an_empty_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATION_BRIDGE_MQTT__HOST", "env-host")
    monkeypatch.setenv("STATION_BRIDGE_STATIONS", '[{"id": "e1"}]')
    config = load_config(write(tmp_path, ""))
    assert config.mqtt.host == "env-host" and config.mqtt.port == 1883
    assert [s.id for s in config.stations] == ["e1"]


def test_an_empty_station_list_from_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATION_BRIDGE_STATIONS", "[]")
    with pytest.raises(ConfigError, match="no stations configured"):
        load_config(write(tmp_path, FILE))


def test_a_bad_environment_value_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATION_BRIDGE_MQTT__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"mqtt\.port: "):
        load_config(write(tmp_path, FILE))


def test_duplicate_station_ids_from_the_environment_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATION_BRIDGE_STATIONS", '[{"id": "a"}, {"id": "a"}]')
    with pytest.raises(ConfigError, match="station ids must be unique"):
        load_config(write(tmp_path, ""))


def test_malformed_json_in_the_environment_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATION_BRIDGE_STATIONS", '[{"id": ')
    with pytest.raises(ConfigError, match="stations"):
        load_config(write(tmp_path, ""))


def test_environment_password_wins_over_a_password_file_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = write(tmp_path, "file-secret\n", name="pw")
    monkeypatch.setenv("STATION_BRIDGE_MES__PASSWORD", "env-pw")
    text = f"mes: {{username: svc, password_file: '{secret}'}}\n" + ONE_STATION
    config = load_config(write(tmp_path, text))
    assert config.mes.password is not None
    assert config.mes.password.get_secret_value() == "env-pw"


# -- a bad file ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("stations:\n  - id: 'bad id!'\n", ["stations.0.id: "]),
        ("stations:\n  - {id: s1}\n  - {id: s2, processes: [0]}\n", ["stations.1.processes.0: "]),
        ("stations:\n  - {}\n", ["stations.0.id: Field required"]),
        ("stations:\n  - {id: s1, equipment_id: 0}\n", ["stations.0.equipment_id: "]),
        ("stations:\n  - {id: s1, auto_convert: maybe}\n", ["stations.0.auto_convert: "]),
        ("stations:\n  - {id: s1, limit: {}}\n", ["stations.0.limit: Extra inputs"]),
        (
            "stations:\n  - id: s1\n    limits:\n      1:\n        torque: {min: 3, max: 1, "
            "defect: D}\n",
            ["stations.0.limits.1.torque: ", "min 3.0 is above max 1.0"],
        ),
        (
            "stations:\n  - id: s1\n    limits:\n      1:\n        torque: {max: 1}\n",
            ["stations.0.limits.1.torque.defect: Field required"],
        ),
        (
            "stations:\n  - id: s1\n    limits:\n      0:\n        t: {defect: D}\n",
            ["stations.0.limits.0.[key]: "],
        ),
        ("stations:\n  - {id: s1}\n  - {id: s1}\n", ["station ids must be unique"]),
        ("stations: {id: s1}\n", ["stations: "]),
        ("mqtt: {port: 70000}\n", ["mqtt.port: "]),
        ("mqtt: {hots: broker}\n", ["mqtt.hots: Extra inputs"]),
        ("mqtt: {keepalive_s: 1}\n", ["mqtt.keepalive_s: "]),
        ("mqt: {host: broker}\n", ["mqt: Extra inputs"]),
        ("log_level: LOUD\n", ["log_level: "]),
        ("bridge_id: 'a b'\n", ["bridge_id: "]),
        ("outbox: {retry_min_s: 10, retry_max_s: 1}\n", ["outbox: ", "retry_min_s"]),
        ("outbox: {max_pending: 0}\n", ["outbox.max_pending: "]),
        (
            "mqtt: {port: -1}\nstations:\n  - id: 'x y'\n",
            ["2 invalid setting(s)", "mqtt.port: ", "stations.0.id: "],
        ),
    ],
    ids=[
        "station-id-pattern",
        "process-number-0",
        "station-id-missing",
        "equipment-id-0",
        "auto-convert-not-bool",
        "misspelt-limits",
        "limit-min-above-max",
        "limit-without-defect",
        "limit-process-0",
        "duplicate-station-ids",
        "stations-not-a-list",
        "port-out-of-range",
        "misspelt-mqtt-key",
        "keepalive-too-short",
        "misspelt-section",
        "log-level",
        "bridge-id-pattern",
        "retry-min-above-max",
        "max-pending-0",
        "two-errors-both-listed",
    ],
)
def test_bad_file_is_a_config_error_naming_the_field(
    tmp_path: Path, text: str, lines: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert "Traceback" not in message
    for line in lines:
        assert line in message, message


@pytest.mark.parametrize(
    "prefix",
    ["#", "plant/#", "a/+/b", "+", "/plant1", "plant1/", "a//b", "/"],
    ids=["hash", "hash-level", "plus-level", "plus", "leading-slash", "trailing-slash",
         "empty-level", "only-slash"],
)  # fmt: skip
def test_topic_prefix_with_wildcards_or_empty_levels_is_refused(
    tmp_path: Path, prefix: str
) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.topic_prefix: "):
        load_config(write(tmp_path, f"mqtt: {{topic_prefix: '{prefix}'}}\n"))


@pytest.mark.parametrize(
    "prefix",
    ["", "plant1", "plant1/line2", "a/b/c/d", "site 1"],
    ids=["empty", "one-level", "two-levels", "four-levels", "with-space"],
)
def test_topic_prefix_accepted(prefix: str) -> None:
    assert MqttConfig(topic_prefix=prefix).topic_prefix == prefix


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mqtt: [unclosed\n", "not valid YAML"),
        ("mqtt:\n  host: a\n host: b\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("just a string\n", "expected a mapping"),
    ],
    ids=["bad-flow", "bad-indent", "list", "scalar"],
)
def test_unreadable_file_is_a_config_error(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=says) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="No such file") as raised:
        load_config(path)
    assert str(path) in str(raised.value)


# -- sections on their own -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"min": 1, "max": 2, "defect": "D"}, True),
        ({"min": 2, "max": 2, "defect": "D"}, True),
        ({"min": 2.0001, "max": 2, "defect": "D"}, False),
        ({"min": -1, "defect": "D"}, True),
        ({"max": -1, "defect": "D"}, True),
        ({"defect": "D"}, True),
        ({"min": 1}, False),
        ({"defect": ""}, False),
        ({"defect": "D" * 65}, False),
        ({"defect": "D", "maximum": 3}, False),
    ],
    ids=[
        "ordered",
        "min-equals-max",
        "min-above-max",
        "min-only",
        "max-only",
        "no-bounds",
        "no-defect",
        "empty-defect",
        "defect-too-long",
        "misspelt-key",
    ],
)
def test_limit(fields: dict[str, Any], ok: bool) -> None:
    if ok:
        limit = Limit.model_validate(fields)
        assert limit.required is True and limit.missing_defect is None
    else:
        with pytest.raises(ValidationError):
            Limit.model_validate(fields)


def test_limit_min_above_max_names_both() -> None:
    with pytest.raises(ValidationError, match=r"min 3\.0 is above max 1\.0"):
        Limit(min=3, max=1, defect="D")


def test_station_limit_keys_are_process_numbers() -> None:
    station = StationConfig.model_validate(
        {"id": "s1", "limits": {"2": {"t": {"defect": "D", "required": False}}}}
    )
    assert station.limits == {2: {"t": Limit(defect="D", required=False)}}


def test_mqtt_password_file_is_read(tmp_path: Path) -> None:
    secret = write(tmp_path, "  broker-secret \n", name="mqtt-pw")
    config = MqttConfig(username="bridge", password_file=secret)
    assert config.password is not None
    assert config.password.get_secret_value() == "broker-secret"
    assert "broker-secret" not in repr(config)


def test_mqtt_password_file_from_yaml(tmp_path: Path) -> None:
    secret = write(tmp_path, "broker-secret\n", name="mqtt-pw")
    config = load_config(write(tmp_path, f"mqtt: {{password_file: '{secret}'}}\n" + ONE_STATION))
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "broker-secret"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"password": "a", "password_file": "PW"}, "not both"),
        ({"password_file": "MISSING"}, "cannot read secret file"),
    ],
    ids=["both", "missing-file"],
)
def test_mqtt_password_file_problems(tmp_path: Path, fields: dict[str, str], says: str) -> None:
    write(tmp_path, "x", name="PW")
    data = {
        key: (str(tmp_path / value) if key == "password_file" else value)
        for key, value in fields.items()
    }
    with pytest.raises(ValidationError, match=says):
        MqttConfig.model_validate(data)


def test_mqtt_password_file_problem_in_a_file_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"mqtt: {{password_file: '{tmp_path / 'missing'}'}}\n")
    with pytest.raises(ConfigError, match=r"mqtt: .*cannot read secret file"):
        load_config(path)
