"""Where `station-bridge run` logs: stderr, times in UTC; under systemd (`JOURNAL_STREAM` set) each
line starts with its syslog priority (`<4>` for a warning, sd-daemon style), so that journald
files it at that priority and `journalctl -p warning` finds the incidents."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

_FORMAT = "%(levelname)-7s %(name)s: %(message)s"


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


class JournalFormatter(logging.Formatter):
    """No time (journald stamps each line); every line of a record, a traceback's too, carries
    the record's priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def configure_logging(level: str, *, environ: Mapping[str, str]) -> None:
    handler = logging.StreamHandler()
    if environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter(_FORMAT))
    else:
        formatter = logging.Formatter(f"%(asctime)s {_FORMAT}")
        formatter.converter = time.gmtime  # log times are UTC, like everything else
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    if level != "DEBUG":  # a line per MES request is noise, and shows the URL
        logging.getLogger("httpx").setLevel(logging.WARNING)
