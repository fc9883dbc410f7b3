"""The bridge's configuration: one model, loaded from a YAML file.

Secrets are `SecretStr` (they print as `**********`) and may instead be read from a file named by
the matching `*_file` key, so that a password never has to sit in the config itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    SecretStr,
    ValidationError,
    model_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret(path: Path) -> SecretStr:
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except OSError as error:
        raise ValueError(f"cannot read secret file {path}: {error.strerror}") from error


class MesConfig(_Section):
    """How to reach and talk to the MES (F2X NeuroHub)."""

    url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8080")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    token: SecretStr | None = Field(
        default=None, description="a static user bearer token, instead of username/password"
    )
    token_file: Path | None = None
    api_key: SecretStr | None = Field(
        default=None, description="a station key (X-API-Key); the MES accepts it for scan only"
    )
    api_key_file: Path | None = None
    timeout_s: PositiveFloat = 10.0
    rate_limit: Annotated[int, Field(ge=1)] = Field(
        default=90, description="requests per rate_window_s; the MES allows 100 a minute per IP"
    )
    rate_window_s: PositiveFloat = 60.0
    refresh_margin_s: Annotated[float, Field(ge=0)] = 120.0
    rework_as: Literal["FAIL", "REWORK"] = "FAIL"
    convert_via: Literal["convert-to-serial", "generate-from-wip"] = "generate-from-wip"
    print_label: bool = False
    resolve_process_ids: bool = True

    @model_validator(mode="after")
    def _secrets_from_files(self) -> MesConfig:
        for secret, file in (
            ("password", self.password_file),
            ("token", self.token_file),
            ("api_key", self.api_key_file),
        ):
            if file is None:
                continue
            if getattr(self, secret) is not None:
                raise ValueError(f"give either {secret} or {secret}_file, not both")
            object.__setattr__(self, secret, _read_secret(file))
        if self.username is not None and self.password is None:
            raise ValueError("username needs a password (or password_file)")
        return self


class BridgeConfig(_Section):
    """The whole configuration file."""

    mes: MesConfig = MesConfig()


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and each bad field."""


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
    try:
        return BridgeConfig.model_validate(data)
    except ValidationError as error:
        lines = [f"{path}: {error.error_count()} invalid setting(s)"]
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
            lines.append(f"  {where}: {problem['msg']}")
        raise ConfigError("\n".join(lines)) from error
