"""LineFramer: lines across chunks, several per chunk, bounded memory, noise."""

from __future__ import annotations

import pytest

from devices import Framed, LineFramer


def feed_all(framer: LineFramer, chunks: list[bytes]) -> Framed:
    lines: list[str] = []
    overlong = 0
    for chunk in chunks:
        framed = framer.feed(chunk)
        lines.extend(framed.lines)
        overlong += framed.overlong
    return Framed(lines=tuple(lines), overlong=overlong)


def crlf(max_line_bytes: int = 32) -> LineFramer:
    return LineFramer(terminator=b"\r\n", max_line_bytes=max_line_bytes)


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b"ST,+1  g\r\n"], ("ST,+1  g",)),
        ([b"ST,+1", b"  g\r\n"], ("ST,+1  g",)),
        ([b"ST,+1  g\r", b"\n"], ("ST,+1  g",)),  # the terminator itself split
        ([b"a\r\nb\r\nc\r\n"], ("a", "b", "c")),
        ([b"a\r\nb\r\nc"], ("a", "b")),  # c waits for its terminator
        ([b"a\r\n\r\n  \r\nb\r\n"], ("a", "b")),  # blank lines are skipped
        ([b"a\nb\r\n"], ("a\nb",)),  # a lone LF is not the CR LF terminator
        ([bytes([byte]) for byte in b"one\r\ntwo\r\n"], ("one", "two")),
        ([], ()),
    ],
)
def test_lines_are_framed_on_the_terminator(chunks: list[bytes], lines: tuple[str, ...]) -> None:
    assert feed_all(crlf(), chunks) == Framed(lines=lines)


def test_a_single_byte_terminator() -> None:
    framer = LineFramer(terminator=b"\n", max_line_bytes=32)
    assert feed_all(framer, [b"a\r\nb\n"]).lines == ("a\r", "b")


def test_a_line_of_exactly_max_bytes_is_kept() -> None:
    assert crlf(8).feed(b"12345678\r\n") == Framed(lines=("12345678",))


def test_an_overlong_line_in_one_chunk_is_dropped_and_counted() -> None:
    assert crlf(8).feed(b"123456789\r\nok\r\n") == Framed(lines=("ok",), overlong=1)


def test_an_overlong_line_across_chunks_is_dropped_once_with_its_tail() -> None:
    framer = crlf(8)
    framed = feed_all(framer, [b"0123456789", b"abcdefghij", b"tail-of-it\r\nok\r\n"])
    assert framed == Framed(lines=("ok",), overlong=1)


def test_the_buffer_stays_bounded_without_a_terminator() -> None:
    framer = crlf(16)
    overlong = 0
    for _ in range(1000):
        overlong += framer.feed(b"x" * 100).overlong
        assert framer.buffered <= 16 + len(b"\r\n") - 1
    assert overlong == 1
    assert framer.feed(b"\r\nafter\r\n") == Framed(lines=("after",))


def test_a_terminator_split_while_skipping_still_ends_the_long_line() -> None:
    framer = crlf(4)
    assert feed_all(framer, [b"toolong-line\r", b"\nok\r\n"]) == Framed(lines=("ok",), overlong=1)


def test_non_utf8_noise_becomes_replacement_characters() -> None:
    framed = crlf().feed(b"\xff\xfe\x00noise\r\nST\r\n")
    assert framed.lines == ("\ufffd\ufffd\x00noise", "ST")


@pytest.mark.parametrize(("terminator", "max_line_bytes"), [(b"", 8), (b"\n", 0)])
def test_bad_framer_settings_are_refused(terminator: bytes, max_line_bytes: int) -> None:
    with pytest.raises(ValueError, match="must"):
        LineFramer(terminator=terminator, max_line_bytes=max_line_bytes)
