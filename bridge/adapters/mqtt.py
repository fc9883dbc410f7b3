"""The bridge's MQTT connection: subscribe, hand messages over, acknowledge them once handled.

- A fixed client id, a persistent session (`clean_session=False`) and QoS 1 subscriptions: what
  the stations send while the bridge is down waits at the broker and arrives after a restart.
- Manual acknowledgement: a QoS 1 message is acknowledged only after the handler returned,
  i.e. after its effect is on disk. A crash in between means the broker sends it again, flagged
  DUP (`Received.redelivered`): the handler recognises it. Messages that arrived together go to
  the handler together, so that one disk commit covers them.
- The broker's CONNACK says whether it still had the bridge's session (`on_connect`): a broker
  that lost it may have lost what the stations sent meanwhile.
- `bridge/{id}/availability` is `online` (retained) while connected, and the broker publishes the
  last will `offline` when the bridge vanishes without saying goodbye.
- Outgoing messages (`bridge.adapters.outgoing`) go out many at a time (QoS 1 lets up to
  `_IN_FLIGHT` wait for their PUBACK together), outcomes before statuses, and a status replaces an
  older one of its station still waiting. While the broker is away they wait, and past
  `_QUEUE_LIMIT` the oldest outcome is dropped, counted and logged; while it is connected none
  is dropped.
- Only the configured stations' topics are subscribed, so that several bridges can share one
  broker, each with its own stations.
- TCP_NODELAY on the socket: an outcome is one small packet, and Nagle's algorithm would hold it
  until the previous one is acknowledged (paho does not set it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from bridge.adapters.outgoing import Message, Outgoing
from bridge.config import MqttConfig
from bridge.core.retry import RetryPolicy
from bridge.core.topics import Received, Topics
from bridge.faults import FaultPoint, Faults

_log = logging.getLogger(__name__)

# Gets messages (topic, payload) in arrival order; returns once they may be acknowledged.
Handler = Callable[[Sequence[Received]], Awaitable[None]]
# Told after every (re)connect whether the broker still had the bridge's session.
OnConnect = Callable[[bool], Awaitable[None]]

_QUEUE_LIMIT = 10_000  # outcomes kept while disconnected (outcomes, not records)
_IN_FLIGHT = 100  # QoS 1 messages sent and not acknowledged yet, at the most
_GROUP_LIMIT = 100  # inbound messages handled (and committed) together at the most


class MqttLink:
    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        bridge_id: str,
        station_ids: Sequence[str],
        faults: Faults | None = None,
    ) -> None:
        self._config = config
        self._client_id = client_id
        self._tls = _tls_context(config)
        self._topics = Topics(config.topic_prefix)
        self._availability = self._topics.availability(bridge_id)
        self._station_ids = list(station_ids)
        self._faults = faults or Faults()
        self._outgoing = Outgoing(limit=_QUEUE_LIMIT)
        self._has_outgoing = asyncio.Event()
        self._dropped_reported = 0
        # Why the last attempt to reach the broker failed (a refused certificate, a wrong
        # password…), for the status page; None while connected.
        self.last_error: str | None = None
        self.connected = asyncio.Event()

    @property
    def dropped(self) -> int:
        """Outcomes dropped because the queue was full while the broker was away."""
        return self._outgoing.dropped

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        """Queue a QoS 1 message; it is sent as soon as the broker is connected."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        kept = self._outgoing.add(Message(topic, body, retain), connected=self.connected.is_set())
        if not kept and (self.dropped == 1 or self.dropped % 1000 == 0):
            _log.warning(
                "outgoing queue full (%d) while the broker is away: oldest outcome dropped "
                "(%d so far)",
                _QUEUE_LIMIT,
                self.dropped,
            )
        self._has_outgoing.set()

    async def run(self, handler: Handler, *, on_connect: OnConnect) -> None:
        """Stay connected until cancelled, reconnecting with backoff. `handler` gets the
        messages that arrived together and returns once they may be acknowledged; `on_connect`
        runs after every (re)connect."""
        backoff = RetryPolicy(min_s=1.0, max_s=self._config.reconnect_max_s)
        failures = 0
        while True:
            try:
                await self._session(handler, on_connect)
            except aiomqtt.MqttError as error:
                self.connected.clear()
                self.last_error = str(error)
                failures += 1
                delay = backoff.delay(failures, random.random())
                _log.warning(
                    "MQTT broker %s:%s: %s; reconnecting in %.1f s",
                    self._config.host,
                    self._config.port,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                failures = 0

    async def _session(self, handler: Handler, on_connect: OnConnect) -> None:
        password = self._config.password.get_secret_value() if self._config.password else None
        client = _Client(
            self._config.host,
            self._config.port,
            username=self._config.username,
            password=password,
            identifier=self._client_id,
            clean_session=False,
            keepalive=self._config.keepalive_s,
            will=aiomqtt.Will(self._availability, b"offline", qos=1, retain=True),
            tls_context=self._tls,
            max_inflight_messages=_IN_FLIGHT,
        )
        # aiomqtt 2.x has no public manual-ack switch yet (aiomqtt issue #345); paho underneath
        # has one. Without it paho acknowledges before the handler ran, and a crash then loses
        # the message.
        client._client.manual_ack_set(True)
        client.pending_calls_threshold = _IN_FLIGHT + 10  # aiomqtt warns past it
        cancels = _cancel_requests()
        async with client:
            _raise_if_cancelled(since=cancels)
            topics = self._topics.subscriptions(self._station_ids)
            await client.subscribe([(topic, 1) for topic in topics])
            _raise_if_cancelled(since=cancels)
            try:
                await client.publish(self._availability, b"online", qos=1, retain=True)
                _raise_if_cancelled(since=cancels)
                self.last_error = None
                _log.info(
                    "MQTT connected to %s:%s as %s",
                    self._config.host,
                    self._config.port,
                    self._client_id,
                )
                self.connected.set()
                self._report_dropped()
                await on_connect(client.session_present)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._send(client))
                    tasks.create_task(self._receive(client, handler))
            except* aiomqtt.MqttError as group:
                raise _first(group) from None
            finally:
                self.connected.clear()
                self._outgoing.connection_lost()
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    # A clean disconnect sends no will: say it ourselves.
                    await client.publish(
                        self._availability, b"offline", qos=1, retain=True, timeout=2
                    )

    async def _receive(self, client: _Client, handler: Handler) -> None:
        messages = client.messages
        while True:
            # What has already arrived is handled as one group: one disk commit for all of it.
            group = [await anext(messages)]
            while len(messages) and len(group) < _GROUP_LIMIT:
                group.append(await anext(messages))
            try:
                await handler([client.received(message) for message in group])
            except Exception:
                # A bug must not wedge the session on these messages: log it and move on.
                _log.exception("handling %d message(s) failed", len(group))
            await self._faults.hit(FaultPoint.AFTER_COMMIT)
            for message in group:
                if message.qos == 0:
                    continue
                code = client._client.ack(message.mid, message.qos)
                if code != paho.MQTT_ERR_SUCCESS:
                    # The broker sends it again; the handler will recognise it then.
                    _log.warning(
                        "acknowledging message %d on %s failed (%s): it will come again",
                        message.mid,
                        message.topic.value,
                        paho.error_string(code),
                    )

    async def _send(self, client: aiomqtt.Client) -> None:
        """Hand messages to the client as they come, up to `_IN_FLIGHT` unacknowledged: paho
        writes them in the order they are handed over, and a failed one ends the session
        (what was in flight is sent again after the reconnect)."""
        window = asyncio.Semaphore(_IN_FLIGHT)
        async with asyncio.TaskGroup() as publishing:
            while True:
                await window.acquire()
                while (taken := self._outgoing.take()) is None:
                    self._has_outgoing.clear()
                    await self._has_outgoing.wait()
                token, message = taken
                # The task's first step hands the message to paho: tasks start in the order
                # they were made, so the messages go out in this order.
                publishing.create_task(self._publish(client, token, message, window))

    async def _publish(
        self, client: aiomqtt.Client, token: int, message: Message, window: asyncio.Semaphore
    ) -> None:
        try:
            # No timeout: Python 3.11's wait_for can swallow a cancellation that meets a
            # completed publish, and the session would never end. A dead connection fails the
            # publish anyway (keepalive).
            await client.publish(
                message.topic, message.body, qos=1, retain=message.retain, timeout=math.inf
            )
            self._outgoing.acknowledged(token)
        finally:
            window.release()

    def _report_dropped(self) -> None:
        if self.dropped > self._dropped_reported:
            _log.warning(
                "%d outcome(s) dropped while the broker was away (queue limit %d)",
                self.dropped - self._dropped_reported,
                _QUEUE_LIMIT,
            )
            self._dropped_reported = self.dropped


def _first(group: BaseExceptionGroup[aiomqtt.MqttError]) -> aiomqtt.MqttError:
    """The first of the errors, however deep the task groups nested it."""
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


def _cancel_requests() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def _raise_if_cancelled(*, since: int) -> None:
    """Python 3.11's `asyncio.wait_for`, which aiomqtt uses for every call, returns the result
    and drops a cancellation that arrives as the call completes (a SIGTERM during the connect
    handshake): the session would then run on. The task still counts the request. Counted
    against the session's start: 3.11's TaskGroup leaves one behind after a failed session."""
    if _cancel_requests() > since:
        raise asyncio.CancelledError


def _tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    if config.tls.insecure:
        _log.warning(
            "mqtt.tls.insecure: the broker's certificate is not checked against the name %s "
            "(anyone holding a certificate from a trusted CA can pose as the broker)",
            config.host,
        )
    return config.tls.context()


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping two things paho reports that aiomqtt 2.5 drops: CONNACK's
    session-present flag, and the DUP flag of a message the broker delivers again; and with
    TCP_NODELAY on its socket."""

    session_present = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redelivered: set[int] = set()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: Any,
        properties: Any = None,
    ) -> None:
        self.session_present = bool(flags.session_present)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):  # a socket that is not TCP
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._on_socket_open(client, userdata, sock)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.dup:
            self._redelivered.add(message.mid)
        super()._on_message(client, userdata, message)

    def received(self, message: aiomqtt.Message) -> Received:
        payload = message.payload
        raw = payload if isinstance(payload, bytes) else str(payload).encode()
        redelivered = message.mid in self._redelivered
        self._redelivered.discard(message.mid)
        return Received(
            message.topic.value,
            raw,
            retained=message.retain,
            mid=message.mid if message.qos > 0 else None,
            redelivered=redelivered,
        )
