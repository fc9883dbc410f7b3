"""The adapter between one serial gauge and the bridge: open, frame, parse, report, reopen.

`GaugeReader.run()` runs until cancelled. One session is: open the port (pyserial opens and closes
it off the event loop), report `connected`, then read lines and, for a polled gauge, write the poll
command, until the port fails, ends, or its path disappears; report `disconnected` and reopen with
capped exponential backoff and jitter (USB re-enumeration: the path goes away and comes back, and
several readers must not retry in lockstep). While connected, a `SilenceWatch` decides when a
gauge that stopped answering is `stale`, then `error`, and the status returns to `connected` with
the next line. Nothing but CancelledError leaves `run()`: failures are logged and reported as
status `error`, then retried like a disconnection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import serial_asyncio_fast

from devices.config import DeviceConfig
from devices.events import DeviceEvents, DeviceState, DeviceStatus
from devices.formats import parse_line
from devices.framing import LineFramer
from devices.readings import GaugeError, GaugeErrorCode, Ignored, Reading
from devices.silence import SilenceWatch

_log = logging.getLogger(__name__)

_READ_SIZE = 4096
_WATCH_INTERVAL_S = 1.0  # how often the port's path is checked while connected
_CLOSE_TIMEOUT_S = 5.0
_SILENCE_CHECKS_PER_LIMIT = 4  # a streaming gauge's silence is checked 4 times per max_silence_s

_MISSING = {errno.ENOENT, errno.ENODEV, errno.ENXIO}
_DENIED = {errno.EACCES, errno.EPERM}
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY}
PORT_IN_USE = "is in use by another program"  # in the status detail of a port another one holds


def _utc_now() -> datetime:
    return datetime.now(UTC)


def backoff_delay(attempt: int, *, min_s: float, max_s: float, jitter: float) -> float:
    """Seconds before reopen attempt `attempt` (0 after a session that had connected).

    min_s·2^attempt, capped at max_s, times a factor in [0.5, 1] from `jitter` in [0, 1],
    never below min_s.
    """
    base = min(max_s, min_s * 2.0 ** min(attempt, 32))
    return max(min_s, base * (0.5 + jitter / 2))


@dataclass
class ReaderCounters:
    """What the reader saw since it started; for logs, diagnostics and tests."""

    connects: int = 0
    lines: int = 0
    readings: int = 0
    gauge_errors: int = 0
    repeated_errors: int = 0
    unstable: int = 0
    unparseable: int = 0
    overlong: int = 0


class GaugeReader:
    def __init__(
        self,
        device: DeviceConfig,
        events: DeviceEvents,
        *,
        clock: Callable[[], datetime] = _utc_now,
        rng: random.Random | None = None,
        on_line: Callable[[str, datetime], None] | None = None,
    ) -> None:
        """`on_line(line, at)` sees every framed line, whatever it parses to (for
        `station-bridge gauge-watch`)."""
        self._device = device
        self._on_line = on_line
        self._events = events
        self._clock = clock
        self._rng = rng or random.Random()
        self._status: DeviceStatus | None = None
        self._last_reading_at: datetime | None = None
        self._last_error: GaugeError | None = None
        self._quiet = False  # garbage already logged at WARNING since the last good line
        self._silence: SilenceWatch | None = None
        self._gone_quiet = False  # the status is stale or error because the gauge is silent
        self.counters = ReaderCounters()

    @property
    def device(self) -> DeviceConfig:
        return self._device

    @property
    def status(self) -> DeviceStatus | None:
        """The current status with the latest `last_reading_at`; None before the first attempt."""
        if self._status is None:
            return None
        return replace(self._status, last_reading_at=self._last_reading_at)

    async def run(self) -> None:
        device = self._device
        attempt = 0
        while True:
            try:
                healthy = await self._session()
            except Exception as error:  # a bug must not end the reader: report, back off, retry
                _log.exception("%s: reader failed", device.name)
                await self._set_state("error", f"unexpected failure: {error!r}"[:200])
                healthy = False
            attempt = 0 if healthy else attempt + 1
            delay = backoff_delay(
                attempt,
                min_s=device.reconnect_min_s,
                max_s=device.reconnect_max_s,
                jitter=self._rng.random(),
            )
            await asyncio.sleep(delay)

    async def _session(self) -> bool:
        """One open-read-close cycle. True when the port opened and gave at least one line: only
        then does the backoff start again from the minimum, so that a port that opens and fails
        at once (a broken adapter) is retried ever more slowly, not twice a second forever."""
        device = self._device
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=device.port,
                baudrate=device.baudrate,
                bytesize=device.bytesize,
                parity=device.parity,
                stopbits=device.stopbits,
                exclusive=True,  # two bridges (or a terminal program) on one gauge lose lines
            )
        except (OSError, ValueError) as error:  # SerialException is an OSError
            await self._set_state(*classify_open_error(device.port, error))
            return False
        except termios.error as error:  # pyserial lets tcsetattr's refusal through as it is
            await self._set_state("error", f"port {device.port} refuses these settings: {error}")
            return False
        self.counters.connects += 1
        self._silence = SilenceWatch(device, started=self._clock())
        self._gone_quiet = False
        lines_before = self.counters.lines
        _log.info("%s: connected on %s", device.name, device.port)
        try:
            # Reported before the first line is read, so that the bridge sees connected first.
            await self._set_state("connected", "")
            detail = await self._serve(reader, writer)
        finally:
            await _close(writer)
        _log.warning("%s: disconnected: %s", device.name, detail)
        await self._set_state("disconnected", detail)
        return self.counters.lines > lines_before

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Read, poll and watch the port until one of them ends; why it ended."""
        device = self._device
        tasks = [asyncio.create_task(self._read_lines(reader))]
        if device.poll is not None and device.poll_bytes is not None:
            poll = self._poll(writer, device.poll_bytes, device.poll.interval_s)
            tasks.append(asyncio.create_task(poll))
        identity = _port_identity(device.port)
        if identity is not None:
            tasks.append(asyncio.create_task(self._watch(identity)))
        if device.poll is None and device.max_silence_s is not None:
            tick = device.max_silence_s / _SILENCE_CHECKS_PER_LIMIT
            tasks.append(asyncio.create_task(self._watch_silence(min(tick, _WATCH_INTERVAL_S))))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # Prefer the reader's account of why the session ended when several finished.
            return next(task for task in tasks if task in done).result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_lines(self, reader: asyncio.StreamReader) -> str:
        device = self._device
        framer = LineFramer(
            terminator=device.terminator.encode("ascii"), max_line_bytes=device.max_line_bytes
        )
        while True:
            try:
                data = await reader.read(_READ_SIZE)
            except OSError as error:
                return f"read failed: {error}"
            if not data:
                return "port closed"
            framed = framer.feed(data)
            if framed.overlong:
                self.counters.overlong += framed.overlong
                self._log_garbage(f"{framed.overlong} line(s) over {device.max_line_bytes} bytes")
            for line in framed.lines:
                await self._handle(line)

    async def _handle(self, line: str) -> None:
        device = self._device
        self.counters.lines += 1
        result = parse_line(device, line)
        at = self._clock()
        if self._on_line is not None:
            self._on_line(line, at)
        if self._silence is not None:
            self._silence.heard(at)
            await self._judge_silence()
        if isinstance(result, Reading):
            self.counters.readings += 1
            self._last_reading_at = at
            self._last_error = None
            self._quiet = False
            await self._notify("reading", self._events.reading(device, result, at))
        elif isinstance(result, GaugeError):
            # A gauge streaming OL ten times a second is one event, not ten a second.
            if result == self._last_error:
                self.counters.repeated_errors += 1
                return
            self.counters.gauge_errors += 1
            self._last_error = result
            _log.warning("%s: %s (%s)", device.name, result.code, result.detail)
            await self._notify("gauge_error", self._events.gauge_error(device, result, at))
        elif result.code is GaugeErrorCode.GAUGE_UNSTABLE:
            self.counters.unstable += 1
            self._last_error = None
        else:
            self.counters.unparseable += 1
            self._log_garbage(_describe(result))

    async def _poll(self, writer: asyncio.StreamWriter, command: bytes, interval: float) -> str:
        while not writer.transport.is_closing():
            try:
                writer.write(command)
                await writer.drain()
            except OSError as error:
                return f"write failed: {error}"
            if self._silence is not None:
                self._silence.polled(self._clock())
                await self._judge_silence()
            await asyncio.sleep(interval)
        return "port closed"

    async def _watch_silence(self, interval: float) -> str:
        while True:
            await asyncio.sleep(interval)
            await self._judge_silence()

    async def _judge_silence(self) -> None:
        verdict = self._silence.verdict(self._clock()) if self._silence is not None else None
        if verdict is None:
            if self._gone_quiet:
                self._gone_quiet = False
                _log.info("%s: answering again", self._device.name)
                await self._set_state("connected", "")
            return
        if not self._gone_quiet or self._status is None or self._status.state != verdict.level:
            _log.warning("%s: %s: %s", self._device.name, verdict.level, verdict.detail)
        self._gone_quiet = True
        await self._set_state(verdict.level, verdict.detail)

    async def _watch(self, identity: int) -> str:
        # A USB adapter that re-enumerates may leave the old file descriptor silent instead of
        # failing; the path going away (or pointing at another device) is the sign.
        port = self._device.port
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            current = _port_identity(port)
            if current is None:
                return f"port {port} is gone"
            if current != identity:
                return f"port {port} now points to another device"

    async def _set_state(self, state: DeviceState, detail: str) -> None:
        if self._status is not None and (self._status.state, self._status.detail) == (
            state,
            detail,
        ):
            return
        self._status = DeviceStatus(
            state=state, last_reading_at=self._last_reading_at, detail=detail, since=self._clock()
        )
        await self._notify("status", self._events.status(self._device, self._status))

    async def _notify(self, what: str, call: Awaitable[None]) -> None:
        try:
            await call
        except Exception:  # the bridge's handler failed: lose this event, keep reading
            _log.exception("%s: the %s handler raised", self._device.name, what)

    def _log_garbage(self, detail: str) -> None:
        # One WARNING per run of garbage, the rest at DEBUG: noise on a line must not flood logs.
        level = logging.DEBUG if self._quiet else logging.WARNING
        self._quiet = True
        _log.log(level, "%s: ignored %s", self._device.name, detail)


def _describe(ignored: Ignored) -> str:
    return f"unparseable line ({ignored.detail}): {ignored.line[:80]!r}"


def _port_identity(port: str) -> int | None:
    """The device number behind a port path (following symlinks), or None when it is gone or
    is not a path (pyserial URLs such as socket://host:port are not watched)."""
    if "://" in port:
        return None
    try:
        return os.stat(port).st_rdev
    except OSError:
        return None


def classify_open_error(port: str, error: OSError | ValueError) -> tuple[DeviceState, str]:
    """A port that will not open: missing is `disconnected` (not plugged in yet), anything else
    is an `error` an operator has to fix (permission, another program on the port, settings)."""
    code = error.errno if isinstance(error, OSError) else None
    if code in _MISSING:
        return "disconnected", f"port {port} not found"
    if code in _DENIED:
        return "error", f"permission denied on {port}: add the bridge's user to the dialout group"
    if code in _BUSY:
        return "error", f"port {port} {PORT_IN_USE}"
    return "error", f"cannot open {port}: {error}"[:200]


async def _close(writer: asyncio.StreamWriter) -> None:
    # abort, not close: close() flushes (tcdrain) first, which can block on a gauge that stopped
    # reading. A transport that failed on its own is already closing.
    if not writer.transport.is_closing():
        writer.transport.abort()
    try:
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_TIMEOUT_S)
    except Exception:  # the port failing as it closes is what we expected
        _log.debug("closing the port raised", exc_info=True)
