"""The HTTP/1.1 protocol the gateway serves with: uvicorn's httptools protocol, hardened.

Two limits uvicorn leaves open: request headers are capped (past
``MAX_HEADER_BYTES`` the client gets 431 and the connection is closed before
the parser buffers more), and a request the parser rejects gets a JSON 400
instead of plain text. Either way the gateway serves on.

It also hands the stream endpoint a ``DirectBody`` as the ASGI scope
extension ``DIRECT_BODY_EXTENSION``, for the two things ASGI cannot say:

- write an already chunk-framed body part now, or say it cannot (flow
  control paused, client gone): one event is chunk-framed once for every
  client instead of once per client, and no coroutine runs per write;
- drop the connection at once: a slow client that is cut has, by
  definition, stopped reading, so ending its response politely would wait
  for ever.

The response head and its end still go through ASGI ``send``, so uvicorn's
own bookkeeping stays true.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

MAX_HEADER_BYTES = 16 * 1024
DIRECT_BODY_EXTENSION = "connectome.direct_body"


class DirectBody:
    """Body writes for one request that bypass ``send`` while nothing stands in their way."""

    __slots__ = ("_cycle", "_flow", "_transport")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle
        self._flow = cycle.flow
        self._transport = cycle.transport

    def write(self, chunk: bytes) -> bool:
        """Write ``chunk`` (chunk-framed) if the transport takes bytes now; else False."""
        cycle = self._cycle
        if (
            self._flow.write_paused
            or cycle.disconnected
            or cycle.response_complete
            or not cycle.chunked_encoding
        ):
            return False
        self._transport.write(chunk)
        return True

    def abort(self) -> None:
        self._transport.abort()


class GatewayHttpProtocol(HttpToolsProtocol):
    _header_bytes = 0
    _headers_done = False

    def data_received(self, data: bytes) -> None:
        if not self._headers_done:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self.logger.warning("request headers over %d bytes: refused", MAX_HEADER_BYTES)
                self._reject(431, "Request Header Fields Too Large", "request headers too large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._headers_done = False
        self._header_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._headers_done = True
        super().on_headers_complete()
        # The cycle exists now; its app task is scheduled but has not run yet.
        if self.cycle is not None and self.cycle.scope is self.scope:
            # ASGI extensions are dicts; ours holds one object.
            self.scope["extensions"] = {DIRECT_BODY_EXTENSION: {"writer": DirectBody(self.cycle)}}

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "Bad Request", msg)

    def _reject(self, status: int, reason: str, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        self.transport.close()
