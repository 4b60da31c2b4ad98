"""HealthPublishers stepped by hand (``run_once``) in white-box tests of the lease and recovery."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from connectome_core.settings import load_settings
from health_publisher.service import HealthPublisher
from health_publisher.settings import PublisherSettings


@contextlib.asynccontextmanager
async def stepped_publishers(
    url: str, env: Mapping[str, str]
) -> AsyncIterator[Callable[..., HealthPublisher]]:
    """A maker of HealthPublishers (consumer ``name``, ``env`` plus its own) for tests that step
    them by hand; every one made is closed when the block ends."""
    made: list[HealthPublisher] = []

    def make(name: str = "pub", **own_env: str) -> HealthPublisher:
        settings = load_settings(
            PublisherSettings, {"REDIS_URL": url, "PUBLISHER_CONSUMER": name, **env, **own_env}
        )
        publisher = HealthPublisher(settings)
        made.append(publisher)
        return publisher

    try:
        yield make
    finally:
        for publisher in made:
            await publisher.close()


async def step_until(publisher: HealthPublisher, done: Callable[[], Any], steps: int = 100) -> None:
    """``run_once`` until ``done()`` holds; fail after ``steps`` steps."""
    for _ in range(steps):
        await publisher.run_once()
        if done():
            return
    raise AssertionError("condition not reached within the steps")
