"""The listen reader reconnects like a browser (after `retry`, with Last-Event-ID).

httpx's in-memory transport plays the server, so the reconnect rules are tested without a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from connectome_sse.sse_client import EventSourceReader, GatewayError, ServerEvent

Handler = Callable[[httpx.Request], httpx.Response]


def sse(body: str, status: int = 200, content_type: str = "text/event-stream") -> httpx.Response:
    return httpx.Response(status, headers={"content-type": content_type}, content=body.encode())


def reader(handler: Handler, sleeps: list[float]) -> EventSourceReader:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return EventSourceReader("http://gw/api/sse", client, sleep=sleeps.append)


def take(events: Iterator[ServerEvent], n: int) -> list[ServerEvent]:
    return [next(events) for _ in range(n)]


def test_reconnects_after_retry_with_last_event_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return sse("retry: 1500\nid: 41\ndata: one\n\n")
        return sse("data: two\n\n")

    sleeps: list[float] = []
    events = take(reader(handler, sleeps).events(), 2)
    assert [e.data for e in events] == ["one", "two"]
    assert sleeps == [1.5]
    assert seen[1].headers["last-event-id"] == "41"
    assert seen[0].headers["accept"] == "text/event-stream"


def test_first_connection_refused_is_final() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(GatewayError, match="cannot connect"):
        next(reader(handler, []).events())


def test_later_connection_errors_are_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise httpx.ConnectError("refused", request=request)
        return sse(f"data: {calls}\n\n")

    sleeps: list[float] = []
    events = take(reader(handler, sleeps).events(), 2)
    assert [e.data for e in events] == ["1", "3"]
    assert sleeps == [3.0, 3.0]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (sse('{"error":"bad events"}', 400, "application/json"), "answered 400: .*bad events"),
        (sse("<html>", 200, "text/html"), "not an event stream"),
        (sse("busy", 503, "text/plain"), "answered 503"),
    ],
)
def test_refusals_at_first_connection_are_final(response: httpx.Response, message: str) -> None:
    with pytest.raises(GatewayError, match=message):
        next(reader(lambda _: response, []).events())


def test_503_after_a_good_connection_is_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return sse("draining", 503, "text/plain") if calls == 2 else sse(f"data: {calls}\n\n")

    assert [e.data for e in take(reader(handler, []).events(), 2)] == ["1", "3"]


def test_a_line_past_the_reader_limit_ends_listen_with_one_line() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda _: sse("data: " + "a" * 100)))
    events = EventSourceReader("http://gw/api/sse", client, max_line=64).events()
    with pytest.raises(GatewayError, match="line too long: over 64 B"):
        next(events)
