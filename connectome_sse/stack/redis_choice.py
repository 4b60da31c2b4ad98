"""The Redis of ``up``: the user's ``REDIS_URL``, checked at once, or one ``up`` starts.

Either way the result says how the banner names it and what another shell
must export to reach it (the tools' default, 127.0.0.1:6379, may be another Redis).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from connectome_core.redis_connect import SentinelSyncRedis, explain_error_sync, sync_client
from connectome_core.redis_target import RedisTarget
from connectome_sse.stack.embedded_redis import packaged_redis
from connectome_sse.stack.local_redis import LocalRedis, StackError
from connectome_sse.stack.supervisor import Supervisor


@dataclass(frozen=True)
class RedisChoice:
    url: str  # for the children; may hold the user's password
    description: str  # for the banner, password masked
    # What another shell must export to reach it; None: the user's own REDIS_URL.
    exports: Mapping[str, str] | None = None


def users_redis(target: RedisTarget, url: str) -> RedisChoice:
    """The user's Redis, after one PING (a Sentinel target: through its sentinels)."""
    master = _check(target)
    where = f"; master now at {master[0]}:{master[1]}" if master else ""
    return RedisChoice(url, f"your REDIS_URL: {target.display()}{where}")


def start_own_redis(
    workdir: Path,
    environ: Mapping[str, str],
    supervisor: Supervisor,
    embedded: bool,
    say: Callable[[str], None],
) -> RedisChoice:
    """A redis-server from PATH (or the packaged one) on a free port, started and answering."""
    local = None if embedded else LocalRedis.find(workdir, environ)
    if local is None:
        why = "as asked" if embedded else "no redis-server on PATH"
        local = packaged_redis(workdir, environ)
        say(f"starting the packaged {local.name} {local.version} ({why})")
    else:
        say(f"starting redis-server {local.version}")
    supervisor.add(local)
    local.start_and_wait(cancelled=supervisor.stop_requested.is_set)
    if environ.get("REDIS_PASSWORD_FILE"):
        say("ignoring REDIS_PASSWORD_FILE: the Redis up starts has no password")
    exports = {"REDIS_URL": local.url}
    if environ.get("REDIS_PASSWORD_FILE"):
        exports["REDIS_PASSWORD_FILE"] = ""  # else the tools would send its password
    cli = (
        f" (redis-cli -p {local.port})"
        if shutil.which("redis-cli", path=environ.get("PATH"))
        else ""
    )
    return RedisChoice(local.url, f"{local.description}, started by up{cli}", exports)


def _check(target: RedisTarget) -> tuple[str, int] | None:
    """PING ``target``; for a Sentinel target, the master's address the sentinels gave."""
    # One try, as for any start-up check: retries only delay the one line.
    client = sync_client(
        target, socket_connect_timeout=3, socket_timeout=3, retry=Retry(NoBackoff(), retries=0)
    )
    try:
        client.ping()
        if isinstance(client, SentinelSyncRedis) and client.owned_sentinel is not None:
            sentinel = client.owned_sentinel
            host, port = sentinel.discover_master(str(target.master_name))  # type: ignore[no-untyped-call]
            return str(host), int(port)
        return None
    except (RedisError, OSError) as exc:
        raise StackError(explain_error_sync(exc, target)) from None
    finally:
        client.close()
