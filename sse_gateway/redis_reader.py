"""Reading one subscription until it fails, with the silence check.

A half-open socket never raises, so a subscription silent for ``ping_after`` seconds
is sent a PING. With no answer within ``ping_timeout``, Redis is asked on a command
connection whether it answers at all. If it does, this subscription is dead: what it
already received is relayed, one more PING gets a full ``ping_timeout``, and only
silence after that rebuilds it. If Redis answers nobody (``CLIENT PAUSE``, SIGSTOP) a
new connection would lose what Redis queued for this one: it is kept, reported down,
and checked again. Reads poll with a timeout: a silent Redis never blocks the loop.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError

from sse_gateway.redis_checks import Echo, SubscriptionChecks
from sse_gateway.redis_pubsub import (
    PubSub,
    deliver,
    drain,
    limited,
    log,
    notify,
    reraise_swallowed_cancel,
)
from sse_gateway.source import SourceListener


class SubscriptionReader:
    def __init__(
        self,
        pubsub: PubSub,
        listener: SourceListener,
        echo: Echo,
        redis_answers: Callable[[], Awaitable[bool]],
        *,
        ping_after: float,
        ping_timeout: float,
        check_interval: float,
    ) -> None:
        self.pubsub = pubsub
        self.listener = listener
        self.echo = echo
        self.redis_answers = redis_answers
        self.ping_after = ping_after
        self.ping_timeout = ping_timeout
        self.check_interval = check_interval
        self._last_heard = time.monotonic()
        self._ping_sent: float | None = None
        self._stalled = False  # Redis answers nobody: the subscription is kept, reported down

    async def run(self, checks: SubscriptionChecks) -> None:
        """Relay messages until the subscription fails (it raises then)."""
        pubsub, listener, note = self.pubsub, self.listener, self.echo.note
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self.check_interval))
            reraise_swallowed_cancel()
            now = time.monotonic()
            checks.poll(now)  # raises SubscriptionMisplaced once a check proved it
            if message is not None:
                self._last_heard, self._ping_sent = now, None
                if self._stalled:
                    self._answers_again()
                note(message)
                deliver(listener, message)
                continue
            if self._ping_sent is None:
                if now - self._last_heard > self.ping_after:
                    await pubsub.ping()
                    self._ping_sent = now
                continue
            if now - self._ping_sent <= self.ping_timeout:
                continue
            # The silence check decides: check at once where the subscription is, too.
            checks.poll(now, due=True)
            await self._unanswered_ping()

    async def _unanswered_ping(self) -> None:
        if await self.redis_answers():
            # Redis answers others. Relay what this subscription already received; then,
            # as Redis may have just woken up (a pause ends for every client in turn), one
            # more PING with a full ping_timeout. Only silence after that means it is dead.
            heard = await drain(self.pubsub, self.listener, 0.0, self.echo.note)
            if not heard:
                await self.pubsub.ping()
                heard = await drain(self.pubsub, self.listener, self.ping_timeout, self.echo.note)
            if heard:
                self._last_heard, self._ping_sent = time.monotonic(), None
                if self._stalled:
                    self._answers_again()
                return
            raise ConnectionError(
                f"no answer to PING for {self.ping_timeout:.1f}s while Redis answers "
                "other connections (half-open subscription)"
            )
        # Redis answers nobody: keep this subscription (Redis may be queueing messages
        # for it) and look again after another ping_timeout.
        if not self._stalled:
            self._stalled = True
            limited.warning(
                "stalled", "redis answers no command (paused or frozen?); keeping the subscription"
            )
            notify(self.listener.on_disconnected)
        self._ping_sent = time.monotonic()

    def _answers_again(self) -> None:
        self._stalled = False
        log.info("redis answers again; the subscription was kept")
        notify(lambda: self.listener.on_connected(resumed=True))
