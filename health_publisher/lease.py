"""The leader lease on ``connectome:publisher:leader``, and the logged publish it fences.

Acquire (``SET NX PX``), compare-and-renew, compare-and-release, a local deadline that falls
before the key can expire, and one script that publishes only while Redis says we lead.
Why it is safe: ``docs/publisher.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from connectome_core.contract import LEADER_KEY
from connectome_core.event_log import LOGGED_PUBLISH_LUA, LogCaps
from connectome_core.publishing import Published, published_from_reply

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

# KEYS: lease, checkpoint. ARGV: token, checkpoint ('' for none), event, data, maxlen,
# max_age_ms. The logged publish and the checkpoint, only while the lease holds our token.
# Returns -1 when it does not, else {stream id, receivers} (or the logged publish's error).
FENCED_PUBLISH_LUA = (
    LOGGED_PUBLISH_LUA
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return -1
end
if ARGV[2] ~= '' and redis.acl_check_cmd and not redis.acl_check_cmd('SET', KEYS[2], 'c') then
    return redis.error_reply('NOPERM this user has no permissions to run the set command on '
        .. KEYS[2] .. ' (nothing was written)')
end
local published = logged_publish(ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
if published.err == nil and ARGV[2] ~= '' then
    redis.call('SET', KEYS[2], ARGV[2])
end
return published
"""
)


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

    async def publish(
        self, event: str, data: str, checkpoint: str = "", caps: LogCaps | None = None
    ) -> Published | None:
        """The logged publish (+ SET the checkpoint), only while Redis says we lead.

        None when we are not the leader (the lease is dropped at once).
        """
        result = await self._publish(
            keys=[self.key, self.checkpoint_key],
            args=[self.token, checkpoint, event, data, *(caps or LogCaps()).script_args()],
        )
        if not isinstance(result, list):  # -1: not ours
            self.drop()
            return None
        return published_from_reply(result, event, data)
