"""Which lines of a batch cut in flight the log already holds (``publish --lines``)."""

from __future__ import annotations

import fakeredis

from connectome_core.event_log import LOG_KEY, log_event_id
from connectome_sse.lines_recovery import already_logged, log_tail


async def test_the_lines_found_after_the_last_confirmed_entry_are_taken_in_order() -> None:
    client = fakeredis.FakeAsyncRedis()
    assert await log_tail(client) == "0-0"
    confirmed = sid(await client.xadd(LOG_KEY, {"event": "deploy", "data": "a"}))
    assert await log_tail(client) == confirmed
    # Another writer's entries interleave; "b" and "c" of the cut batch ran, "d" did not.
    await client.xadd(LOG_KEY, {"event": "alert", "data": "b"})
    b = sid(await client.xadd(LOG_KEY, {"event": "deploy", "data": "b"}))
    await client.xadd(LOG_KEY, {"event": "deploy", "data": "x"})
    c = sid(await client.xadd(LOG_KEY, {"event": "deploy", "data": "c"}))
    found = await already_logged(client, confirmed, "deploy", ["b", "c", "d"])
    assert found == [(b, log_event_id(b, "deploy", "b")), (c, log_event_id(c, "deploy", "c"))]
    # A line before the confirmed entry is never taken for one of the batch.
    assert await already_logged(client, c, "deploy", ["a"]) == []
    await client.aclose()


def sid(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
