"""Redis settings of the one-shot CLI commands (``publish``): ``REDIS_URL`` or ``--redis-url``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AnyUrl, Field, field_validator

from connectome_sse.settings import ProcessSettings


class CliRedisSettings(ProcessSettings):
    owned_prefixes: ClassVar[tuple[str, ...]] = ()

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias="REDIS_URL", description="Redis to publish to"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if AnyUrl(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value
