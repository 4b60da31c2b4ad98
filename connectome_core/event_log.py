"""The event log: a capped Redis stream beside pub/sub, written in the same atomic step.

Holds the names, the Lua of the logged publish (used as is by ``publishing``, inside the
lease-fenced script by the health publisher, and as the function ``sse_publish``), and the
client-facing ids of logged events. How and why: ``docs/event-log.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from hashlib import blake2b

from connectome_core.contract import CHANNEL_PREFIX, RESERVED_EVENTS, SNAPSHOT_PREFIX

LOG_KEY = "sse:log"  # stream; entries ``event=<name> data=<text>``
LOG_ID_CHANNEL = "sse:log:ids"  # marker "<stream-id> <event>", right before the event's PUBLISH
LOG_LAST_KEY = "sse:log:last"  # hash: event -> stream id of the entry that set its snapshot

FUNCTION_LIBRARY = "connectome_sse"
FUNCTION_NAME = "sse_publish"

DEFAULT_MAXLEN = 10_000
DEFAULT_MAX_AGE_S = 3600


@dataclass(frozen=True)
class LogCaps:
    """How much the log keeps: ``maxlen`` entries (about), ``max_age_s`` seconds; 0: no cap."""

    maxlen: int = DEFAULT_MAXLEN
    max_age_s: int = DEFAULT_MAX_AGE_S

    def script_args(self) -> tuple[int, int]:
        """The caps as the Lua takes them: entries, milliseconds."""
        return self.maxlen, self.max_age_s * 1000


def _lua_string(text: str) -> str:
    # The names are ours and plain ([a-z:_]); quoting stays trivial.
    assert re.fullmatch(r"[A-Za-z0-9_.:\-]+", text), text
    return f"'{text}'"


_RESERVED = ", ".join(f"[{_lua_string(name)}] = true" for name in sorted(RESERVED_EVENTS))

# ``logged_publish(event, data, maxlen, max_age_ms)``: refuses a bad or reserved name, and a
# caller whose ACL lacks one of the commands (checked first, so a refusal writes nothing:
# a script is not rolled back). Returns ``{stream id, receivers}`` or an error reply.
LOGGED_PUBLISH_LUA = f"""
local reserved = {{{_RESERVED}}}
local function logged_publish(event, data, maxlen, max_age_ms)
    if #event > 64 or not string.find(event, '^[A-Za-z0-9_.%-]+$') then
        return redis.error_reply('ERR invalid event name: use 1 to 64 of A-Z a-z 0-9 _ . -')
    end
    if reserved[event] then
        return redis.error_reply('ERR reserved event name: the gateway makes ' .. event)
    end
    local log, last = {_lua_string(LOG_KEY)}, {_lua_string(LOG_LAST_KEY)}
    local snapshot = {_lua_string(SNAPSHOT_PREFIX)} .. event
    local channel = {_lua_string(CHANNEL_PREFIX)} .. event
    local ids = {_lua_string(LOG_ID_CHANNEL)}
    local needed = {{
        {{'XADD', log, '*', 'event', 'e', 'data', 'd'}},
        {{'HSET', last, event, 'i'}},
        {{'SET', snapshot, 'd'}},
        {{'PUBLISH', ids, 'm'}},
        {{'PUBLISH', channel, 'd'}},
    }}
    if max_age_ms > 0 then
        needed[#needed + 1] = {{'TIME'}}
        needed[#needed + 1] = {{'XTRIM', log, 'MINID', '~', '0'}}
    end
    for _, command in ipairs(needed) do
        if redis.acl_check_cmd and not redis.acl_check_cmd(unpack(command)) then
            return redis.error_reply('NOPERM this user has no permissions to run the ' ..
                string.lower(command[1]) .. ' command on ' .. (command[2] or 'the server') ..
                ' (nothing was written)')
        end
    end
    local id
    if maxlen > 0 then
        id = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'event', event, 'data', data)
    else
        id = redis.call('XADD', log, '*', 'event', event, 'data', data)
    end
    if max_age_ms > 0 then
        local now = redis.call('TIME')
        local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age_ms
        if oldest > 0 then
            redis.call('XTRIM', log, 'MINID', '~', string.format('%.0f', oldest))
        end
    end
    redis.call('HSET', last, event, id)
    redis.call('SET', snapshot, data)
    redis.call('PUBLISH', ids, id .. ' ' .. event)
    return {{id, redis.call('PUBLISH', channel, data)}}
end
"""

# EVAL with no keys; ARGV: event, data, maxlen, max_age_ms.
PUBLISH_LUA = (
    LOGGED_PUBLISH_LUA
    + """
return logged_publish(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
"""
)


def function_library(caps: LogCaps) -> str:
    """The source of the function library (``FUNCTION LOAD REPLACE``), caps baked in.

    ``FCALL sse_publish 0 <event> <data>`` -> ``[<stream-id>, <receivers>]``.
    """
    maxlen, max_age_ms = caps.script_args()
    return (
        f"#!lua name={FUNCTION_LIBRARY}\n"
        + LOGGED_PUBLISH_LUA
        + f"""
redis.register_function('{FUNCTION_NAME}', function(keys, args)
    if #keys ~= 0 or #args ~= 2 then
        return redis.error_reply('ERR usage: FCALL {FUNCTION_NAME} 0 <event> <data>')
    end
    return logged_publish(args[1], args[2], {maxlen}, {max_age_ms})
end)
"""
    )


# -- ids ----------------------------------------------------------------------------------

STREAM_ID_RE = re.compile(r"(\d{1,20})-(\d{1,20})")
LOG_EVENT_ID_RE = re.compile(r"(\d{1,20}-\d{1,20})\.([0-9a-f]{8})")


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def digest8(event: str | bytes, data: str | bytes) -> str:
    """8 hex digits of the digest of (event, data): ties a log id to its entry's content."""
    return blake2b(_bytes(event) + b"\0" + _bytes(data), digest_size=4).hexdigest()


def log_event_id(stream_id: str | bytes, event: str | bytes, data: str | bytes) -> str:
    """The client-facing id of a logged event: ``<ms>-<seq>.<d8>``."""
    sid = stream_id.decode("ascii") if isinstance(stream_id, bytes) else stream_id
    return f"{sid}.{digest8(event, data)}"


def parse_log_event_id(text: str) -> tuple[str, str] | None:
    """``(stream id, d8)`` of a log event id, or None when ``text`` is not one."""
    match = LOG_EVENT_ID_RE.fullmatch(text)
    return None if match is None else (match.group(1), match.group(2))


def stream_id_key(stream_id: str | bytes) -> tuple[int, int]:
    """A stream id as ``(ms, seq)``, for ordering; ValueError when it is not one."""
    sid = stream_id.decode("ascii") if isinstance(stream_id, bytes) else stream_id
    match = STREAM_ID_RE.fullmatch(sid)
    if match is None:
        raise ValueError(f"not a stream id: {sid!r}")
    return int(match.group(1)), int(match.group(2))
