"""The dashboard tells a silent publisher apart from a lost Redis and a lost stream.

Real Chromium, a real gateway and Redis, no publisher: the page shows
"publisher silent for N s" while its stream stays live and Redis up, and a
health event ends it. A screenshot lands in the test's temporary folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.redis_server import RedisServer
from tests.e2e.test_dashboard import SECONDS, payload, publish
from tests.support.chromium import chromium


@pytest.fixture
def gateway(tmp_path: Path, redis_server: RedisServer) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(
        redis_server.url,
        tmp_path / "gateway.log",
        env={"SSE_HEALTH_STALE_AFTER": "2", "SSE_PING_INTERVAL": "1"},
    )
    gateway.start()
    gateway.wait_ready()
    yield gateway
    gateway.stop()


@pytest.fixture
def tab(gateway: GatewayProcess) -> Iterator[Page]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.goto(gateway.url + "/")
        yield page
        context.close()


def test_a_silent_publisher_is_shown_as_such_and_a_health_ends_it(
    tab: Page, redis_server: RedisServer, tmp_path: Path
) -> None:
    expect(tab.locator("#conn")).to_have_text("live", timeout=SECONDS)
    publish(redis_server.url, payload("OK", "the last word", 0.1))
    expect(tab.locator("#notes")).to_have_text("the last word", timeout=SECONDS)
    publisher = tab.locator("#publisher")
    expect(publisher).to_be_hidden()
    # No publisher speaks now: the gateway says so after SSE_HEALTH_STALE_AFTER.
    expect(publisher).to_be_visible(timeout=SECONDS)
    expect(publisher).to_have_text(re.compile(r"publisher silent for \d+ s"))
    expect(publisher).to_have_text(re.compile(r"publisher silent for ([3-9]|\d\d+) s"))
    # ... and it is not mistaken for the other two failures.
    expect(tab.locator("#conn")).to_have_text("live")
    expect(tab.locator("#ping")).to_contain_text("redis up", timeout=SECONDS)
    tab.screenshot(path=str(tmp_path / "dashboard-publisher-silent.png"), full_page=True)
    assert (tmp_path / "dashboard-publisher-silent.png").stat().st_size > 10_000
    publish(redis_server.url, payload("OK", "back again", 0.1))
    expect(tab.locator("#notes")).to_have_text("back again", timeout=SECONDS)
    expect(publisher).to_be_hidden()


def test_a_page_opened_while_the_publisher_is_silent_shows_it(
    gateway: GatewayProcess, redis_server: RedisServer
) -> None:
    with redis_server.client() as client:
        client.set("sse:last:connectome_health", payload("OK", "old snapshot", 0.1))
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.goto(gateway.url + "/")
        expect(page.locator("#notes")).to_have_text("old snapshot", timeout=SECONDS)
        expect(page.locator("#publisher")).to_have_text(
            re.compile(r"publisher silent for \d+ s"), timeout=SECONDS
        )
        context.close()
