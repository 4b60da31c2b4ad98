"""The Redis wire contract: every channel, key and name both services rely on.

``sse:<event>`` channels and ``sse:last:<event>`` snapshots; event names match
``[A-Za-z0-9_.-]{1,64}`` (never a line break or a colon); ``RESERVED_EVENTS`` are
the gateway's own.
"""

from __future__ import annotations

import re

CHANNEL_PREFIX = "sse:"
CHANNEL_PATTERN = "sse:*"
SNAPSHOT_PREFIX = "sse:last:"

SIGNALS_STREAM = "connectome:signals"
CONSUMER_GROUP = "health-publisher"
LEADER_KEY = "connectome:publisher:leader"

STREAM_PATH = "/api/sse"  # the gateway's event stream

HEALTH_EVENT = "connectome_health"
PING_EVENT = "ping"
RESYNC_EVENT = "resync"
HEALTH_STALE_EVENT = "health_stale"
PROBE_EVENT = "probe"
# Made by the gateway itself: a channel message or snapshot under one of these names
# is dropped (reason "reserved"), so a client can trust them.
RESERVED_EVENTS = frozenset({PING_EVENT, RESYNC_EVENT, HEALTH_STALE_EVENT, PROBE_EVENT})

# Gateways drop larger channel messages (SSE_MAX_EVENT_BYTES); writers refuse them first.
DEFAULT_MAX_EVENT_BYTES = 1_048_576

EVENT_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def is_valid_event_name(name: str) -> bool:
    return EVENT_NAME_RE.fullmatch(name) is not None


def channel_for(event: str) -> str:
    return CHANNEL_PREFIX + event


def snapshot_key(event: str) -> str:
    return SNAPSHOT_PREFIX + event


def event_from_channel(channel: str) -> str | None:
    """The event name a channel carries, or None when the channel is not a valid one."""
    if not channel.startswith(CHANNEL_PREFIX):
        return None
    event = channel[len(CHANNEL_PREFIX) :]
    return event if is_valid_event_name(event) else None
