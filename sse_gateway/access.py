"""Who gets a stream on this process: authentication (when on) and the per-client limit.

One ``Access`` per gateway process, built from its settings: it answers the
stream route's question (``admit``: a ``Grant`` or a refusal response),
serves ``POST /api/sse/ticket``, and times a stream's end at its token's
``exp``. The pieces it puts together each do one job: ``auth`` (credentials
-> grant), ``tickets`` (one-time tickets in Redis), ``ticket_rate`` (tickets
per address and subject), ``client_limits`` (streams per address).

With ``SSE_AUTH_SECRET`` unset nothing here touches Redis; with it set, the
ticket store has its own small, lazily connected command client (named
``sse-gateway-tickets`` in ``CLIENT LIST``), so a ticket never queues behind
the relay's snapshot reads.

Refusals are logged rate-limited (a client retrying a bad token every second
must not flood the log), with the peer and the reason, never a credential:
the query string is logged with its ``ticket`` redacted, and neither the
Authorization header nor cookies are ever read into a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectome_core.logs import RateLimitedLog
from connectome_core.redis_connect import async_client
from connectome_core.tokens import Grant, TokenVerifier
from sse_gateway.auth import (
    Authenticator,
    AuthError,
    authorize_events,
    redacted_query,
)
from sse_gateway.client_limits import ClientLimits, client_address
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.settings import GatewaySettings
from sse_gateway.ticket_rate import TicketRate
from sse_gateway.tickets import TicketStore, TicketStoreUnavailable

log = logging.getLogger("sse_gateway.auth")

TICKET_PATH = "/api/sse/ticket"
TICKETS_CLIENT_NAME = "sse-gateway-tickets"
TICKETS_TIMEOUT = 2.0
TICKETS_CONCURRENCY = 8  # Redis commands in flight for tickets; the pool has as many


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

    async def admit(
        self, scope: Mapping[str, Any], events: frozenset[str] | None
    ) -> tuple[str, Grant | None, frozenset[str] | None]:
        """(client address, grant, events the stream gets), the address's slot taken.

        Raises ``Refusal``. For GET the caller must ``release(address)`` when the stream
        ends; HEAD takes no slot.
        """
        grant = None
        if self.auth is not None:
            try:
                grant = await self.auth.stream_grant(scope)
                events = authorize_events(grant, events)
            except AuthError as exc:
                raise self._refused(scope, exc.status, exc.message, exc.headers) from None
            except TicketStoreUnavailable as exc:
                raise self._refused(
                    scope,
                    503,
                    f"tickets cannot be checked now ({exc}); retry",
                    {"Retry-After": self.retry_after},
                ) from None
        address = client_address(scope)
        if scope.get("method") == "HEAD":
            return address, grant, events  # no stream follows: no slot to hold
        if not self.limits.try_acquire(address):
            raise self._refused(
                scope,
                429,
                f"too many open streams from {address} (limit {self.limits.limit})",
                {"Retry-After": self.retry_after},
            )
        return address, grant, events

    def release(self, address: str) -> None:
        self.limits.release(address)

    def end_at_expiry(
        self, grant: Grant | None, end: Callable[[], None]
    ) -> asyncio.TimerHandle | None:
        """Call ``end`` when the grant's token expires (on the event loop's clock)."""
        if grant is None:
            return None
        loop = asyncio.get_running_loop()
        left = max(0.0, grant.exp - self.auth.verifier.clock()) if self.auth else 0.0
        return loop.call_later(left, end)

    def _refused(
        self, scope: Mapping[str, Any], status: int, message: str, headers: dict[str, str]
    ) -> Refusal:
        refusal = Refusal(status, message, headers)
        self.on_refused(refusal.reason)
        client = scope.get("client")
        peer = client[0] if client else "?"
        what = "ticket" if scope.get("path") == TICKET_PATH else "stream"
        self._log.info(
            f"refused:{what}:{status}:{peer}",
            "%s refused %d for %s: %s (query %r)",
            what,
            status,
            peer,
            message,
            redacted_query(scope.get("query_string", b"")),
        )
        return refusal

    async def ticket(self, request: Request) -> Response:
        """``POST /api/sse/ticket``: 201 and a one-time ticket, for a token in header or cookie."""
        if self.auth is None or self.tickets is None:
            return Refusal(
                404, "authentication is off (SSE_AUTH_SECRET unset): streams need no ticket"
            ).response()
        scope = request.scope
        try:
            grant = self.auth.token_grant(scope)
            self._check_ticket_rate(scope, grant)
            ticket = await self.tickets.mint(grant)
        except AuthError as exc:
            return self._refused(scope, exc.status, exc.message, exc.headers).response()
        except Refusal as refusal:
            return refusal.response()
        except TicketStoreUnavailable as exc:
            return self._refused(
                scope, 503, f"tickets cannot be made now ({exc}); retry", {"Retry-After": "1"}
            ).response()
        except ValueError as exc:  # the token expired between the check and the mint
            return self._refused(scope, 401, str(exc), {}).response()
        expires_in = min(self.tickets.ttl, math.ceil(grant.exp - self.auth.verifier.clock()))
        return JSONResponse(
            {"ticket": ticket, "expires_in": expires_in},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    def _check_ticket_rate(self, scope: Mapping[str, Any], grant: Grant) -> None:
        """Refusal (429) past ``SSE_TICKET_RATE`` for the client's address or token subject."""
        keys = ["address:" + client_address(scope)]
        if grant.sub is not None:
            # Hashed: a subject may be long, and the buckets' memory stays fixed per key.
            keys.append("sub:" + hashlib.sha256(grant.sub.encode()).hexdigest()[:32])
        wait = self.ticket_rate.take(keys)
        if wait:
            self._count_ticket_refusal("rate_limited")
            raise self._refused(
                scope,
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
