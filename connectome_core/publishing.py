"""Publishing an event the proper way: snapshot key and channel in one MULTI.

Writing both in one transaction means a client that connects between the two
can never see a snapshot older than the last live event it will receive.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from connectome_core.contract import channel_for, is_valid_event_name, snapshot_key


async def publish_event(client: aioredis.Redis, event: str, data: str | bytes) -> int:
    """SET ``sse:last:<event>`` and PUBLISH ``sse:<event>``; returns the receiver count."""
    if not is_valid_event_name(event):
        raise ValueError(f"invalid event name {event!r}: must match [A-Za-z0-9_.-]{{1,64}}")
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(snapshot_key(event), data)
        pipe.publish(channel_for(event), data)
        _, receivers = await pipe.execute()
    return int(receivers)
