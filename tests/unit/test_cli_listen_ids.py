"""`listen` lines for ids, resync, health_stale and the pings' health_age."""

from __future__ import annotations

from connectome_sse.listen_format import format_event
from connectome_sse.sse_client import ServerEvent

T = 1_700_000_000.0


def test_relayed_events_end_with_their_id_and_gateway_events_never_do() -> None:
    assert format_event(ServerEvent("seq", "x", "abc123"), T, False).endswith(" id=abc123")
    # The parser repeats the last id on later events: a ping must not show it.
    ping = ServerEvent("ping", '{"ts":1,"redis":"up","health_age":2.5}', "abc123")
    line = format_event(ping, T, False)
    assert "id=" not in line and line.endswith("redis=up health_age=2.5s")
    ping = ServerEvent("ping", '{"ts":1,"redis":"up","health_age":null}', "")
    assert format_event(ping, T, False).endswith("health_age=none yet")


def test_resync_and_health_stale_stand_out() -> None:
    resync = format_event(ServerEvent("resync", '{"reason": "unknown_id"}', ""), T, False)
    assert "resync (unknown_id)" in resync and "snapshots follow" in resync
    stale = ServerEvent("health_stale", '{"age": 12.04, "last_ts": 1700000000.5}', "")
    line = format_event(stale, T, False)
    assert "publisher silent for 12.0s" in line and "1700000000.500" in line
