"""Who gets a stream on this process: authentication (when on) and the per-client limit.

One ``Access`` per process answers the stream route (``admit``), serves ``POST
/api/sse/ticket`` and says when a token expires. With ``SSE_AUTH_SECRET`` set, tickets
have their own small Redis client (``sse-gateway-tickets``), so a ticket never queues
behind snapshot reads. Refusals are logged rate-limited with the peer, the reason and
the query with its ticket redacted: never a credential.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectome_core.logs import RateLimitedLog
from connectome_core.redis_connect import async_client
from connectome_core.tokens import Grant, TokenVerifier
from sse_gateway.auth import Authenticator, AuthError, authorize_events
from sse_gateway.client_limits import ClientLimits, client_address
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.request import (
    Query,
    StreamRequest,
    query_pairs,
    redacted_query,
    request_credentials,
)
from sse_gateway.settings import GatewaySettings
from sse_gateway.ticket_rate import TicketRate
from sse_gateway.tickets import TicketStore, TicketStoreUnavailable

log = logging.getLogger("sse_gateway.auth")

TICKET_PATH = "/api/sse/ticket"
TICKETS_CLIENT_NAME = "sse-gateway-tickets"
TICKETS_TIMEOUT = 2.0
TICKETS_CONCURRENCY = 8  # Redis commands in flight for tickets; the pool has as many


class Admission(NamedTuple):
    grant: Grant | None  # None: authentication is off
    events: frozenset[str] | None  # what the stream gets: asked for, within the grant


class Asker(NamedTuple):
    """Who a refusal line names: what was asked for, the peer's host, the query (logged
    with its ticket redacted)."""

    what: str
    host: str
    query: Query


class Refusal(Exception):
    """Why a request gets no stream: a status, a message and headers for the JSON answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.reason = {401: "unauthorized", 403: "forbidden", 429: "per_client"}.get(
            status, "unavailable"
        )

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.message, "status": self.status},
            status_code=self.status,
            headers={"Cache-Control": "no-store", **self.headers},
        )


def tickets_redis(settings: GatewaySettings) -> aioredis.Redis:
    """The ticket store's command client, for any REDIS_URL form the settings accept."""
    return async_client(
        settings.redis_target(),
        socket_timeout=TICKETS_TIMEOUT,
        socket_connect_timeout=TICKETS_TIMEOUT,
        client_name=TICKETS_CLIENT_NAME,
        max_connections=TICKETS_CONCURRENCY,
        # No retry by redis-py: after a lost reply a command may have run, and GETDEL
        # or SET NX repeated blindly turns a valid ticket into a 401 (the store retries
        # a mint itself, idempotently). A dead pooled connection is replaced before a
        # command is sent; a Redis that is down is a 503 at once.
        retry=Retry(NoBackoff(), retries=0),
    )


class Access:
    def __init__(
        self,
        settings: GatewaySettings,
        redis: aioredis.Redis | None = None,
        on_refused: Callable[[str], None] = lambda _reason: None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.limits = ClientLimits(settings.max_streams_per_client)
        self.ticket_rate = TicketRate(settings.ticket_rate)
        self.retry_after = str(max(1, round(settings.retry_ms / 1000)))
        self.tickets: TicketStore | None = None
        self.auth: Authenticator | None = None
        self.on_refused = on_refused
        self.metrics = metrics
        self._log = RateLimitedLog(log)
        if settings.auth_secret:
            secret = settings.auth_secret.encode()
            self.tickets = TicketStore(
                redis or tickets_redis(settings),
                secret,
                settings.ticket_ttl,
                concurrency=TICKETS_CONCURRENCY,
                on_forged=lambda: self._count_ticket_refusal("forged"),
            )
            self.auth = Authenticator(TokenVerifier(secret), self.tickets)

    def admit_now(self, request: StreamRequest) -> Admission | None:
        """``admit`` when it needs no ticket taken (no Redis round trip, nothing awaited);
        None when one must be: then ``admit``."""
        grant = None
        events = request.events
        if self.auth is not None:
            try:
                grant = self.auth.grant_now(request.credentials)
                if grant is None:
                    return None
                events = authorize_events(grant, events)
            except AuthError as exc:
                raise self._auth_refused(request, exc) from None
        return self._admitted(request, grant, events)

    async def admit(self, request: StreamRequest) -> Admission:
        """The grant and the events the stream gets, the address's slot taken.

        Raises ``Refusal``. For GET the caller must ``release(request.address)`` when
        the stream ends; HEAD takes no slot.
        """
        admission = self.admit_now(request)
        if admission is not None:
            return admission
        assert self.auth is not None  # only a ticket to take defers the answer
        try:
            keep = request.method == "HEAD"
            grant = await self.auth.stream_grant(request.credentials, keep_ticket=keep)
            events = authorize_events(grant, request.events)
        except AuthError as exc:
            raise self._auth_refused(request, exc) from None
        except TicketStoreUnavailable as exc:
            raise self._refused(
                _stream_asker(request),
                503,
                f"tickets cannot be checked now ({exc}); retry",
                {"Retry-After": self.retry_after},
            ) from None
        return self._admitted(request, grant, events)

    def _admitted(
        self, request: StreamRequest, grant: Grant | None, events: frozenset[str] | None
    ) -> Admission:
        """The address's slot taken (GET), or the refusal past the per-client limit."""
        if request.method == "HEAD":
            return Admission(grant, events)  # no stream follows: no slot to hold
        if not self.limits.try_acquire(request.address):
            raise self._refused(
                _stream_asker(request),
                429,
                f"too many open streams from {request.address} (limit {self.limits.limit})",
                {"Retry-After": self.retry_after},
            )
        return Admission(grant, events)

    def _auth_refused(self, request: StreamRequest, exc: AuthError) -> Refusal:
        return self._refused(_stream_asker(request), exc.status, exc.message, exc.headers)

    def release(self, address: str) -> None:
        self.limits.release(address)

    def expires_in(self, grant: Grant | None) -> float | None:
        """Seconds until the grant's token expires; None without one."""
        if grant is None:
            return None
        return max(0.0, grant.exp - self.auth.verifier.clock()) if self.auth else 0.0

    def _refused(self, asker: Asker, status: int, message: str, headers: dict[str, str]) -> Refusal:
        refusal = Refusal(status, message, headers)
        self.on_refused(refusal.reason)
        self._log.info(
            f"refused:{asker.what}:{status}:{asker.host}",
            "%s refused %d for %s: %s (query %r)",
            asker.what,
            status,
            asker.host,
            message,
            redacted_query(asker.query),
        )
        return refusal

    async def ticket(self, request: Request) -> Response:
        """``POST /api/sse/ticket``: 201 and a one-time ticket, for a token in header or cookie."""
        if self.auth is None or self.tickets is None:
            return Refusal(
                404, "authentication is off (SSE_AUTH_SECRET unset): streams need no ticket"
            ).response()
        scope = request.scope
        asker = _ticket_asker(scope)
        try:
            grant = self.auth.token_grant(request_credentials(scope))
            self._check_ticket_rate(scope, asker, grant)
            ticket = await self.tickets.mint(grant)
        except AuthError as exc:
            return self._refused(asker, exc.status, exc.message, exc.headers).response()
        except Refusal as refusal:
            return refusal.response()
        except TicketStoreUnavailable as exc:
            return self._refused(
                asker, 503, f"tickets cannot be made now ({exc}); retry", {"Retry-After": "1"}
            ).response()
        except ValueError as exc:  # the token expired between the check and the mint
            return self._refused(asker, 401, str(exc), {}).response()
        expires_in = min(self.tickets.ttl, math.ceil(grant.exp - self.auth.verifier.clock()))
        return JSONResponse(
            {"ticket": ticket, "expires_in": expires_in},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    def _check_ticket_rate(self, scope: Mapping[str, Any], asker: Asker, grant: Grant) -> None:
        """Refusal (429) past ``SSE_TICKET_RATE`` for the client's address or token subject."""
        keys = ["address:" + client_address(scope)]
        if grant.sub is not None:
            # Hashed: a subject may be long, and the buckets' memory stays fixed per key.
            keys.append("sub:" + hashlib.sha256(grant.sub.encode()).hexdigest()[:32])
        wait = self.ticket_rate.take(keys)
        if wait:
            self._count_ticket_refusal("rate_limited")
            raise self._refused(
                asker,
                429,
                f"too many tickets: at most {self.ticket_rate.per_minute} a minute per client "
                "address and per token subject",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def _count_ticket_refusal(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.tickets_refused.labels(reason).inc()

    async def close(self) -> None:
        if self.tickets is not None:
            await self.tickets.close()


def _stream_asker(request: StreamRequest) -> Asker:
    return Asker("stream", request.host, request.query)


def _ticket_asker(scope: Mapping[str, Any]) -> Asker:
    client = scope.get("client")
    return Asker(
        "ticket", client[0] if client else "?", query_pairs(scope.get("query_string", b""))
    )
