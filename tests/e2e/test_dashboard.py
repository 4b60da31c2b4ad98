"""The dashboard at `/` in real headless Chromium, fed by a real gateway and Redis.

A published ERROR payload with a note shows on the page within seconds, then
an OK one; the chart gains points; a stale event turns the age red; nothing is
fetched from another host. Screenshots land in the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from playwright.sync_api import Page, expect

from connectome_core.payload import example_health_payload
from connectome_core.publishing import publish_event
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.redis_server import RedisServer
from tests.support.chromium import chromium

SECONDS = 15_000  # playwright's expect() timeout, in ms: generous for a shared 2-core machine


@pytest.fixture
def gateway(tmp_path: Path, redis_server: RedisServer) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(
        redis_server.url, tmp_path / "gateway.log", args=("--ping-interval", "1")
    )
    gateway.start()
    gateway.wait_ready()
    yield gateway
    gateway.stop()


@pytest.fixture
def page(gateway: GatewayProcess) -> Iterator[tuple[Page, list[str]]]:
    """The dashboard open in Chromium, with the list of every URL it requested."""
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(gateway.url + "/")
        yield page, requested
        context.close()


def publish(redis_url: str, data: str) -> None:
    """publish_event, in a thread of its own: playwright's sync API owns this thread's loop."""

    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await publish_event(client, "connectome_health", data)
        finally:
            await client.aclose()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, go()).result(timeout=30)


def payload(state: str, note: str, pressure: float, ts: float | None = None) -> str:
    body = json.loads(example_health_payload(ts=ts or time.time(), state="OK").to_json())
    body["status"] = {"state": state, "score": {"OK": 1.0, "ERROR": 0.0}[state], "notes": [note]}
    body["runner"]["tick"] = 1234
    body["counters"]["query_write_attempts"] = 2
    body["pressure"] = {
        "contradiction": pressure,
        "top_edges": [
            {"from": "n1", "to": "n7", "polarity": -0.8, "strength": 0.9,
             "confidence": 0.7, "contrib": 0.5},
        ],
    }  # fmt: skip
    return json.dumps(body)


def test_error_then_ok_shows_live_with_chart_and_screenshot(
    page: tuple[Page, list[str]], redis_server: RedisServer, gateway: GatewayProcess, tmp_path: Path
) -> None:
    tab, requested = page
    expect(tab.locator("#conn")).to_have_text("live", timeout=SECONDS)

    publish(redis_server.url, payload("ERROR", "query write attempt in the last 15 s", 0.82))
    expect(tab.locator("#state")).to_have_text("ERROR", timeout=SECONDS)
    expect(tab.locator("#state")).to_have_class("ERROR")
    expect(tab.locator("#notes")).to_contain_text("query write attempt in the last 15 s")
    expect(tab.locator("#tick")).to_have_text("1234")
    expect(tab.locator("#c-query")).to_have_text("2")
    expect(tab.locator("#pressure")).to_have_text("0.82")
    expect(tab.locator("#edges")).to_contain_text("n1 → n7")
    tab.screenshot(path=str(tmp_path / "dashboard-error.png"), full_page=True)

    publish(redis_server.url, payload("OK", "all clear", 0.1))
    expect(tab.locator("#state")).to_have_text("OK", timeout=SECONDS)
    expect(tab.locator("#notes")).to_have_text("all clear")
    expect(tab.locator("#age")).to_have_class("pill live")
    expect(tab.locator("#ping")).to_contain_text("redis up", timeout=SECONDS)

    points = tab.locator("#chart").get_attribute("data-points")
    assert points is not None and int(points) >= 2
    assert len((tab.locator("#line-score").get_attribute("points") or "").split()) >= 4
    tab.screenshot(path=str(tmp_path / "dashboard-ok.png"), full_page=True)
    assert (tmp_path / "dashboard-ok.png").stat().st_size > 10_000

    gateway_host = urlsplit(gateway.url).netloc
    foreign = [url for url in requested if urlsplit(url).netloc not in (gateway_host, "")]
    assert foreign == [], f"the page fetched from other hosts: {foreign}"


def test_an_old_health_event_turns_the_age_red(
    page: tuple[Page, list[str]], redis_server: RedisServer
) -> None:
    tab, _ = page
    expect(tab.locator("#conn")).to_have_text("live", timeout=SECONDS)
    publish(redis_server.url, payload("OK", "from a minute ago", 0.2, ts=time.time() - 60))
    expect(tab.locator("#notes")).to_have_text("from a minute ago", timeout=SECONDS)
    expect(tab.locator("#age")).to_have_class("pill stale", timeout=SECONDS)
    expect(tab.locator("#age")).to_contain_text("1 min")


def test_partial_payload_from_redis_cli_is_shown(
    page: tuple[Page, list[str]], redis_server: RedisServer
) -> None:
    """A bare `redis-cli publish sse:connectome_health '{"status":{"state":"WARN"}}'` must show."""
    tab, _ = page
    expect(tab.locator("#conn")).to_have_text("live", timeout=SECONDS)
    with redis_server.client() as client:
        client.publish("sse:connectome_health", '{"status":{"state":"WARN"}}')
    expect(tab.locator("#state")).to_have_text("WARN", timeout=SECONDS)
    expect(tab.locator("#score")).to_have_text("—")


def test_phone_sized_screen(
    gateway: GatewayProcess, redis_server: RedisServer, tmp_path: Path
) -> None:
    publish(redis_server.url, payload("ERROR", "seen on a phone", 0.6))
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        tab = context.new_page()
        tab.goto(gateway.url + "/")
        expect(tab.locator("#notes")).to_have_text("seen on a phone", timeout=SECONDS)
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert tab.evaluate("document.documentElement.scrollWidth") <= 390
        tab.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
        context.close()


def test_connection_state_follows_the_gateway(
    page: tuple[Page, list[str]], gateway: GatewayProcess, redis_server: RedisServer
) -> None:
    tab, _ = page
    expect(tab.locator("#conn")).to_have_text("live", timeout=SECONDS)
    gateway.stop()
    expect(tab.locator("#conn")).to_have_text(re.compile("reconnecting|closed"), timeout=SECONDS)
    replacement = GatewayProcess(
        redis_server.url, gateway.log_path.with_name("gateway-2.log"), port=gateway.port
    )
    try:
        replacement.start()
        replacement.wait_ready()
        expect(tab.locator("#conn")).to_have_text("live", timeout=30_000)
        publish(redis_server.url, payload("ERROR", "after the restart", 0.3))
        expect(tab.locator("#notes")).to_have_text("after the restart", timeout=SECONDS)
    finally:
        replacement.stop()
