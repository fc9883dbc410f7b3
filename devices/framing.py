"""A pure line framer: bytes in, complete lines out, with a bounded buffer.

A serial line has no message boundaries: a read may end in the middle of a line or of the
terminator, and an instrument that babbles (wrong baud rate, a cable picking up noise) may never
send a terminator at all. The framer keeps at most `max_line_bytes` plus the terminator's length
of an unfinished line. A line longer than that is dropped and counted, and so is its tail up to the
next terminator, so that the tail is never mistaken for a line of its own.

Lines are decoded as UTF-8 with replacement characters: noise becomes an unparseable line, never an
exception. Empty and whitespace-only lines are skipped (a gauge sending CR LF framed on LF, or
blank lines between values, is not noise).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Framed:
    """What one `feed` produced: complete lines, and how many over-long lines were dropped."""

    lines: tuple[str, ...] = ()
    overlong: int = 0


class LineFramer:
    def __init__(self, *, terminator: bytes, max_line_bytes: int) -> None:
        if not terminator:
            raise ValueError("terminator must not be empty")
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self._terminator = terminator
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long line: discard up to the next terminator

    @property
    def buffered(self) -> int:
        """Bytes held for the unfinished line (bounded by max_line_bytes + len(terminator))."""
        return len(self._buffer)

    def feed(self, data: bytes) -> Framed:
        self._buffer += data
        lines: list[str] = []
        overlong = 0
        term = self._terminator
        while (end := self._buffer.find(term)) >= 0:
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + len(term)]
            if self._skipping:
                self._skipping = False
                continue
            if len(raw) > self._max:
                overlong += 1
                continue
            line = raw.decode("utf-8", errors="replace")
            if line.strip():
                lines.append(line)
        # What remains has no terminator. Keep only what may still become a line: at most
        # max_line_bytes, plus a partial terminator that the next chunk may complete.
        if len(self._buffer) > self._max + len(term) - 1:
            if not self._skipping:
                overlong += 1
                self._skipping = True
            keep = len(term) - 1
            del self._buffer[: len(self._buffer) - keep]
        return Framed(lines=tuple(lines), overlong=overlong)
