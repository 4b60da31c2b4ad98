"""The gateway's other routes: ``/healthz``, ``/readyz``, ``/metrics``, ``/``, ``/client.js``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sse_gateway.gateway import Gateway
from sse_gateway.stream_route import json_error

DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"
BROWSER_CLIENT = Path(__file__).parent / "static" / "connectome-stream" / "connectome-stream.js"


def health_routes(gateway: Gateway) -> dict[str, Any]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if gateway.ready:
            return JSONResponse({"status": "ready", "redis": "up"})
        reason = "draining" if gateway.draining else "redis down"
        redis_state = "up" if gateway.redis_up else "down"
        return JSONResponse(
            {"status": "not ready", "reason": reason, "redis": redis_state}, status_code=503
        )

    async def metrics(request: Request) -> Response:
        body, content_type = gateway.metrics.render()
        return Response(body, media_type=content_type)

    return {"healthz": healthz, "readyz": readyz, "metrics": metrics}


def dashboard_route() -> Any:
    """``/``: the page is read once; it is a few kilobytes and never changes at run time."""
    try:
        page = DASHBOARD.read_bytes()
    except FileNotFoundError:
        page = b""

    async def dashboard(request: Request) -> Response:
        if not page:
            return json_error(404, "dashboard not installed")
        return Response(page, media_type="text/html; charset=utf-8")

    return dashboard


def client_route() -> Any:
    """``/client.js``: the browser client (an ES module), read once; revalidated by ETag."""
    try:
        module = BROWSER_CLIENT.read_bytes()
    except FileNotFoundError:
        module = b""
    etag = '"' + hashlib.sha256(module).hexdigest()[:20] + '"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}

    async def client(request: Request) -> Response:
        if not module:
            return json_error(404, "browser client not installed")
        known = request.headers.get("if-none-match", "").split(",")
        if etag in (tag.strip().removeprefix("W/") for tag in known):
            return Response(status_code=304, headers=headers)
        return Response(module, media_type="text/javascript; charset=utf-8", headers=headers)

    return client


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_error(exc.status_code, str(exc.detail), dict(exc.headers or {}))
