"""Driving an ASGI app's endless responses in-process, under a deadline.

TestClient and httpx's ASGITransport wait for the whole body, which never
comes for an SSE stream; this harness records what the app sends as it
sends it. ``receive`` behaves like uvicorn's: the request body first, then
``http.disconnect`` when the client leaves or once the response is complete.
A ``paused`` client makes body sends wait, as a server does when the
client's socket stops taking bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp

from connectome_sse.localrun.sse_wire import parse_stream


class ASGIClient:
    def __init__(
        self,
        app: ASGIApp,
        path: str = "/api/sse",
        query: str = "",
        method: str = "GET",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.app = app
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers or [(b"host", b"test")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.complete = False
        self.paused = False
        self._resumed = asyncio.Event()
        self._gone = asyncio.Event()
        self._request_sent = False
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> dict[str, Any]:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            return
        while self.paused and not self._gone.is_set():
            self._resumed.clear()
            await self._resumed.wait()
        self.body += message.get("body", b"")
        if not message.get("more_body", False):
            self.complete = True
            self._gone.set()

    def start(self) -> ASGIClient:
        self.task = asyncio.ensure_future(self.app(self.scope, self.receive, self.send))  # type: ignore[arg-type]
        return self

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    async def disconnect(self) -> None:
        self._gone.set()
        self._resumed.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)

    def events(self) -> list[Any]:
        return parse_stream(bytes(self.body))[0]

    async def wait_until(self, predicate: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.01)

    async def response(self, timeout: float = 5.0) -> ASGIClient:
        """For finite responses: run to completion."""
        self.start()
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout)
        return self


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    starlette = getattr(app, "starlette", app)  # the gateway's app keeps its Starlette inside
    async with starlette.router.lifespan_context(starlette):
        yield
