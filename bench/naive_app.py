"""BASELINE ONLY, NOT PART OF THE PRODUCT: the naive design the gateway exists to beat.

Every SSE client opens its own Redis pub/sub connection (the Flask-SSE pattern on
Starlette + sse-starlette); nothing in `sse_gateway` imports it.

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn bench.naive_app:app --port 8000
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

EVENT = "connectome_health"
CHANNEL = f"sse:{EVENT}"

# one pub/sub connection per client: the pool's cap must be above any client count
_redis = aioredis.from_url(
    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    decode_responses=True,
    max_connections=1_000_000,
)


async def stream(request: Request) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, Any]]:
        pubsub = _redis.pubsub()
        await pubsub.subscribe(CHANNEL)
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield {"event": EVENT, "data": message["data"]}
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    return EventSourceResponse(events(), ping=15)


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/api/sse", stream), Route("/healthz", healthz)])
