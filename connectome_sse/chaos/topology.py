"""The local deployment chaos breaks, made from the user's settings.

``connectome_sse.localrun.topology`` runs it: Redis (append-only file on), two
publishers, two gateways and the project's nginx, or the same on Redis Sentinel for the
scenarios that need it. Every process starts with the user's environment, so
their ``SSE_*``/``HEALTH_*``/``PUBLISHER_*`` values apply.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from connectome_core.settings import load_settings
from connectome_sse.localrun.topology import SentinelTopology, Topology
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings

GATEWAYS = 2
PUBLISHERS = 2
CONSUMER_PREFIX = "chaos-publisher"
# The plain topology's Redis keeps its data through "redis-kill", as a production Redis
# with persistence does: the event log is still there when it comes back, so the gateways
# can fill their gap from it. Every write is on disk before its reply (always, not
# everysec): a publish the feed counts as logged is never lost to the kill itself.
REDIS_PERSISTENCE = ("--appendonly", "yes", "--appendfsync", "always")


@dataclass(frozen=True)
class Settings:
    """The settings the processes will run with (the user's environment), for the limits."""

    gateway: GatewaySettings
    publisher: PublisherSettings

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Both processes' settings as they will load them; a bad value raises SettingsError."""
        env = {
            **(os.environ if environ is None else environ),
            # The topology's own Redis, which has no password.
            "REDIS_URL": "redis://127.0.0.1/0",
            "REDIS_PASSWORD_FILE": "",
        }
        return cls(load_settings(GatewaySettings, env), load_settings(PublisherSettings, env))

    @property
    def retry_s(self) -> float:
        return self.gateway.retry_ms / 1000

    @property
    def interval_s(self) -> float:
        return self.publisher.health_interval

    @property
    def lease_s(self) -> float:
        return self.publisher.publisher_lease_ms / 1000

    @property
    def first_health_s(self) -> float:
        """How long a fresh topology may take to publish its first health event."""
        return self.lease_s + self.interval_s + 15


def chaos_topology(
    settings: Settings, template: Path | None = None, sentinel: bool = False
) -> Topology:
    """The topology in a new temp dir, on Redis Sentinel with ``sentinel``; not started."""
    kind = SentinelTopology if sentinel else Topology
    # The gateways' ping as the user's settings give it (the toolkit's shorter one is for tests).
    ping = str(settings.gateway.ping_interval)
    return kind(
        Path(tempfile.mkdtemp(prefix="connectome-chaos-")),
        gateways=GATEWAYS,
        publishers=PUBLISHERS,
        gateway_env={"SSE_PING_INTERVAL": ping},
        consumer_prefix=CONSUMER_PREFIX,
        # Two publishers cannot share the user's metrics port: each gets one of its own.
        publisher_metrics=bool(settings.publisher.publisher_metrics_port),
        nginx_template=template,
        stop_timeout=5.0,
        redis_args=REDIS_PERSISTENCE,
    )
