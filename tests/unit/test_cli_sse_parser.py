"""The SSE parser of `connectome-sse listen` follows the spec's field rules (table-driven)."""

from __future__ import annotations

import pytest

from connectome_sse.sse_client import EventStreamParser, LineSplitter, ServerEvent, StreamTooLarge


def parse(lines: list[str]) -> tuple[list[ServerEvent], EventStreamParser]:
    parser = EventStreamParser()
    events = [e for e in (parser.feed(line) for line in lines) if e is not None]
    return events, parser


CASES = [
    ("plain data", ["data: x", ""], [ServerEvent("message", "x", "")]),
    ("named", ["event: ping", "data: {}", ""], [ServerEvent("ping", "{}", "")]),
    ("multi-line data", ["data: a", "data: b", ""], [ServerEvent("message", "a\nb", "")]),
    ("no space after colon", ["data:x", ""], [ServerEvent("message", "x", "")]),
    ("only one space stripped", ["data:  x", ""], [ServerEvent("message", " x", "")]),
    ("comment ignored", [": keepalive", "data: x", ""], [ServerEvent("message", "x", "")]),
    ("no data, no event", ["event: e", ""], []),
    ("empty data line counts", ["data", ""], [ServerEvent("message", "", "")]),
    ("unknown field ignored", ["foo: bar", "data: x", ""], [ServerEvent("message", "x", "")]),
    ("id kept", ["id: 7", "data: x", ""], [ServerEvent("message", "x", "7")]),
    ("id with NUL ignored", ["id: a\0b", "data: x", ""], [ServerEvent("message", "x", "")]),
    ("event name resets", ["event: a", "data: 1", "", "data: 2", ""],
     [ServerEvent("a", "1", ""), ServerEvent("message", "2", "")]),
    ("BOM stripped", ["\ufeffdata: x", ""], [ServerEvent("message", "x", "")]),
    ("not dispatched without blank line", ["data: x"], []),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parser_cases(lines: list[str], expected: list[ServerEvent]) -> None:
    assert parse(lines)[0] == expected


@pytest.mark.parametrize(
    ("line", "expected"), [("retry: 2500", 2500), ("retry: 25x", None), ("retry: -1", None)]
)
def test_retry_only_takes_digits(line: str, expected: int | None) -> None:
    assert parse([line])[1].retry_ms == expected


def test_last_event_id_persists_across_events() -> None:
    events, parser = parse(["id: 1", "data: a", "", "data: b", ""])
    assert [e.id for e in events] == ["1", "1"]
    assert parser.last_event_id == "1"


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: a\xe2\x80\xa8b\x0bc\x1cd\r\n\r\n"],
        [b"data: a\xe2\x80", b"\xa8b\x0bc\x1cd\r", b"\n", b"\r\n"],
        [b"data: a\xe2\x80\xa8b\x0bc\x1cd\r", b"\r"],
        [b"data: a\xe2\x80\xa8b\x0bc\x1cd\n\n"],
    ],
)
def test_lines_end_only_at_cr_lf_crlf(chunks: list[bytes]) -> None:
    """U+2028, VT and FS are data, not line ends (httpx's iter_lines would cut there)."""
    splitter, parser = LineSplitter(), EventStreamParser()
    events = [e for chunk in chunks for line in splitter.feed(chunk) if (e := parser.feed(line))]
    assert events == [ServerEvent("message", "a\u2028b\x0bc\x1cd", "")]


def test_cr_cr_is_two_lines_and_crlf_across_chunks_is_one() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"a\r") == ["a"]
    assert splitter.feed(b"\nb\r\rc") == ["b", ""]
    assert splitter.feed(b"\n") == ["c"]
    assert splitter.feed(b"\xff\n") == ["\ufffd"]


def test_a_line_longer_than_the_limit_is_refused_whether_or_not_it_has_ended() -> None:
    splitter = LineSplitter(max_line=8)
    assert splitter.feed(b"data: 12\n") == ["data: 12"]
    with pytest.raises(StreamTooLarge, match="line too long: over 8 B without a line break"):
        splitter.feed(b"data: 123")  # still open: its start is all that is buffered
    with pytest.raises(StreamTooLarge, match="line too long"):
        LineSplitter(max_line=8).feed(b"data: 123\n")  # ended, in one chunk


def test_an_event_larger_than_the_limit_is_refused() -> None:
    parser = EventStreamParser(max_event=10)
    assert parser.feed("data: 12345") is None
    with pytest.raises(StreamTooLarge, match="event too large: over 10 B"):
        parser.feed("data: 123456")
    small = EventStreamParser(max_event=10)
    assert small.feed("data: 12345") is None
    assert small.feed("") == ServerEvent("message", "12345", "")
