"""redis-py connection options for a :class:`~connectome_core.redis_target.RedisTarget`.

TLS always verifies the server's certificate and host name; there is no switch
to turn that off. Every connection skips redis-py's request for maintenance
notifications, which open-source Redis refuses (a round trip and a debug line
per connection).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry as SyncRetry

from connectome_core.redis_target import RedisTarget


def no_maint_notifications() -> dict[str, Any]:
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def tls_options(target: RedisTarget) -> dict[str, Any]:
    """redis-py's TLS connection options for ``target`` (empty when it is not TLS)."""
    if not target.tls:
        return {}

    def text(path: object) -> str | None:
        return None if path is None else str(path)

    return {
        "ssl": True,
        "ssl_ca_certs": text(target.tls_ca_file),  # None: the system's CA store
        "ssl_certfile": text(target.tls_cert_file),
        "ssl_keyfile": text(target.tls_key_file),
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


def auth_options(target: RedisTarget) -> dict[str, Any]:
    return {
        "username": target.username,
        "password": target.password.get_secret_value() if target.password else None,
        "db": target.db,
    }


def sentinel_options(target: RedisTarget, timeout: float, sync: bool = False) -> dict[str, Any]:
    """The options of the clients that talk to the sentinels themselves."""
    password = target.sentinel_password
    return {
        # Asking the next sentinel is the retry; redis-py's default backoff would spend
        # seconds on each dead one before moving on.
        "retry": SyncRetry(NoBackoff(), 0) if sync else AsyncRetry(NoBackoff(), 0),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "password": password.get_secret_value() if password else None,
        **no_maint_notifications(),
        **tls_options(target),
    }


def master_name(target: RedisTarget) -> str:
    assert target.master_name is not None, "a sentinel target always has a master name"
    return target.master_name
