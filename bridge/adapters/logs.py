"""The bridge's log lines: one event, one line, whatever a station put in a WIP id; times in UTC;
under systemd (`JOURNAL_STREAM` set) each line starts with its syslog priority (`<4>` for a
warning, sd-daemon style), so that journald files it at that priority and `journalctl -p
warning` finds the incidents.

A WIP id, a topic or an MES message may carry CR/LF, escape sequences, RTL marks or lone
surrogates; written as they are, a newline forges a whole log line of its own and a surrogate
stops the stream handler. The formatter escapes every character that is not printable in the
formatted line (the bridge's own lines and every library's), and indents tracebacks so that no
line of theirs can pass for a log line either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

_FORMAT = "%(levelname)-7s %(name)s: %(message)s"
FORMAT = f"%(asctime)s {_FORMAT}"


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


def journal_priority(levelno: int) -> int:
    """syslog's priority for a logging level: 3 error, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(EscapingFormatter):
    """No time (journald stamps each line); every line of a record, a traceback's too, carries
    the record's priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def setup(level: str, *, environ: Mapping[str, str]) -> None:
    """The root logger writes escaped lines to stderr (the journal under systemd)."""
    handler = logging.StreamHandler()
    if environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter(_FORMAT))
    else:
        handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    if level != "DEBUG":  # a line per MES request is noise, and shows the URL
        logging.getLogger("httpx").setLevel(logging.WARNING)
