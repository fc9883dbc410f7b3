"""`station-bridge gauge-watch`: a configured gauge's lines, live, to check the wiring.

It runs the bridge's own reader on the device (same settings, same exclusive lock, same polls) and
prints every line with what it parses to — value, unit, stable or unstable (shown here even when
the device does not record unstable values), gauge errors, garbage — and every change of status.
It records and publishes nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TextIO

from devices.config import DeviceConfig
from devices.events import DeviceStatus
from devices.formats import parse_line
from devices.reader import PORT_IN_USE, GaugeReader
from devices.readings import GaugeError, Reading


def describe_line(device: DeviceConfig, line: str) -> str:
    """What `line` means for `device`, in a few words (unstable values included)."""
    result = parse_line(device.model_copy(update={"record_unstable": True}), line)
    if isinstance(result, Reading):
        values = ", ".join(
            f"{name} {item.value:g}{' ' + item.unit if item.unit else ''}"
            for name, item in result.values.items()
        )
        return f"{values}  {'stable' if result.stable else 'UNSTABLE'}"
    if isinstance(result, GaugeError):
        return f"{result.code}: {result.detail}"
    return f"not read: {result.detail}"


class _Watch:
    """DeviceEvents that print status changes; lines are printed by the reader's `on_line`."""

    def __init__(self, device: DeviceConfig, *, out: TextIO, count: int | None) -> None:
        self._device = device
        self._out = out
        self._left = count
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def line(self, line: str, at: datetime) -> None:
        if self.done.done():
            return
        self._print(at, f"{describe_line(self._device, line):<40} {line.strip()!r}")
        if self._left is not None:
            self._left -= 1
            if self._left == 0:
                self.done.set_result(0)

    async def reading(self, device: DeviceConfig, reading: Reading, at: datetime) -> None:
        """Printed by `line`, with the raw line."""

    async def gauge_error(self, device: DeviceConfig, error: GaugeError, at: datetime) -> None:
        """Printed by `line`, with the raw line."""

    async def status(self, device: DeviceConfig, status: DeviceStatus) -> None:
        detail = f": {status.detail}" if status.detail else ""
        self._print(status.since or datetime.now(UTC), f"-- {status.state}{detail}")
        in_use = status.state == "error" and PORT_IN_USE in status.detail
        if in_use and not self.done.done():
            self._out.write(
                "the bridge (or another program) has this port: stop it first, or follow "
                f"station/{device.station}/measurement/live instead\n"
            )
            self.done.set_result(2)

    def _print(self, at: datetime, text: str) -> None:
        self._out.write(f"{at.astimezone(UTC):%H:%M:%S.%f}"[:12] + f"  {text}\n")
        self._out.flush()


async def watch_gauge(device: DeviceConfig, *, out: TextIO, count: int | None = None) -> int:
    """Print the gauge's lines until `count` lines came (or forever, until cancelled)."""
    watch = _Watch(device, out=out, count=count)
    out.write(
        f"{device.name} on {device.port}: {device.format}, {device.baudrate} "
        f"{device.bytesize}{device.parity}{device.stopbits:g}"
        f"{', polled with ' + device.poll.command if device.poll and device.poll.command else ''}"
        " (Ctrl-C stops)\n"
    )
    reader = GaugeReader(device, watch, on_line=watch.line)
    task = asyncio.create_task(reader.run(), name=f"watch {device.name}")
    try:
        return await watch.done
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
