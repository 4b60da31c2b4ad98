"""A stream request read once from the ASGI scope: what it selects, how it resumes, who asks.

``stream_request`` is the only place the stream route reads the query string
and the headers; everything after it (admission, the opener, the log lines)
takes the values from the ``StreamRequest``. Credentials are kept raw: judging
them is ``auth``'s job. Named tuples, immutable and the cheapest to build: this runs
on every connect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode

from connectome_core.contract import RESERVED_EVENTS, is_valid_event_name
from sse_gateway.client_limits import address_of

MAX_SELECTED_EVENTS = 64
EVENTS_PARAMETER = "events"
PROBE_PARAMETER = "probe"
TICKET_PARAMETER = "ticket"
LAST_EVENT_ID_PARAMETER = "lastEventId"
LAST_EVENT_ID_HEADER = b"last-event-id"
MAX_ID_LENGTH = 256  # ours are 16; anything longer cannot be known, whatever it is

Query = tuple[tuple[str, str], ...]


class Credentials(NamedTuple):
    """What a request presents, unjudged: every ``Authorization`` header value, every
    ``?ticket=`` value, and the ``Cookie`` headers joined as HTTP/2 splits them."""

    authorization: tuple[str, ...] = ()
    tickets: tuple[str, ...] = ()
    cookie: str = ""


NO_CREDENTIALS = Credentials()


class StreamRequest(NamedTuple):
    method: str
    events: frozenset[str] | None  # None: every event type
    probe: bool  # the path probe (``?probe=1``)
    last_event_id: str  # "" when the client sent none
    credentials: Credentials
    address: str  # the client address the per-client limit counts
    host: str  # the peer as it connected, for log lines: its host
    peer: str  # and host:port
    query: Query


def stream_request(scope: Mapping[str, Any]) -> StreamRequest:
    """The request of ``GET /api/sse``; ValueError (a 400) when its query is malformed."""
    return parse_stream_request(
        scope["method"], scope.get("query_string", b""), scope["headers"], scope.get("client")
    )


def parse_stream_request(
    method: str,
    query_string: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
) -> StreamRequest:
    """The same from the request's parts (header names lower-case), as the server parsed
    them; ValueError (a 400) when its query is malformed."""
    query = query_pairs(query_string) if query_string else ()
    events = parse_events(_values(query, EVENTS_PARAMETER)) if query else None
    probe = probe_requested(_values(query, PROBE_PARAMETER)) if query else False
    header_id: str | None = None
    authorization: list[str] = []
    cookies: list[str] = []
    for name, value in headers:
        if name == b"authorization":
            authorization.append(value.decode("latin-1"))
        elif name == b"cookie":
            cookies.append(value.decode("latin-1"))
        elif header_id is None and name.lower() == LAST_EVENT_ID_HEADER:
            header_id = value.decode("latin-1").strip()[:MAX_ID_LENGTH]
    if header_id is None:  # the parameter is for clients that cannot set headers
        header_id = next(
            (v.strip()[:MAX_ID_LENGTH] for v in _values(query, LAST_EVENT_ID_PARAMETER) if v), ""
        )
    host = client[0] if client else None
    return StreamRequest(
        method=method,
        events=events,
        probe=probe,
        last_event_id=header_id,
        credentials=Credentials(
            tuple(authorization), tuple(_values(query, TICKET_PARAMETER)), "; ".join(cookies)
        )
        if authorization or cookies or query
        else NO_CREDENTIALS,
        address=address_of(str(host)) if client else "unknown",
        host=host or "?",
        peer=f"{host}:{client[1]}" if client else "?",
        query=query,
    )


def request_credentials(scope: Mapping[str, Any]) -> Credentials:
    """The credentials of any request (``POST /api/sse/ticket`` reads only these)."""
    headers = scope["headers"]
    return Credentials(
        tuple(value.decode("latin-1") for name, value in headers if name == b"authorization"),
        tuple(_values(query_pairs(scope.get("query_string", b"")), TICKET_PARAMETER)),
        "; ".join(value.decode("latin-1") for name, value in headers if name == b"cookie"),
    )


def query_pairs(query_string: bytes) -> Query:
    return tuple(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def _values(query: Query, name: str) -> list[str]:
    return [value for key, value in query if key == name]


def parse_events(values: list[str]) -> frozenset[str] | None:
    """``?events=a,b`` -> the selected channel event types; None selects everything.

    The gateway's own events (pings, ``resync``...) always flow: naming them selects
    nothing more and asks nothing of a token's grant. Raises ValueError.
    """
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",")]
    bad = [name for name in names if not is_valid_event_name(name)]
    if bad:
        raise ValueError(
            f"invalid event name {bad[0]!r} in 'events': names match [A-Za-z0-9_.-]{{1,64}}, "
            "separated by commas"
        )
    if len(set(names)) > MAX_SELECTED_EVENTS:
        raise ValueError(f"at most {MAX_SELECTED_EVENTS} event types may be selected")
    return frozenset(names) - RESERVED_EVENTS


def probe_requested(values: list[str]) -> bool:
    """The ``?probe=`` values of a request -> is it a probe. Raises ValueError when malformed."""
    if not values:
        return False
    if values == ["1"]:
        return True
    raise ValueError("'probe' takes the value 1 (GET /api/sse?probe=1)")


def redacted_query(query: Query) -> str:
    """A query fit for logs: every ``ticket`` value replaced by ``***``.

    Made from the parsed pairs, so ``tick%65t=`` (which decodes to ``ticket``) is caught.
    """
    return urlencode([(k, "***" if k == TICKET_PARAMETER else v) for k, v in query], safe=",*")
