"""Stream tokens and tickets for tests of gateways started with ``SSE_AUTH_SECRET``."""

from __future__ import annotations

import time

import httpx
import jwt

from connectome_sse.localrun.gateway import GatewayProcess

SECRET = "test-secret-of-the-gateway-0123456789"
AUTH_ENV = {"SSE_AUTH_SECRET": SECRET}


def token(ttl: float = 120, **claims: object) -> str:
    """An HS256 token signed with ``SECRET``, valid ``ttl`` seconds, with ``claims``."""
    return jwt.encode({"exp": time.time() + ttl, **claims}, SECRET, algorithm="HS256")


def mint_ticket(gateway: GatewayProcess, bearer: str, source: str = "127.0.0.1") -> str:
    """A one-time ticket from ``POST /api/sse/ticket``, asked from ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=5) as client:
        answer = client.post(
            gateway.url + "/api/sse/ticket", headers={"Authorization": f"Bearer {bearer}"}
        )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["ticket"])
