"""The MES client's settings: one validated model, which the bridge's config holds as its `mes`
section and which `MesClient` takes whole (the client knows nothing else of the bridge's config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.adapters.secrets import read_secret
from bridge.adapters.tls import client_context


class MesSettings(BaseModel):
    """How to reach and talk to the MES (F2X NeuroHub): the `mes` section of the bridge's config,
    and everything `MesClient` is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA(s) trusted for an https url, in addition to the system's CAs",
    )
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

    @field_validator("url")
    @classmethod
    def _no_user_info(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        # httpx turns `user:password@` into Basic auth, replacing the bearer token, and logs the
        # URL at DEBUG: credentials go in username/password(_file), token or api_key.
        if url.username is not None or url.password is not None:
            raise ValueError(
                "must not hold a user name or password (user:password@host): "
                "give them as mes.username and mes.password_file"
            )
        return url

    @model_validator(mode="after")
    def _secrets_from_files(self) -> MesSettings:
        for secret, file in (
            ("password", self.password_file),
            ("token", self.token_file),
            ("api_key", self.api_key_file),
        ):
            if file is None:
                continue
            if getattr(self, secret) is not None:
                raise ValueError(f"give either {secret} or {secret}_file, not both")
            object.__setattr__(self, secret, read_secret(file))
        if self.username is not None and self.password is None:
            raise ValueError("username needs a password (or password_file)")
        if self.ca_file is not None:
            client_context(ca_file=self.ca_file)  # a bad file is a config error, not an outage
        return self
