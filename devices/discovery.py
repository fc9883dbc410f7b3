"""What a capture from an unknown gauge says about it: pure decisions for `station-bridge discover`.

The sweep (devices/discover.py) listens on the port at one setting after another and hands each
capture here. A capture is judged by the line terminator its bytes use and by the share of its
lines that one of the known formats reads (`and`, `sics`, `keyvalue`, each also with a decimal
comma where the format allows one). A line a parser recognises as a gauge error (`OL`, `S I`, `ES`)
counts as read: the format is right even when the value is not. The first line of a passive
capture may be the tail of a line cut by the start of listening, so it is left out when no format
reads it.

Confidence: `high` when at least 3 lines were read and at least 90 % of the lines were; `medium`
from 1 line and half of them; `low` otherwise. A capture with lines that no format reads is
reported too (format None): a gauge is talking, in a shape for `format: regex`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from devices.formats import parse_and, parse_keyvalue, parse_sics
from devices.framing import LineFramer
from devices.line import LineSettings
from devices.readings import GaugeError, ParseResult, Reading

Confidence = Literal["high", "medium", "low"]
DiscoverableFormat = Literal["and", "sics", "keyvalue"]

# 8N1 first: a 7E1 stream read at 8N1 shows its parity bits as high bits (garbage), but an 8N1
# stream read at 7E1 reads as clean ASCII, and only a query sent at 7E1 would come out wrong.
SWEEP_FRAMINGS = ("8N1", "7E1", "8E1", "7O1")
# The only bytes discover ever writes: each protocol's harmless "send the weight now" query.
QUERIES: tuple[tuple[DiscoverableFormat, str], ...] = (("sics", "SI"), ("and", "Q"))
QUERY_TERMINATOR = "\r\n"  # both MT-SICS and A&D commands end with CR LF

_CANDIDATES: tuple[tuple[DiscoverableFormat, bool], ...] = (
    ("and", False),
    ("sics", False),
    ("keyvalue", False),
    ("and", True),
    ("sics", True),
)
_TERMINATORS = {"\r\n": "CR LF", "\r": "CR", "\n": "LF"}
_MAX_LINE_BYTES = 256
_RANK: dict[Confidence, int] = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True)
class Sample:
    line: str
    result: ParseResult


@dataclass(frozen=True)
class Finding:
    """What one capture at one setting showed."""

    settings: LineSettings
    terminator: str
    format: DiscoverableFormat | None  # None: lines, but in no known format
    decimal_comma: bool
    poll: str | None  # the query it answered, for a gauge that only talks when asked
    read: int  # lines a parser read
    lines: int  # lines considered
    samples: tuple[Sample, ...]

    @property
    def confidence(self) -> Confidence:
        if self.format is None or self.lines == 0:
            return "low"
        if self.read >= 3 and self.read >= 0.9 * self.lines:
            return "high"
        if self.read >= 1 and self.read >= 0.5 * self.lines:
            return "medium"
        return "low"

    @property
    def unit(self) -> str | None:
        for sample in self.samples:
            if isinstance(sample.result, Reading):
                for measured in sample.result.values.values():
                    if measured.unit is not None:
                        return measured.unit
        return None

    def rank(self) -> tuple[int, int, int]:
        return (_RANK[self.confidence], int(self.format is not None), self.read)

    def describe(self) -> str:
        term = describe_terminator(self.terminator)
        if self.format is None:
            return f"{self.settings}, {term}: {self.lines} line(s) in no known format"
        comma = ", decimal comma" if self.decimal_comma else ""
        mode = f"answers {self.poll}" if self.poll else "streams"
        return (
            f"{self.settings}, {term}: format {self.format}{comma}, {mode}; confidence "
            f"{self.confidence} ({self.read} of {self.lines} lines read)"
        )


def describe_terminator(terminator: str) -> str:
    return _TERMINATORS.get(terminator, repr(terminator))


def detect_terminator(data: bytes) -> str | None:
    """CR LF, CR or LF: whichever ends the lines in `data`; None when there is no line end."""
    if b"\r\n" in data:
        return "\r\n"
    if b"\r" in data:
        return "\r"
    if b"\n" in data:
        return "\n"
    return None


def judge(data: bytes, *, settings: LineSettings, poll: str | None = None) -> Finding | None:
    """The best reading of a capture at `settings` (after `poll` was sent, if it was); None when
    it holds no line at all (silence, or bytes without a line end: a wrong baud rate)."""
    terminator = detect_terminator(data)
    if terminator is None:
        return None
    framer = LineFramer(terminator=terminator.encode("ascii"), max_line_bytes=_MAX_LINE_BYTES)
    lines = list(framer.feed(data).lines)
    if not lines:
        return None
    best: Finding | None = None
    for format, comma in _CANDIDATES:
        parse = _parser(format, decimal_comma=comma)
        considered = lines
        if poll is None and not _recognised(parse(lines[0])):
            considered = lines[1:]  # perhaps the tail of a line cut by the start of listening
        results = [Sample(line, parse(line)) for line in considered]
        read = sum(_recognised(sample.result) for sample in results)
        if read == 0:
            continue
        finding = Finding(
            settings=settings,
            terminator=terminator,
            format=format,
            decimal_comma=comma,
            poll=poll,
            read=read,
            lines=len(considered),
            samples=tuple(results[:5]),
        )
        if best is None or finding.rank() > best.rank():
            best = finding
    if best is not None:
        return best
    samples = tuple(Sample(line, _parser("and", decimal_comma=False)(line)) for line in lines[:5])
    return Finding(
        settings=settings,
        terminator=terminator,
        format=None,
        decimal_comma=False,
        poll=poll,
        read=0,
        lines=len(lines),
        samples=samples,
    )


def best_of(findings: list[Finding]) -> Finding | None:
    """The most convincing finding; the first of equals (the sweep's order)."""
    best: Finding | None = None
    for finding in findings:
        if best is None or finding.rank() > best.rank():
            best = finding
    return best


def _recognised(result: ParseResult) -> bool:
    return isinstance(result, Reading | GaugeError)


def _parser(format: DiscoverableFormat, *, decimal_comma: bool) -> Callable[[str], ParseResult]:
    match format:
        case "and":
            return lambda line: parse_and(line, name="value", decimal_comma=decimal_comma)
        case "sics":
            return lambda line: parse_sics(line, name="value", decimal_comma=decimal_comma)
        case "keyvalue":
            return lambda line: parse_keyvalue(line)


def device_entry(finding: Finding, *, port: str) -> str:
    """A `devices:` entry for the bridge's config, with comments on what to fill in."""
    if finding.format is None:
        raise ValueError("no format was recognised: write a format: regex entry by hand")
    settings = finding.settings
    escaped = finding.terminator.replace("\r", "\\r").replace("\n", "\\n")
    lines = [
        "devices:",
        "  - name: gauge1                # choose a name: letters, digits, _ and -",
        f"    port: {port}",
        "    station: ST01               # the station the gauge belongs to",
    ]
    if finding.format != "keyvalue":
        lines.append("    measurement: value          # the name its readings are recorded under")
    lines += [
        f"    format: {finding.format}",
        f"    baudrate: {settings.baudrate}",
        f"    bytesize: {settings.bytesize}",
        f"    parity: {settings.parity}",
        f"    stopbits: {settings.stopbits:g}",
        f"    terminator: '{escaped}'",
    ]
    if finding.unit is not None and finding.format != "keyvalue":
        lines.append(f"    unit: {finding.unit}")
    if finding.decimal_comma:
        lines.append("    decimal_comma: true")
    if finding.poll is not None:
        lines.append(f"    poll: {{command: {finding.poll}, interval_s: 1}}")
    return "\n".join(lines) + "\n"
