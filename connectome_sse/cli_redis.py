"""Redis settings of the one-shot CLI commands (``publish``): ``REDIS_URL`` or ``--redis-url``,
and the shared TLS/Sentinel settings (``connectome_core.settings.RedisSettings``)."""

from __future__ import annotations

from typing import ClassVar

from connectome_core.settings import RedisSettings


class CliRedisSettings(RedisSettings):
    owned_prefixes: ClassVar[tuple[str, ...]] = ()
