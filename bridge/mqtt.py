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
- Outgoing messages wait in a bounded queue while the broker is away and go out on reconnect;
  when it is full the oldest is dropped, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from .config import MqttConfig
from .delivery import RetryPolicy
from .faults import FaultPoint, Faults
from .topics import Received, Topics

_log = logging.getLogger(__name__)

# Gets messages (topic, payload) in arrival order; returns once they may be acknowledged.
Handler = Callable[[Sequence[Received]], Awaitable[None]]
# Told after every (re)connect whether the broker still had the bridge's session.
OnConnect = Callable[[bool], Awaitable[None]]

_QUEUE_LIMIT = 10_000  # outgoing messages kept while disconnected (outcomes, not records)
_GROUP_LIMIT = 100  # inbound messages handled (and committed) together at the most


class MqttLink:
    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        bridge_id: str,
        faults: Faults | None = None,
    ) -> None:
        self._config = config
        self._client_id = client_id
        self._tls = _tls_context(config)
        self._topics = Topics(config.topic_prefix)
        self._availability = self._topics.availability(bridge_id)
        self._faults = faults or Faults()
        self._outgoing: deque[tuple[str, bytes, bool]] = deque()
        self._has_outgoing = asyncio.Event()
        self.dropped = 0  # outgoing messages dropped because the queue was full
        self.connected = asyncio.Event()

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        """Queue a QoS 1 message; it is sent as soon as the broker is connected."""
        if len(self._outgoing) >= _QUEUE_LIMIT:
            self._outgoing.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                _log.warning(
                    "outgoing queue full (%d): oldest message dropped (%d so far)",
                    _QUEUE_LIMIT,
                    self.dropped,
                )
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        self._outgoing.append((topic, body, retain))
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
        )
        # aiomqtt 2.x has no public manual-ack switch yet (aiomqtt issue #345); paho underneath
        # has one. Without it paho acknowledges before the handler ran, and a crash then loses
        # the message.
        client._client.manual_ack_set(True)
        async with client:
            for topic in self._topics.subscriptions():
                await client.subscribe(topic, qos=1)
            try:
                await client.publish(self._availability, b"online", qos=1, retain=True)
                _log.info(
                    "MQTT connected to %s:%s as %s",
                    self._config.host,
                    self._config.port,
                    self._client_id,
                )
                self.connected.set()
                await on_connect(client.session_present)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._send(client))
                    tasks.create_task(self._receive(client, handler))
            except* aiomqtt.MqttError as group:
                raise group.exceptions[0] from None
            finally:
                self.connected.clear()
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
        while True:
            await self._has_outgoing.wait()
            while self._outgoing:
                # Taken off before it is sent, so that `publish` dropping the oldest of a full
                # queue meanwhile cannot drop this one, and its removal cannot remove another.
                topic, body, retain = self._outgoing.popleft()
                try:
                    # No timeout: Python 3.11's wait_for can swallow a cancellation that meets
                    # a completed publish, and the session would never end. A dead connection
                    # fails the publish anyway (keepalive).
                    await client.publish(topic, body, qos=1, retain=retain, timeout=math.inf)
                except BaseException:
                    self._outgoing.appendleft((topic, body, retain))  # sent again on reconnect
                    raise
            self._has_outgoing.clear()


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
    session-present flag, and the DUP flag of a message the broker delivers again."""

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
