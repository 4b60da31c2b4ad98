"""SSE framing: exact bytes for known cases, and no payload can forge or split an event."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectome_sse.localrun.sse_wire import parse_stream
from sse_gateway.framing import encode_event, encode_retry

CASES = [
    ("plain", "connectome_health", '{"a":1}', b'event: connectome_health\ndata: {"a":1}\n\n'),
    ("empty", "x", "", b"event: x\ndata: \n\n"),
    ("lf", "x", "a\nb", b"event: x\ndata: a\ndata: b\n\n"),
    ("crlf", "x", "a\r\nb", b"event: x\ndata: a\ndata: b\n\n"),
    ("cr", "x", "a\rb", b"event: x\ndata: a\ndata: b\n\n"),
    ("blank line", "x", "a\n\nb", b"event: x\ndata: a\ndata: \ndata: b\n\n"),
    ("trailing lf", "x", "a\n", b"event: x\ndata: a\ndata: \n\n"),
    (
        "forgery attempt",
        "x",
        "ok\n\nevent: admin\ndata: pwned",
        b"event: x\ndata: ok\ndata: \ndata: event: admin\ndata: data: pwned\n\n",
    ),
    ("leading space kept", "x", " a", b"event: x\ndata:  a\n\n"),
    ("unicode", "x", "é\u2028z", "event: x\ndata: é\u2028z\n\n".encode()),
]


@pytest.mark.parametrize(("name", "event", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_encode_event_exact_bytes(name: str, event: str, data: str, expected: bytes) -> None:
    assert encode_event(event, data) == expected


@pytest.mark.parametrize("event", ["", "a\nb", "a:b", "a b", "x" * 65, "é", "ping\r"])
def test_invalid_event_names_are_refused(event: str) -> None:
    with pytest.raises(ValueError):
        encode_event(event, "data")


def test_retry() -> None:
    assert encode_retry(3000) == b"retry: 3000\n\n"


@given(
    event=st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True),
    data=st.text(),
)
def test_any_payload_arrives_as_exactly_one_identical_event(event: str, data: str) -> None:
    events, _ = parse_stream(encode_event(event, data))
    assert len(events) == 1
    assert events[0].event == event
    assert events[0].data == re.sub(r"\r\n|\r", "\n", data)


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_consecutive_events_stay_separate(payloads: list[str]) -> None:
    raw = b"".join(encode_event("e", p) for p in payloads)
    events, _ = parse_stream(raw)
    assert [e.data for e in events] == [re.sub(r"\r\n|\r", "\n", p) for p in payloads]
