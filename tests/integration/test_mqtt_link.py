"""The bridge's MQTT link on the real Mosquitto: a burst of outcomes while connected all reach
the tablet, in order; statuses only need their latest; the socket does not wait for Nagle, and
a burst is written corked."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import uuid
from collections.abc import AsyncIterator, Sequence

import aiomqtt
import pytest

from bridge.adapters import mqtt
from bridge.adapters.mqtt import MqttLink
from bridge.adapters.outgoing import Message
from bridge.config import MqttConfig
from bridge.core.topics import Received

from .harness import MOSQUITTO, mosquitto_running

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")


async def ignore(_: Sequence[Received]) -> None:
    return None


async def nothing(_: bool) -> None:
    return None


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def link(prefix: str) -> AsyncIterator[MqttLink]:
    host, port = MOSQUITTO
    config = MqttConfig(host=host, port=port, topic_prefix=prefix)
    link = MqttLink(config, client_id=f"link-{prefix}", bridge_id=prefix, station_ids=["1"])
    running = asyncio.create_task(link.run(ignore, on_connect=nothing))
    async with asyncio.timeout(10):
        await link.connected.wait()
    yield link
    running.cancel()
    await asyncio.wait({running})


async def listen(prefix: str, count: int, received: list[tuple[str, int]]) -> None:
    host, port = MOSQUITTO
    async with aiomqtt.Client(host, port, identifier=f"tablet-{prefix}") as tablet:
        await tablet.subscribe(f"{prefix}/station/#", qos=1)
        async for message in tablet.messages:
            assert isinstance(message.payload, bytes)
            received.append((message.topic.value, json.loads(message.payload)["n"]))
            if len(received) == count:
                return


async def test_a_burst_of_outcomes_while_connected_is_never_dropped(
    link: MqttLink, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ten times what the queue keeps while the broker is away, handed over at once.
    monkeypatch.setattr(mqtt, "_QUEUE_LIMIT", 100)
    received: list[tuple[str, int]] = []
    listener = asyncio.create_task(listen(prefix, 1000, received))
    await asyncio.sleep(0.5)  # the tablet subscribes
    for n in range(1000):
        link.publish(f"{prefix}/station/1/result/started", {"n": n})
    async with asyncio.timeout(20):
        await listener
    assert [n for _, n in received] == list(range(1000))
    assert link.dropped == 0


async def test_statuses_waiting_together_go_out_as_the_latest_only(
    link: MqttLink, prefix: str
) -> None:
    received: list[tuple[str, int]] = []
    listener = asyncio.create_task(listen(prefix, 2, received))
    await asyncio.sleep(0.5)
    topic = f"{prefix}/station/1/status"
    try:
        # Handed over within one step of the loop: none can have gone out before the last.
        for n in range(500):
            link.publish(topic, {"n": n}, retain=True)
        link.publish(f"{prefix}/station/1/result/started", {"n": -1})
        async with asyncio.timeout(10):
            await listener
        assert received == [(f"{prefix}/station/1/result/started", -1), (topic, 499)]
    finally:
        host, port = MOSQUITTO
        async with aiomqtt.Client(host, port) as cleaner:
            await cleaner.publish(topic, b"", qos=1, retain=True)


async def test_the_bridge_socket_has_nagle_off(prefix: str) -> None:
    host, port = MOSQUITTO
    async with mqtt._Client(host, port, identifier=f"nodelay-{prefix}") as client:
        sock = client._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_burst_is_written_corked_and_the_socket_uncorked_after(prefix: str) -> None:
    """Messages handed over together are written with TCP_CORK set (few packets for many
    messages), and the cork is off again once they are written: nothing waits for the kernel's
    200 ms cork timer."""
    host, port = MOSQUITTO
    topic = f"{prefix}/cork"
    acknowledged: list[int] = []
    all_acknowledged = asyncio.Event()
    corked_while_writing: list[int] = []
    async with (
        aiomqtt.Client(host, port) as listener,
        mqtt._Client(host, port, identifier=f"cork-{prefix}") as client,
    ):
        await listener.subscribe(topic, qos=1)
        sock = client._client.socket()
        assert isinstance(sock, socket.socket)
        sends = sock.send

        def send(data: bytes | bytearray) -> int:
            corked_while_writing.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK))
            return sends(data)

        def acknowledge(n: int) -> None:
            acknowledged.append(n)
            if len(acknowledged) == 20:
                all_acknowledged.set()

        client._client._sock_send = send  # type: ignore[method-assign,assignment]
        for n in range(20):
            body = json.dumps(n).encode()
            client.send(Message(topic, body), acknowledged=functools.partial(acknowledge, n))
        async with asyncio.timeout(10):
            got = [json.loads(m.payload) async for m in _take(listener.messages, 20)]
            await all_acknowledged.wait()
        assert got == list(range(20))
        assert sorted(acknowledged) == list(range(20))
        assert corked_while_writing and all(corked_while_writing)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0


async def _take(messages: AsyncIterator[aiomqtt.Message], n: int) -> AsyncIterator[aiomqtt.Message]:
    for _ in range(n):
        message = await anext(messages)
        assert isinstance(message.payload, bytes)
        yield message


async def test_inbound_packets_are_read_from_a_buffer_a_burst_at_a_time(prefix: str) -> None:
    """paho reads a packet a few bytes at a time; the link's client serves those reads from
    what one recv brought, so a burst costs a few system calls, not three per message, and a
    message larger than the buffer still arrives whole."""
    host, port = MOSQUITTO
    topic = f"{prefix}/burst"
    bodies = [json.dumps(n).encode() for n in range(300)] + [b"x" * 200_000]
    async with mqtt._Client(host, port, identifier=f"buffer-{prefix}") as client:
        await client.subscribe(topic, qos=1)
        recvs = 0
        recv = client._socket_recv

        def counted(size: int) -> bytes:
            nonlocal recvs
            recvs += 1
            return recv(size)

        client._socket_recv = counted
        async with aiomqtt.Client(host, port, max_inflight_messages=1000) as station:
            await asyncio.gather(*(station.publish(topic, body, qos=1) for body in bodies))
        got: list[bytes] = []
        async with asyncio.timeout(10):
            while len(got) < len(bodies):
                group = await client.arrived(limit=1000)
                got += [message.payload for message in group]
                for message in group:
                    assert message.mid is not None
                    client._client.ack(message.mid, 1)
        assert got == bodies
        assert recvs < len(bodies)  # paho alone makes at least three per message
