"""bridge.logs: journald priorities under systemd, plain UTC lines otherwise."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from bridge.logs import JournalFormatter, configure_logging, journal_priority


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
    ],
)
def test_journal_priority(level: int, priority: int) -> None:
    assert journal_priority(level) == priority


def test_every_line_of_a_record_carries_its_priority() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("bridge", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    text = JournalFormatter("%(levelname)s %(message)s").format(record)
    lines = text.splitlines()
    assert lines[0] == "<3>ERROR failed" and len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)


@pytest.mark.parametrize(
    ("environ", "prefix"), [({"JOURNAL_STREAM": "8:42"}, "<4>WARNING"), ({}, "20")]
)
def test_configure_logging_picks_the_format_by_environment(
    environ: dict[str, str], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setattr("sys.stderr", io.StringIO())
    root.handlers = []
    try:
        configure_logging("INFO", environ=environ)
        logging.getLogger("bridge.test").warning("look")
        written = root.handlers[0].stream.getvalue()  # type: ignore[attr-defined]
    finally:
        root.handlers, root.level = saved
    assert written.startswith(prefix) and written.rstrip().endswith("bridge.test: look")
