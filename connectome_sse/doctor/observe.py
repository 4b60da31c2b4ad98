"""One recorded observation of a probe stream, as a browser would receive it.

``observe`` writes down what came back and when (head, HTTP version, events,
``retry:``, the end) and judges nothing. The body is read raw and decoded here,
so a compressing proxy shows in the arrival times; what is read is bounded
(``MAX_BODY_BYTES``, ``MAX_LINE_BYTES``, ``MAX_EVENTS``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from connectome_core.contract import PROBE_EVENT, STREAM_PATH
from connectome_sse.client_options import ClientOptions
from connectome_sse.gateway_url import BasicCredentials, GatewayUrlError, split_gateway_url
from connectome_sse.sse_client import (
    EventStreamParser,
    LineSplitter,
    ServerEvent,
    StreamTooLarge,
    size_text,
)

# The gateway sends probes 0, 1 and 2 at 0, 1 and 2 s after the response starts;
# the watch allows the last one half a second more to cross the path.
PROBE_SPAN = 2.5
CONNECT_TIMEOUT = 10.0
# What a browser offers; what this reader can decode.
ACCEPT_ENCODING = "gzip, deflate"
# The second look, without compression: long enough for the three probes.
IDENTITY_WATCH_S = 1.5
# At most this much of a refused request's body is kept, for the report.
EXCERPT_BYTES = 300
# What the doctor reads at most. A probe stream is three probes and the pings,
# a few hundred bytes a minute; these bounds are for whatever else answers.
MAX_BODY_BYTES = 4 << 20  # decoded
MAX_LINE_BYTES = 1 << 20
MAX_EVENTS = 10_000
SPLIT_SLICE = 64 << 10


class UsageError(ValueError):
    """A URL the doctor cannot probe; the message is one line for the user."""


def probe_url(url: str) -> str:
    """``url`` aimed at ``/api/sse?probe=1`` (a bare host gets the path; its query is kept),
    without its user info (``split_gateway_url`` gives that as credentials)."""
    try:
        parts, _ = split_gateway_url(url)
    except GatewayUrlError as exc:
        raise UsageError(str(exc)) from None
    path = parts.path if parts.path not in ("", "/") else STREAM_PATH
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "probe"]
    query.append(("probe", "1"))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query, safe=","), ""))


@dataclass(frozen=True)
class Options:
    idle: float = 75.0
    client: ClientOptions = field(default_factory=ClientOptions)
    # A proxy's Basic auth, from the URL's user info; kept out of repr.
    basic_auth: BasicCredentials | None = field(default=None, repr=False)

    def request_headers(self) -> dict[str, str]:
        return {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "Accept-Encoding": ACCEPT_ENCODING,
            **self.client.headers(),
        }


@dataclass(frozen=True)
class Arrival:
    at: float
    event: ServerEvent


@dataclass
class Observation:
    url: str
    idle: float
    accept_encoding: str = ACCEPT_ENCODING
    http2_available: bool = True
    # No response at all: cannot connect, TLS refused.
    error: str | None = None
    # Connected and asked, but no response head for the whole watch: something holds it.
    held: bool = False
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    http_version: str | None = None
    head_at: float | None = None
    first_byte_at: float | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    retry_ms: int | None = None
    # When the stream ended before the watch was over; None: still open at the end.
    ended_at: float | None = None
    end_reason: str | None = None
    watched_until: float = 0.0
    excerpt: str = ""  # the start of a body that is not a stream
    body_bytes: int = 0  # of the stream, decoded
    # Why the doctor stopped reading before the watch was over (a bound was reached).
    cut_short: str | None = None
    # The second, short look without compression (see ``observe``), when one was taken.
    identity: Observation | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def streaming(self) -> bool:
        content_type = self.headers.get("content-type", "")
        return self.status == 200 and content_type.split(";")[0].strip() == "text/event-stream"

    @property
    def compressed(self) -> bool:
        return self.headers.get("content-encoding", "").strip().lower() not in ("", "identity")

    def events(self, name: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.event.event == name]

    def last_byte_at(self) -> float | None:
        times = [a.at for a in self.arrivals]
        return max(times) if times else self.first_byte_at


class _Decoder:
    """Content-Encoding undone chunk by chunk (gzip, deflate, identity), ``limit`` bytes at most.

    ``feed`` never returns more than what is left of ``limit``; ``over`` says
    that the body had more. zlib is asked for no more than that, so a small
    compressed chunk never becomes a large one in memory.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        encoding = encoding.strip().lower()
        self.supported = encoding in ("", "identity", "gzip", "x-gzip", "deflate")
        self.limit = limit
        self.total = 0
        self.over = False
        self._zlib = None
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()

    def feed(self, chunk: bytes) -> bytes:
        if not self.supported or self.over:
            return b""
        room = self.limit - self.total
        out = chunk if self._zlib is None else self._zlib.decompress(chunk, room + 1)
        if len(out) > room:
            self.over = True
            out = out[:room]
        self.total += len(out)
        return out


async def observe(url: str, options: Options) -> Observation:
    """Record the probe stream at ``url`` (already a probe URL).

    When the stream is held back (no head, or no probes) while compression was
    offered, a second, short look with ``Accept-Encoding: identity`` tells
    whether compression is what holds it (``Observation.identity``).
    """
    observation = await _record(url, options, options.idle, ACCEPT_ENCODING)
    if _worth_comparing(observation):
        observation.identity = await _record(url, options, IDENTITY_WATCH_S, "identity")
    return observation


def _worth_comparing(o: Observation) -> bool:
    if o.held:
        return True
    return o.streaming and o.compressed and len(o.events(PROBE_EVENT)) < 3


async def _record(url: str, options: Options, idle: float, accept_encoding: str) -> Observation:
    now = time.monotonic
    observation = Observation(url=url, idle=idle, accept_encoding=accept_encoding)
    verify = options.client.verify()
    try:
        client = httpx.AsyncClient(
            http2=True, verify=verify, timeout=_timeout(), auth=options.basic_auth
        )
    except ImportError:  # the optional h2 package is missing: HTTP/1.1 only
        observation.http2_available = False
        client = httpx.AsyncClient(verify=verify, timeout=_timeout(), auth=options.basic_auth)
    started = now()
    sent: list[float] = []
    # Until the request is sent, connecting is what is timed; from then on the head
    # may be held as long as a body would be (a proxy holding the whole response),
    # so the wait is moved to the end of the watch.
    waiting = asyncio.timeout(CONNECT_TIMEOUT + 5)

    async def trace(event: str, info: object) -> None:
        if event.endswith("send_request_headers.complete") and not sent:
            sent.append(now() - started)
            waiting.reschedule(asyncio.get_running_loop().time() + PROBE_SPAN + idle)

    headers = {**options.request_headers(), "Accept-Encoding": accept_encoding}
    async with client:
        request = client.build_request("GET", url, headers=headers, extensions={"trace": trace})
        try:
            async with waiting:
                response = await client.send(request, stream=True)
        except TimeoutError:
            observation.watched_until = now() - started
            if sent:
                observation.held = True
            else:
                observation.error = f"no connection within {observation.watched_until:.0f} s"
            return observation
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            observation.watched_until = now() - started
            observation.error = _describe(exc)
            return observation
        try:
            observation.head_at = now() - started
            _record_head(observation, response)
            if observation.streaming:
                deadline = started + observation.head_at + PROBE_SPAN + idle
                await _read_stream(observation, response, started, deadline)
            else:
                await _read_excerpt(observation, response)
        finally:
            observation.watched_until = now() - started
            await response.aclose()
    return observation


async def _read_excerpt(observation: Observation, response: httpx.Response) -> None:
    decoder = _Decoder(response.headers.get("content-encoding", ""), EXCERPT_BYTES)
    raw = b""
    try:
        async with asyncio.timeout(5):
            async for chunk in response.aiter_raw():
                raw += decoder.feed(chunk)
                if decoder.over or len(raw) >= EXCERPT_BYTES:
                    break
    except (httpx.HTTPError, TimeoutError, zlib.error):
        pass
    observation.excerpt = " ".join(raw[:EXCERPT_BYTES].decode("utf-8", "replace").split())


def _timeout() -> httpx.Timeout:
    # Reads are bounded by the watch's own deadline (asyncio), not per read.
    return httpx.Timeout(CONNECT_TIMEOUT, read=None)


def _record_head(observation: Observation, response: httpx.Response) -> None:
    observation.status = response.status_code
    observation.http_version = response.http_version
    observation.headers = {k.lower(): v for k, v in response.headers.items()}


async def _read_stream(
    observation: Observation, response: httpx.Response, started: float, deadline: float
) -> None:
    now = time.monotonic
    decoder = _Decoder(observation.headers.get("content-encoding", ""), MAX_BODY_BYTES)
    splitter, parser = LineSplitter(MAX_LINE_BYTES), EventStreamParser(MAX_BODY_BYTES)
    try:
        async with asyncio.timeout_at(_loop_time_of(deadline)):
            async for chunk in response.aiter_raw():
                at = now() - started
                if observation.first_byte_at is None and chunk:
                    observation.first_byte_at = at
                data = decoder.feed(chunk)
                # In slices, so the lines of one chunk never pile up by the million.
                for offset in range(0, len(data), SPLIT_SLICE):
                    for line in splitter.feed(data[offset : offset + SPLIT_SLICE]):
                        _take_line(observation, parser, line, at)
                observation.body_bytes = decoder.total
                if decoder.over:
                    raise StreamTooLarge(
                        f"response too large: over {size_text(MAX_BODY_BYTES)} after decoding"
                    )
        observation.ended_at = now() - started
        observation.end_reason = "closed by the other end"
    except TimeoutError:
        return  # the watch is over and the stream is still open
    except StreamTooLarge as exc:
        observation.cut_short = str(exc)
    except zlib.error as exc:
        observation.cut_short = f"the body does not decode as {_encoding_name(observation)} ({exc})"
    except httpx.HTTPError as exc:
        observation.ended_at = now() - started
        observation.end_reason = _describe(exc)


def _take_line(observation: Observation, parser: EventStreamParser, line: str, at: float) -> None:
    event = parser.feed(line)
    if parser.retry_ms is not None and observation.retry_ms is None:
        observation.retry_ms = parser.retry_ms
    if event is not None:
        if len(observation.arrivals) >= MAX_EVENTS:
            raise StreamTooLarge(f"response too large: over {MAX_EVENTS} events")
        observation.arrivals.append(Arrival(at, event))


def _encoding_name(observation: Observation) -> str:
    return observation.headers.get("content-encoding", "").strip() or "identity"


def _loop_time_of(monotonic_deadline: float) -> float:
    """A ``time.monotonic`` instant on the event loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no response within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {exc}"
    text = str(exc) or type(exc).__name__
    if "StreamReset" in text:  # h2's words for a RST_STREAM from the server
        return "stream reset by the other end (HTTP/2 RST_STREAM)"
    if "incomplete chunked read" in text:
        return "connection closed mid-stream (no final chunk)"
    return " ".join(text.split())
