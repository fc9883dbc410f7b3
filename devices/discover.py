"""`station-bridge discover PORT`: find a gauge's serial settings and format by listening.

For each framing, then each baud rate, the port is opened with those settings and an exclusive
lock and listened to for `timeout_s` (up to 3 times as long when a known format came too slowly to
be sure). When nothing readable came, each polled protocol's query (`SI`, `Q`;
devices/discovery.py `QUERIES`) is sent, up to 3 times while it is answered, and the answers are
judged; a gauge that streams is never sent anything. Then the port is closed. A capture read
with high confidence ends the sweep. The decisions are in devices/discovery.py; this is the I/O.

- The port is opened exclusively (`flock`), as the bridge's readers open theirs: a port a running
  bridge reads from is refused before anything is written to it.
- The port is closed after each setting, and in any case before `discover` returns or raises.
- Baud rates change fastest, so that consecutive settings differ in baud rate: a Linux pty
  refuses (EINVAL) settings it cannot keep (7 data bits, parity) unless the baud rate changes with
  them. A setting the port refuses is skipped and reported ("the port refuses this setting").
"""

from __future__ import annotations

import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import serial

from devices.discovery import (
    QUERIES,
    QUERY_TERMINATOR,
    SWEEP_FRAMINGS,
    Finding,
    best_of,
    describe_terminator,
    detect_terminator,
    device_entry,
    judge,
)
from devices.line import STANDARD_BAUDRATES, LineSettings
from devices.reader import PORT_IN_USE, classify_open_error
from devices.readings import GaugeError, ParseResult, Reading

DEFAULT_TIMEOUT_S = 1.0
_READ_SLICE_S = 0.05
_LINES_ENOUGH = 6  # a passive capture stops early once it holds this many line ends
_ANSWERS_WANTED = 3  # a gauge that answered a query is asked this many times in all
_SLOW_STREAM_EXTENSIONS = 2  # a stream too slow for a confident judgement is heard 3 times as long


class DiscoveryError(Exception):
    """The port cannot be swept at all: missing, not permitted, or in use (a running bridge)."""


@dataclass
class Sweep:
    """What the sweep saw: every finding, the settings the port refused, and the best finding."""

    findings: list[Finding] = field(default_factory=list)
    refused: list[LineSettings] = field(default_factory=list)
    tried: int = 0

    @property
    def best(self) -> Finding | None:
        return best_of(self.findings)


def sweep_settings(
    *, baudrates: Sequence[int] = STANDARD_BAUDRATES, framings: Sequence[str] = SWEEP_FRAMINGS
) -> list[LineSettings]:
    """Framing by framing, every baud rate within (see the module's note on ptys)."""
    return [LineSettings.of(rate, framing) for framing in framings for rate in baudrates]


def discover(
    port: str,
    *,
    settings: Sequence[LineSettings],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[LineSettings, Finding | None, str], None] | None = None,
) -> Sweep:
    """Sweep `settings` on `port`; `progress(settings, finding, note)` after each one."""
    sweep = Sweep()
    for line in settings:
        sweep.tried += 1
        try:
            connection = _open(port, line)
        except _Refused as refused:
            sweep.refused.append(line)
            if progress:
                progress(line, None, f"the port refuses this setting ({refused})")
            continue
        try:
            finding = _listen(connection, line, timeout_s)
        finally:
            connection.close()
        if finding is not None:
            sweep.findings.append(finding)
        if progress:
            progress(line, finding, "")
        if finding is not None and finding.format is not None and finding.confidence == "high":
            break
    return sweep


class _Refused(Exception):
    pass


def _open(port: str, line: LineSettings) -> serial.Serial:
    connection = serial.Serial()
    connection.port = port
    connection.baudrate = line.baudrate
    connection.bytesize = line.bytesize
    connection.parity = line.parity
    connection.stopbits = line.stopbits
    connection.timeout = _READ_SLICE_S
    connection.write_timeout = 1.0
    connection.exclusive = True
    try:
        connection.open()
    except termios.error as error:  # the port will not take these settings
        raise _Refused(str(error)) from None
    except OSError as error:  # SerialException is an OSError
        code = error.errno
        if code is None:  # pyserial's "Could not configure port"
            raise _Refused(str(error)) from None
        _, detail = classify_open_error(port, error)
        if PORT_IN_USE in detail:
            detail += " (a running bridge reads from it? Stop it, or leave its port alone)"
        raise DiscoveryError(detail) from error
    return connection


def _listen(connection: serial.Serial, line: LineSettings, timeout_s: float) -> Finding | None:
    connection.reset_input_buffer()
    data = _capture(connection, timeout_s, lines=_LINES_ENOUGH)
    heard = judge(data, settings=line)
    for _ in range(_SLOW_STREAM_EXTENSIONS):
        # A slow stream in a known format: listen longer for a few more lines, never query it.
        if heard is None or heard.format is None or heard.confidence == "high":
            break
        data += _capture(connection, timeout_s, lines=_LINES_ENOUGH)
        heard = judge(data, settings=line)
    if heard is not None and heard.format is not None:
        return heard
    for _, query in QUERIES:
        answers = bytearray()
        for _ in range(_ANSWERS_WANTED):
            connection.reset_input_buffer()
            connection.write((query + QUERY_TERMINATOR).encode("ascii"))
            answer = _capture(connection, timeout_s, lines=1)
            answers += answer
            if detect_terminator(answer) is None:
                break  # no answer: do not ask again
        answered = judge(bytes(answers), settings=line, poll=query)
        if answered is not None and answered.format is not None:
            return answered
    return heard


def _capture(connection: serial.Serial, timeout_s: float, *, lines: int) -> bytes:
    """Bytes read for `timeout_s`, or until `lines` line ends came."""
    data = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        data += connection.read(4096)
        if data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") >= lines:
            break
    return bytes(data)


def run_discover(
    port: str,
    *,
    timeout_s: float,
    baudrates: Sequence[int],
    framings: Sequence[str],
    out: TextIO,
    err: TextIO,
) -> int:
    """The command: progress, then what was found and a `devices:` entry on `out`. Exit 0 when a
    known format was read with medium or high confidence, 1 when not, 2 (a message on `err`) when
    the port cannot be used or an option is wrong."""
    try:
        settings = sweep_settings(baudrates=baudrates, framings=framings)
    except ValueError as error:
        err.write(f"station-bridge discover: {error}\n")
        return 2
    if timeout_s <= 0:
        err.write("station-bridge discover: --timeout must be positive\n")
        return 2
    out.write(
        f"listening on {port} at up to {len(settings)} settings, {timeout_s:g} s each "
        f"(queries sent when a gauge stays quiet: {', '.join(q for _, q in QUERIES)})\n"
    )

    def progress(line: LineSettings, finding: Finding | None, note: str) -> None:
        what = note or (finding.describe() if finding else f"{line}: nothing readable")
        out.write(f"  {what}\n")
        out.flush()

    try:
        sweep = discover(port, settings=settings, timeout_s=timeout_s, progress=progress)
    except DiscoveryError as error:
        err.write(f"station-bridge discover: {error}\n")
        return 2
    best = sweep.best
    if best is None or best.format is None or best.confidence == "low":
        out.write(_nothing_found(best))
        return 1
    out.write(f"\nfound: {best.describe()}\n")
    for sample in best.samples:
        out.write(f"  {sample.line.strip()!r:40} → {_shown(sample.result)}\n")
    out.write("\nfor the bridge's config file:\n\n")
    out.write(device_entry(best, port=port))
    return 0


def _nothing_found(best: Finding | None) -> str:
    if best is None:
        return (
            "\nnothing readable at any setting: check the cable (TX/RX crossed? a null-modem "
            "adapter?), that the gauge is on, and its output settings (print mode, interface)\n"
        )
    lines = "".join(f"  {sample.line.strip()!r}\n" for sample in best.samples)
    return (
        f"\nno known format; the clearest lines came at {best.settings} "
        f"({describe_terminator(best.terminator)}):\n{lines}"
        "write a `format: regex` entry for them (docs/devices.md)\n"
    )


def _shown(result: ParseResult) -> str:
    if isinstance(result, Reading):
        values = ", ".join(
            f"{name} {item.value:g}{' ' + item.unit if item.unit else ''}"
            for name, item in result.values.items()
        )
        return f"{values} ({'stable' if result.stable else 'unstable'})"
    if isinstance(result, GaugeError):
        return f"{result.code} ({result.detail})"
    return f"not read ({result.detail})"
