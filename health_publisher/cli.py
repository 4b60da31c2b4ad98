"""``health-publisher``: settings from the environment and flags, logging, signals, the loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from connectome_core.logs import setup_logging
from connectome_core.redis_connect import startup_problem
from connectome_core.settings import settings_from_cli
from health_publisher.service import HealthPublisher, PublisherMisconfigured
from health_publisher.settings import PublisherSettings

DESCRIPTION = (
    "Read connectome signals from the Redis stream connectome:signals (consumer group "
    "health-publisher), compute connectome health and publish it as the connectome_health "
    "event. Any number may run; the holder of the leader lease publishes."
)


async def serve(settings: PublisherSettings, install_signal_handlers: bool = True) -> None:
    publisher = HealthPublisher(settings)
    if settings.publisher_metrics_port:
        publisher.metrics.serve(settings.publisher_metrics_port, settings.publisher_metrics_host)
    stop = asyncio.Event()
    if install_signal_handlers:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await publisher.run(stop)
    logging.getLogger("health_publisher").info(
        "stopped: %d events published, %d bad signals%s",
        publisher.published,
        publisher.bad_signals,
        "" if publisher.ever_led else " (stood by the whole time: another publisher led)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from_cli("health-publisher", DESCRIPTION, PublisherSettings, argv)
    if settings is None:
        return 2
    setup_logging(settings.publisher_log_level, settings.log_format)
    # A Redis that cannot work until a setting changes (wrong CA, refused password, an
    # ACL user without PING, an unknown Sentinel master) stops us here with one line;
    # one that is only unreachable for now does not: the loop retries.
    problem = asyncio.run(startup_problem(settings.redis_target()))
    if problem is not None:
        print(f"health-publisher: cannot start: {problem}", file=sys.stderr)
        return 1
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 130
    except PublisherMisconfigured as exc:
        print(f"health-publisher: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
