"""The gateway's settings (SPEC "Settings"), one frozen model read once at start."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AnyUrl, BeforeValidator, Field, field_validator
from pydantic_settings import NoDecode

from connectome_sse.settings import ProcessSettings, parse_csv


class GatewaySettings(ProcessSettings):
    owned_prefixes: ClassVar[tuple[str, ...]] = ("SSE_",)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias="REDIS_URL",
        description="Redis to subscribe to",
    )
    host: str = Field("127.0.0.1", validation_alias="SSE_HOST", description="listen address")
    port: int = Field(8000, ge=0, le=65535, validation_alias="SSE_PORT", description="listen port")
    workers: int = Field(
        1, ge=1, le=64, validation_alias="SSE_WORKERS", description="processes sharing the port"
    )
    ping_interval: float = Field(
        15.0,
        gt=0,
        le=3600,
        validation_alias="SSE_PING_INTERVAL",
        description="seconds between pings",
    )
    retry_ms: int = Field(
        3000,
        ge=0,
        le=3_600_000,
        validation_alias="SSE_RETRY_MS",
        description="retry: sent to clients",
    )
    max_connections: int = Field(
        10000, ge=1, validation_alias="SSE_MAX_CONNECTIONS", description="open streams per process"
    )
    client_buffer: int = Field(
        256, ge=1, validation_alias="SSE_CLIENT_BUFFER", description="events buffered per client"
    )
    max_event_bytes: int = Field(
        1_048_576,
        ge=1,
        validation_alias="SSE_MAX_EVENT_BYTES",
        description="larger channel messages are dropped",
    )
    cors_origins: Annotated[list[str], NoDecode, BeforeValidator(parse_csv)] = Field(
        default_factory=list,
        validation_alias="SSE_CORS_ORIGINS",
        description="comma-separated allowed origins",
    )
    shutdown_grace: float = Field(
        5.0, gt=0, le=600, validation_alias="SSE_SHUTDOWN_GRACE", description="seconds to drain"
    )
    log_level: str = Field("info", validation_alias="SSE_LOG_LEVEL", description="log level")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        url = AnyUrl(value)
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and "://" not in origin:
                raise ValueError(f"{origin!r} is not an origin like https://example.org")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError("must be one of critical, error, warning, info, debug")
        return value.lower()
