"""Who may stream: credentials from a request -> a verified ``Grant``, or an ``AuthError``.

With ``SSE_AUTH_SECRET`` set, ``/api/sse`` takes one of ``Authorization:
Bearer <token>``, ``?ticket=<ticket>`` (one-time, minted by ``POST
/api/sse/ticket`` and kept in Redis by ``sse_gateway.tickets``) or the cookie
``sse_token=<token>``, tried in that order; the first present decides, so a
bad bearer token is a 401 even beside a good cookie. An ``Authorization``
header of another scheme (a proxy's Basic auth) is no stream credential and
is passed over. The ticket comes before the cookie so that a page holding a
stale cookie can still stream with a fresh ticket.

A token is a JWT signed HS256 with the secret: size checked before decoding,
only HS256 accepted, ``exp`` required, finite, in the future and at most
``MAX_LIFETIME`` ahead, ``aud`` absent, ``sub`` a string, ``events`` a list of
event names. ``iat`` is not checked: clock skew between the app that mints
and the gateway must not lock users out. Tickets come through the
``TicketTaker`` protocol; the route turns an ``AuthError`` into a response.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, parse_qsl, urlencode

from starlette.requests import cookie_parser

from connectome_core.tokens import Grant, TokenError, TokenVerifier, checked_exp

COOKIE_NAME = "sse_token"
TICKET_PARAM = "ticket"
# A ticket is token_urlsafe(32) (43 characters); this only bounds what we hash.
MAX_TICKET_CHARS = 256


class AuthError(Exception):
    """A refusal: ``status`` (401 or 403) and a message for the JSON body."""

    def __init__(self, status: int, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.missing = missing  # no credentials at all, rather than bad ones

    @property
    def headers(self) -> dict[str, str]:
        if self.status != 401:
            return {}
        # RFC 6750: the scheme; an error code only when credentials came and were bad.
        if self.missing:
            return {"WWW-Authenticate": 'Bearer realm="sse"'}
        return {"WWW-Authenticate": f'Bearer realm="sse", error="{self.error_code}"'}

    @property
    def error_code(self) -> str:
        return "invalid_token" if self.status == 401 else "insufficient_scope"

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


def unauthorized(message: str, missing: bool = False) -> AuthError:
    return AuthError(401, message, missing)


def authorize_events(grant: Grant, requested: frozenset[str] | None) -> frozenset[str] | None:
    """The events a stream gets: ``?events=`` within the grant (403 outside), else the grant's."""
    if grant.events is None:
        return requested
    if requested is None:
        return grant.events
    outside = sorted(requested - grant.events)
    if outside:
        raise AuthError(403, f"the token does not grant event type {outside[0]!r}")
    return requested


class TicketTaker(Protocol):
    async def take(self, ticket: str, *, keep: bool = False) -> Grant | None:
        """The grant of ``ticket`` if it exists and was not taken; it is then gone everywhere
        (unless ``keep``)."""


def _header(scope: Mapping[str, Any], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


def bearer_token(scope: Mapping[str, Any]) -> str | None:
    """The ``Authorization: Bearer`` token; None without one; 401 when malformed.

    Another scheme (a proxy's ``Basic``) is not ours to judge: it is passed over."""
    tokens = []
    for value in _header(scope, b"authorization"):
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            tokens.append(token.strip())
    if not tokens:
        return None
    if len(tokens) > 1:
        raise unauthorized("more than one Authorization: Bearer header")
    if not tokens[0]:
        raise unauthorized("Authorization must be 'Bearer <token>'")
    return tokens[0]


def cookie_token(scope: Mapping[str, Any]) -> str | None:
    # HTTP/2 may split cookies over several headers; they join with "; ".
    header = "; ".join(_header(scope, b"cookie"))
    if not header:
        return None
    token: str | None = cookie_parser(header).get(COOKIE_NAME)
    return token or None


def ticket_value(scope: Mapping[str, Any]) -> str | None:
    query: bytes = scope.get("query_string", b"")
    values = parse_qs(query.decode("latin-1"), keep_blank_values=True).get(TICKET_PARAM)
    if values is None:
        return None
    if len(values) != 1 or not values[0] or len(values[0]) > MAX_TICKET_CHARS:
        raise unauthorized("invalid ticket")
    return values[0]


class Authenticator:
    """The route's one question: may this request stream, and what?"""

    def __init__(self, verifier: TokenVerifier, tickets: TicketTaker) -> None:
        self.verifier = verifier
        self.tickets = tickets

    def token_grant(self, scope: Mapping[str, Any]) -> Grant:
        """From the bearer header or the cookie (what ``POST /api/sse/ticket`` takes)."""
        token = bearer_token(scope)
        if token is None:
            token = cookie_token(scope)
        if token is None:
            raise unauthorized(
                f"credentials needed: Authorization: Bearer <token> or the {COOKIE_NAME} cookie",
                missing=True,
            )
        return self._verified(token)

    def _verified(self, token: str) -> Grant:
        try:
            return self.verifier.verify(token)
        except TokenError as exc:
            raise unauthorized(str(exc)) from None

    async def stream_grant(self, scope: Mapping[str, Any]) -> Grant:
        """From the bearer header, a ticket or the cookie, in that order."""
        token = bearer_token(scope)
        if token is not None:
            return self._verified(token)
        ticket = ticket_value(scope)
        if ticket is not None:
            # HEAD answers as GET would, and leaves the ticket for the GET.
            grant = await self.tickets.take(ticket, keep=scope.get("method") == "HEAD")
            if grant is None:
                raise unauthorized("ticket unknown, expired or already used")
            try:
                checked_exp(grant.exp, self.verifier.clock(), "the ticket's token")
            except TokenError as exc:
                raise unauthorized(str(exc)) from None
            return grant
        token = cookie_token(scope)
        if token is not None:
            return self._verified(token)
        raise unauthorized(
            f"credentials needed: Authorization: Bearer <token>, ?{TICKET_PARAM}= "
            f"(POST /api/sse/ticket) or the {COOKIE_NAME} cookie",
            missing=True,
        )


def redacted_query(query_string: bytes) -> str:
    """A query string fit for logs: every ``ticket`` value replaced by ``***``.

    Parsed rather than pattern-matched, so ``tick%65t=`` (which the parser
    decodes to ``ticket``) is caught too.
    """
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, "***" if k == TICKET_PARAM else v) for k, v in pairs], safe=",*")
