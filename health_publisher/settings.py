"""The publisher's settings: ``REDIS_*``, the event log's caps (``EVENT_LOG_*``), and its own
``HEALTH_*`` / ``PUBLISHER_*``."""

from __future__ import annotations

import os
import socket
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from connectome_core.log_settings import EventLogSettings


def default_consumer_name() -> str:
    """``<hostname>-<pid>``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class PublisherSettings(EventLogSettings):
    # REDIS_URL, REDIS_TLS_*, REDIS_PASSWORD_FILE, REDIS_SENTINEL_PASSWORD and EVENT_LOG_* come
    # from the bases.
    owned_prefixes: ClassVar[tuple[str, ...]] = ("HEALTH_", "PUBLISHER_")

    health_interval: float = Field(
        1.0, validation_alias="HEALTH_INTERVAL", gt=0, le=3600, description="seconds between events"
    )
    health_max_rate: float = Field(
        2.0,
        validation_alias="HEALTH_MAX_RATE",
        gt=0,
        le=1000,
        description="events per second at most",
    )
    health_window: float = Field(
        300.0,
        validation_alias="HEALTH_WINDOW",
        gt=0,
        description="seconds a violation keeps the status down",
    )
    health_stale_after: float = Field(
        10.0,
        validation_alias="HEALTH_STALE_AFTER",
        gt=0,
        description="seconds without signals before WARN",
    )
    publisher_lease_ms: int = Field(
        3000,
        validation_alias="PUBLISHER_LEASE_MS",
        ge=300,
        le=600_000,
        description="leader lease in milliseconds",
    )
    publisher_consumer: str = Field(
        "",
        validation_alias="PUBLISHER_CONSUMER",
        max_length=200,
        description="consumer name in the group (empty: <hostname>-<pid>)",
    )
    publisher_batch: int = Field(
        200,
        validation_alias="PUBLISHER_BATCH",
        ge=1,
        le=10_000,
        description="stream entries read per XREADGROUP",
    )
    publisher_metrics_port: int = Field(
        0,
        validation_alias="PUBLISHER_METRICS_PORT",
        ge=0,
        le=65535,
        description="serve Prometheus metrics on this port (0: off)",
    )
    publisher_metrics_host: str = Field(
        "127.0.0.1",
        validation_alias="PUBLISHER_METRICS_HOST",
        description="address of the metrics listener",
    )
    publisher_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="PUBLISHER_LOG_LEVEL", description="log level"
    )

    @field_validator("publisher_log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def consumer_name(self) -> str:
        return self.publisher_consumer or default_consumer_name()

    @property
    def lease_seconds(self) -> float:
        return self.publisher_lease_ms / 1000.0
