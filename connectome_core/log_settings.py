"""The event log's caps as settings, for every process that writes events through the log."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectome_core.event_log import DEFAULT_MAX_AGE_S, DEFAULT_MAXLEN, LogCaps
from connectome_core.settings import RedisSettings


class EventLogSettings(RedisSettings):
    """``REDIS_*`` plus ``EVENT_LOG_MAXLEN`` and ``EVENT_LOG_MAX_AGE`` (0 switches a cap off)."""

    owned_prefixes: ClassVar[tuple[str, ...]] = ("EVENT_LOG_",)

    event_log_maxlen: int = Field(
        DEFAULT_MAXLEN,
        validation_alias="EVENT_LOG_MAXLEN",
        ge=0,
        le=100_000_000,
        description="entries the event log keeps, about (0: no count cap)",
    )
    event_log_max_age: int = Field(
        DEFAULT_MAX_AGE_S,
        validation_alias="EVENT_LOG_MAX_AGE",
        ge=0,
        le=366 * 86400,
        description="seconds the event log keeps an entry, about (0: no age cap)",
    )

    def log_caps(self) -> LogCaps:
        return LogCaps(self.event_log_maxlen, self.event_log_max_age)
