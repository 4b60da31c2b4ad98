"""SSE framing: turning an event into the exact bytes of the wire format.

A pure module (no Starlette, no Redis). Each event is framed once and the same
``bytes`` object goes to every client.

The WHATWG parser splits a stream into lines on CRLF, LF or CR and ends an
event at an empty line. So a payload is split on all three line breaks and
each piece becomes its own ``data:`` line; a payload can then never end an
event early or forge a field of another one. Event names are checked against
the contract's rule, which excludes every control character.
"""

from __future__ import annotations

import re

from connectome_sse.contract import is_valid_event_name

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def encode_event(event: str, data: str) -> bytes:
    if not is_valid_event_name(event):
        raise ValueError(f"invalid event name {event!r}")
    lines = _LINE_BREAK.split(data)
    body = "\ndata: ".join(lines)
    return f"event: {event}\ndata: {body}\n\n".encode()


class Frame:
    """One event's bytes, built once and shared by every stream.

    ``chunk`` is the same bytes already framed as an HTTP/1.1 chunk, so a
    server that can take body bytes straight (see ``http_protocol``) does not
    frame it again for each client.
    """

    __slots__ = ("chunk", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.chunk = b"%x\r\n%s\r\n" % (len(data), data)

    def __repr__(self) -> str:
        return f"Frame({self.data!r})"


def encode_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms
