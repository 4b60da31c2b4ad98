"""Behind the project's nginx, the per-client limit counts the browser's address, not nginx's.

nginx sets ``X-Forwarded-For`` to the address it saw (whatever the client
sent in that header is dropped); the gateway trusts that header only from a
peer listed in ``FORWARDED_ALLOW_IPS`` (uvicorn's default, 127.0.0.1, is
where nginx connects from here). Clients come from 127.0.0.2 and 127.0.0.3,
so each address has its own count, and a client that writes another address
into ``X-Forwarded-For`` is still counted as itself, over HTTP/1.1 and over
HTTPS with HTTP/2, even by a gateway that trusts every peer.

nginx's own per-address limit (``limit_conn``, ``LB_STREAMS_PER_CLIENT``) is
tested with a small value here; every other test renders a large one. So is
its rate limit on ticket requests (``limit_req``): a burst past it is refused
by nginx and never reaches the gateway. And nginx's access log holds no
ticket: the query is logged with it redacted.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import pytest

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway
from tests.support.nginx import TEMPLATE, NginxServer
from tests.support.raw_stream import RawStream

pytestmark = pytest.mark.e2e

LIMIT = 2
# An address from a documentation range: what a client invents.
INVENTED = "203.0.113.7"


@pytest.fixture
def nginx(redis_server: RedisServer, start_gateway: StartGateway) -> Iterator[NginxServer]:
    gateway = start_gateway(redis_server.url, env={"SSE_MAX_STREAMS_PER_CLIENT": str(LIMIT)})
    gateway.wait_ready()
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"]).start()
    try:
        yield nginx
    finally:
        nginx.stop()


def test_the_limit_applies_to_the_browser_address_behind_nginx(nginx: NginxServer) -> None:
    streams: list[RawStream] = []
    try:
        first = [RawStream(nginx.port, source="127.0.0.2") for _ in range(LIMIT)]
        streams += first
        assert [s.status for s in first] == [200] * LIMIT
        for stream in first:
            stream.read_until(lambda s: b"retry:" in s.body, what="the stream to flow via nginx")

        over = RawStream(nginx.port, source="127.0.0.2")
        streams.append(over)
        assert over.status == 429
        body = over.json()
        assert isinstance(body, dict) and "127.0.0.2" in body["error"]
        assert "retry-after" in over.headers

        # Another browser (claiming to be the first one) still gets its streams.
        spoof = [("X-Forwarded-For", "127.0.0.2")]
        second = [RawStream(nginx.port, source="127.0.0.3", headers=spoof) for _ in range(LIMIT)]
        streams += second
        assert [s.status for s in second] == [200] * LIMIT
        over_again = RawStream(nginx.port, source="127.0.0.3")
        streams.append(over_again)
        assert over_again.status == 429
        assert "127.0.0.3" in str(over_again.json())
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.parametrize("gateway_trusts", ["127.0.0.1", "*"])
def test_an_invented_x_forwarded_for_does_not_escape_the_limit_through_nginx(
    redis_server: RedisServer, start_gateway: StartGateway, gateway_trusts: str
) -> None:
    gateway = start_gateway(
        redis_server.url,
        env={"SSE_MAX_STREAMS_PER_CLIENT": "1", "FORWARDED_ALLOW_IPS": gateway_trusts},
    ).wait_ready()
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"]).start()
    streams: list[RawStream] = []
    invented = [("X-Forwarded-For", INVENTED)]
    try:
        first = RawStream(nginx.port)
        streams.append(first)
        assert first.status == 200
        first.read_until(lambda s: b"retry:" in s.body, what="the stream to flow via nginx")
        second = RawStream(nginx.port)
        streams.append(second)
        assert second.status == 429
        spoofed = RawStream(nginx.port, headers=invented)
        streams.append(spoofed)
        assert spoofed.status == 429, spoofed.data[:300]
        body = spoofed.json()
        assert isinstance(body, dict) and "from 127.0.0.1 " in body["error"], body
        # The HTTPS server of the template, over HTTP/2, sets the header the same way.
        tls = ssl.create_default_context(cafile=str(nginx.tls.ca))
        with (
            httpx.Client(http2=True, verify=tls, timeout=10) as client,
            client.stream("GET", nginx.tls_url + "/api/sse", headers=dict(invented)) as answer,
        ):
            assert answer.http_version == "HTTP/2"
            assert answer.status_code == 429
            assert "from 127.0.0.1 " in answer.read().decode()

        def refusals() -> list[str]:
            return [line for line in gateway.log().splitlines() if "stream refused 429" in line]

        wait_for(refusals, what="the gateway to log its refusal")
        log = gateway.log()
    finally:
        for stream in streams:
            stream.close()
        nginx.stop()
    # What nginx saw, never what the client wrote.
    assert all(" for 127.0.0.1: " in line for line in refusals()), refusals()
    assert INVENTED not in log


def test_nginx_logs_requests_without_the_ticket(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    secret = "nginx-log-test-secret-0123456789abcdef"
    gateway = start_gateway(redis_server.url, env={"SSE_AUTH_SECRET": secret})
    gateway.wait_ready()
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"]).start()
    try:
        bearer = jwt.encode({"exp": time.time() + 60}, secret, algorithm="HS256")
        answer = httpx.post(
            nginx.url + "/api/sse/ticket", headers={"Authorization": f"Bearer {bearer}"}
        )
        ticket = answer.json()["ticket"]
        stream = RawStream(nginx.port, f"/api/sse?events=connectome_health&ticket={ticket}")
        assert stream.status == 200
        stream.close()
        replay = RawStream(nginx.port, f"/api/sse?ticket={ticket}&events=x")
        assert replay.status == 401
        replay.close()
        # A name the gateway decodes to `ticket`: nginx cannot tell, so the query goes.
        encoded = RawStream(nginx.port, f"/api/sse?events=x&tick%65t={ticket}")
        assert encoded.status == 401
        encoded.close()
        wait_for(lambda: "query withheld" in nginx.log(), what="nginx to log the requests")
        logs = nginx.log()
    finally:
        nginx.stop()
    assert ticket not in logs and bearer not in logs
    assert 'GET /api/sse?events=connectome_health&ticket=REDACTED HTTP/1.1" 200' in logs
    assert 'GET /api/sse?ticket=REDACTED&events=x HTTP/1.1" 401' in logs
    assert 'POST /api/sse/ticket HTTP/1.1" 201' in logs


def test_nginx_limits_streams_per_client_address(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    nginx_limit = 3
    gateway = start_gateway(redis_server.url)  # its own limit (1000) is far away
    gateway.wait_ready()
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"], streams_per_client=nginx_limit).start()
    streams: list[RawStream] = []
    try:
        first = [RawStream(nginx.port, source="127.0.0.2") for _ in range(nginx_limit)]
        streams += first
        assert [s.status for s in first] == [200] * nginx_limit
        over = RawStream(nginx.port, source="127.0.0.2")
        streams.append(over)
        assert over.status == 429
        assert over.headers["content-type"] == "application/json"
        assert over.headers["retry-after"] == "3"
        body = over.json()
        assert isinstance(body, dict) and "nginx limit_conn" in body["error"]
        # The count is per address: another one still streams.
        other = RawStream(nginx.port, source="127.0.0.3")
        streams.append(other)
        assert other.status == 200
        # A closed stream frees its place.
        first[0].close()

        def a_place_is_free() -> bool:
            attempt = RawStream(nginx.port, source="127.0.0.2")
            streams.append(attempt)
            return attempt.status == 200

        wait_for(a_place_is_free, what="nginx to free the closed stream's place")
    finally:
        for stream in streams:
            stream.close()
        nginx.stop()


def test_nginx_refuses_a_burst_of_ticket_requests_before_the_gateway(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    secret = "nginx-ticket-rate-secret-0123456789abcdef"
    burst = int(re.findall(r"limit_req zone=sse_tickets burst=(\d+)", TEMPLATE.read_text())[0])
    sent = 4 * burst
    gateway = start_gateway(redis_server.url, env={"SSE_AUTH_SECRET": secret}).wait_ready()
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"]).start()
    bearer = jwt.encode({"exp": time.time() + 60}, secret, algorithm="HS256")
    auth = {"Authorization": f"Bearer {bearer}"}

    def client(source: str) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=nginx.url, transport=transport, timeout=10)

    try:
        with client("127.0.0.2") as crowd, ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            answers = list(
                pool.map(lambda _: crowd.post("/api/sse/ticket", headers=auth), range(sent))
            )
            took = time.monotonic() - started
        # Counted per address: another one still gets its ticket.
        with client("127.0.0.3") as other:
            assert other.post("/api/sse/ticket", headers=auth).status_code == 201
    finally:
        nginx.stop()
    minted = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert refused, f"{sent} ticket requests in {took:.2f} s, none refused"
    for answer in refused:
        assert answer.status_code == 429
        assert answer.headers["content-type"] == "application/json"
        assert int(answer.headers["retry-after"]) >= 1
        assert "nginx limit_req" in answer.json()["error"]
    # 60 a minute after the burst: one more per second at most.
    assert len(minted) <= burst + 1 + int(took) + 1, (len(minted), took)
    # Every request that reached the gateway made a ticket, kept in Redis: the
    # refused ones never got there.
    kept = list(redis_server.client().scan_iter("sse:ticket:*"))
    assert len(kept) == len(minted) + 1
