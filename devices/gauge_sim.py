"""A simulated serial gauge on a pseudo-terminal, for tests, demos and integrators.

`GaugeSimulator` opens a pty and plays a gauge on its master side; a reader opens the slave `path`
exactly as it would open `/dev/ttyUSB0`. It runs in its own thread, so it can be used from plain
code, from a thread, or next to an asyncio loop (`start()`/`stop()`, or `with`).

- `and`: A&D stream output at `rate_hz`: `ST,+00100.00  g`; after `set_value(v, settle_lines=n)`
  n `US` lines first; `OL,+9999999E+19` while `set_overload(True)`. It answers `Q` with one line;
  with `stream=False` that is all it sends (a balance in command mode).
- `sics`: MT-SICS, answers only when asked: `S`/`SI` → `S S …` (`S D …` while settling), `SIR`
  → repeat at `rate_hz` until `@`, `Z` → `Z A`, `@` → `I4 A "…"`, anything else → `ES`;
  `S +` while overloaded.
- `keyvalue`: a torque driver's stream: `torque=1.52 Nm angle=35.2 deg`.
- `noise`: a stream of lines that no format reads (a gauge of an unknown kind, or a bad cable).

`decimal_comma=True` prints `+00123,45`. `set_silent()` stops all output (the gauge switched off
behind its adapter) until `set_silent(False)`. With `line=LineSettings(...)` the output is garbled
unless the reader set matching settings on the pty (devices/line.py: what a pty can show), which
stands in for a baud-rate mismatch; commands are then read as garbage too.

With `link`, the simulator keeps a symlink to the current slave, and `unplug()`/`replug()` play a
USB gauge pulled out and plugged back in (the pty goes away; a new one appears behind the link).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import threading
import time
import tty
from pathlib import Path
from types import FrameType, TracebackType
from typing import Literal, TextIO, cast

from devices.framing import LineFramer
from devices.line import LineSettings, pty_shows

SimFormat = Literal["and", "sics", "keyvalue", "noise"]
_DEFAULT_UNITS: dict[str, str] = {"and": "g", "sics": "g", "keyvalue": "Nm", "noise": ""}
_DEFAULT_VALUES: dict[str, float] = {"and": 100.0, "sics": 100.0, "keyvalue": 1.5, "noise": 0.0}
_NOISE = "#$%&*!?~^|<>[]{}ghjkqvwxz"
_WRITE_TIMEOUT_S = 1.0  # a gauge does not wait for a reader: drop a line nobody takes


class GaugeSimulator:
    def __init__(
        self,
        *,
        format: SimFormat = "and",
        rate_hz: float = 10.0,
        value: float | None = None,
        unit: str | None = None,
        link: str | os.PathLike[str] | None = None,
        wander: bool = False,
        terminator: str = "\r\n",
        seed: int | None = None,
        stream: bool | None = None,
        line: LineSettings | None = None,
        decimal_comma: bool = False,
    ) -> None:
        if format not in _DEFAULT_UNITS:
            raise ValueError(f"unknown simulator format {format!r}: and, sics, keyvalue or noise")
        if rate_hz <= 0:
            raise ValueError("rate_hz must be positive")
        self.format: SimFormat = format
        self.rate_hz = rate_hz
        self.unit = unit or _DEFAULT_UNITS[format]
        self._link = Path(link) if link is not None else None
        self._wander = wander
        self._terminator = terminator.encode("ascii")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        start = _DEFAULT_VALUES[format] if value is None else value
        self._value = start
        self._base = start
        self._shown = start  # what an unstable line shows while settling
        self._settle = 0
        self._overload = False
        self._repeat = format != "sics" if stream is None else stream  # sics: only after SIR
        self._line = line
        self._decimal_comma = decimal_comma
        self._silent = False
        self._commands: list[str] = []
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path = ""
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> GaugeSimulator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> GaugeSimulator:
        if self._thread is not None:
            raise RuntimeError("the simulator is already started")
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._plug()
        self._thread = threading.Thread(target=self._run, name=f"gauge-sim-{self.format}")
        self._thread.daemon = True  # a forgotten stop() must not keep a process alive
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout=5)
        self._thread = None
        self.unplug()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    @property
    def path(self) -> str:
        """The port to open: the symlink when `link` was given, else the pty's slave path."""
        if self._link is not None:
            return str(self._link)
        if not self._slave_path:
            raise RuntimeError("start the simulator first")
        return self._slave_path

    def unplug(self) -> None:
        """Pull the cable: close the pty (a reader sees the port fail) and remove the link."""
        with self._lock:
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
            if self._link is not None:
                self._link.unlink(missing_ok=True)
        self._wake()

    def replug(self) -> None:
        """Plug back in: a new pty, behind the same link."""
        self.unplug()
        self._plug()
        self._wake()

    # --- what the gauge does -----------------------------------------------------------------

    def set_value(self, value: float, *, settle_lines: int = 0) -> None:
        """Show `value` from now on, after `settle_lines` unstable lines (US / S D)."""
        with self._lock:
            self._shown = self._value
            self._value = value
            self._settle = settle_lines
            self._overload = False

    def set_overload(self, on: bool = True) -> None:
        with self._lock:
            self._overload = on

    def set_silent(self, on: bool = True) -> None:
        """Send nothing at all (no stream, no answers) until `set_silent(False)`."""
        with self._lock:
            self._silent = on

    def send_line(self, line: str) -> None:
        """Send one line now, as it is (the terminator is added)."""
        self._write(line.encode("utf-8") + self._terminator)

    @property
    def commands(self) -> list[str]:
        """The commands received from the reader, in order (sics polls, for example)."""
        with self._lock:
            return list(self._commands)

    # --- inside ------------------------------------------------------------------------------

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass as a serial line would
        os.set_blocking(master, False)
        with self._lock:
            # The simulator keeps the slave open too, so that the master never reads EIO while
            # no reader is attached (a real gauge does not notice a missing reader either).
            self._master, self._slave = master, slave
            self._slave_path = os.ttyname(slave)
            if self._link is not None:
                self._link.unlink(missing_ok=True)
                self._link.symlink_to(self._slave_path)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        framer = LineFramer(terminator=self._terminator[-1:], max_line_bytes=256)
        period = 1.0 / self.rate_hz
        next_tick = time.monotonic()
        next_wander = next_tick + self._rng.uniform(2, 4)
        while not self._stopping:
            master = self._master
            timeout = max(0.0, next_tick - time.monotonic()) if self._repeat else None
            try:
                readable, _, _ = select.select(
                    [self._wake_r] + ([master] if master is not None else []), [], [], timeout
                )
            except (OSError, ValueError):  # unplug() closed the master under us; look again
                continue
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
            if master is not None and master in readable:
                try:
                    data = os.read(master, 1024)
                except OSError:
                    data = b""
                for command in framer.feed(data).lines:
                    self._answer(command.strip())
            now = time.monotonic()
            if self._wander and now >= next_wander:
                self.set_value(round(self._base * self._rng.uniform(0.95, 1.05), 2), settle_lines=3)
                next_wander = now + self._rng.uniform(2, 4)
            if self._repeat and now >= next_tick:
                self._write(self._next_line().encode("utf-8") + self._terminator)
                next_tick = max(next_tick + period, now)

    def _answer(self, command: str) -> None:
        with self._lock:
            self._commands.append(command)
        if self._line is not None and not self._matches():
            command = "\ufffd"  # sent at another baud rate: the gauge hears garbage
        if self.format == "and" and command == "Q":
            self._write(self._next_line().encode("utf-8") + self._terminator)
        if self.format != "sics":
            return  # stream gauges ignore the rest of what they are sent
        match command:
            case "S" | "SI":
                reply = self._next_line(stable_only=command == "S")
            case "SIR":
                self._repeat = True
                return
            case "@":
                self._repeat = False
                reply = 'I4 A "SIM0000001"'
            case "Z":
                self.set_value(0.0)
                reply = "Z A"
            case _:
                reply = "ES"
        self._write(reply.encode("utf-8") + self._terminator)

    def _next_line(self, *, stable_only: bool = False) -> str:
        with self._lock:
            settling = self._settle > 0 and not stable_only
            if settling:
                step = 1.0 / (self._settle + 1)
                self._shown += (self._value - self._shown) * step
                self._settle -= 1
            shown = self._shown if settling else self._value
            overload = self._overload
        mark = "," if self._decimal_comma else "."
        match self.format:
            case "and":
                if overload:
                    return "OL,+9999999E+19"
                data = f"{shown:+09.2f}".replace(".", mark)
                return f"{'US' if settling else 'ST'},{data}{self.unit:>3}"
            case "sics":
                if overload:
                    return "S +"
                data = f"{shown:>10.2f}".replace(".", mark)
                return f"S {'D' if settling else 'S'} {data} {self.unit}"
            case "keyvalue":
                return f"torque={shown:.2f} {self.unit} angle={shown * 23.1:.1f} deg"
            case "noise":
                return "".join(self._rng.choice(_NOISE) for _ in range(self._rng.randint(8, 24)))

    def _matches(self) -> bool:
        with self._lock:
            slave, line = self._slave, self._line
        return slave is None or line is None or pty_shows(slave, line)

    def _write(self, data: bytes) -> None:
        deadline = time.monotonic() + _WRITE_TIMEOUT_S
        if not self._matches():
            # What a UART at the wrong baud rate makes of a line: bytes, none of them a terminator.
            data = bytes(self._rng.randrange(0x80, 0x100) for _ in data)
        with self._lock:
            if self._silent:
                return
            while data and self._master is not None:
                try:
                    data = data[os.write(self._master, data) :]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    select.select([], [self._master], [], min(left, 0.05))
                except OSError:
                    return


def run_gauge_sim(
    *,
    format: str,
    rate_hz: float,
    out: TextIO,
    line: LineSettings | None = None,
    terminator: str = "\r\n",
    stream: bool | None = None,
    decimal_comma: bool = False,
) -> int:
    """`station-bridge gauge-sim`: print the port path (first line), explain, run until
    SIGINT/SIGTERM. Call from the main thread (signal handlers)."""
    if format not in _DEFAULT_UNITS:
        raise ValueError(f"unknown simulator format {format!r}: and, sics, keyvalue or noise")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with GaugeSimulator(
            format=cast(SimFormat, format),
            rate_hz=rate_hz,
            wander=True,
            line=line,
            terminator=terminator,
            stream=stream,
            decimal_comma=decimal_comma,
        ) as sim:
            out.write(f"{sim.path}\n")
            out.write(_EXPLAIN[format].format(path=sim.path, rate=rate_hz))
            if line is not None:
                out.write(f"It talks at {line} only: other settings read garbage.\n")
            if stream is False:
                out.write("It sends only when asked (Q).\n")
            out.flush()
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


_EXPLAIN = {
    "and": (
        "A&D balance streaming at {rate} Hz on {path} (ST lines, a few US when the load changes).\n"
        "Configure a device with format: and, port: {path}. Stop with Ctrl-C.\n"
    ),
    "sics": (
        "Mettler Toledo MT-SICS balance on {path}; it answers S, SI, SIR, Z, @.\n"
        "Configure a device with format: sics, port: {path}, poll: {{interval_s: 1}}. "
        "Stop with Ctrl-C.\n"
    ),
    "keyvalue": (
        "Torque driver streaming 'torque=… Nm angle=… deg' at {rate} Hz on {path}.\n"
        "Configure a device with format: keyvalue, port: {path}. Stop with Ctrl-C.\n"
    ),
    "noise": ("A line of garbage at {rate} Hz on {path}: no format reads it. Stop with Ctrl-C.\n"),
}
