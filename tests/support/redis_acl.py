"""The minimal ACL rule of each process (README "Redis in production"), and making the users.

Each rule starts from nothing (``resetkeys resetchannels -@all``) and allows
exactly the commands, keys and channels the process's code sends, read from
the code. No rule may write another process's keys: only the gateway with
authentication writes ``sse:ticket:*``, so no ``~sse:*`` anywhere.

- ``cli_publish``: ``connectome-sse publish`` = one EVAL of the logged publish
  (``connectome_core/event_log.py``), inside it XADD (and XTRIM MINID, TIME for the age
  cap) on ``sse:log``, HSET ``sse:log:last``, SET ``sse:last:<event>``, PUBLISH on
  ``sse:log:ids`` and ``sse:<event>``. Channels are ARGV, never KEYS, so no key rule
  names a channel. ``--lines`` also reads the log (XREVRANGE at start, XRANGE after a
  Redis cut) to tell which lines were published before the cut.
- ``fcall_publish``: another program publishing through the log with ``FCALL
  sse_publish`` (the function the publisher loads): the same commands as
  ``cli_publish``, with FCALL instead of EVAL.
- ``gateway``: PSUBSCRIBE ``sse:*`` (and PUNSUBSCRIBE when it closes), PING
  (the silence check), SCAN + MGET/GET ``sse:last:*`` (snapshots, read only:
  ``%R~``) with HMGET ``sse:log:last`` in the same MULTI/EXEC (the log ids of the
  snapshots), XRANGE/XREVRANGE/XINFO STREAM on ``sse:log`` (gap fill and resume, read
  only), CLIENT SETNAME (its clients are named), and its echo: SUBSCRIBE
  (UNSUBSCRIBE on close) and PUBLISH on its private channel
  ``connectome:gateway:echo:<host>-<pid>-<random>`` (sse_gateway/redis_checks.py).
- ``gateway_auth``: the gateway with authentication on (``SSE_AUTH_SECRET``):
  the above, and its ticket store's SET (with PX and NX), GET (a HEAD, and
  a mint's retry reading back its own value) and GETDEL on ``sse:ticket:*``
  (sse_gateway/tickets.py). SET is granted on those keys only: ``sse:last:*``
  stays read only.
- ``demo_engine``: PING (its start-up check), XADD on ``connectome:signals``
  (pipelined, no MULTI) and CLIENT SETNAME.
- ``publisher``: the consumer group on ``connectome:signals`` (XGROUP CREATE
  with MKSTREAM; inside its fenced scripts XREADGROUP, XPENDING + XCLAIM, XACK,
  XTRIM MINID, XINFO CONSUMERS, XGROUP DELCONSUMER, XRANGE/XREVRANGE, EXISTS;
  outside them a plain XREAD BLOCK that only waits), XINFO GROUPS, TIME,
  SET/GET on the lease and checkpoint (``connectome:publisher:*``), the Lua
  scripts (EVALSHA, EVAL; inside them GET, PEXPIRE, DEL, SET, PUBLISH run as
  the same user), the logged publish inside its fenced publish script (as
  ``cli_publish``), FUNCTION LOAD (the event log's library, for FCALL), PING,
  CLIENT SETNAME.

AUTH and HELLO need no permission. redis-py's ``CLIENT SETINFO`` on connect is
allowed to fail. A non-zero database in the URL needs ``+select`` too. ACL
users are per node: with Sentinel, create them on every master and replica
(``ACL SAVE`` with an ``aclfile``, or the same ``user`` lines in every config).
"""

from __future__ import annotations

import redis

GATEWAY_ECHO_CHANNELS = "&connectome:gateway:echo:*"
GATEWAY = (
    "+psubscribe",
    "+punsubscribe",
    "+subscribe",
    "+unsubscribe",
    "+ping",
    "+scan",
    "+mget",
    "+get",
    "+client|setname",
    "+publish",
    "+multi",
    "+exec",
    "+hmget",
    "+xrange",
    "+xrevrange",
    "+xinfo|stream",
    "%R~sse:last:*",  # %R: read only (Redis >= 7.0)
    "%R~sse:log",
    "%R~sse:log:last",
    "&sse:*",
    GATEWAY_ECHO_CHANNELS,
)

# What the logged publish runs (connectome_core/event_log.py LOGGED_PUBLISH_LUA).
LOGGED_PUBLISH = (
    "+xadd",
    "+xtrim",
    "+time",
    "+hset",
    "+set",
    "+publish",
    "~sse:log",
    "~sse:log:last",
    "~sse:last:*",
    "&sse:*",
)

RULES: dict[str, tuple[str, ...]] = {
    "cli_publish": ("+eval", "+xrange", "+xrevrange", *LOGGED_PUBLISH),
    "fcall_publish": ("+fcall", *LOGGED_PUBLISH),
    "gateway": GATEWAY,
    "gateway_auth": (*GATEWAY, "+set", "+getdel", "~sse:ticket:*"),
    "demo_engine": (
        "+ping",  # its start-up check: a Redis setting that cannot work stops it at once
        "+xadd",
        "+client|setname",
        "~connectome:signals",
    ),
    "publisher": (
        "+ping",
        "+client|setname",
        "+time",
        "+xgroup|create",
        "+xreadgroup",
        "+xread",
        "+xpending",
        "+xclaim",
        "+xack",
        "+xinfo|groups",
        "+xinfo|consumers",
        "+xgroup|delconsumer",
        "+xrange",
        "+xrevrange",
        "+xtrim",
        "+exists",
        "+get",
        "+set",
        "+pexpire",
        "+del",
        "+eval",
        "+evalsha",
        "+script|load",
        "+function|load",
        "+xadd",
        "+hset",
        "+publish",
        "~connectome:signals",
        "~connectome:publisher:*",
        "~sse:log",
        "~sse:log:last",
        "~sse:last:*",
        "&sse:*",
    ),
}


def acl_line(process: str, password: str) -> str:
    """The rule as one ``ACL SETUSER <name> …`` argument string (for the README)."""
    return " ".join(("on", f">{password}", "resetkeys", "resetchannels", "-@all", *RULES[process]))


def make_user(admin: redis.Redis, name: str, password: str, rule: tuple[str, ...] | str) -> None:
    """``ACL SETUSER name`` from scratch with ``rule`` (a process name or explicit tokens)."""
    tokens = RULES[rule] if isinstance(rule, str) else rule
    admin.execute_command("ACL", "SETUSER", name, "reset")  # type: ignore[no-untyped-call]
    admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL",
        "SETUSER",
        name,
        "on",
        f">{password}",
        "resetkeys",
        "resetchannels",
        "-@all",
        *tokens,
    )
