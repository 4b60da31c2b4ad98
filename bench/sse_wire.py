"""Strict parsing of what an SSE server sends: HTTP/1.1 response head, chunked body, event stream.

Pure code, no I/O; the load client feeds it each socket read. Anything malformed
raises `WireError`; what the WHATWG rules say to ignore is ignored and counted in
`SSEParser.errors`. `SSEStream` memoises whole reads per process (a fan-out
server sends every client the same bytes), a hit indistinguishable from a parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"
MAX_HEAD_BYTES = 16384
MAX_CHUNK_SIZE_LINE = 256


class WireError(ValueError):
    """The peer broke HTTP framing; the stream cannot be read further."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    version: str
    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        codings = [c.strip().lower() for c in self.headers.get("transfer-encoding", "").split(",")]
        return "chunked" in codings

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_response_head(raw: bytes) -> ResponseHead:
    """Status line and headers, without the terminating blank line."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
        raise WireError(f"bad status line {lines[0][:60]!r}")
    if len(parts[1]) != 3 or not parts[1].isdigit():
        raise WireError(f"bad status code {parts[1][:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise WireError(f"bad header line {line[:60]!r}")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return ResponseHead(parts[0], int(parts[1]), headers)


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoder (RFC 9112 section 7.1)."""

    _SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._buf = b""
        self._left = 0

    @property
    def clean(self) -> bool:
        """At a chunk boundary with nothing buffered."""
        return self._state == self._SIZE and not self._buf

    @property
    def done(self) -> bool:
        """The last (zero-size) chunk and its trailer have been read."""
        return self._state == self._DONE

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end:
            state = self._state
            if state == self._DATA:
                take = min(self._left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = self._DATA_END
            elif state == self._DATA_END:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise WireError("chunk data not followed by CRLF")
                pos += 2
                self._state = self._SIZE
            elif state == self._SIZE:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    if end - pos > MAX_CHUNK_SIZE_LINE:
                        raise WireError("chunk size line too long")
                    break
                size_text = buf[pos:i].split(b";", 1)[0].strip(b" \t")
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise WireError(f"bad chunk size {buf[pos:i][:20]!r}")
                pos = i + 2
                self._left = int(size_text, 16)
                self._state = self._DATA if self._left else self._TRAILER
            elif state == self._TRAILER:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    break
                self._state = self._DONE if i == pos else self._TRAILER
                pos = i + 2
            else:
                raise WireError("data after the last chunk")
        self._buf = buf[pos:]
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class SSEEvent:
    type: str
    data: str
    id: str


class SSEParser:
    """WHATWG `text/event-stream` parser over bytes, fed incrementally."""

    def __init__(self) -> None:
        self._pending = b""  # an incomplete line (or, before the first line, a partial BOM)
        self._started = False
        self._skip_lf = False  # the previous read ended in CR: a leading LF belongs to it
        self._type = ""
        self._data: list[str] = []
        self.last_id = ""
        self.retry: int | None = None
        self.retry_updates = 0
        self.comments = 0
        self.errors: dict[str, int] = {}

    @property
    def clean(self) -> bool:
        """Between events: no partial line, no fields of an undispatched event."""
        return (
            self._started
            and not self._pending
            and not self._skip_lf
            and not self._data
            and not self._type
        )

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def _start(self, data: bytes) -> bytes:
        """The stream's first bytes without one leading BOM (which may come split over reads)."""
        data = self._pending + data
        if len(data) < len(BOM) and BOM.startswith(data):
            self._pending = data
            return b""
        self._pending = b""
        self._started = True
        return data[len(BOM) :] if data.startswith(BOM) else data

    def feed(self, data: bytes) -> list[SSEEvent]:
        if not self._started:
            data = self._start(data)
            if not self._started:
                return []
        if self._skip_lf and data:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            self._skip_lf = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in data:
            self._pending += data
            return []
        lines = (self._pending + data).split(b"\n") if self._pending else data.split(b"\n")
        self._pending = lines.pop()
        events: list[SSEEvent] = []
        for raw in lines:
            if not raw:
                if self._data:
                    events.append(
                        SSEEvent(self._type or "message", "\n".join(self._data), self.last_id)
                    )
                self._type = ""
                self._data = []
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._error("invalid utf-8")
                line = raw.decode("utf-8", "replace")
            if line[0] == ":":
                self.comments += 1
                continue
            name, colon, value = line.partition(":")
            if colon and value[:1] == " ":
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._type = value
            elif name == "id":
                if "\0" in value:
                    self._error("id with NUL")
                else:
                    self.last_id = value
            elif name == "retry":
                if value.isascii() and value.isdigit():
                    self.retry = int(value)
                    self.retry_updates += 1
                else:
                    self._error("bad retry")
            else:
                self._error("unknown field")
        return events


_CacheValue = tuple[tuple[SSEEvent, ...], str, int | None, int]


class FeedCache:
    """Parse results of whole reads, shared by every stream of one process. Bounded."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[bytes, str], _CacheValue] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[bytes, str]) -> _CacheValue | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: tuple[bytes, str], value: _CacheValue) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = value


class SSEStream:
    """One response body: optional chunked decoding, then SSE parsing, memoised by `cache`."""

    def __init__(self, chunked: bool, cache: FeedCache | None = None) -> None:
        self._chunks = ChunkedDecoder() if chunked else None
        self.parser = SSEParser()
        self._cache = cache

    @property
    def ended(self) -> bool:
        """The server ended the chunked body (the stream is over)."""
        return self._chunks is not None and self._chunks.done

    def _clean(self) -> bool:
        return self.parser.clean and (self._chunks is None or self._chunks.clean)

    def feed(self, raw: bytes) -> Sequence[SSEEvent]:
        parser, cache = self.parser, self._cache
        key: tuple[bytes, str] | None = None
        if cache is not None and self._clean():
            key = (raw, parser.last_id)
            hit = cache.get(key)
            if hit is not None:
                events, parser.last_id, retry, comments = hit
                if retry is not None:
                    parser.retry = retry
                    parser.retry_updates += 1
                parser.comments += comments
                return events
        comments, retries, errors = parser.comments, parser.retry_updates, parser.error_count
        body = self._chunks.feed(raw) if self._chunks is not None else raw
        events_list = parser.feed(body) if body else []
        if (
            key is not None
            and cache is not None
            and self._clean()
            and not self.ended
            and parser.error_count == errors
        ):
            retry = parser.retry if parser.retry_updates != retries else None
            cached = tuple(events_list)
            cache.put(key, (cached, parser.last_id, retry, parser.comments - comments))
            return cached
        return events_list
