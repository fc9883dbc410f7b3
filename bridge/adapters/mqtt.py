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
  until the previous one is acknowledged (paho does not set it). And TCP_CORK while paho writes
  what has queued up: with Nagle off, each of a group's acknowledgements would otherwise be a
  packet (and a wake-up of the broker) of its own.
- Per message, as little as the protocol needs (issue 11's ingest): messages arrive straight into
  the link's own buffer as `Received` and are taken a group at a time, and outgoing ones go
  straight to paho with a callback for their PUBACK; aiomqtt's iterator and `publish` spend a
  task, an event and a timer on every message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
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
_READ_SIZE = 1 << 16  # bytes asked of the socket at once


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
        while True:
            # What has already arrived is handled as one group: one disk commit for all of it.
            group = await client.arrived(limit=_GROUP_LIMIT)
            try:
                await handler(group)
            except Exception:
                # A bug must not wedge the session on these messages: log it and move on.
                _log.exception("handling %d message(s) failed", len(group))
            await self._faults.hit(FaultPoint.AFTER_COMMIT)
            for message in group:
                if message.mid is None:
                    continue
                code = client._client.ack(message.mid, 1)
                if code != paho.MQTT_ERR_SUCCESS:
                    # The broker sends it again; the handler will recognise it then.
                    _log.warning(
                        "acknowledging message %d on %s failed (%s): it will come again",
                        message.mid,
                        message.topic,
                        paho.error_string(code),
                    )

    async def _send(self, client: _Client) -> None:
        """Hand messages to the client as they come, up to `_IN_FLIGHT` unacknowledged: paho
        writes them in the order they are handed over. A message the client cannot take ends
        the session; what was in flight is sent again after the reconnect."""
        window = asyncio.Semaphore(_IN_FLIGHT)
        while True:
            await window.acquire()
            while (taken := self._outgoing.take()) is None:
                self._has_outgoing.clear()
                await self._has_outgoing.wait()
            token, message = taken

            def acknowledged(token: int = token) -> None:
                self._outgoing.acknowledged(token)
                window.release()

            client.send(message, acknowledged=acknowledged)

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
    """aiomqtt's client, with what the bridge needs of paho that aiomqtt 2.5 does not give:
    CONNACK's session-present flag; inbound messages as `Received` (with the DUP flag of one the
    broker delivers again) taken a group at a time from a buffer of its own, instead of
    aiomqtt's iterator, which makes a task and waits twice per message; TCP_NODELAY on its
    socket; and its writes corked, so that what paho writes at once (a group's acknowledgements,
    a burst of statuses) leaves in as few packets as the kernel can make of it."""

    session_present = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inbox: collections.deque[Received] = collections.deque()
        self._arrival = asyncio.Event()
        self._acknowledged: dict[int, Callable[[], None]] = {}  # by mid: `send`'s callbacks
        self._read = b""  # what the last recv brought, from `_read_at` on not yet read by paho
        self._read_at = 0
        self._socket_recv = self._client._sock_recv
        self._client._sock_recv = self._recv  # type: ignore[method-assign]

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

        def read() -> None:
            # Every packet in what one recv brought, not one packet per wake-up as aiomqtt's
            # reader does (paho reads as many as it has messages in flight, at least one).
            try:
                while client.loop_read() == paho.MQTT_ERR_SUCCESS and (
                    self._unread() or getattr(sock, "pending", lambda: 0)() > 0
                ):
                    pass
            except Exception as error:
                self._broken(error)

        # Queued after aiomqtt's own reader (paho calls this from the connecting thread): it
        # takes that reader's place.
        self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(), read)

    def _broken(self, error: Exception) -> None:
        """paho failed on the socket (usually a broken connection): end the session, as
        aiomqtt's own reader and writer do."""
        if not self._disconnected.done():
            self._disconnected.set_exception(error)

    def _recv(self, bufsize: int) -> bytes:
        """paho's `_sock_recv`, from a buffer: paho asks for a packet's bytes a few at a time
        (the fixed header byte by byte), and each ask was a system call."""
        if self._read_at >= len(self._read):
            self._read = self._socket_recv(_READ_SIZE)  # raises as paho's (BlockingIOError...)
            self._read_at = 0
        start = self._read_at
        self._read_at = min(start + bufsize, len(self._read))
        return self._read[start : self._read_at]

    def _unread(self) -> bool:
        return self._read_at < len(self._read)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # As aiomqtt's own, but corked: with TCP_NODELAY every send would be a packet of its own.
        def write() -> None:
            corked = _cork(sock, on=True)
            try:
                client.loop_write()
            except Exception as error:
                self._broken(error)
            finally:
                if corked:
                    _cork(sock, on=False)

        self._loop.call_soon_threadsafe(self._loop.add_writer, sock.fileno(), write)

    def send(self, message: Message, *, acknowledged: Callable[[], None]) -> None:
        """Publish at QoS 1 and call `acknowledged` when the broker's PUBACK comes: straight to
        paho, without the task, event and timer that aiomqtt's `publish` spends on each message
        (the link sends every outcome and status this way). Raises `aiomqtt.MqttCodeError` when
        paho cannot take it (the connection is gone)."""
        info = self._client.publish(message.topic, message.body, qos=1, retain=message.retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish")
        # The PUBACK cannot come before this: paho writes from the event loop, later.
        self._acknowledged[info.mid] = acknowledged

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        acknowledged = self._acknowledged.pop(mid, None)
        if acknowledged is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
        else:
            acknowledged()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        payload = message.payload
        self._inbox.append(
            Received(
                message.topic,
                payload if isinstance(payload, bytes) else bytes(payload),
                retained=bool(message.retain),
                mid=message.mid if message.qos > 0 else None,
                redelivered=bool(message.dup),
            )
        )
        self._arrival.set()

    async def arrived(self, *, limit: int) -> list[Received]:
        """The messages that have arrived (at least one, at most `limit`), in order. Raises
        `aiomqtt.MqttError` once the connection is lost: what is left unacknowledged comes again
        in the next session."""
        while not self._inbox and not self._disconnected.done():
            self._arrival.clear()
            waiting = asyncio.ensure_future(self._arrival.wait())
            try:
                await asyncio.wait(
                    (waiting, self._disconnected), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiting.cancel()
        if self._disconnected.done():
            raise aiomqtt.MqttError(
                "Disconnected during message iteration"
            ) from self._disconnected.exception()
        inbox = self._inbox
        return [inbox.popleft() for _ in range(min(limit, len(inbox)))]


def _cork(sock: Any, *, on: bool) -> bool:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)
    except (OSError, AttributeError):
        return False
    return True
