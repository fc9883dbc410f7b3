"""What the bridge can rely on from its MQTT broker, checked against the embedded amqtt broker
(`bridge.adapters.broker.EmbeddedBroker`) and against Mosquitto at 127.0.0.1:1883, with real
aiomqtt clients.

The behaviour tests are parametrized over both brokers (a few tests of EmbeddedBroker itself, and
one of an amqtt limit, run only the embedded one). Where the brokers differ, the test asserts what
each one does and says so, so a broker upgrade that changes it makes the test fail loudly. The
Mosquitto cases skip, with the reason, when nothing listens on 127.0.0.1:1883.
Tests wait for the event they expect with a timeout, never sleep-and-hope. Topics live under a
fresh `sb-test/<uuid>` root and client ids are unique, so runs never collide on the shared
Mosquitto; persistent sessions and retained topics left there are cleared at teardown.

"The message did not come" is checked with a marker: the client publishes a marker to itself on a
topic it is subscribed to; a broker delivers one client's messages in order, so whatever would
have come before the marker has come by the time the marker does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiomqtt
import pytest

from bridge.adapters.broker import BrokerPortInUseError, EmbeddedBroker

MOSQUITTO = ("127.0.0.1", 1883)
WAIT_S = 5.0


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """One broker under test, and what a test left on it (cleared at teardown)."""

    name: str
    host: str
    port: int
    root: str = field(default_factory=lambda: f"sb-test/{uuid.uuid4().hex}")
    persistent_ids: set[str] = field(default_factory=set)
    retained_topics: set[str] = field(default_factory=set)

    def topic(self, suffix: str) -> str:
        return f"{self.root}/{suffix}"

    def new_id(self, role: str) -> str:
        # 47 characters: longer than the 23 MQTT 3.1.1 obliges a broker to accept, like the
        # bridge's default "station-bridge-<bridge_id>"
        return f"station-bridge-{role[:8]}-{uuid.uuid4().hex}"

    def client(
        self,
        identifier: str | None = None,
        *,
        clean_session: bool = True,
        will: aiomqtt.Will | None = None,
        manual_ack: bool = False,
    ) -> aiomqtt.Client:
        identifier = identifier or self.new_id("client")
        if not clean_session:
            self.persistent_ids.add(identifier)
        if will is not None and will.retain:
            self.retained_topics.add(will.topic)
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            clean_session=clean_session,
            will=will,
            timeout=WAIT_S,
        )
        if manual_ack:
            # aiomqtt 2.5 has no manual-ack API and does not pass paho's `manual_ack`
            # constructor argument through; paho's setter is a plain flag, fine before connect.
            client._client.manual_ack_set(True)
        return client

    async def cleanup(self) -> None:
        """Clear retained topics and end the persistent sessions a test left on the broker."""
        async with self.client(self.new_id("cleanup")) as janitor:
            for topic in self.retained_topics:
                await janitor.publish(topic, b"", qos=1, retain=True)
        for identifier in self.persistent_ids:
            async with self.client(identifier, clean_session=True):
                pass


@pytest.fixture(params=["amqtt", "mosquitto"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    if request.param == "amqtt":
        async with EmbeddedBroker(port=0) as embedded:
            target = Broker("amqtt", embedded.host, embedded.port)
            yield target
            await target.cleanup()
    else:
        if not _reachable(*MOSQUITTO):
            host, port = MOSQUITTO
            pytest.skip(f"Mosquitto is not reachable at {host}:{port} (start it, as .ci/run does)")
        target = Broker("mosquitto", *MOSQUITTO)
        yield target
        await target.cleanup()


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(client.messages), WAIT_S)


async def messages_until_marker(client: aiomqtt.Client, marker_topic: str) -> list[aiomqtt.Message]:
    """Publish a marker to ourselves; return everything delivered before it.

    Each message is acknowledged (a no-op unless manual ack is on). paho's `ack()` only queues
    the PUBACK, so if the client then dies at once, the broker may redeliver the marker itself:
    markers of earlier calls are skipped, never returned.
    """
    marker = f"marker-{uuid.uuid4().hex}".encode()
    await client.publish(marker_topic, marker, qos=1)
    before: list[aiomqtt.Message] = []
    while True:
        message = await next_message(client)
        client._client.ack(message.mid, message.qos)
        if message.topic.value == marker_topic and message.payload == marker:
            return before
        if not message.payload.startswith(b"marker-"):
            before.append(message)


async def die_abruptly(client: aiomqtt.Client) -> None:
    """End the client's TCP connection without an MQTT DISCONNECT, as a crash would.

    The socket is shut down (FIN) under paho's feet; paho sees EOF, reports "connection lost", and
    aiomqtt marks the client disconnected, so leaving its `async with` sends nothing more.
    """
    paho_socket = client._client.socket()
    assert isinstance(paho_socket, socket.socket)
    paho_socket.shutdown(socket.SHUT_RDWR)
    disconnected = client._disconnected
    await asyncio.wait([disconnected], timeout=WAIT_S)
    assert disconnected.done(), "aiomqtt did not notice the connection was gone"
    assert isinstance(disconnected.exception(), aiomqtt.MqttError)  # also marks it retrieved


# -- the embedded broker itself ----------------------------------------------------------------


async def test_embedded_broker_picks_a_free_port_and_refuses_a_taken_one() -> None:
    async with EmbeddedBroker(port=0) as first:
        assert first.port > 0
        with pytest.raises(BrokerPortInUseError) as refused:
            async with EmbeddedBroker(port=first.port):
                pass
        assert "already in use" in str(refused.value)
        assert isinstance(refused.value, OSError)
        async with aiomqtt.Client(first.host, first.port, identifier="still-serving"):
            pass  # the first broker is unaffected
    with pytest.raises(RuntimeError):
        _ = first.port


async def test_embedded_broker_stops_with_clients_connected() -> None:
    async with EmbeddedBroker(port=0) as embedded:
        client = aiomqtt.Client(embedded.host, embedded.port, identifier="left-connected")
        await client.__aenter__()
        await client.subscribe("anything/#", qos=1)
    # the broker closed the connection: the client sees it go
    with pytest.raises(aiomqtt.MqttError):
        await next_message(client)
    await client.__aexit__(None, None, None)
    leftovers = [
        task
        for task in asyncio.all_tasks()
        if "amqtt" in repr(task.get_coro()) or "bridge/broker" in repr(task.get_coro())
    ]
    assert leftovers == []


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_embedded_broker_accepts_remote_clients_only_when_allowed() -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to connect from")
    async with EmbeddedBroker(host="0.0.0.0", port=0) as loopback_only:
        with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed"):
            async with aiomqtt.Client(address, loopback_only.port, identifier="remote"):
                pass
        async with aiomqtt.Client("127.0.0.1", loopback_only.port, identifier="local"):
            pass
    async with (
        EmbeddedBroker(host="0.0.0.0", port=0, allow_remote=True) as open_broker,
        aiomqtt.Client(address, open_broker.port, identifier="remote"),
    ):
        pass


# -- 1. QoS 1 round trip -----------------------------------------------------------------------


async def test_qos1_publish_subscribe_round_trip(broker: Broker) -> None:
    topic = broker.topic("station/st-01/event")
    async with broker.client() as subscriber, broker.client() as publisher:
        await subscriber.subscribe(topic, qos=1)
        await publisher.publish(topic, b'{"seq": 1}', qos=1)  # returns once PUBACKed
        message = await next_message(subscriber)
    assert (message.topic.value, message.payload, message.qos) == (topic, b'{"seq": 1}', 1)
    assert message.retain is False


async def test_qos0_publish_to_a_qos1_subscription(broker: Broker) -> None:
    """MQTT delivers at min(publish QoS, subscription QoS): Mosquitto does; amqtt 0.12 delivers at
    the subscription's QoS (so a QoS 0 publish arrives as QoS 1 and must be acknowledged)."""
    topic = broker.topic("station/st-01/telemetry")
    async with broker.client() as subscriber, broker.client() as publisher:
        await subscriber.subscribe(topic, qos=1)
        await publisher.publish(topic, b"t", qos=0)
        message = await next_message(subscriber)
    assert message.qos == (1 if broker.name == "amqtt" else 0)


# -- 2. retained messages ----------------------------------------------------------------------


async def test_late_subscriber_gets_retained_status_and_empty_payload_clears_it(
    broker: Broker,
) -> None:
    status = broker.topic("bridge/b1/availability")
    broker.retained_topics.add(status)
    async with broker.client() as bridge:
        await bridge.publish(status, b"online", qos=1, retain=True)

        async with broker.client() as late:
            await late.subscribe(status, qos=1)
            message = await next_message(late)
        assert (message.payload, message.retain) == (b"online", True)

        await bridge.publish(status, b"", qos=1, retain=True)  # clears the retained status

    async with broker.client() as later:
        await later.subscribe(broker.topic("#"), qos=1)
        before_marker = await messages_until_marker(later, broker.topic("marker"))
    assert before_marker == []


# -- 3. last will ------------------------------------------------------------------------------


def _availability_will(topic: str) -> aiomqtt.Will:
    return aiomqtt.Will(topic, b"offline", qos=1, retain=True)


async def _assert_offline_retained(broker: Broker, status: str) -> None:
    async with broker.client() as late:
        await late.subscribe(status, qos=1)
        message = await next_message(late)
    assert (message.payload, message.retain) == (b"offline", True)


async def test_will_is_published_and_retained_when_client_dies_without_disconnect(
    broker: Broker,
) -> None:
    status = broker.topic("bridge/b1/availability")
    async with broker.client() as watcher:
        await watcher.subscribe(status, qos=1)
        async with broker.client(will=_availability_will(status)) as bridge:
            await bridge.publish(status, b"online", qos=1, retain=True)
            assert (await next_message(watcher)).payload == b"online"
            await die_abruptly(bridge)
        will = await next_message(watcher)
    assert (will.topic.value, will.payload) == (status, b"offline")
    await _assert_offline_retained(broker, status)


_KILLED_BRIDGE = """
import asyncio, sys
import aiomqtt

async def main(host: str, port: str, identifier: str, status: str) -> None:
    will = aiomqtt.Will(status, b"offline", qos=1, retain=True)
    async with aiomqtt.Client(host, int(port), identifier=identifier, will=will) as client:
        await client.publish(status, b"online", qos=1, retain=True)
        print("online", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_will_is_published_when_the_bridge_process_is_killed(broker: Broker) -> None:
    status = broker.topic("bridge/b1/availability")
    broker.retained_topics.add(status)
    async with broker.client() as watcher:
        await watcher.subscribe(status, qos=1)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _KILLED_BRIDGE,
            broker.host,
            str(broker.port),
            broker.new_id("killed"),
            status,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 15) == b"online\n"
            assert (await next_message(watcher)).payload == b"online"
        finally:
            process.kill()  # SIGKILL: no DISCONNECT, the kernel closes the socket
            await process.wait()
        will = await next_message(watcher)
    assert will.payload == b"offline"
    await _assert_offline_retained(broker, status)


async def test_will_is_not_published_on_a_clean_disconnect(broker: Broker) -> None:
    status = broker.topic("bridge/b1/availability")
    async with broker.client() as watcher:
        await watcher.subscribe(broker.topic("#"), qos=1)
        async with broker.client(will=_availability_will(status)) as bridge:
            await bridge.publish(status, b"online", qos=1, retain=True)
            assert (await next_message(watcher)).payload == b"online"
        before_marker = await messages_until_marker(watcher, broker.topic("marker"))
    assert before_marker == []  # the bridge must publish "offline" itself when it stops


# -- 4. persistent session ---------------------------------------------------------------------


async def test_persistent_session_gets_qos1_messages_published_while_away(broker: Broker) -> None:
    commands = broker.topic("bridge/b1/cmd")
    identifier = broker.new_id("station")
    async with broker.client(identifier, clean_session=False) as subscriber:
        await subscriber.subscribe(commands, qos=1)
    async with broker.client() as publisher:
        for n in range(3):
            await publisher.publish(commands, f"cmd-{n}".encode(), qos=1)
    async with broker.client(identifier, clean_session=False) as subscriber:  # no re-subscribe
        received = [await next_message(subscriber) for _ in range(3)]
    assert [m.payload for m in received] == [b"cmd-0", b"cmd-1", b"cmd-2"]
    assert {m.qos for m in received} == {1}
    # amqtt sends a session's queued messages with the RETAIN flag set; Mosquitto does not.
    # The bridge must not read retain=True as "stale status" on command topics.
    assert {m.retain for m in received} == ({True} if broker.name == "amqtt" else {False})


async def test_persistent_session_survives_an_abrupt_drop(broker: Broker) -> None:
    commands = broker.topic("bridge/b1/cmd")
    identifier = broker.new_id("station")
    async with broker.client(identifier, clean_session=False) as subscriber:
        await subscriber.subscribe(commands, qos=1)
        await die_abruptly(subscriber)
    async with broker.client() as publisher:
        await publisher.publish(commands, b"while-dead", qos=1)
    async with broker.client(identifier, clean_session=False) as subscriber:
        message = await next_message(subscriber)
    assert message.payload == b"while-dead"


async def test_clean_session_discards_what_was_queued(broker: Broker) -> None:
    commands = broker.topic("bridge/b1/cmd")
    identifier = broker.new_id("station")
    async with broker.client(identifier, clean_session=False) as subscriber:
        await subscriber.subscribe(commands, qos=1)
    async with broker.client() as publisher:
        await publisher.publish(commands, b"queued", qos=1)
    async with broker.client(identifier, clean_session=True) as subscriber:
        await subscriber.subscribe(broker.topic("#"), qos=1)
        before_marker = await messages_until_marker(subscriber, broker.topic("marker"))
    assert before_marker == []


# -- 5. manual acknowledgement -----------------------------------------------------------------


@pytest.mark.parametrize("enable", ["before-connect", "after-connect"])
async def test_unacked_qos1_message_after_a_crash(broker: Broker, enable: str) -> None:
    """Mosquitto redelivers it on reconnect; amqtt 0.12 loses it.

    amqtt forgets an in-flight QoS 1 message when the connection drops: its wait for the PUBACK
    is cancelled and a finally-clause pops the message from the session's inflight_out, so
    nothing is resent on reconnect (nor later).

    `manual_ack_set(True)` works before `__aenter__` (it only sets a flag on paho's client, which
    aiomqtt creates in its constructor) and after it; "after" is only safe when no QoS 1 message
    can arrive first, which a persistent session with queued messages does not promise.
    """
    commands = broker.topic("bridge/b1/cmd")
    identifier = broker.new_id("station")

    before_connect = enable == "before-connect"
    subscriber = broker.client(identifier, clean_session=False, manual_ack=before_connect)
    async with subscriber:
        if not before_connect:
            subscriber._client.manual_ack_set(True)
        await subscriber.subscribe(commands, qos=1)
        async with broker.client() as publisher:
            await publisher.publish(commands, b"job-1", qos=1)
        first = await next_message(subscriber)
        assert first.payload == b"job-1"
        await die_abruptly(subscriber)  # crashed before acknowledging

    async with broker.client(identifier, clean_session=False, manual_ack=True) as subscriber:
        redelivered = await messages_until_marker(subscriber, commands)  # acks what comes
        assert await messages_until_marker(subscriber, commands) == []  # once is enough
    if broker.name == "mosquitto":
        assert [(m.payload, m.qos) for m in redelivered] == [(b"job-1", 1)]
    else:
        assert redelivered == [], "amqtt now redelivers: update docs and this test"


async def test_acked_qos1_message_is_not_redelivered(broker: Broker) -> None:
    commands = broker.topic("bridge/b1/cmd")
    identifier = broker.new_id("station")
    async with broker.client(identifier, clean_session=False, manual_ack=True) as subscriber:
        await subscriber.subscribe(commands, qos=1)
        async with broker.client() as publisher:
            await publisher.publish(commands, b"job-1", qos=1)
        message = await next_message(subscriber)
        subscriber._client.ack(message.mid, message.qos)
        # the PUBACK has been sent once our own marker round-trips through the broker
        assert await messages_until_marker(subscriber, commands) == []
        await die_abruptly(subscriber)
    async with broker.client(identifier, clean_session=False) as subscriber:
        before_marker = await messages_until_marker(subscriber, commands)
    assert before_marker == []


async def test_amqtt_gives_up_on_a_puback_after_5_seconds() -> None:
    """amqtt 0.12 waits 5 s for a PUBACK, then logs a WARNING and an ERROR with a traceback
    ("Task failed and will be skipped") and forgets the message: a late ack is "unknown", and
    nothing is ever resent. With the embedded broker, acknowledge within 5 s."""
    gave_up = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Timeout waiting for PUBACK" in record.getMessage():
                gave_up.set()

    handler = Watch(logging.WARNING)
    logging.getLogger("amqtt").addHandler(handler)
    try:
        async with EmbeddedBroker(port=0) as embedded:
            target = Broker("amqtt", embedded.host, embedded.port)
            commands = target.topic("cmd")
            async with target.client(manual_ack=True) as slow, target.client() as publisher:
                await slow.subscribe(commands, qos=1)
                await publisher.publish(commands, b"job-1", qos=1)
                message = await next_message(slow)
                await asyncio.wait_for(gave_up.wait(), 10)
                slow._client.ack(message.mid, message.qos)  # too late: amqtt forgot it
                assert await messages_until_marker(slow, commands) == []
    finally:
        logging.getLogger("amqtt").removeHandler(handler)


async def test_without_manual_ack_a_received_message_is_acked_at_once(broker: Broker) -> None:
    """paho acknowledges on receipt by default: a crash while processing loses the message."""
    commands = broker.topic("bridge/b1/cmd")
    identifier = broker.new_id("station")
    async with broker.client(identifier, clean_session=False) as subscriber:
        await subscriber.subscribe(commands, qos=1)
        async with broker.client() as publisher:
            await publisher.publish(commands, b"job-1", qos=1)
        assert (await next_message(subscriber)).payload == b"job-1"
        assert await messages_until_marker(subscriber, commands) == []
        await die_abruptly(subscriber)  # "crashed while processing job-1"
    async with broker.client(identifier, clean_session=False) as subscriber:
        before_marker = await messages_until_marker(subscriber, commands)
    assert before_marker == []
