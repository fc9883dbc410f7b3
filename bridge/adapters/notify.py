"""systemd's notify protocol: readiness and the watchdog, as datagrams to `$NOTIFY_SOCKET`.

Under `Type=notify` systemd waits for `READY=1` before it calls the service started, and with
`WatchdogSec=` it kills a service that stops sending `WATCHDOG=1`. The heartbeat runs on the
bridge's event loop, so a loop that hangs stops it: before `READY=1` it extends the start timeout
(`EXTEND_TIMEOUT_USEC`) for as long as the loop keeps running, so that a bridge waiting for its
broker is neither killed nor left unwatched. Without `NOTIFY_SOCKET` every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

_log = logging.getLogger(__name__)

BEATS_PER_PERIOD = 3  # systemd's advice is at least two: one late datagram is not a kill


@dataclass(frozen=True, kw_only=True)
class NotifySettings:
    """What systemd asked for, read from the environment it gave the process."""

    address: str | None  # a socket path, or "\0name" for an abstract socket
    watchdog_s: float | None


def notify_settings(environ: Mapping[str, str], *, pid: int) -> NotifySettings:
    """`NOTIFY_SOCKET` (a path or `@abstract`), and `WATCHDOG_USEC` when it is meant for `pid`."""
    raw = environ.get("NOTIFY_SOCKET", "")
    address: str | None = None
    if raw.startswith("/"):
        address = raw
    elif raw.startswith("@") and len(raw) > 1:
        address = "\0" + raw[1:]
    watchdog_s: float | None = None
    usec = environ.get("WATCHDOG_USEC", "")
    meant_for = environ.get("WATCHDOG_PID", str(pid))
    if address is not None and usec.isdigit() and int(usec) > 0 and meant_for == str(pid):
        watchdog_s = int(usec) / 1_000_000
    return NotifySettings(address=address, watchdog_s=watchdog_s)


class Notifier:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self._ready = False
        self._failed = False

    def ready(self) -> None:
        self._ready = True
        self._send("READY=1\nSTATUS=connected to the MQTT broker")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    async def heartbeat(self) -> None:
        """Until cancelled: `WATCHDOG=1` once ready, before that more time to start."""
        period = self.settings.watchdog_s
        if period is None:
            return
        extend = f"EXTEND_TIMEOUT_USEC={int(period * 1_000_000)}\nSTATUS=waiting for the broker"
        while True:
            self._send("WATCHDOG=1" if self._ready else extend)
            await asyncio.sleep(period / BEATS_PER_PERIOD)

    def _send(self, message: str) -> None:
        address = self.settings.address
        if address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), address)
        except OSError as error:  # systemd gone or the socket not ours: say so once
            if not self._failed:
                _log.warning("cannot notify systemd at %s: %s", address.lstrip("\0"), error)
            self._failed = True
