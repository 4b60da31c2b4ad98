"""A small Server-Sent Events reader that behaves like a browser's EventSource.

``LineSplitter`` and ``EventStreamParser`` are the pure part. The splitter cuts
bytes into lines at CR, LF or CRLF and nowhere else (httpx's ``iter_lines``
also cuts at U+2028, VT, FF and others, as ``str.splitlines`` does, which would
break a payload holding one). The parser takes those lines and returns an event at each
blank line, following the spec's rules for ``data``, ``event``, ``id`` and
``retry`` (comments and unknown fields ignored, one leading space stripped,
an event with no data is not dispatched).

``EventSourceReader`` connects with httpx and reconnects like a browser: after
the stream ends or breaks it waits the last ``retry`` the server sent, then
reconnects with ``Last-Event-ID``. What a browser treats as final is final
here too (a 4xx answer, a body that is not ``text/event-stream``), and so is
a first connection that fails: a CLI should say so at once rather than spin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

DEFAULT_RETRY_MS = 3000


class LineSplitter:
    """Bytes in, complete lines out (decoded as UTF-8, bad bytes replaced, as the spec says)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[str]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._after_cr = False
        data = self._buffer + chunk
        lines = []
        start = 0
        length = len(data)
        while True:
            cr, lf = data.find(b"\r", start), data.find(b"\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            lines.append(data[start:end].decode("utf-8", errors="replace"))
            start = end + 1
            if data[end] == 0x0D:  # CR
                if start < length and data[start] == 0x0A:
                    start += 1
                elif start == length:
                    self._after_cr = True
        self._buffer = data[start:]
        return lines


@dataclass(frozen=True)
class ServerEvent:
    event: str
    data: str
    id: str


class EventStreamParser:
    def __init__(self) -> None:
        self.last_event_id = ""
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._first = True

    def feed(self, line: str) -> ServerEvent | None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerEvent(event=event, data="\n".join(data), id=self.last_event_id)


class GatewayError(Exception):
    """The stream cannot be read; the message is one line for the user."""


def describe_transport_error(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({text})"
    if isinstance(exc, httpx.TimeoutException):
        return f"no data for too long ({type(exc).__name__})"
    return text


class EventSourceReader:
    """Yields the events of ``url`` for ever, reconnecting after ``retry`` like a browser."""

    def __init__(
        self,
        url: str,
        client: httpx.Client,
        on_status: Callable[[str], None] = lambda _: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.client = client
        self.on_status = on_status
        self.sleep = sleep
        self.retry_ms = DEFAULT_RETRY_MS
        self.last_event_id = ""
        self.connected_once = False

    def events(self) -> Iterator[ServerEvent]:
        while True:
            try:
                yield from self._one_connection()
                reason = "the server closed the stream"
            except httpx.HTTPError as exc:
                if not self.connected_once:
                    raise GatewayError(
                        f"cannot read {self.url}: {describe_transport_error(exc)}"
                    ) from None
                reason = describe_transport_error(exc)
            self.on_status(f"disconnected: {reason}; reconnecting in {self.retry_ms / 1000:g} s")
            self.sleep(self.retry_ms / 1000)

    def _one_connection(self) -> Iterator[ServerEvent]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        with self.client.stream("GET", self.url, headers=headers) as response:
            self._check(response)
            self.connected_once = True
            resuming = headers.get("Last-Event-ID")
            note = f", resuming after id {resuming}" if resuming else ""
            self.on_status(f"connected to {self.url}{note}")
            splitter, parser = LineSplitter(), EventStreamParser()
            for chunk in response.iter_bytes():
                for line in splitter.feed(chunk):
                    event = parser.feed(line)
                    if parser.retry_ms is not None:
                        self.retry_ms = parser.retry_ms
                    self.last_event_id = parser.last_event_id or self.last_event_id
                    if event is not None:
                        yield event

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 200:
            content_type = response.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != "text/event-stream":
                raise GatewayError(
                    f"{self.url} is not an event stream (Content-Type: {content_type or 'none'})"
                )
            return
        detail = _error_detail(response)
        if status >= 500 or status == 429:
            if not self.connected_once:
                raise GatewayError(f"{self.url} answered {status}{detail}")
            # A draining or full gateway: come back later, like a browser behind a balancer.
            raise httpx.HTTPStatusError(
                f"answered {status}{detail}", request=response.request, response=response
            )
        raise GatewayError(f"{self.url} answered {status}{detail}")


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.read().decode("utf-8", errors="replace").strip()
    except httpx.HTTPError:
        return ""
    body = " ".join(body.split())
    return f": {body[:200]}" if body else ""
