"""The outgoing queue of `MqttLink`: what a full queue drops, and what a failed publish keeps.
The client is a stand-in whose publish waits until the test lets it finish: a broker cannot be
made to hold a PUBACK at a chosen moment."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest

from bridge import mqtt
from bridge.config import MqttConfig
from bridge.mqtt import MqttLink


class HeldClient:
    def __init__(self, *, fail_first: bool = False) -> None:
        self.sent: list[str] = []
        self.publishing = asyncio.Event()
        self.release = asyncio.Event()
        self.sent_one = asyncio.Event()
        self._fail = fail_first

    async def publish(self, topic: str, payload: bytes, **_: Any) -> None:
        self.publishing.set()
        await self.release.wait()
        if self._fail:
            self._fail = False
            raise aiomqtt.MqttError("connection lost")
        self.sent.append(topic)
        self.sent_one.set()

    async def wait_sent(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.sent) < count:
                self.sent_one.clear()
                await self.sent_one.wait()


def link() -> MqttLink:
    return MqttLink(MqttConfig(), client_id="c", bridge_id="b")


async def test_a_full_queue_drops_the_oldest_waiting_message_never_the_one_being_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mqtt, "_QUEUE_LIMIT", 3)
    out, client = link(), HeldClient()
    out.publish("a", {})
    sender = asyncio.create_task(out._send(client))  # type: ignore[arg-type]
    await client.publishing.wait()  # "a" is on its way
    for topic in "bcde":
        out.publish(topic, {})
    client.release.set()
    await client.wait_sent(4)
    sender.cancel()
    assert client.sent == ["a", "c", "d", "e"]
    assert out.dropped == 1


async def test_a_publish_that_fails_is_sent_again_after_the_reconnect() -> None:
    out, failing = link(), HeldClient(fail_first=True)
    out.publish("a", {})
    out.publish("b", {})
    failing.release.set()
    with pytest.raises(aiomqtt.MqttError):
        await out._send(failing)  # type: ignore[arg-type]
    again = HeldClient()
    again.release.set()
    sender = asyncio.create_task(out._send(again))  # type: ignore[arg-type]
    await again.wait_sent(2)
    sender.cancel()
    assert again.sent == ["a", "b"]
