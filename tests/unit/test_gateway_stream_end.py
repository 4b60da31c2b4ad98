"""Why a stream ended, as its close line says: recorded when the gateway ends it.

Run on uvloop, the event loop the gateway serves with: its timers keep their due time
in whole milliseconds, so telling an expiry after the fact from the timer's due time
and the loop's clock gets some of them wrong.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

import jwt
import pytest
import uvloop

from connectome_core.settings import load_settings
from sse_gateway.app import create_app
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import MemorySource
from tests.support.asgi import ASGIClient, lifespan

SECRET = "a-test-secret-of-at-least-32-bytes!"
STREAMS = 100
REASON = re.compile(r"^stream closed .* reason=(\w+)$")


async def expiring_streams() -> None:
    settings = load_settings(
        GatewaySettings,
        {"SSE_PING_INTERVAL": "60", "SSE_AUTH_SECRET": SECRET, "SSE_MAX_STREAMS_PER_CLIENT": "0"},
    )
    app = create_app(settings, source=MemorySource())
    verifier = app.stream.access.auth.verifier  # type: ignore[union-attr]
    exp = math.ceil(time.time()) + 60  # a JWT's exp is read as whole seconds
    token = jwt.encode({"exp": exp}, SECRET)
    header = [(b"authorization", f"Bearer {token}".encode())]
    async with lifespan(app):
        clients = []
        for n in range(STREAMS):
            # Each stream's token is left 20 to 720 ms: their ends come one by one.
            left = 0.02 + 0.007 * n
            verifier.clock = lambda left=left: exp - left
            client = ASGIClient(app, headers=header).start()
            await client.wait_until(lambda c: c.status is not None)
            assert client.status == 200
            clients.append(client)
        for client in clients:
            await client.wait_until(lambda c: c.complete, timeout=10)
        async with asyncio.timeout(10):
            while app.gateway.open_streams:
                await asyncio.sleep(0.01)


def test_regression_every_stream_its_token_ended_says_expired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Debug level lets every stream line out (the budget holds back only above it).
    with caplog.at_level(logging.DEBUG, logger="sse_gateway.stream"):
        uvloop.run(expiring_streams())
    reasons = [m.group(1) for m in map(REASON.match, caplog.messages) if m]
    assert len(reasons) == STREAMS
    assert set(reasons) == {"expired"}, {r: reasons.count(r) for r in set(reasons)}


def test_the_close_line_carries_its_fields_as_extras(caplog: pytest.LogCaptureFixture) -> None:
    async def one_stream() -> None:
        settings = load_settings(GatewaySettings, {"SSE_PING_INTERVAL": "60"})
        app = create_app(settings, source=MemorySource())
        async with lifespan(app):
            client = ASGIClient(app, query="events=a").start()
            await client.wait_until(lambda c: c.status == 200)
            await client.disconnect()

    with caplog.at_level(logging.INFO, logger="sse_gateway.stream"):
        asyncio.run(one_stream())
    opened, closed = (r for r in caplog.records if r.getMessage().startswith("stream "))
    assert (opened.peer, opened.sub, opened.events, opened.opening) == (  # type: ignore[attr-defined]
        "127.0.0.1:50000",
        "-",
        "a",
        "snapshot",
    )
    fields = ("peer", "sub", "reason", "events")
    assert tuple(getattr(closed, f) for f in fields) == ("127.0.0.1:50000", "-", "client", 0)
    assert closed.bytes > 0 and closed.duration >= 0  # type: ignore[attr-defined]
