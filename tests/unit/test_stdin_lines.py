"""Cutting stdin's chunks into numbered lines for `publish --lines`, whatever the chunking."""

from __future__ import annotations

import pytest

from connectome_sse.stdin_lines import Line, LineSplitter


def split(chunks: list[bytes], max_bytes: int = 10) -> list[Line]:
    splitter = LineSplitter(max_bytes)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + splitter.end()


@pytest.mark.parametrize(
    "chunks",
    [
        [b"one\ntwo\r\n\nlast"],
        [b"o", b"ne\nt", b"wo\r", b"\n", b"\nla", b"st"],
        [b"one\n", b"two\r\n\n", b"last"],
    ],
)
def test_lines_whatever_the_chunks(chunks: list[bytes]) -> None:
    assert split(chunks) == [
        Line(1, b"one", 3),
        Line(2, b"two", 3),
        Line(3, b"", 0),
        Line(4, b"last", 4),
    ]


def test_a_line_over_the_limit_is_reported_not_held() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"short\n" + b"x" * 8) == [Line(1, b"short", 5)]
    assert splitter.feed(b"y" * 1000) == []
    assert splitter.buffer == b""  # nothing of the long line is kept
    assert splitter.feed(b"z\nok\n") == [Line(2, None, 1009), Line(3, b"ok", 2)]


def test_exactly_the_limit_passes_and_one_more_does_not() -> None:
    assert split([b"x" * 10 + b"\r\n", b"y" * 11 + b"\n"]) == [
        Line(1, b"x" * 10, 10),
        Line(2, None, 11),
    ]


def test_no_trailing_line_after_a_final_line_break() -> None:
    assert split([b"a\n"]) == [Line(1, b"a", 1)]
