"""The publisher's Redis client: every call fails fast, the service owns retrying."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from connectome_core.redis_connect import async_client
from health_publisher.settings import PublisherSettings

SOCKET_TIMEOUT_S = 5.0  # larger than any XREADGROUP BLOCK we issue (service.MAX_BLOCK_S)
CONNECT_TIMEOUT_S = 2.0


def make_client(settings: PublisherSettings) -> aioredis.Redis:
    """No retries, explicit timeouts. With Sentinel every new connection asks the sentinels
    for the master, and a command that meets ``READONLY`` (a demoted master) drops its
    connection: the publisher writes only to the current master."""
    return async_client(
        settings.redis_target(),
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        client_name="health-publisher",
    )
