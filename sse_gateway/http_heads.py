"""Response heads the stream connection writes: built once, not per connect.

A stream's head is one of two byte strings (chunked for HTTP/1.1, plain for HTTP/1.0 and
HEAD); with CORS on, the request's CORS headers go in too. Error answers are the same
JSON bodies and headers Starlette's ``JSONResponse`` makes elsewhere in the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from starlette.responses import JSONResponse

STREAM_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


@functools.cache  # a handful of statuses
def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def response_head(status: int, headers: Iterable[tuple[bytes, bytes]], chunked: bool) -> bytes:
    """``status`` and ``headers``, ``connection: close`` (the connection ends with the
    response). ValueError for a header that would inject another."""
    lines = [b"HTTP/1.1 %d %s" % (status, reason(status))]
    for name, value in headers:
        if b"\r" in name + value or b"\n" in name + value or b":" in name:
            raise ValueError(f"invalid response header {name!r}")
        lines.append(name + b": " + value)
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


_STREAM_HEADS = {chunked: response_head(200, STREAM_HEADERS, chunked) for chunked in (False, True)}


def stream_head(chunked: bool, extra: list[tuple[bytes, bytes]]) -> bytes:
    """The head of a ``200 text/event-stream`` answer."""
    if not extra:
        return _STREAM_HEADS[chunked]
    return response_head(200, (*STREAM_HEADERS, *extra), chunked)


def error_response(
    status: int,
    message: str,
    headers: Mapping[str, str],
    extra: list[tuple[bytes, bytes]],
    head_only: bool,
) -> bytes:
    """A whole JSON error answer: ``{"error": message, "status": status}``."""
    response = JSONResponse({"error": message, "status": status}, status, dict(headers))
    head = response_head(status, (*response.raw_headers, *extra), chunked=False)
    return head if head_only else head + bytes(response.body)


def reject(transport: asyncio.Transport, status: int, reason: str, message: str) -> None:
    """A JSON error answer, and the connection closes."""
    body = json.dumps({"error": message, "status": status}).encode()
    transport.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
    )
    transport.close()
