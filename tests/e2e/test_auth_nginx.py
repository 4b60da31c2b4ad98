"""Behind the project's nginx, the per-client limit counts the browser's address, not nginx's.

nginx adds the browser's address to ``X-Forwarded-For``; the gateway trusts
that header only from a peer listed in ``FORWARDED_ALLOW_IPS`` (uvicorn's
default, 127.0.0.1, is where nginx connects from here). Clients come from
127.0.0.2 and 127.0.0.3, so each address has its own count, and a client
that writes someone else's address into ``X-Forwarded-For`` is still counted
as itself (nginx appends the real one; the right-most untrusted entry wins).

nginx's own per-address limit (``limit_conn``, ``LB_STREAMS_PER_CLIENT``) is
tested with a small value here; every other test renders a large one. And
nginx's access log holds no ticket: the query is logged with it redacted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway
from tests.support.nginx import NginxServer
from tests.support.raw_stream import RawStream

pytestmark = pytest.mark.e2e

LIMIT = 2


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
