"""Test helpers: a recording `DeviceEvents`, a raw pseudo-terminal, a running reader."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import termios
import time
import tty
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from devices import DeviceConfig, DeviceStatus, GaugeError, GaugeReader, Reading

TIMEOUT_S = 10.0


def make_device(**overrides: Any) -> DeviceConfig:
    fields: dict[str, Any] = {
        "name": "scale1",
        "port": "/dev/null",
        "station": "ST01",
        "measurement": "weight",
        "format": "and",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
    }
    fields.update(overrides)
    return DeviceConfig.model_validate(fields)


class Recorder:
    """DeviceEvents that queue what they get, so that a test waits for exactly what it expects."""

    def __init__(self) -> None:
        self.readings: asyncio.Queue[tuple[Reading, datetime]] = asyncio.Queue()
        self.errors: asyncio.Queue[GaugeError] = asyncio.Queue()
        self.statuses: asyncio.Queue[DeviceStatus] = asyncio.Queue()
        self.status_log: list[DeviceStatus] = []

    async def reading(self, device: DeviceConfig, reading: Reading, at: datetime) -> None:
        await self.readings.put((reading, at))

    async def gauge_error(self, device: DeviceConfig, error: GaugeError, at: datetime) -> None:
        await self.errors.put(error)

    async def status(self, device: DeviceConfig, status: DeviceStatus) -> None:
        self.status_log.append(status)
        await self.statuses.put(status)

    async def next_reading(self) -> Reading:
        reading, _ = await asyncio.wait_for(self.readings.get(), TIMEOUT_S)
        return reading

    async def next_value(self, name: str = "weight") -> float:
        return (await self.next_reading()).values[name].value

    async def next_error(self) -> GaugeError:
        return await asyncio.wait_for(self.errors.get(), TIMEOUT_S)

    async def wait_state(self, state: str) -> DeviceStatus:
        """The next status with this state (statuses with another state in between are kept in
        `status_log`)."""
        while True:
            status = await asyncio.wait_for(self.statuses.get(), TIMEOUT_S)
            if status.state == state:
                return status

    def states(self) -> list[str]:
        """The states seen, with repeats (a change of detail only) folded."""
        folded: list[str] = []
        for status in self.status_log:
            if not folded or folded[-1] != status.state:
                folded.append(status.state)
        return folded


class Pty:
    """A raw pseudo-terminal: the test plays the gauge on `master`; the reader opens `path`."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo and no CR/LF translation, as on a serial line
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._received = bytearray()

    async def write(self, data: bytes) -> None:
        """Write everything, off the event loop: the reader drains the pty as we write."""
        await asyncio.to_thread(self._write_all, data)

    def _write_all(self, data: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        view = memoryview(data)
        while view:
            if time.monotonic() > deadline:
                raise TimeoutError("nobody is reading the pty")
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                select.select([], [self.master], [], 0.05)

    async def read_until(self, needle: bytes) -> bytes:
        """Everything the reader wrote to the gauge, once it contains `needle`."""
        return await asyncio.to_thread(self._read_until, needle)

    def _read_until(self, needle: bytes) -> bytes:
        deadline = time.monotonic() + TIMEOUT_S
        while needle not in self._received:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{needle!r} never arrived; got {bytes(self._received)!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.1))
            if ready:
                with contextlib.suppress(BlockingIOError):
                    self._received += os.read(self.master, 1024)
        return bytes(self._received)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.asynccontextmanager
async def running(reader: GaugeReader) -> AsyncIterator[asyncio.Task[None]]:
    """Run the reader for the block; fail if it ended on its own (it must only be cancelled)."""
    task = asyncio.create_task(reader.run())
    try:
        yield task
    finally:
        if task.done():
            task.result()  # re-raises whatever ended it
            raise AssertionError("run() returned: it must run until cancelled")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def pty_refuses_parity() -> bool:
    """Whether this kernel's ptys refuse (EINVAL) a reconfiguration with parity, as Linux 6.x
    does: the pty keeps no parity, and a change that keeps nothing is refused."""
    import serial

    terminal = Pty()
    try:
        with serial.Serial(terminal.path, 9600, parity="E") as port:
            port.timeout = 0  # what pyserial-asyncio-fast does after opening
        return False
    except termios.error:
        return True
    finally:
        terminal.close()
