"""SSE framing: an event as the exact bytes of the wire format, built once for every client.

Pure (no Starlette, no Redis). A payload is split on CRLF, LF and CR, each piece its own
``data:`` line, so no payload can end an event early or forge a field; names and ids
match the contract's rule, which excludes every control character.
"""

from __future__ import annotations

import json
import re

from connectome_core.contract import is_valid_event_name

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def encode_event(event: str, data: str, event_id: str | None = None) -> bytes:
    if not is_valid_event_name(event):
        raise ValueError(f"invalid event name {event!r}")
    lines = _LINE_BREAK.split(data)
    body = "\ndata: ".join(lines)
    if event_id is None:
        return f"event: {event}\ndata: {body}\n\n".encode()
    if not is_valid_event_name(event_id):
        raise ValueError(f"invalid event id {event_id!r}")
    return f"id: {event_id}\nevent: {event}\ndata: {body}\n\n".encode()


def encode_json_event(event: str, value: object) -> bytes:
    """A gateway-made event whose data is ``value`` as strict JSON (no NaN or Infinity,
    which a browser's ``JSON.parse`` rejects): raises ValueError rather than write them."""
    return encode_event(event, json.dumps(value, allow_nan=False))


class Frame:
    """One event's bytes, built once and shared by every stream.

    ``chunk`` is the same bytes already framed as an HTTP/1.1 chunk, so a
    server that can take body bytes straight (see ``stream_connection``) does not
    frame it again for each client.

    ``event_id`` is the ``id:`` the frame carries (None for gateway-made
    events); ``event`` is the type of a frame relayed from a channel or a
    snapshot (None for gateway-made ones), which a new stream's queue needs to
    tell which live frames its snapshot already covers
    (``StreamWriter.release``); ``conflate`` is the event type when that type is latest-only
    (``SSE_LATEST_ONLY``): a slow client's queued frame with the same
    ``conflate`` may be replaced by a newer one (``sse_gateway.stream_writer``).
    """

    __slots__ = ("chunk", "conflate", "data", "event", "event_id")

    def __init__(
        self,
        data: bytes,
        event_id: str | None = None,
        conflate: str | None = None,
        event: str | None = None,
    ) -> None:
        self.data = data
        self.chunk = b"%x\r\n%s\r\n" % (len(data), data)
        self.event_id = event_id
        self.conflate = conflate
        self.event = event

    def __repr__(self) -> str:
        return f"Frame({self.data!r})"


def encode_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms
