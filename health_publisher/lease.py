"""The leader lease on ``connectome:publisher:leader``, and the publish it fences.

Any number of publishers run; the one whose token is in the key publishes.

- **Acquire**: ``SET key token NX PX lease`` (or, when the key already holds
  our own token, e.g. after a lost reply, a renewal).
- **Renew**: a compare-and-renew script (``PEXPIRE`` only if the key still
  holds our token).
- **Local validity**: a lease counts as held until ``sent + lease * (1 - drift)
  - margin``, where ``sent`` is the monotonic time the acquire/renew request
  left. Redis starts the expiry when it *receives* the request, later than
  ``sent``, so the local deadline always falls before the key can expire: a
  leader that fails to renew stops publishing before a standby can acquire.
- **Fenced publish**: the snapshot SET and the channel PUBLISH run in one Lua
  script that first checks the key still holds our token. That closes the
  last gap the local deadline cannot: a process paused (GC, SIGSTOP, a slow
  VM) between its check and its write. Whatever the pause, a publisher that
  lost the lease cannot write, so there are never two leaders on the channel.
  (``connectome_core.publishing.publish_event`` is the same SET + PUBLISH in a
  MULTI, but a MULTI cannot be made conditional on a value, hence the script.)
- **Checkpoint**: the same script stores ``connectome:publisher:checkpoint``
  (the last applied stream id and the counters of that payload), so a new
  leader continues the totals exactly: what the checkpoint covers is counted,
  what came after it is counted by the new leader.
- **The group behind the same fence**: reading, acknowledging, claiming and
  trimming ``connectome:signals`` run in scripts that check the same key
  (``fenced_lua.py``), so a deposed leader can neither take entries from the
  new one nor acknowledge what it did not get to publish.
- **Release** (on shutdown): a compare-and-delete, so a standby takes over on
  its next attempt instead of waiting for the expiry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from connectome_core.contract import LEADER_KEY, channel_for, snapshot_key

# The publisher's own key (not part of the wire contract): the stream id and counters of the
# last payload published, written in the same script as the payload so the two always agree.
CHECKPOINT_KEY = "connectome:publisher:checkpoint"

# How much faster than Redis our monotonic clock may run, and a fixed margin on top.
CLOCK_DRIFT = 0.01
MIN_MARGIN_S = 0.05

RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lease, snapshot key, channel, checkpoint; ARGV: token, data, checkpoint.
# Returns the channel's receivers, or -1 when the caller does not hold the lease.
FENCED_PUBLISH_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return -1
end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
    redis.call('SET', KEYS[4], ARGV[3])
end
return redis.call('PUBLISH', KEYS[3], ARGV[2])
"""


class LeaderLease:
    def __init__(
        self,
        client: aioredis.Redis,
        token: str,
        lease_ms: int,
        *,
        key: str = LEADER_KEY,
        checkpoint_key: str = CHECKPOINT_KEY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.token = token
        self.lease_ms = lease_ms
        self.key = key
        self.checkpoint_key = checkpoint_key
        self.clock = clock
        lease_s = lease_ms / 1000.0
        self.valid_for = lease_s * (1.0 - CLOCK_DRIFT) - max(MIN_MARGIN_S, lease_s * 0.05)
        self.held_until = 0.0
        self._renew = client.register_script(RENEW_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._publish = client.register_script(FENCED_PUBLISH_LUA)

    def held(self, now: float | None = None) -> bool:
        """True while the lease is ours by the local deadline (see the module docstring)."""
        return (self.clock() if now is None else now) < self.held_until

    def drop(self) -> None:
        """Consider the lease lost at once (the fence refused us, or we are shutting down)."""
        self.held_until = 0.0

    async def acquire(self) -> bool:
        sent = self.clock()
        if await self.client.set(self.key, self.token, nx=True, px=self.lease_ms):
            self.held_until = sent + self.valid_for
            return True
        # The key may hold our own token: an earlier SET succeeded but its reply was lost.
        return await self.renew()

    async def renew(self) -> bool:
        sent = self.clock()
        renewed = await self._renew(keys=[self.key], args=[self.token, self.lease_ms])
        if int(renewed) == 1:
            self.held_until = sent + self.valid_for
            return True
        self.held_until = 0.0
        return False

    async def release(self) -> bool:
        self.held_until = 0.0
        return int(await self._release(keys=[self.key], args=[self.token])) == 1

    async def holder(self) -> bytes | None:
        value: Any = await self.client.get(self.key)
        return value if isinstance(value, bytes) else None

    async def publish(self, event: str, data: str, checkpoint: str = "") -> int | None:
        """SET snapshot + PUBLISH (+ SET the checkpoint), only while Redis says we lead.

        Returns the number of channel receivers, or None when we are not the leader.
        """
        result = await self._publish(
            keys=[self.key, snapshot_key(event), channel_for(event), self.checkpoint_key],
            args=[self.token, data, checkpoint],
        )
        receivers = int(result)
        if receivers < 0:
            self.drop()
            return None
        return receivers
