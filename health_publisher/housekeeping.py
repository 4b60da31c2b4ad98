"""The leader's housekeeping: trim signals nobody needs, remove consumers of dead publishers."""

from __future__ import annotations

import logging
from collections.abc import Callable

from health_publisher.reader import SignalReader, id_key
from health_publisher.server_clock import ServerClock

log = logging.getLogger("health_publisher")

HOUSEKEEPING_EVERY_S = 10.0


class Housekeeping:
    """Every ``HOUSEKEEPING_EVERY_S``: keep ``needed_s`` of history (and anything applied but
    not yet in a published checkpoint); remove consumers idle for twice the lease."""

    def __init__(
        self,
        reader: SignalReader,
        clock: ServerClock,
        mono: Callable[[], float],
        needed_s: float,
        lease_ms: int,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.mono = mono
        self.needed_s = needed_s
        self.lease_ms = lease_ms
        self.next_at = 0.0

    async def maybe_run(self, checkpointed_id: bytes | None) -> None:
        now = self.mono()
        if now < self.next_at:
            return
        self.next_at = now + HOUSEKEEPING_EVERY_S
        keep_from = f"{self.clock.server_ms(self.needed_s)}-0"
        if checkpointed_id is not None and id_key(checkpointed_id) < id_key(keep_from):
            # Applied but not yet in a published checkpoint: a successor must count it.
            keep_from = checkpointed_id.decode()
        done = await self.reader.housekeeping(keep_from, 2 * self.lease_ms)
        if done.removed_consumers:
            # Another publisher's consumer went away: worth an operator's eye.
            log.info(
                "consumers of stopped publishers removed: %s", ", ".join(done.removed_consumers)
            )
        if done.trimmed:
            log.debug(
                "housekeeping: %d old entries trimmed (kept from %s), consumers removed: %s",
                done.trimmed,
                keep_from,
                ", ".join(done.removed_consumers) or "none",
            )
