"""The embedded broker with `users_file`: every client logs in (amqtt's FileAuthPlugin)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiomqtt
import pytest
from pwdlib import PasswordHash

from bridge.adapters.broker import EmbeddedBroker, find_free_port
from bridge.config import MqttConfig
from bridge.core.topics import Inbound, ResultKind, Topics
from mes_sim import MesSimulator

from .harness import bridge_config, running

NOT_AUTHORISED = r"(?i)not authori[sz]ed|bad user ?name or password"


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    hasher = PasswordHash.recommended()
    path = tmp_path / "broker-users"
    path.write_text(
        f"tablet:{hasher.hash('tablet-pass')}\nbridge:{hasher.hash('bridge-pass')}\n",
        encoding="utf-8",
    )
    return path


# allow_remote=True is the LAN mode (mqtt.host not a loopback address); the test's clients stay
# on loopback, which then gets no special treatment.
@pytest.mark.parametrize("allow_remote", [False, True], ids=["loopback", "lan-mode"])
async def test_only_listed_users_with_their_password_get_in(
    users_file: Path, allow_remote: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with EmbeddedBroker(port=0, users_file=users_file, allow_remote=allow_remote) as broker:
        port = broker.port
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier="t1", username="tablet", password="tablet-pass"
        ) as client:
            await client.publish("station/1/measurement", b"{}", qos=1)
        for username, password in (("tablet", "wrong"), ("stranger", "x"), (None, None)):
            with pytest.raises(aiomqtt.MqttError, match=NOT_AUTHORISED):
                async with aiomqtt.Client(
                    "127.0.0.1", port, identifier="t2", username=username, password=password
                ):
                    pass
    assert not any("without a password" in r.getMessage() for r in caplog.records)


async def test_a_lan_broker_without_users_file_warns_that_anyone_gets_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge")
    async with (
        EmbeddedBroker(port=0, allow_remote=True) as broker,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="anyone"),
    ):
        pass
    assert "mqtt.embedded_users_file" in caplog.text


async def test_the_bridge_and_logged_in_tablets_share_the_broker(
    sim: MesSimulator, users_file: Path, tmp_path: Path
) -> None:
    port = find_free_port()
    mqtt = {
        "embedded": True,
        "host": "127.0.0.1",
        "port": port,
        "embedded_users_file": users_file,
        "username": "bridge",
        "password": "bridge-pass",
        "topic_prefix": "auth",
    }
    config = bridge_config(sim, tmp_path / "data", host="127.0.0.1", port=port, mqtt=mqtt)
    topics = Topics("auth")
    start = {"wip_id": sim.wip_ids[0], "process_id": 1, "operator_id": 2}
    async with (
        running(config),  # ready only once the bridge's own login was accepted
        aiomqtt.Client(
            "127.0.0.1", port, identifier="tablet", username="tablet", password="tablet-pass"
        ) as tablet,
    ):
        await tablet.subscribe(topics.result("1", ResultKind.STARTED), qos=1)
        await tablet.publish(topics.inbound("1", Inbound.START), json.dumps(start).encode(), qos=1)
        async with asyncio.timeout(15):
            message = await anext(tablet.messages)
        assert isinstance(message.payload, bytes)
        assert json.loads(message.payload)["event"] == "PROCESS_STARTED"
        with pytest.raises(aiomqtt.MqttError, match=NOT_AUTHORISED):
            async with aiomqtt.Client("127.0.0.1", port, identifier="anonymous"):
                pass


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"embedded_users_file": "users"}, "is for the embedded broker"),
        ({"embedded": True, "embedded_users_file": "missing"}, "cannot read embedded_users_file"),
        ({"embedded": True, "embedded_users_file": "users"}, "logs in to its own broker"),
        (
            {"embedded": True, "tls": {}},
            "the embedded broker speaks plain MQTT",
        ),
    ],
    ids=["not-embedded", "missing-file", "bridge-without-login", "embedded-with-tls"],
)
def test_embedded_broker_settings_that_cannot_work_are_refused(
    tmp_path: Path, fields: dict[str, object], says: str
) -> None:
    (tmp_path / "users").write_text("")
    if "embedded_users_file" in fields:
        fields["embedded_users_file"] = tmp_path / str(fields["embedded_users_file"])
    with pytest.raises(ValueError, match=says):
        MqttConfig.model_validate(fields)
