"""The bridge's log lines: one event, one line, whatever a station put in a WIP id.

A WIP id, a topic or an MES message may carry CR/LF, escape sequences, RTL marks or lone
surrogates; written as they are, a newline forges a whole log line of its own and a surrogate
stops the stream handler. The formatter escapes every character that is not printable in the
formatted line (the bridge's own lines and every library's), and indents tracebacks so that no
line of theirs can pass for a log line either.
"""

from __future__ import annotations

import logging
import time

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def escape(text: str) -> str:
    """Every non-printable character (control, format, separators, surrogates) as `\\x..`,
    `\\u....` or `\\U........`; a backslash stays itself (the escapes are for reading)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class EscapingFormatter(logging.Formatter):
    """Times in UTC; the message escaped; a traceback's lines each escaped and indented."""

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join(f"    {escape(line)}" for line in text.splitlines())


def setup(level: str) -> None:
    """The root logger writes escaped lines to stderr (the journal under systemd)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
