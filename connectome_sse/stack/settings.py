"""The settings of ``up`` and of every child it will start, all checked before anything starts.

Each child loads its settings again from the environment ``up`` hands it; here
they are loaded from that same environment first, so a bad value is one line
and exit 2 rather than a started stack whose gateway dies.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, field_validator

from connectome_core.settings import (
    DEFAULT_REDIS_URL,
    RedisSettings,
    load_settings,
    settings_from_args,
    to_environ,
)
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings

# The gateway's settings that ``up`` also takes as flags.
GATEWAY_FLAGS = ("host", "port", "workers")
# With the publisher's default window (300 s) one demo violation holds the dashboard
# at ERROR for five minutes; a first look should show health changing.
DEMO_HEALTH_WINDOW = "15"


class UpSettings(RedisSettings):
    """``up``'s own: which Redis. Every other setting passes through to the children."""

    owned_prefixes: ClassVar[tuple[str, ...]] = ()

    # Optional here alone: without it ``up`` starts its own Redis.
    redis_url: str | None = Field(  # type: ignore[assignment]
        None,
        repr=False,  # may hold a password: never echoed
        validation_alias="REDIS_URL",
        description="use this Redis instead of starting one",
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None


@dataclass(frozen=True)
class StackSettings:
    up: UpSettings
    gateway: GatewaySettings
    publisher: PublisherSettings
    # What every child gets on top of up's environment (Redis settings, LOG_FORMAT).
    child_environ: Mapping[str, str]

    @property
    def own_redis(self) -> bool:
        return self.up.redis_url is None


def load_stack_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> StackSettings:
    """Every process's settings from ``environ`` and ``up``'s flags; SettingsError names one."""
    up = settings_from_args(UpSettings, args, environ)
    child_environ = {
        key: value
        for key, value in to_environ(up).items()
        if key.startswith("REDIS_") or key == "LOG_FORMAT"
    }
    if up.redis_url is None:
        # The Redis up starts has no password; its URL is known once it runs.
        child_environ.pop("REDIS_URL", None)
        child_environ["REDIS_PASSWORD_FILE"] = ""
    check = {**environ, "REDIS_URL": DEFAULT_REDIS_URL, **child_environ}
    flags = {name: getattr(args, name, None) for name in GATEWAY_FLAGS}
    gateway = load_settings(GatewaySettings, check, flags)
    publisher = load_settings(PublisherSettings, {"HEALTH_WINDOW": DEMO_HEALTH_WINDOW, **check})
    return StackSettings(up, gateway, publisher, child_environ)
