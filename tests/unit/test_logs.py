"""bridge.adapters.logs: one event, one line, whatever the logged values hold."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bridge.adapters.logs import (
    FORMAT,
    EscapingFormatter,
    JournalFormatter,
    escape,
    journal_priority,
    setup,
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("WIP-KR01-001", "WIP-KR01-001"),
        ("한국어 WIP", "한국어 WIP"),
        ("a\nb", "a\\x0ab"),
        ("a\r\nb", "a\\x0d\\x0ab"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("tab\there", "tab\\x09here"),
        ("rtl\u202eoverride", "rtl\\u202eoverride"),
        ("mark\u200f", "mark\\u200f"),
        ("line\u2028sep", "line\\u2028sep"),
        ("lone\ud800", "lone\\ud800"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("tag\U000e0041", "tag\\U000e0041"),
    ],
)
def test_escape(text: str, shown: str) -> None:
    assert escape(text) == shown


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(EscapingFormatter(FORMAT))
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, out
    logger.removeHandler(handler)


FORGED = "W1\n2026-11-26 09:00:00,000 ERROR   bridge.outbox: outbox corrupt"


def test_a_newline_in_an_argument_forges_no_line(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    logger.info("batch for %s started", FORGED)
    logger.info("second")
    written = out.getvalue().splitlines()
    assert len(written) == 2
    assert "W1\\x0a2026-11-26 09:00:00,000 ERROR" in written[0]
    assert written[1].endswith("test.logs: second")


def test_a_lone_surrogate_does_not_stop_the_stream(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    logger.warning("wip %r", "\ud800")
    out.getvalue().encode("utf-8")  # what a UTF-8 stream would have to write
    assert "\\ud800" in out.getvalue()


def test_a_traceback_is_indented_and_escaped(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    try:
        raise ValueError(FORGED)
    except ValueError:
        logger.exception("handling failed")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("test.logs: handling failed")
    # An exception's text may hold newlines: its lines stay inside the indented traceback.
    assert rest and all(line.startswith("    ") for line in rest)


def test_times_are_utc() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created = 0.0
    record.msecs = 0.0
    assert EscapingFormatter(FORMAT).format(record).startswith("1970-01-01 00:00:00,000 INFO")


def test_setup_makes_the_process_log_escaped_lines() -> None:
    # In a process of its own: the test runner has its own handlers on the root logger.
    code = (
        "import logging; from bridge.adapters.logs import setup; setup('INFO', environ={}); "
        "logging.getLogger('bridge.x').warning('wip %s', 'W\\n2026-11-26 ERROR forged')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    (line,) = done.stderr.splitlines()
    assert line.endswith("WARNING bridge.x: wip W\\x0a2026-11-26 ERROR forged")


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
    record.args = ("x\ny",)
    record.msg = "failed %s"
    text = JournalFormatter("%(levelname)s %(message)s").format(record)
    lines = text.splitlines()
    assert lines[0] == "<3>ERROR failed x\\x0ay" and len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)


@pytest.mark.parametrize(
    ("environ", "prefix"), [({"JOURNAL_STREAM": "8:42"}, "<4>WARNING"), ({}, "20")]
)
def test_setup_picks_the_format_by_environment(
    environ: dict[str, str], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setattr("sys.stderr", io.StringIO())
    root.handlers = []
    try:
        setup("INFO", environ=environ)
        logging.getLogger("bridge.test").warning("look")
        written = root.handlers[0].stream.getvalue()  # type: ignore[attr-defined]
    finally:
        root.handlers, root.level = saved
    assert written.startswith(prefix) and written.rstrip().endswith("bridge.test: look")
