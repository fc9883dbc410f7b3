from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.config import load_config
from bridge.mes.settings import MesSettings


def test_defaults_match_the_deployed_mes() -> None:
    config = MesSettings()
    assert config.rate_limit == 90 and config.rate_window_s == 60
    assert config.rework_as == "FAIL"
    assert config.convert_via == "generate-from-wip"
    assert config.print_label is False


def test_secrets_never_print(tmp_path: Path) -> None:
    config = MesSettings(username="svc", password="hunter2", api_key="station-key")
    shown = repr(config) + str(config.model_dump()) + config.model_dump_json()
    assert "hunter2" not in shown and "station-key" not in shown


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "key").write_text("k3y")
    config = MesSettings(
        username="svc", password_file=tmp_path / "pw", api_key_file=tmp_path / "key"
    )
    assert config.password is not None and config.password.get_secret_value() == "s3cret"
    assert config.api_key is not None and config.api_key.get_secret_value() == "k3y"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"username": "svc"}, "needs a password"),
        ({"username": "svc", "password": "a", "password_file": "/x"}, "not both"),
        ({"username": "svc", "password_file": "/nonexistent/pw"}, "cannot read secret file"),
        ({"rate_limit": 0}, "greater than or equal to 1"),
        ({"rework_as": "PASS"}, "rework_as"),
        ({"url": "not a url"}, "url"),
        ({"pasword": "typo"}, "pasword"),
    ],
)
def test_bad_values_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MesSettings.model_validate(fields)


def test_example_config_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "config" / "example.yaml")
    assert config.mes.username == "admin"


@pytest.mark.parametrize(
    "url", ["http://svc:hunter2@127.0.0.1:8080", "http://svc@127.0.0.1:8080", "https://:pw@mes"]
)
def test_user_info_in_the_mes_url_is_refused(url: str) -> None:
    # httpx would send it as Basic auth instead of the bearer token, and log it at DEBUG.
    with pytest.raises(ValidationError) as raised:
        MesSettings(url=url)
    messages = " ".join(problem["msg"] for problem in raised.value.errors())
    assert "must not hold a user name or password" in messages
    assert "hunter2" not in messages


def test_a_url_without_user_info_is_kept() -> None:
    assert str(MesSettings(url="http://mes.local:8080/base").url) == "http://mes.local:8080/base"
