"""The MES over https with a private CA: a real TLS server (certificates from a throwaway CA) in
front of the simulator, on loopback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bridge.core.topics import Inbound, ResultKind
from bridge.faults import Faults
from bridge.mes import MesClient, MesError, MesErrorCode
from bridge.mes.settings import MesSettings
from mes_sim import MesSimulator

from .harness import Tablet, bridge_config, mosquitto_running, running
from .tls import Pki, https_front, make_pki

ACCOUNT = {"username": "admin", "password": "admin-pass", "timeout_s": 5}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.mark.parametrize("faults", [None, Faults()], ids=["plain", "with-fault-seams"])
async def test_an_https_mes_with_a_private_ca_in_ca_file(
    sim: MesSimulator, pki: Pki, faults: Faults | None
) -> None:
    # The bridge always wires the fault seams (a transport wrapper): the CA must still count.
    async with (
        https_front(pki.server_context(), port=sim.port) as url,
        MesClient(MesSettings(url=url, ca_file=pki.ca_file, **ACCOUNT), faults=faults) as mes,
    ):
        assert await mes.health() == "healthy"
        await mes.login()
        wip = await mes.scan(sim.wip_ids[0])
        assert wip.wip_id == sim.wip_ids[0]


@pytest.mark.parametrize(
    ("trust", "cert_for", "says"),
    [
        (None, None, "unable to get local issuer certificate"),
        ("other", None, "unable to get local issuer certificate"),
        ("ours", "mes.example", "mismatch, certificate is not valid for '127.0.0.1'"),
    ],
    ids=["system-cas-only", "wrong-ca", "other-name"],
)
async def test_an_untrusted_certificate_is_a_tls_error(
    sim: MesSimulator,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    trust: str | None,
    cert_for: str | None,
    says: str,
) -> None:
    ca_file = {None: None, "other": pki.other_ca_file, "ours": pki.ca_file}[trust]
    async with (
        https_front(pki.server_context(cert_for=cert_for), port=sim.port) as url,
        MesClient(MesSettings(url=url, ca_file=ca_file, **ACCOUNT)) as mes,
    ):
        with pytest.raises(MesError) as raised:
            await mes.health()
    error = raised.value
    assert error.code is MesErrorCode.TLS
    assert error.retryable and not error.maybe_applied
    assert "CERTIFICATE_VERIFY_FAILED" in error.detail and says in error.detail
    assert "mes.ca_file" in error.message
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "TLS" in r.getMessage()]
    assert logged and says in logged[0].getMessage()


@pytest.mark.skipif(not mosquitto_running(), reason="needs Mosquitto on 127.0.0.1:1883")
async def test_the_status_says_the_mes_certificate_is_not_trusted(
    sim: MesSimulator, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with https_front(pki.server_context(), port=sim.port) as url:
        mes = {**ACCOUNT, "url": url, "timeout_s": 2}  # no ca_file: the system CAs only
        config = bridge_config(sim, tmp_path / "data", host="127.0.0.1", port=1883, mes=mes)
        start = {"wip_id": sim.wip_ids[0], "process_id": 1, "operator_id": 2}
        async with Tablet(config) as tablet, running(config):
            await tablet.send("1", Inbound.START, start)
            queued = await tablet.expect("1", ResultKind.STARTED)
            assert queued["event"] == "PROCESS_STARTED_OFFLINE"
            assert queued["reason"]["code"] == "TLS"
            status = await tablet.status("1", lambda s: s["mes"] == "tls_failed")
            assert status["outbox"]["pending"] == 1  # kept until the trust is fixed
    assert sim.ledger()["history"] == []
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    published = json.dumps(queued)
    assert "admin-pass" not in published + caplog.text


async def test_ca_file_adds_to_the_system_cas_rather_than_replacing_them(
    sim: MesSimulator, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SSL_CERT_FILE stands in for the system's trust store: a "public" CA that signed the MES's
    # certificate, while mes.ca_file names an unrelated private CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    async with (
        https_front(pki.server_context(), port=sim.port) as url,
        MesClient(MesSettings(url=url, ca_file=pki.other_ca_file, **ACCOUNT)) as mes,
    ):
        assert await mes.health() == "healthy"
