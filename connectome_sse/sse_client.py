"""A small Server-Sent Events reader that behaves like a browser's EventSource.

Lines split at CR, LF or CRLF only (never at U+2028 as ``str.splitlines`` does);
``EventSourceReader`` reconnects after ``retry`` with ``Last-Event-ID``, treats
what a browser treats as final as final, and keeps memory bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

DEFAULT_RETRY_MS = 3000
# What the reader holds at most: a line, and an event's data. Far above the
# gateway's SSE_MAX_EVENT_BYTES (1 MiB by default), far below what hurts.
READER_MAX_LINE = 16 << 20
READER_MAX_EVENT = 16 << 20


class StreamTooLarge(ValueError):
    """More than a reader's limit (a line, an event, a body); the message is one line."""


def size_text(n: int) -> str:
    """``n`` bytes for people: 512 B, 2.0 KiB, 4 MiB."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


class LineSplitter:
    """Bytes in, complete lines out (decoded as UTF-8, bad bytes replaced, as the spec says).

    ``max_line`` bounds what is buffered: a line longer than that, ended or
    not, raises ``StreamTooLarge``.
    """

    def __init__(self, max_line: int | None = None) -> None:
        self.max_line = max_line
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
        # The next CR and LF, each searched again only once passed: linear in the chunk.
        cr, lf = data.find(b"\r"), data.find(b"\n")
        while cr >= 0 or lf >= 0:
            end = lf if cr < 0 else cr if lf < 0 else min(cr, lf)
            self._check(end - start)
            lines.append(data[start:end].decode("utf-8", errors="replace"))
            start = end + 1
            if data[end] == 0x0D:  # CR
                if start < length and data[start] == 0x0A:
                    start += 1
                elif start == length:
                    self._after_cr = True
            if cr < start:
                cr = data.find(b"\r", start) if cr >= 0 else -1
            if lf < start:
                lf = data.find(b"\n", start) if lf >= 0 else -1
        self._buffer = data[start:]
        self._check(len(self._buffer))
        return lines

    def _check(self, length: int) -> None:
        if self.max_line is not None and length > self.max_line:
            self._buffer = b""
            raise StreamTooLarge(
                f"line too long: over {size_text(self.max_line)} without a line break"
            )


@dataclass(frozen=True)
class ServerEvent:
    event: str
    data: str
    id: str


class EventStreamParser:
    """Lines in, events out. ``max_event`` bounds the data an event may gather
    (``StreamTooLarge`` past it)."""

    def __init__(self, max_event: int | None = None) -> None:
        self.max_event = max_event
        self.last_event_id = ""
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._size = 0
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
            self._size += len(value) + 1
            if self.max_event is not None and self._size > self.max_event:
                self._data, self._size = [], 0
                raise StreamTooLarge(f"event too large: over {size_text(self.max_event)}")
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
        self._event, self._data, self._size = "", [], 0
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
        max_line: int = READER_MAX_LINE,
        max_event: int = READER_MAX_EVENT,
    ) -> None:
        self.url = url
        self.client = client
        self.on_status = on_status
        self.sleep = sleep
        self.max_line = max_line
        self.max_event = max_event
        self.retry_ms = DEFAULT_RETRY_MS
        self.last_event_id = ""
        self.connected_once = False

    def events(self) -> Iterator[ServerEvent]:
        while True:
            try:
                yield from self._one_connection()
                reason = "the server closed the stream"
            except StreamTooLarge as exc:
                # The same server would send the same again: final, like a 4xx.
                raise GatewayError(f"{self.url}: {exc}") from None
            except httpx.HTTPError as exc:
                if not self.connected_once:
                    raise GatewayError(
                        f"cannot read {self.url}: {describe_transport_error(exc)}"
                    ) from None
                reason = describe_transport_error(exc)
            self.on_status(f"disconnected: {reason}; reconnecting in {self.retry_ms / 1000:g} s")
            self.sleep(self.retry_ms / 1000)

    def _one_connection(self) -> Iterator[ServerEvent]:
        # No compression asked for: a stream is never worth it, and a decoder can
        # turn one small chunk into a huge one.
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "Accept-Encoding": "identity",
        }
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        with self.client.stream("GET", self.url, headers=headers) as response:
            self._check(response)
            self.connected_once = True
            resuming = headers.get("Last-Event-ID")
            note = f", resuming after id {resuming}" if resuming else ""
            self.on_status(f"connected to {self.url}{note}")
            splitter, parser = LineSplitter(self.max_line), EventStreamParser(self.max_event)
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
