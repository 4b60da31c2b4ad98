"""The gateway's settings, one frozen model read once at start."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, ClassVar, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from connectome_core.contract import is_valid_event_name
from connectome_core.settings import RedisSettings, parse_csv

# An Origin header as browsers send it: lower case, no path, no default port.
_ORIGIN = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]+))?$"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_problem(origin: str) -> str | None:
    """Why ``origin`` (an ``SSE_CORS_ORIGINS`` entry) can never equal an ``Origin`` header."""
    if origin == "*":
        return None
    _, sep, rest = origin.partition("://")
    if not sep or not rest:
        return "has no scheme://host"
    for mark, what in (("@", "user info"), ("?", "a query"), ("#", "a fragment")):
        if mark in rest:
            return f"has {what}"
    if "/" in rest:
        return "has a trailing slash" if rest.index("/") == len(rest) - 1 else "has a path"
    match = _ORIGIN.match(origin)
    if match is None:
        return "is not scheme://host[:port] in lower case"
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        return "has a port outside 1..65535"
    if port is not None and _DEFAULT_PORTS.get(match["scheme"]) == int(port):
        return f"names the default port {port} (browsers leave it out)"
    return None


class GatewaySettings(RedisSettings):
    # REDIS_URL, REDIS_TLS_*, REDIS_PASSWORD_FILE and REDIS_SENTINEL_PASSWORD come from
    # RedisSettings.
    owned_prefixes: ClassVar[tuple[str, ...]] = ("SSE_",)
    secret_fields: ClassVar[frozenset[str]] = RedisSettings.secret_fields | {"auth_secret"}
    secret_files: ClassVar[Mapping[str, str]] = {"auth_secret": "auth_secret_file"}

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
    client_buffer_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        validation_alias="SSE_CLIENT_BUFFER_BYTES",
        description="bytes buffered per client before it is cut (one event is always taken)",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        validation_alias="SSE_HEADER_TIMEOUT",
        description="seconds a connection may take to send its request headers",
    )
    limit_concurrency: int = Field(
        0,
        ge=0,
        validation_alias="SSE_LIMIT_CONCURRENCY",
        description="open connections per process, streams included; 0: max connections + 1024",
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
    # Authentication (sse_gateway.auth). The secret is a plain str kept out of repr, as
    # REDIS_SENTINEL_PASSWORD is: errors never echo it; read from SSE_AUTH_SECRET_FILE
    # when that is set (to_environ then hands workers the path, not the secret).
    auth_secret: str = Field(
        "",
        repr=False,
        validation_alias="SSE_AUTH_SECRET",
        description="HMAC key of stream tokens, at least 32 bytes; empty: streams are open",
    )
    auth_secret_file: str = Field(
        "",
        validation_alias="SSE_AUTH_SECRET_FILE",
        description="file holding SSE_AUTH_SECRET (one trailing newline is dropped)",
    )
    ticket_ttl: int = Field(
        30,
        ge=1,
        le=3600,
        validation_alias="SSE_TICKET_TTL",
        description="seconds a one-time ticket stays valid",
    )
    ticket_rate: int = Field(
        60,
        ge=0,
        le=1_000_000,
        validation_alias="SSE_TICKET_RATE",
        description="tickets per minute per client address and per token subject; 0: no limit",
    )
    max_streams_per_client: int = Field(
        1000,
        ge=0,
        validation_alias="SSE_MAX_STREAMS_PER_CLIENT",
        description="open streams per client address per process; 0: no limit",
    )

    # Resume, latest-only types, publisher health (sse_gateway.history, .health_watch).
    history: int = Field(
        256,
        ge=100,
        le=100_000,
        validation_alias="SSE_HISTORY",
        description="events kept per type for resuming with Last-Event-ID (at least 100)",
    )
    latest_only: Annotated[list[str], NoDecode, BeforeValidator(parse_csv)] = Field(
        "connectome_health",  # as the environment would say it: parsed like one
        validate_default=True,
        validation_alias="SSE_LATEST_ONLY",
        description="comma-separated event types where only the newest matters",
    )
    send_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        validation_alias="SSE_SEND_TIMEOUT",
        description="seconds a client may take no bytes at all before it is cut",
    )
    health_stale_after: float = Field(
        10.0,
        gt=0,
        le=86400,
        validation_alias="SSE_HEALTH_STALE_AFTER",
        description="seconds without connectome_health before streams get health_stale",
    )

    @property
    def connection_cap(self) -> int:
        """Open sockets per process: streams, plus room for health checks, metrics and refusals."""
        return self.limit_concurrency or self.max_connections + 1024

    @model_validator(mode="after")
    def _secret_length(self) -> Self:
        if self.auth_secret and len(self.auth_secret.encode()) < 32:
            where = "SSE_AUTH_SECRET_FILE" if self.auth_secret_file else "SSE_AUTH_SECRET"
            raise ValueError(
                f"{where}: the secret must be at least 32 bytes (or empty: authentication off)"
            )
        return self

    @field_validator("latest_only")
    @classmethod
    def _latest_only(cls, value: list[str]) -> list[str]:
        for name in value:
            if not is_valid_event_name(name):
                raise ValueError(f"{name!r} is not an event name ([A-Za-z0-9_.-]{{1,64}})")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            problem = origin_problem(origin)
            if problem is not None:
                # Not quoted when it has user info: that may be a password.
                shown = "an entry" if "@" in origin else repr(origin)
                raise ValueError(
                    f"{shown} {problem}: an origin is scheme://host[:port] as a browser "
                    "sends it, so it could never match"
                )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError("must be one of critical, error, warning, info, debug")
        return value.lower()
