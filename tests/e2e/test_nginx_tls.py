"""The project's nginx over TLS: HTTP/2 streams behave as over HTTP/1.1; no silent fallback.

Real processes: redis-server, an sse-gateway, Debian's nginx with
services/nginx/nginx.conf.template and a certificate from a test CA. curl
speaks HTTP/2 (Python's HTTP clients here do not), so the stream is read from
curl's output as it arrives. ``connectome-sse listen`` reads the HTTPS port
as a user would read compose's self-signed one: ``--cacert`` or
``--insecure``, and ``--cookie`` when streams need credentials.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from connectome_core.publishing import publish_event
from connectome_core.tokens import TokenVerifier
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_server import RedisServer, require_program
from tests.conftest import StartGateway
from tests.support.nginx import NginxServer, TlsFiles

pytestmark = pytest.mark.e2e

EVENT = "tls_check"
WAIT_S = 30.0


@pytest.fixture
def nginx_tls(redis_server: RedisServer, start_gateway: StartGateway) -> Iterator[NginxServer]:
    gateway = start_gateway(redis_server.url).wait_ready()
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"])
    try:
        yield nginx.start()
    finally:
        nginx.stop()


def alpn(nginx: NginxServer) -> tuple[str | None, str | None]:
    context = ssl.create_default_context(cafile=str(nginx.tls.ca))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", nginx.tls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.selected_alpn_protocol(), tls.version()


class CurlStream:
    """``curl --http2 -N`` on a stream: the response head, then the body's lines as they come."""

    def __init__(self, url: str, ca: Path) -> None:
        self.url = url
        self.ca = ca
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> CurlStream:
        self.process = await asyncio.create_subprocess_exec(
            require_program("curl"),
            "--http2", "--silent", "--show-error", "--no-buffer",
            "--cacert", str(self.ca),
            # Asked for, and must not be given: compression buffers an event stream.
            "--header", "Accept-Encoding: gzip, br",
            "--dump-header", "-",
            self.url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return self

    async def line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout=WAIT_S)
        if not raw:
            assert self.process.stderr is not None
            raise AssertionError(f"curl ended: {(await self.process.stderr.read()).decode()}")
        return raw.decode().rstrip("\r\n")

    async def head(self) -> tuple[str, dict[str, str]]:
        status = await self.line()
        headers: dict[str, str] = {}
        while header := await self.line():
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def data_of(self, event: str) -> str:
        """The data of the next ``event``, skipping everything else."""
        current = ""
        while True:
            line = await self.line()
            if line.startswith("event:"):
                current = line.partition(":")[2].strip()
            elif line.startswith("data:") and current == event:
                return line.partition(":")[2].strip()

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_a_stream_over_tls_is_http2_unbuffered_and_uncompressed(
    nginx_tls: NginxServer, redis_server: RedisServer
) -> None:
    protocol, version = alpn(nginx_tls)
    assert protocol == "h2"
    assert version in ("TLSv1.2", "TLSv1.3")

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await publish_event(client, EVENT, '{"n": 1}')
        async with CurlStream(f"{nginx_tls.tls_url}/api/sse?events={EVENT}", nginx_tls.tls.ca) as s:
            status, headers = await s.head()
            assert status.startswith("HTTP/2 200"), status
            assert headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in headers, headers
            # The snapshot: from here on the stream is subscribed on its gateway.
            assert await s.data_of(EVENT) == '{"n": 1}'
            # A live event is passed on at once, not held in a buffer.
            await publish_event(client, EVENT, '{"n": 2}')
            assert await s.data_of(EVENT) == '{"n": 2}'
    finally:
        await client.aclose()


@pytest.mark.parametrize("problem", ["missing", "garbage"])
def test_a_bad_certificate_stops_nginx_with_a_message_naming_it(
    tmp_path: Path, problem: str
) -> None:
    good = TlsFiles.issue(tmp_path)
    cert = tmp_path / "no-such-dir" / "tls.crt"
    if problem == "garbage":
        cert = tmp_path / "garbage.crt"
        cert.write_text("not a certificate\n")
    nginx = NginxServer(["127.0.0.1:1"], tls=TlsFiles(cert, good.key, good.ca))
    try:
        with pytest.raises(RuntimeError) as exited:
            nginx.start()
        # No silent fallback to plain HTTP: nothing listens at all.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", nginx.port), timeout=2).close()
    finally:
        nginx.stop()
    assert f'cannot load certificate "{cert}"' in str(exited.value)


def listen(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``connectome-sse listen URL --json --count 1 ARGS``: one event, or the error."""
    return subprocess.run(
        console_script("connectome-sse", "listen", url, "--json", "--count", "1", *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_listen_reads_the_https_port_with_cacert_insecure_and_a_cookie(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    secret = "listen-tls-secret-0123456789abcdef0123"
    gateway = start_gateway(redis_server.url, env={"SSE_AUTH_SECRET": secret}).wait_ready()
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"]).start()
    token = TokenVerifier(secret.encode()).mint(ttl=60)
    try:
        untrusted = listen(nginx.tls_url, "--cookie", f"sse_token={token}")
        trusted = listen(
            nginx.tls_url, "--cacert", str(nginx.tls.ca), "--cookie", f"sse_token={token}"
        )
        insecure = listen(nginx.tls_url, "--insecure", "--cookie", f"sse_token={token}")
        without_cookie = listen(nginx.tls_url, "--cacert", str(nginx.tls.ca))
    finally:
        nginx.stop()
    assert untrusted.returncode == 1
    assert "certificate" in untrusted.stderr.lower(), untrusted.stderr
    for done in (trusted, insecure):
        assert done.returncode == 0, done.stderr
        # The gateway's pings flow to any authenticated stream.
        assert json.loads(done.stdout.splitlines()[0])["event"] == "ping", done.stdout
    assert without_cookie.returncode == 1
    assert "401" in without_cookie.stderr
    assert token not in untrusted.stderr + trusted.stderr + insecure.stderr
