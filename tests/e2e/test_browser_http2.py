"""Ten EventSource streams on one page: all live over HTTP/2 with TLS, six over HTTP/1.1.

Browsers hold at most six HTTP/1.1 connections per host and port, so a seventh
EventSource to an origin waits for one of them to close; over HTTP/2 an
origin's streams share one connection. Real processes: redis-server, two
sse-gateways, Debian's nginx with services/nginx/nginx.conf.template (one
server: plain HTTP and TLS + HTTP/2), headless Chromium. The page is nginx's
own ``/healthz`` on each origin, so the streams are same-origin; the script
that opens them is run in it.

Chromium trusts the test certificate by ``--ignore-certificate-errors-spki-list``
(Chromium's switch for a known self-signed or test key): only the leaf's key is
accepted, every other certificate error still fails, and nothing is installed
in a certificate store. The protocol is Chromium's own figure, twice: the
page's ``nextHopProtocol`` and, per stream, the DevTools protocol's
``Network.responseReceived`` (``protocol`` and ``connectionId``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway
from tests.e2e.test_dashboard import payload
from tests.support.chromium import chromium
from tests.support.nginx import NginxServer

pytestmark = pytest.mark.e2e

STREAMS = 10
HTTP1_LIMIT = 6  # Chromium's connections per host and port (other browsers': the same)
WAIT_MS = 15_000  # for what must happen: generous on a shared 2-core machine
STALLED_MS = 3_000  # for what must not: the seventh stream, once the six have an event
CHANNEL = "sse:connectome_health"

OPEN_STREAMS = """(n) => {
  window.streams = [];
  window.sources = [];
  for (let i = 0; i < n; i++) {
    const stream = {opened: false, pinged: false, data: []};
    const source = new EventSource("/api/sse?events=connectome_health");
    source.onopen = () => { stream.opened = true; };
    // Pings go to every subscribed stream: one seen means a publish will reach it.
    source.addEventListener("ping", () => { stream.pinged = true; });
    source.addEventListener("connectome_health", (ev) => { stream.data.push(ev.data); });
    window.streams.push(stream);
    window.sources.push(source);
  }
}"""

# Indexes of the streams that are open / subscribed / have received ``data``.
OPENED = "() => streams.flatMap((s, i) => s.opened ? [i] : [])"
PINGED = "() => streams.flatMap((s, i) => s.pinged ? [i] : [])"
RECEIVED = "(data) => streams.flatMap((s, i) => s.data.includes(data) ? [i] : [])"
# The protocol the page itself came over, as Chromium names it (ALPN's "h2", or "http/1.1").
PAGE_PROTOCOL = "performance.getEntriesByType('navigation')[0].nextHopProtocol"


@pytest.fixture
def gateways(redis_server: RedisServer, start_gateway: StartGateway) -> list[GatewayProcess]:
    started = [start_gateway(redis_server.url) for _ in range(2)]
    return [gateway.wait_ready() for gateway in started]


@pytest.fixture
def nginx(gateways: list[GatewayProcess]) -> Iterator[NginxServer]:
    server = NginxServer([f"127.0.0.1:{gateway.port}" for gateway in gateways])
    try:
        yield server.start()
    finally:
        server.stop()


def spki_sha256(cert: Path) -> str:
    """Base64 of the SHA-256 of the first certificate's SubjectPublicKeyInfo, as Chromium wants."""
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def open_streams(page: Page, origin: str) -> None:
    page.goto(origin + "/healthz")
    page.evaluate(OPEN_STREAMS, STREAMS)


def wait_until(page: Page, expression: str, arg: object, expected: list[int], ms: int) -> None:
    """Wait until ``expression(arg)`` lists exactly ``expected``; on timeout, say what it was."""
    try:
        page.wait_for_function(
            f"([arg, want]) => JSON.stringify(({expression})(arg)) === JSON.stringify(want)",
            arg=[arg, expected],
            timeout=ms,
        )
    except PlaywrightTimeout:
        seen = page.evaluate(expression, arg)
        raise AssertionError(f"{expression}: {seen}, want {expected}") from None


def open_streams_on_gateways(gateways: list[GatewayProcess]) -> float:
    return sum(gateway.metric("sse_open_streams") for gateway in gateways)


def test_ten_streams_over_http2_all_receive_an_event_on_one_h2_connection(
    nginx: NginxServer, gateways: list[GatewayProcess], redis_server: RedisServer
) -> None:
    everyone = list(range(STREAMS))
    data = payload("OK", "ten streams over HTTP/2", 0.1)
    trust_test_key = f"--ignore-certificate-errors-spki-list={spki_sha256(nginx.tls.cert)}"
    with chromium(trust_test_key) as browser:
        context = browser.new_context()
        page = context.new_page()
        # Each stream's response as Chromium's network stack saw it.
        responses: list[dict[str, Any]] = []
        devtools = context.new_cdp_session(page)

        def on_response(event: dict[str, Any]) -> None:
            if "/api/sse" in event["response"]["url"]:
                responses.append(event["response"])

        devtools.on("Network.responseReceived", on_response)
        devtools.send("Network.enable")

        open_streams(page, nginx.tls_url)
        wait_until(page, OPENED, None, everyone, WAIT_MS)
        wait_until(page, PINGED, None, everyone, WAIT_MS)
        assert open_streams_on_gateways(gateways) == STREAMS
        with redis_server.client() as client:
            client.publish(CHANNEL, data)
        wait_until(page, RECEIVED, data, everyone, WAIT_MS)

        page_protocol = page.evaluate(PAGE_PROTOCOL)
        context.close()

    assert page_protocol == "h2"
    assert len(responses) == STREAMS
    assert {response["protocol"] for response in responses} == {"h2"}
    assert all(response["status"] == 200 for response in responses)
    # One connection carries them all: that is what lifts the limit of six.
    assert len({response["connectionId"] for response in responses}) == 1


def test_over_http1_the_seventh_stream_stalls_until_one_of_six_closes(
    nginx: NginxServer, gateways: list[GatewayProcess], redis_server: RedisServer
) -> None:
    six = list(range(HTTP1_LIMIT))
    first = payload("OK", "six streams over HTTP/1.1", 0.1)
    second = payload("OK", "the seventh got a connection", 0.1)
    with chromium() as browser, redis_server.client() as client:
        context = browser.new_context()
        page = context.new_page()
        open_streams(page, nginx.url)
        assert page.evaluate(PAGE_PROTOCOL) == "http/1.1"
        wait_until(page, OPENED, None, six, WAIT_MS)
        wait_until(page, PINGED, None, six, WAIT_MS)
        client.publish(CHANNEL, first)
        wait_until(page, RECEIVED, first, six, WAIT_MS)
        # The seventh to tenth never left the browser: no seventh stream opens,
        # and the gateways never saw it, however long one waits (here 3 s).
        with pytest.raises(PlaywrightTimeout):
            page.wait_for_function(f"({OPENED})().length > {HTTP1_LIMIT}", timeout=STALLED_MS)
        assert open_streams_on_gateways(gateways) == HTTP1_LIMIT
        assert page.evaluate(RECEIVED, first) == six

        # Closing the first frees its connection, and the seventh takes it:
        # the browser held it back, the server had not refused it.
        page.evaluate("sources[0].close()")
        wait_until(page, OPENED, None, [*six, HTTP1_LIMIT], WAIT_MS)
        wait_until(page, PINGED, None, [*six, HTTP1_LIMIT], WAIT_MS)
        wait_for(lambda: open_streams_on_gateways(gateways) == HTTP1_LIMIT, 10, what="6 open")
        client.publish(CHANNEL, second)
        wait_until(page, RECEIVED, second, list(range(1, HTTP1_LIMIT + 1)), WAIT_MS)
        context.close()
