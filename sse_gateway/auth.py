"""Who may stream: a request's credentials -> a verified ``Grant``, or an ``AuthError``.

A stream takes ``Authorization: Bearer <token>``, a one-time ``?ticket=`` or the
``sse_token`` cookie, in that order: the first present decides (a bad bearer is a 401
even beside a good cookie; another scheme, a proxy's Basic, is passed over). Tokens are
checked by ``connectome_core.tokens``; tickets come through the ``TicketTaker`` protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import cookie_parser

from connectome_core.tokens import Grant, TokenError, TokenVerifier, checked_exp
from sse_gateway.request import TICKET_PARAMETER, Credentials

COOKIE_NAME = "sse_token"
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


def bearer_token(credentials: Credentials) -> str | None:
    """The ``Authorization: Bearer`` token; None without one; 401 when malformed.

    Another scheme (a proxy's ``Basic``) is not ours to judge: it is passed over."""
    tokens = []
    for value in credentials.authorization:
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


def cookie_token(credentials: Credentials) -> str | None:
    if not credentials.cookie:
        return None
    token: str | None = cookie_parser(credentials.cookie).get(COOKIE_NAME)
    return token or None


def ticket_value(credentials: Credentials) -> str | None:
    values = credentials.tickets
    if not values:
        return None
    if len(values) != 1 or not values[0] or len(values[0]) > MAX_TICKET_CHARS:
        raise unauthorized("invalid ticket")
    return values[0]


class Authenticator:
    """The route's one question: may this request stream, and what?"""

    def __init__(self, verifier: TokenVerifier, tickets: TicketTaker) -> None:
        self.verifier = verifier
        self.tickets = tickets

    def token_grant(self, credentials: Credentials) -> Grant:
        """From the bearer header or the cookie (what ``POST /api/sse/ticket`` takes)."""
        token = bearer_token(credentials)
        if token is None:
            token = cookie_token(credentials)
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

    def grant_now(self, credentials: Credentials) -> Grant | None:
        """The grant of a bearer header or a cookie, checked here and now; None when a
        ticket must be taken first (``stream_grant``: a Redis round trip). The order is
        ``stream_grant``'s: the bearer header, a ticket, the cookie."""
        token = bearer_token(credentials)
        if token is not None:
            return self._verified(token)
        if ticket_value(credentials) is not None:
            return None
        token = cookie_token(credentials)
        if token is not None:
            return self._verified(token)
        raise unauthorized(
            f"credentials needed: Authorization: Bearer <token>, ?{TICKET_PARAMETER}= "
            f"(POST /api/sse/ticket) or the {COOKIE_NAME} cookie",
            missing=True,
        )

    async def stream_grant(self, credentials: Credentials, keep_ticket: bool = False) -> Grant:
        """From the bearer header, a ticket or the cookie, in that order; ``keep_ticket``
        reads a ticket without using it up (a HEAD answers as GET would, and leaves the
        ticket for the GET)."""
        grant = self.grant_now(credentials)
        if grant is not None:
            return grant
        ticket = ticket_value(credentials)
        assert ticket is not None  # grant_now returns None only for a ticket
        grant = await self.tickets.take(ticket, keep=keep_ticket)
        if grant is None:
            raise unauthorized("ticket unknown, expired or already used")
        try:
            checked_exp(grant.exp, self.verifier.clock(), "the ticket's token")
        except TokenError as exc:
            raise unauthorized(str(exc)) from None
        return grant
