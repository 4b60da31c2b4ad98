"""The doctor's checks: small pure functions over one ``Observation``.

Each returns a verdict (PASS, WARN, FAIL, SKIP), the figure it rests on and what
to change; ``CHECKS`` is in the order a user reads them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from connectome_core.contract import PROBE_EVENT
from connectome_sse.doctor.observe import PROBE_SPAN, Observation
from connectome_sse.sse_client import size_text

Verdict = Literal["PASS", "WARN", "FAIL", "SKIP"]

# Probes are sent a second apart; closer than this on arrival, something held them.
BUNCHED_BELOW_S = 0.5
# Further apart than this, the path is slow rather than buffering.
UNEVEN_ABOVE_S = 1.5
FIRST_BYTE_WARN_S = 1.0
FIRST_BYTE_FAIL_S = 3.0
RETRY_MIN_MS = 1000
RETRY_MAX_MS = 60000

# What to change, one remedy each (the report prints each once).
FIX_BUFFERING = (
    "nginx: `proxy_buffering off` where /api/sse is proxied, and no "
    "`proxy_ignore_headers X-Accel-Buffering`; other proxies: response buffering off for it"
)
FIX_GZIP = (
    "nginx: `gzip off` where /api/sse is proxied (or text/event-stream out of gzip_types); "
    "CDNs and other proxies: no compression for text/event-stream"
)
FIX_IDLE = (
    "a proxy or load balancer closes streams silent this long: raise its idle timeout "
    "(nginx `proxy_read_timeout`, a cloud load balancer's idle timeout) well above the "
    "gateway's SSE_PING_INTERVAL, or lower SSE_PING_INTERVAL below it"
)
FIX_IDLE_UNPROVEN = (
    "watch longer than the gateway's ping interval (SSE_PING_INTERVAL, 15 s by default), "
    "so that a ping crosses the path after a full silence: --idle 75, the default"
)
FIX_NOT_A_STREAM = (
    "this path is not an SSE stream: point the doctor at the gateway's URL or its "
    "/api/sse (browsers' EventSource accepts only text/event-stream)"
)
FIX_BODY = (
    "a gateway's probe stream is a few hundred bytes a minute: this is not one, or "
    "something in between rewrites the response"
)
FIX_HTTP2 = (
    "browsers open at most six HTTP/1.1 connections per host, so the seventh stream "
    "stalls: serve HTTPS with HTTP/2 (nginx: `listen 443 ssl http2`)"
)


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    figure: str
    value: float | int | str | None = None
    fixes: tuple[str, ...] = ()


def check_status(o: Observation) -> Check:
    if o.error is not None:
        return Check("status", "FAIL", o.error, None, _connect_fixes(o.error))
    if o.held:
        return Check(
            "status",
            "FAIL",
            f"no response head in {o.watched_until:.1f} s though connected "
            f"(held back; likely cause: {_buffering_causes(o)})",
            None,
            _buffering_fixes(o),
        )
    assert o.status is not None
    if o.status == 200:
        return Check("status", "PASS", "200", 200)
    detail = f"{o.status}: {o.excerpt}" if o.excerpt else str(o.status)
    fix = {
        400: "a gateway that predates ?probe=1, or not a connectome-sse gateway",
        401: "the stream needs credentials: --token T or --cookie T",
        403: "these credentials do not allow this stream",
        404: "no stream at this path: give the gateway's URL or its /api/sse",
        429: "too many streams from this address on the gateway (SSE_MAX_STREAMS_PER_CLIENT)",
        502: "the proxy reached no gateway",
        503: "the gateway is draining or full (SSE_MAX_CONNECTIONS), or no gateway is up",
        504: "the proxy reached no gateway",
    }.get(o.status)
    return Check("status", "FAIL", detail, o.status, (fix,) if fix else ())


def _connect_fixes(error: str) -> tuple[str, ...]:
    if "certificate" in error.lower():
        return ("the server's certificate does not verify: --cacert FILE, or --insecure",)
    return ()


def check_content_type(o: Observation) -> Check:
    if o.status is None:
        return _skip("content-type", "no response head")
    value = o.headers.get("content-type", "")
    if value.split(";")[0].strip().lower() == "text/event-stream":
        return Check("content-type", "PASS", value, value)
    return Check(
        "content-type",
        "FAIL",
        f"{value or 'none'} (not an SSE stream)",
        value or None,
        (FIX_NOT_A_STREAM,),
    )


def check_encoding(o: Observation) -> Check:
    if o.held and _flows_without_compression(o):
        return Check(
            "encoding",
            "FAIL",
            f"gzip: held back when {o.accept_encoding} is accepted, "
            "flows with Accept-Encoding: identity",
            None,
            (FIX_GZIP,),
        )
    if o.status is None:
        return _skip("encoding", "no response head")
    if not o.compressed:
        return Check("encoding", "PASS", "none", None)
    value = o.headers.get("content-encoding", "").strip()
    return Check(
        "encoding",
        "FAIL",
        f"Content-Encoding: {value} (compression holds events back in buffers)",
        value,
        (FIX_GZIP,),
    )


def check_body(o: Observation) -> Check:
    """Did the doctor read the stream within its bounds (size, line length, events)?"""
    if o.cut_short is not None:
        figure = f"{o.cut_short}: the doctor stopped reading at {o.watched_until:.1f} s"
        return Check("body", "FAIL", figure, o.body_bytes, (FIX_BODY,))
    if not o.streaming:
        return _skip("body", "no stream")
    return Check("body", "PASS", f"{size_text(o.body_bytes)} read", o.body_bytes)


def check_cache(o: Observation) -> Check:
    if o.status is None:
        return _skip("cache", "no response head")
    if not o.streaming:
        # A refusal or another path (/healthz): the stream's headers are not there to judge.
        content_type = o.headers.get("content-type", "none")
        return _skip("cache", f"not an SSE stream (Content-Type: {content_type})")
    value = o.headers.get("cache-control", "")
    directives = {d.strip().split("=")[0].lower() for d in value.split(",") if d.strip()}
    if "age" in o.headers or "hit" in o.headers.get("x-cache", "").lower():
        return Check(
            "cache",
            "FAIL",
            "served from a cache (Age or X-Cache: HIT)",
            value or None,
            ("never cache the stream: bypass the cache for /api/sse",),
        )
    if directives & {"no-cache", "no-store"}:
        return Check("cache", "PASS", f"Cache-Control: {value}", value)
    if not value:
        return Check(
            "cache",
            "WARN",
            "no Cache-Control (a proxy removed the gateway's no-cache)",
            None,
            ("keep the gateway's Cache-Control: no-cache on /api/sse",),
        )
    return Check(
        "cache",
        "FAIL",
        f"Cache-Control: {value} (cacheable)",
        value,
        ("keep the gateway's Cache-Control: no-cache on /api/sse",),
    )


def check_http_version(o: Observation) -> Check:
    if o.http_version is None:
        return _skip("http", "no response head")
    version = o.http_version
    if version == "HTTP/2":
        return Check("http", "PASS", "HTTP/2", version)
    if o.scheme == "http":
        # Browsers speak HTTP/2 only over TLS: nothing to ask of a plain-http server.
        return Check("http", "PASS", f"{version} (plain http: HTTP/2 needs https)", version)
    if not o.http2_available:
        return Check(
            "http",
            "WARN",
            f"{version} (HTTP/2 not tried: pip install 'httpx[http2]')",
            version,
        )
    return Check("http", "WARN", f"{version} (the server offers no HTTP/2)", version, (FIX_HTTP2,))


def check_first_byte(o: Observation) -> Check:
    if not (o.streaming or o.held):
        return _skip("first byte", "no stream")
    if o.first_byte_at is None:
        return Check(
            "first byte",
            "FAIL",
            f"nothing in {o.watched_until:.1f} s (held back; likely cause: {_buffering_causes(o)})",
            None,
            _buffering_fixes(o),
        )
    at = o.first_byte_at
    figure = f"{at * 1000:.0f} ms"
    if at <= FIRST_BYTE_WARN_S:
        return Check("first byte", "PASS", figure, round(at, 4))
    verdict: Verdict = "WARN" if at <= FIRST_BYTE_FAIL_S else "FAIL"
    return Check(
        "first byte",
        verdict,
        f"{figure} (slow; likely cause: {_buffering_causes(o)}, or a slow path)",
        round(at, 4),
        _buffering_fixes(o),
    )


def check_probes(o: Observation) -> Check:
    """Probes are sent 1 s apart: bunched or missing on arrival means something buffers."""
    if not (o.streaming or o.held):
        return _skip("probes", "no stream")
    if o.cut_short is not None and len(o.events(PROBE_EVENT)) < 3:
        return _skip("probes", "the doctor stopped reading (see body)")
    numbers = [_probe_number(a.event.data) for a in o.events(PROBE_EVENT)]
    if numbers != list(range(len(numbers))) or len(numbers) > 3:
        return Check("probes", "FAIL", f"unexpected probe events {numbers} (not a gateway?)")
    times = [a.at for a in o.events(PROBE_EVENT)]
    if len(times) < 3:
        if o.ended_at is not None and o.ended_at < (o.head_at or 0.0) + PROBE_SPAN + 1:
            figure = f"{len(times)} of 3: the stream ended at {o.ended_at:.1f} s"
            return Check("probes", "FAIL", figure, len(times))
        figure = (
            f"{len(times)} of 3 arrived in {o.watched_until:.1f} s "
            f"(held back; likely cause: {_buffering_causes(o)})"
        )
        return Check("probes", "FAIL", figure, len(times), _buffering_fixes(o))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    apart = ", ".join(f"{gap:.2f} s" for gap in gaps)
    if min(gaps) < BUNCHED_BELOW_S:
        figure = f"bunched: {apart} apart (likely cause: {_buffering_causes(o)})"
        return Check("probes", "FAIL", figure, round(min(gaps), 3), _buffering_fixes(o))
    if max(gaps) > UNEVEN_ABOVE_S:
        return Check("probes", "WARN", f"uneven: {apart} apart (a slow path?)", max(gaps))
    return Check("probes", "PASS", f"{apart} apart (sent 1 s apart)", round(min(gaps), 3))


def _probe_number(data: str) -> int | None:
    try:
        n = json.loads(data).get("n")
    except (ValueError, AttributeError):
        return None
    return n if isinstance(n, int) else None


def _flows_without_compression(o: Observation) -> bool:
    """The second look (``Accept-Encoding: identity``) got all three probes."""
    second = o.identity
    return second is not None and second.streaming and len(second.events(PROBE_EVENT)) == 3


def _gzip_suspected(o: Observation) -> bool:
    return o.compressed or _flows_without_compression(o)


def _buffering_causes(o: Observation) -> str:
    if _gzip_suspected(o):
        return "gzip with proxy_buffering"
    return "proxy_buffering"


def _buffering_fixes(o: Observation) -> tuple[str, ...]:
    return (FIX_GZIP, FIX_BUFFERING) if _gzip_suspected(o) else (FIX_BUFFERING,)


def check_idle(o: Observation) -> Check:
    """Does the stream stay open ``idle`` seconds past the probes, when only pings flow?"""
    if not o.streaming:
        return _skip("idle", "no stream")
    if o.cut_short is not None:
        return _skip("idle", "the doctor stopped reading (see body)")
    if o.ended_at is None:
        figure = f"open {o.idle:g} s past the probes (longest silence {_longest_silence(o):.1f} s)"
        if not _ping_after_probes(o):
            # The gateway pings after a ping interval of silence: without one, the
            # longest silence a real stream has was never crossed.
            figure += ", but no ping arrived after the probes: not proven"
            return Check("idle", "WARN", figure, round(o.watched_until, 2), (FIX_IDLE_UNPROVEN,))
        return Check("idle", "PASS", figure, round(o.watched_until, 2))
    last = o.last_byte_at()
    quiet = o.ended_at - (last if last is not None else 0.0)
    figure = f"cut at {o.ended_at:.1f} s, after {quiet:.1f} s of silence ({o.end_reason})"
    if quiet < 1.0:
        fix = "ended while data flowed: a proxy's limit on a response's length or duration?"
        return Check("idle", "FAIL", figure, round(o.ended_at, 2), (fix,))
    return Check("idle", "FAIL", figure, round(o.ended_at, 2), (FIX_IDLE,))


def _ping_after_probes(o: Observation) -> bool:
    probes = [a.at for a in o.events(PROBE_EVENT)]
    since = max(probes) if probes else (o.head_at or 0.0)
    return any(a.at > since for a in o.events("ping"))


def _longest_silence(o: Observation) -> float:
    times = [t for t in (o.first_byte_at, *(a.at for a in o.arrivals)) if t is not None]
    end = o.ended_at if o.ended_at is not None else o.watched_until
    points = [o.head_at or 0.0, *times, end]
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def check_retry(o: Observation) -> Check:
    if not o.streaming:
        return _skip("retry", "no stream")
    retry = o.retry_ms
    if retry is None:
        fix = "browsers then pick their own reconnect delay: set SSE_RETRY_MS"
        return Check("retry", "WARN", "no retry: field", None, (fix,))
    figure = f"{retry} ms"
    if retry < RETRY_MIN_MS:
        return Check("retry", "WARN", f"{figure} (clients return at once: reconnect storms)", retry)
    if retry > RETRY_MAX_MS:
        return Check("retry", "WARN", f"{figure} (clients wait over a minute)", retry)
    return Check("retry", "PASS", figure, retry)


def _skip(name: str, why: str) -> Check:
    return Check(name, "SKIP", why)


CHECKS: tuple[Callable[[Observation], Check], ...] = (
    check_status,
    check_content_type,
    check_encoding,
    check_body,
    check_cache,
    check_http_version,
    check_first_byte,
    check_probes,
    check_idle,
    check_retry,
)


def run_checks(o: Observation) -> list[Check]:
    return [check(o) for check in CHECKS]


def failed(checks: list[Check]) -> bool:
    return any(c.verdict == "FAIL" for c in checks)
