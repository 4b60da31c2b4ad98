"""The load client's strict wire parsing: SSE per WHATWG, chunked bodies, response heads."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.sse_wire import (
    ChunkedDecoder,
    FeedCache,
    SSEEvent,
    SSEParser,
    SSEStream,
    WireError,
    parse_response_head,
)


def parse_all(stream: bytes, pieces: list[int] | None = None) -> tuple[list[SSEEvent], SSEParser]:
    """Feed `stream` cut at the offsets in `pieces` (default: whole)."""
    parser = SSEParser()
    cuts = [0, *(pieces or []), len(stream)]
    events: list[SSEEvent] = []
    for start, end in itertools.pairwise(cuts):
        events += parser.feed(stream[start:end])
    return events, parser


M = "message"  # the default event type
CASES: list[tuple[str, bytes, list[tuple[str, str, str]]]] = [
    ("one event", b"event: a\ndata: x\n\n", [("a", "x", "")]),
    ("default type", b"data: x\n\n", [(M, "x", "")]),
    ("CRLF lines", b"event: a\r\ndata: x\r\n\r\n", [("a", "x", "")]),
    ("CR lines", b"event: a\rdata: x\r\r", [("a", "x", "")]),
    ("mixed endings", b"data: 1\r\ndata: 2\rdata: 3\n\r\n", [(M, "1\n2\n3", "")]),
    ("no space after colon", b"data:x\n\n", [(M, "x", "")]),
    ("only one space stripped", b"data:  x\n\n", [(M, " x", "")]),
    ("colon in value kept", b"data: a: b\n\n", [(M, "a: b", "")]),
    ("field without colon", b"data\n\n", [(M, "", "")]),
    ("empty data lines", b"data\ndata\n\n", [(M, "\n", "")]),
    ("comment ignored", b": hi\ndata: x\n\n", [(M, "x", "")]),
    ("no data, no dispatch", b"event: a\n\ndata: x\n\n", [(M, "x", "")]),
    ("type resets", b"event: a\ndata: 1\n\ndata: 2\n\n", [("a", "1", ""), (M, "2", "")]),
    ("id persists", b"id: 7\ndata: 1\n\ndata: 2\n\n", [(M, "1", "7"), (M, "2", "7")]),
    ("empty id resets", b"id: 7\ndata: 1\n\nid\ndata: 2\n\n", [(M, "1", "7"), (M, "2", "")]),
    ("id without data sets it", b"id: 3\n\ndata: x\n\n", [(M, "x", "3")]),
    ("leading BOM dropped", b"\xef\xbb\xbfdata: x\n\n", [(M, "x", "")]),
    ("unfinished event dropped", b"data: x\n\ndata: y\n", [(M, "x", "")]),
    ("blank lines first", b"\n\n\r\ndata: x\n\n", [(M, "x", "")]),
    ("unicode", "data: héllo ✓\n\n".encode(), [(M, "héllo ✓", "")]),
]  # fmt: skip


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parses_as_whatwg_says_whole_and_cut_anywhere(
    stream: bytes, expected: list[tuple[str, str, str]]
) -> None:
    whole, _ = parse_all(stream)
    assert [(e.type, e.data, e.id) for e in whole] == expected
    for cut in range(1, len(stream)):
        cut_events, _ = parse_all(stream, [cut])
        assert cut_events == whole, f"cut at {cut}"
    byte_by_byte, _ = parse_all(stream, list(range(1, len(stream))))
    assert byte_by_byte == whole


def test_crlf_split_across_reads_is_one_line_ending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n") == []  # the LF of the CRLF, not a blank line
    assert parser.feed(b"\r\n") == [SSEEvent("message", "x", "")]


def test_cr_at_end_of_read_ends_the_line_at_once() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r\r") == [SSEEvent("message", "x", "")]


def test_what_whatwg_ignores_is_ignored_and_counted() -> None:
    stream = (
        b"retry: 12x\n"
        b"id: a\x00b\n"
        b"colour: red\n"
        b"data: \xff\n"
        b"\xef\xbb\xbfdata: second bom is a field name\n"
        b": comment\n\n"
    )
    events, parser = parse_all(stream)
    assert events == [SSEEvent("message", "\ufffd", "")]
    assert parser.retry is None
    assert parser.last_id == ""
    assert parser.comments == 1
    assert parser.errors == {
        "bad retry": 1,
        "id with NUL": 1,
        "unknown field": 2,
        "invalid utf-8": 1,
    }


def test_retry_sets_the_reconnection_time() -> None:
    _, parser = parse_all(b"retry: 3000\n\n")
    assert parser.retry == 3000
    assert parser.errors == {}


# any text without line breaks (surrogates cannot be encoded)
event_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=12
)

event_name = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.tuples(event_name, st.lists(event_text, min_size=1, max_size=3)), max_size=5
    ),
    ending=st.sampled_from([b"\n", b"\r", b"\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_any_framed_stream_parses_back_however_it_is_cut(
    events: list[tuple[str, list[str]]], ending: bytes, cuts: list[int]
) -> None:
    stream = b""
    for name, lines in events:
        stream += b"event: " + name.encode() + ending
        for line in lines:
            stream += b"data: " + line.encode() + ending
        stream += ending
    got, parser = parse_all(stream, sorted({c for c in cuts if 0 < c < len(stream)}))
    assert [(e.type, e.data) for e in got] == [(n, "\n".join(ls)) for n, ls in events]
    assert parser.errors == {}


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_chunked_decoder_undoes_chunking_cut_anywhere() -> None:
    body = chunked(b"retry: 1\n\n", b"data: " + b"x" * 40 + b"\n\n", b"data: y\r\n\r\n")
    want = b"retry: 1\n\ndata: " + b"x" * 40 + b"\n\ndata: y\r\n\r\n"
    for cut in range(len(body) + 1):
        dec = ChunkedDecoder()
        assert dec.feed(body[:cut]) + dec.feed(body[cut:]) == want
        assert dec.done


def test_chunk_extensions_and_trailers_are_accepted() -> None:
    dec = ChunkedDecoder()
    assert dec.feed(b"3;name=v\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n") == b"abc"
    assert dec.done


@pytest.mark.parametrize(
    "bad",
    [b"zz\r\nabc\r\n", b"3\r\nabcX\r\n", b"\r\nabc", b"-1\r\n", b"0x3\r\nabc\r\n"],
    ids=["not hex", "no CRLF after data", "empty size", "negative", "0x prefix"],
)
def test_chunked_decoder_refuses_broken_framing(bad: bytes) -> None:
    with pytest.raises(WireError):
        ChunkedDecoder().feed(bad)


def test_chunked_decoder_refuses_data_after_the_last_chunk() -> None:
    dec = ChunkedDecoder()
    dec.feed(b"0\r\n\r\n")
    with pytest.raises(WireError):
        dec.feed(b"1\r\na\r\n")


def test_response_head() -> None:
    head = parse_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2"
    )
    assert head.status == 200
    assert head.content_type == "text/event-stream"
    assert head.chunked
    assert head.headers["x-a"] == "1, 2"
    assert not parse_response_head(b"HTTP/1.1 503 Busy\r\nContent-Length: 2").chunked


@pytest.mark.parametrize(
    "bad",
    [b"HTTP/2 200", b"HTTP/1.1 20 OK", b"ICY 200 OK", b"HTTP/1.1 200 OK\r\nno colon here",
     b"HTTP/1.1 200 OK\r\nBad Name: x", b"HTTP/1.1 200 OK\r\n folded: x"],
)  # fmt: skip
def test_response_head_refuses_malformed_heads(bad: bytes) -> None:
    with pytest.raises(WireError):
        parse_response_head(bad)


def test_cached_reads_give_each_stream_what_a_parse_would() -> None:
    reads = [
        b"retry: 500\n\n",
        b"id: 1\nevent: a\ndata: x\n\n",
        b"event: a\ndata: y\n\n",  # no id: carries the stream's last id
        b"data: par",  # ends mid-line: must not be cached
        b"tial\n\n",
        b"event: a\ndata: y\n\n",
    ]
    cache = FeedCache()
    cached_streams = [SSEStream(chunked=False, cache=cache) for _ in range(3)]
    plain = SSEStream(chunked=False)
    want = [list(plain.feed(r)) for r in reads]
    for s in cached_streams:
        assert [list(s.feed(r)) for r in reads] == want
        assert s.parser.retry == 500
        assert s.parser.last_id == "1"
    assert cache.hits > 0
    assert want[2] == [SSEEvent("a", "y", "1")]


def test_cache_key_includes_the_last_id() -> None:
    cache = FeedCache()
    first, second = SSEStream(False, cache), SSEStream(False, cache)
    first.feed(b"id: 1\n\n")
    second.feed(b"id: 2\n\n")
    assert list(first.feed(b"data: x\n\n")) == [SSEEvent("message", "x", "1")]
    assert list(second.feed(b"data: x\n\n")) == [SSEEvent("message", "x", "2")]


def test_chunked_stream_end_is_seen() -> None:
    s = SSEStream(chunked=True, cache=FeedCache())
    assert list(s.feed(chunked(b"data: x\n\n"))) == [SSEEvent("message", "x", "")]
    assert s.ended
