"""The embedded MQTT broker: amqtt running inside the bridge's event loop (`mqtt.embedded: true`).

```python
async with EmbeddedBroker(host="127.0.0.1", port=1883) as broker:
    ...  # clients connect to broker.host:broker.port
```

How amqtt (0.12) is set up here, and why:

* **Our own listening socket.** The bridge binds host:port itself (`asyncio.start_server`) and
  hands each accepted connection to amqtt through an *external* listener. So a taken port fails
  fast with one exception, `BrokerPortInUseError` (an `OSError` with `errno.EADDRINUSE`), instead
  of amqtt's `BrokerError` plus a logged traceback; `port=0` works and `.port` tells the real port;
  and shutdown can wait for (and, if need be, cancel) every connection task it started.
* **Loopback clients, or logged-in ones.** By default only loopback peers are accepted; a client
  from another address gets CONNACK "not authorised" (return code 5). `allow_remote=True` accepts
  every peer. Without `users_file` no credentials are checked: a client is accepted whatever
  username/password it sends (or none), and with `allow_remote` anyone who can reach host:port
  can publish and subscribe to anything. With `users_file` (amqtt's `FileAuthPlugin`: one
  `username:argon2-hash` line per client) every client, on loopback too, must log in with a
  username and password from that file; a logged-in client may still use every topic (amqtt's
  topic ACL plugin is not used) and nothing is encrypted (no TLS listener).
* **Persistent sessions work.** amqtt's stock `AnonymousAuthPlugin` marks every session it lets in
  as anonymous, and amqtt drops an anonymous session's subscriptions and queued QoS 1/2 messages
  when it disconnects, whatever its clean-session flag. The auth plugin here accepts clients
  without marking them anonymous, so `clean_session=False` behaves as MQTT 3.1.1 says.
* **In memory only, no $SYS.** No persistence plugin (sessions, queued and retained messages live
  in this process and are lost when it stops), no `$SYS` broker-statistics plugin (the deprecated
  `sys_interval` setting is not used; leaving the plugin out is the 0.12 way to turn it off) and no
  packet/event logging plugins. Sessions never expire while the broker runs.
* **Quiet.** The `amqtt` and `transitions` loggers are set to WARNING unless the application has
  given them a level of its own.

What the bridge can and cannot rely on with this broker is established by
`tests/integration/test_broker.py`, against this broker and against Mosquitto. QoS 1, retained
messages (an empty retained payload clears), the last will (sent, and retained, when a client
vanishes without DISCONNECT; not on a clean DISCONNECT), persistent sessions (long client ids are
fine) all work. amqtt 0.12's limits, which Mosquitto does not have:

* An unacknowledged QoS 1 message in flight when the connection drops is lost, never resent on
  reconnect: "acknowledge after handling" gives no redelivery here.
* It waits 5 s for a PUBACK, then logs a WARNING plus an ERROR with a traceback and forgets the
  message (a later ack is "unknown"): acknowledge within 5 s.
* Messages queued for an absent persistent session arrive with the RETAIN flag set.
* It delivers at the subscription's QoS, not min(publish, subscription): a QoS 0 publish to a
  QoS 1 subscriber arrives as QoS 1.
* Everything is in this process: while the bridge is down, so is the broker, and nothing queues.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

from bridge.adapters.listening import EmbeddedBrokerError, is_loopback

__all__ = [
    "BrokerPortInUseError",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "find_free_port",
    "is_loopback",
]

_log = logging.getLogger(__name__)

_LISTENER = "default"
_QUIET_LOGGERS = ("amqtt", "transitions")
_CONNECTION_DRAIN_S = 5.0
_FILE_AUTH_PLUGIN = "amqtt.plugins.authentication.FileAuthPlugin"


class BrokerPortInUseError(EmbeddedBrokerError):
    """host:port is already taken (another broker, another bridge): `errno` is EADDRINUSE."""


class _LoopbackAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Accept loopback clients (or every client) without credentials, as non-anonymous sessions.

    Not marking the session anonymous is what keeps amqtt from discarding a `clean_session=False`
    client's subscriptions and queued messages when it goes away.
    """

    @dataclass
    class Config:
        allow_remote: bool = False
        require_username: bool = False

    async def authenticate(self, *, session: Any) -> bool:
        address: str | None = getattr(session, "remote_address", None)
        client = getattr(session, "client_id", None)
        if not (self.config.allow_remote or is_loopback(address)):
            _log.warning(
                "embedded broker: refused MQTT client %r from %s (only loopback clients are "
                "allowed)",
                client,
                address,
            )
            return False
        # amqtt's FileAuthPlugin abstains (None) on a client without a username: refuse it here.
        if self.config.require_username and not getattr(session, "username", None):
            _log.warning(
                "embedded broker: refused MQTT client %r from %s: no username", client, address
            )
            return False
        return True


def _broker_config(*, allow_remote: bool, users_file: Path | None) -> dict[str, Any]:
    plugins: dict[str, Any] = {
        f"{__name__}.{_LoopbackAuthPlugin.__qualname__}": {
            "allow_remote": allow_remote,
            "require_username": users_file is not None,
        },
    }
    if users_file is not None:
        # Every auth plugin must agree: ours checks the address, this one the password.
        plugins[_FILE_AUTH_PLUGIN] = {"password_file": str(users_file)}
    return {"listeners": {_LISTENER: {"type": "external"}}, "plugins": plugins}


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on host right now (racy by nature; prefer `port=0`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class EmbeddedBroker:
    """An amqtt MQTT 3.1.1 broker listening on host:port while the `async with` block runs.

    `port=0` picks a free port; read the real one from `.port` once started. Not reentrant, and
    each instance starts once.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        allow_remote: bool = False,
        users_file: Path | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port}")
        self._host = host
        self._requested_port = port
        self._allow_remote = allow_remote
        self._users_file = users_file
        self._broker: Any = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._used = False

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The port actually listened on (the chosen one when constructed with port=0).

        With port=0 and a host name that resolves to several addresses, each gets its own port
        and this is the first one's: give an address with port=0.
        """
        if self._port is None:
            raise RuntimeError("the embedded broker is not running, so it has no port yet")
        return self._port

    async def __aenter__(self) -> Self:
        if self._used:
            raise RuntimeError("an EmbeddedBroker starts once; create a new one")
        self._used = True
        for name in _QUIET_LOGGERS:
            quiet = logging.getLogger(name)
            if quiet.level == logging.NOTSET:
                quiet.setLevel(logging.WARNING)

        try:
            broker = Broker(
                _broker_config(allow_remote=self._allow_remote, users_file=self._users_file)
            )
            await broker.start()
        except Exception as error:
            raise EmbeddedBrokerError(
                f"the embedded MQTT broker failed to start: {error}"
            ) from error
        self._broker = broker

        try:
            self._server = await asyncio.start_server(
                self._accept, self._host, self._requested_port
            )
        except OSError as error:
            await self._stop_broker()
            where = f"{self._host}:{self._requested_port}"
            if error.errno == errno.EADDRINUSE:
                raise BrokerPortInUseError(
                    errno.EADDRINUSE,
                    f"cannot start the embedded MQTT broker: {where} is already in use "
                    "(another MQTT broker or bridge?); choose another mqtt.port or set "
                    "mqtt.embedded: false to use that broker",
                ) from error
            raise EmbeddedBrokerError(
                error.errno, f"cannot start the embedded MQTT broker on {where}: {error.strerror}"
            ) from error

        self._port = int(self._server.sockets[0].getsockname()[1])
        if not self._allow_remote and not is_loopback(self._host):
            _log.warning(
                "embedded broker listens on %s but accepts only loopback clients "
                "(allow_remote=False)",
                self._host,
            )
        elif self._allow_remote and self._users_file is None:
            _log.warning(
                "embedded broker on %s accepts every client that can reach it, without a "
                "password: set mqtt.embedded_users_file to require one",
                self._host,
            )
        _log.info("embedded MQTT broker listening on %s:%d", self._host, self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections
        await self._stop_broker()  # ends every session and closes its connection
        if server is not None:
            await server.wait_closed()
        if self._connections:
            _, pending = await asyncio.wait(self._connections, timeout=_CONNECTION_DRAIN_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._port = None
        _log.info("embedded MQTT broker stopped")

    async def _stop_broker(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            try:
                await broker.shutdown()
            except Exception:
                _log.exception("embedded MQTT broker: error while shutting down")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        broker = self._broker
        if broker is None:  # shutting down
            writer.close()
            return
        # amqtt serves the connection in a task of ours, so that shutdown can wait for it and
        # cancel it if it hangs; this callback task itself never ends cancelled (asyncio 3.11
        # logs an error for a cancelled stream-callback task).
        work = asyncio.create_task(
            broker.external_connected(
                StreamReaderAdapter(reader), StreamWriterAdapter(writer), _LISTENER
            )
        )
        self._connections.add(work)
        try:
            await asyncio.wait([work])
        finally:
            self._connections.discard(work)
        if not work.cancelled() and (error := work.exception()) is not None:
            _log.warning("embedded broker: MQTT connection ended with an error: %r", error)
        # amqtt normally closed it already; never await wait_closed() here: amqtt cancels
        # its own tasks while they wait on the same close future, which cancels the future.
        if not writer.is_closing():
            writer.close()
