"""The bridge's MQTT connection: subscribe, hand messages over, acknowledge them once handled.

- A fixed client id, a persistent session (`clean_session=False`) and QoS 1 subscriptions: what
  the stations send while the bridge is down waits at the broker and arrives after a restart.
- Manual acknowledgement: a QoS 1 message is acknowledged only after the handler returned,
  i.e. after its effect is on disk. A crash in between means the broker sends it again.
  Messages that arrived together go to the handler together, so that one disk commit covers
  them.
- `bridge/{id}/availability` is `online` (retained) while connected, and the broker publishes the
  last will `offline` when the bridge vanishes without saying goodbye.
- Outgoing messages wait in a bounded queue while the broker is away and go out on reconnect.
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

from .config import MqttConfig
from .delivery import RetryPolicy
from .topics import Received, Topics

_log = logging.getLogger(__name__)

# Gets messages (topic, payload) in arrival order; returns once they may be acknowledged.
Handler = Callable[[Sequence[Received]], Awaitable[None]]

_QUEUE_LIMIT = 10_000  # outgoing messages kept while disconnected (outcomes, not records)
_GROUP_LIMIT = 100  # inbound messages handled (and committed) together at the most


class MqttLink:
    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        bridge_id: str,
    ) -> None:
        self._config = config
        self._client_id = client_id
        self._tls = _tls_context(config)
        self._topics = Topics(config.topic_prefix)
        self._availability = self._topics.availability(bridge_id)
        self._outgoing: deque[tuple[str, bytes, bool]] = deque(maxlen=_QUEUE_LIMIT)
        self._has_outgoing = asyncio.Event()
        self.connected = asyncio.Event()

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        """Queue a QoS 1 message; it is sent as soon as the broker is connected."""
        if len(self._outgoing) == self._outgoing.maxlen:
            _log.warning("outgoing queue full while the broker is away: oldest message dropped")
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        self._outgoing.append((topic, body, retain))
        self._has_outgoing.set()

    async def run(self, handler: Handler, *, on_connect: Callable[[], None]) -> None:
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

    async def _session(self, handler: Handler, on_connect: Callable[[], None]) -> None:
        password = self._config.password.get_secret_value() if self._config.password else None
        client = aiomqtt.Client(
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
                on_connect()
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

    async def _receive(self, client: aiomqtt.Client, handler: Handler) -> None:
        messages = client.messages
        while True:
            # What has already arrived is handled as one group: one disk commit for all of it.
            group = [await anext(messages)]
            while len(messages) and len(group) < _GROUP_LIMIT:
                group.append(await anext(messages))
            try:
                await handler([_received(message) for message in group])
            except Exception:
                # A bug must not wedge the session on these messages: log it and move on.
                _log.exception("handling %d message(s) failed", len(group))
            for message in group:
                client._client.ack(message.mid, message.qos)

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            await self._has_outgoing.wait()
            while self._outgoing:
                topic, body, retain = self._outgoing[0]
                # No timeout: Python 3.11's wait_for can swallow a cancellation that meets a
                # completed publish, and the session would never end. A dead connection fails
                # the publish anyway (keepalive).
                await client.publish(topic, body, qos=1, retain=retain, timeout=math.inf)
                self._outgoing.popleft()
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


def _received(message: aiomqtt.Message) -> Received:
    payload = message.payload
    raw = payload if isinstance(payload, bytes) else str(payload).encode()
    return Received(message.topic.value, raw, retained=message.retain)
