"""The bridge's configuration: one model, loaded from a YAML file with the environment over it.

Every key can be set as `STATION_BRIDGE_<SECTION>__<KEY>` (`STATION_BRIDGE_MQTT__HOST`); lists
take JSON. Secrets are `SecretStr` (they print as `**********`) and may instead be read from a
file named by the matching `*_file` key, so that a password never has to sit in the config itself.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bridge.adapters.secrets import read_secret
from bridge.adapters.tls import client_context
from bridge.mes.settings import MesSettings
from devices.config import DeviceConfig, StationId


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class MqttTls(_Section):
    """TLS to the broker (`mqtt.tls`); its presence switches TLS on."""

    ca_file: Path | None = Field(
        default=None, description="PEM CA(s) trusted for the broker, in addition to the system's"
    )
    cert_file: Path | None = Field(
        default=None, description="client certificate (PEM) for brokers that require one"
    )
    key_file: Path | None = Field(
        default=None, description="the client certificate's key (PEM, unencrypted)"
    )
    insecure: bool = Field(
        default=False,
        description="do not check the broker's certificate is for mqtt.host (the chain still is)",
    )

    @model_validator(mode="after")
    def _loadable(self) -> MqttTls:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs a cert_file")
        self.context()  # a bad file is a config error, not a reconnect loop
        return self

    def context(self) -> ssl.SSLContext:
        return client_context(
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            check_hostname=not self.insecure,
        )


class MqttConfig(_Section):
    """The broker the stations and tablets talk to (or the embedded one)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 1883
    embedded: bool = Field(
        default=False, description="start an amqtt broker in the bridge on host:port"
    )
    embedded_users_file: Path | None = Field(
        default=None,
        description="the embedded broker's clients: `username:argon2-hash` lines; all must log in",
    )
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: MqttTls | None = Field(default=None, description="TLS to the broker; none when not set")
    client_id: str | None = Field(
        default=None, description="fixed MQTT client id; default station-bridge-<bridge_id>"
    )
    topic_prefix: str = Field(default="", pattern=r"^([^#+/]+(/[^#+/]+)*)?$")
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    max_message_bytes: Annotated[int, Field(ge=256)] = 65536
    reconnect_max_s: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _password_from_file(self) -> MqttConfig:
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("give either password or password_file, not both")
            object.__setattr__(self, "password", read_secret(self.password_file))
        return self

    @model_validator(mode="after")
    def _embedded_broker(self) -> MqttConfig:
        if self.embedded and self.tls is not None:
            raise ValueError(
                "the embedded broker speaks plain MQTT: mqtt.tls needs an external one"
            )
        if self.embedded_users_file is not None:
            if not self.embedded:
                raise ValueError("embedded_users_file is for the embedded broker (embedded: true)")
            if not self.embedded_users_file.is_file():
                raise ValueError(f"cannot read embedded_users_file {self.embedded_users_file}")
            if self.username is None or self.password is None:
                raise ValueError(
                    "with embedded_users_file the bridge logs in to its own broker too: "
                    "set username and password (or password_file), and put that user in the file"
                )
        return self


class Limit(_Section):
    """What one measurement must be for a PASS, and the defect code when it is not."""

    min: float | None = None
    max: float | None = None
    unit: str | None = None
    defect: str = Field(min_length=1, max_length=64)
    required: bool = True
    missing_defect: str | None = Field(
        default=None,
        description="defect code when a required measurement is missing; default MISSING_<NAME>",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Limit:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class StationConfig(_Section):
    id: StationId
    equipment_id: Annotated[int, Field(gt=0)] | None = None
    processes: list[Annotated[int, Field(ge=1, le=100)]] | None = Field(
        default=None, description="process numbers this station runs; any when not given"
    )
    auto_convert: bool = Field(
        default=False, description="convert a WIP to a serial when a complete leaves it COMPLETED"
    )
    converts: bool | None = Field(
        default=None,
        description="may send wip/convert; default: when it auto-converts or runs the last process",
    )
    limits: dict[Annotated[int, Field(ge=1, le=100)], dict[str, Limit]] = Field(
        default_factory=dict, description="process number -> measurement name -> limit"
    )
    max_clock_skew_s: PositiveFloat = Field(
        default=30.0,
        description="a station time further ahead of the bridge's clock than this is replaced "
        "by the time the bridge received the message (the station's is kept in the notes)",
    )


class BatchesConfig(_Section):
    """Bounds on what one batch gathers, so that its 완공 stays a request the MES can take in."""

    max_measurements: Annotated[int, Field(ge=1)] = 1000
    max_request_bytes: Annotated[int, Field(ge=1024)] = 262_144


class OutboxConfig(_Section):
    """The durable queue of MES requests."""

    max_pending: Annotated[int, Field(ge=1)] = 10_000
    retry_min_s: PositiveFloat = 1.0
    retry_max_s: PositiveFloat = 120.0
    probe_interval_s: PositiveFloat = 5.0
    answer_within_s: PositiveFloat = Field(
        default=3.0,
        description="a request whose first attempt has no answer by then is announced as queued",
    )
    settle_s: PositiveFloat = Field(
        default=75.0,
        description="after an unknown outcome (timeout, lost answer, 502/504), how long that "
        "WIP waits before asking the MES whether it was recorded: longer than the MES's own "
        "request limit (the deployed nginx allows 60 s)",
    )
    offline_after_failures: Annotated[int, Field(ge=1)] = Field(
        default=3,
        description="failed attempts in a row, across all WIPs, that mean the MES is down",
    )
    idle_check_s: PositiveFloat = Field(
        default=30.0,
        description="with no answer from the MES for this long, GET /health (not rate-limited)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> OutboxConfig:
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s must not be above retry_max_s")
        return self


class HttpConfig(_Section):
    """The health, metrics and status-page endpoint (off unless `listen` is given)."""

    listen: str | None = Field(
        default=None,
        pattern=r"^[^\s]+:[0-9]{1,5}$",
        description="host:port to serve /healthz, /readyz, /metrics and / on; e.g. 127.0.0.1:9108",
    )

    @property
    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class BridgeConfig(BaseSettings):
    """The whole configuration: a YAML file, and `STATION_BRIDGE_<SECTION>__<KEY>` over it."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="STATION_BRIDGE_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    bridge_id: Name = "bridge"
    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mqtt: MqttConfig = MqttConfig()
    mes: MesSettings = MesSettings()
    outbox: OutboxConfig = OutboxConfig()
    batches: BatchesConfig = BatchesConfig()
    http: HttpConfig = HttpConfig()
    stations: list[StationConfig] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file: a unit file or container sets one value without
        # editing the YAML.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _consistent(self) -> BridgeConfig:
        if not self.stations:
            raise ValueError(
                "no stations configured: a bridge without stations has nothing to do; "
                "list them under `stations:` (e.g. `- id: 3` for the topics station/3/...)"
            )
        ids = [station.id for station in self.stations]
        if len(ids) != len(set(ids)):
            raise ValueError(f"station ids must be unique: {ids}")
        names: set[tuple[str, str]] = set()
        for device in self.devices:
            if device.station not in ids:
                raise ValueError(f"device {device.name!r} names unknown station {device.station!r}")
            if (device.station, device.name) in names:
                raise ValueError(f"two devices named {device.name!r} on station {device.station}")
            names.add((device.station, device.name))
        return self

    # The stations by id, and the list they were read from: asked several times per message.
    _by_id: tuple[list[StationConfig], dict[str, StationConfig]] | None = PrivateAttr(None)

    def station(self, station_id: str) -> StationConfig | None:
        # Read from pydantic's dict of private values, not as `self._by_id`: its `__getattr__`
        # costs ~3 µs a read (it probes the attribute for a descriptor, and the probe raises
        # inside), and this runs twice per message.
        private = self.__pydantic_private__
        assert private is not None  # a model with private attributes always has the dict
        by_id: tuple[list[StationConfig], dict[str, StationConfig]] | None = private["_by_id"]
        # Rebuilt when the list is not the one indexed (a copy of the config with other stations).
        if by_id is None or by_id[0] is not self.stations:
            by_id = (self.stations, {station.id: station for station in self.stations})
            private["_by_id"] = by_id
        return by_id[1].get(station_id)

    @property
    def store_dir(self) -> Path:
        """Where the outbox and the active batches are kept."""
        return self.data_dir / "store"

    @property
    def mes_send_log(self) -> Path:
        """The MES requests of the last rate window: a restarted bridge paces on from them."""
        return self.data_dir / "mes-sends.log"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"station-bridge-{self.bridge_id}"


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and each bad field."""


def _environment_used() -> bool:
    return any(name.startswith("STATION_BRIDGE_") for name in os.environ)


def _secret_files_yield_to_environment(data: dict[str, Any]) -> dict[str, Any]:
    """A secret set in the environment wins over the `*_file` the YAML names for it."""
    for section, secret in (
        ("mes", "password"),
        ("mes", "token"),
        ("mes", "api_key"),
        ("mqtt", "password"),
    ):
        variable = f"STATION_BRIDGE_{section.upper()}__{secret.upper()}"
        values = data.get(section)
        if variable in os.environ and isinstance(values, dict):
            data[section] = {k: v for k, v in values.items() if k != f"{secret}_file"}
    return data


def load_config(path: Path) -> BridgeConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    data = _secret_files_yield_to_environment({str(key): value for key, value in data.items()})
    source = f"{path} with the STATION_BRIDGE_* environment" if _environment_used() else str(path)
    try:
        return BridgeConfig(**data)
    except SettingsError as error:  # a list or section variable that is not valid JSON
        raise ConfigError(f"{source}: {error}") from error
    except ValidationError as error:
        lines = [f"{source}: {error.error_count()} invalid setting(s)"]
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
            lines.append(f"  {where}: {problem['msg']}")
        raise ConfigError("\n".join(lines)) from error
