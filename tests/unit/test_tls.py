"""bridge.adapters.tls and the config keys that use it: bad files are config errors, named."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from bridge.adapters.tls import TlsFileError, client_context
from bridge.config import MqttConfig
from bridge.mes.settings import MesSettings


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_verification_and_server_names_are_on_by_default(ca_file: Path) -> None:
    context = client_context(ca_file=ca_file)
    assert context.check_hostname
    assert context.verify_mode.name == "CERT_REQUIRED"


def test_insecure_skips_only_the_name_check(ca_file: Path) -> None:
    context = client_context(ca_file=ca_file, check_hostname=False)
    assert not context.check_hostname
    assert context.verify_mode.name == "CERT_REQUIRED"


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"ca_file": "missing.pem"}, "cannot load CA file .*missing.pem: No such file"),
        ({"ca_file": "garbage.pem"}, "cannot load CA file .*garbage.pem"),
        ({"cert_file": "garbage.pem"}, "cannot load client certificate .*garbage.pem"),
        ({"cert_file": "cert-only.pem"}, "cannot load client certificate .*cert-only.pem"),
    ],
    ids=["missing", "not-pem", "cert-not-pem", "cert-without-key"],
)
def test_unusable_files_are_named(tmp_path: Path, files: dict[str, str], says: str) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    trustme.CA().issue_cert("x").cert_chain_pems[0].write_to_path(str(tmp_path / "cert-only.pem"))
    with pytest.raises(TlsFileError, match=says):
        client_context(**{key: tmp_path / name for key, name in files.items()})


def test_a_bad_mes_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot load CA file"):
        MesSettings(url="https://mes.example", ca_file=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("tls", "says"),
    [
        ({"ca_file": "missing.pem"}, "cannot load CA file"),
        ({"key_file": "k.pem"}, "key_file needs a cert_file"),
        ({"verify": False}, "Extra inputs are not permitted"),
    ],
    ids=["missing-ca", "key-without-cert", "unknown-key"],
)
def test_bad_mqtt_tls_settings_are_config_errors(
    tmp_path: Path, tls: dict[str, object], says: str
) -> None:
    fields = {k: tmp_path / v if isinstance(v, str) else v for k, v in tls.items()}
    with pytest.raises(ValidationError, match=says):
        MqttConfig(tls=fields)


def test_mqtt_tls_is_off_unless_its_section_is_given(ca_file: Path) -> None:
    assert MqttConfig().tls is None
    assert MqttConfig(tls={}).tls is not None  # TLS with the system's CAs
    assert MqttConfig(tls={"ca_file": ca_file, "insecure": True}).tls is not None
