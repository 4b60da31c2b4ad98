"""Authenticated streams in real headless Chromium against a real gateway and Redis.

A page on the gateway's origin trades a bearer token for a ticket with
``fetch`` and opens ``EventSource("/api/sse?ticket=…")`` (the README's
snippet); a page holding the ``sse_token`` cookie streams without a ticket;
the dashboard without credentials says that sign-in is needed and stops
knocking; the dashboard given ``/#token=…`` streams through tickets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import Page, expect

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.redis_server import RedisServer
from tests.e2e.test_dashboard import payload, publish
from tests.support.chromium import chromium

pytestmark = pytest.mark.e2e

SECONDS = 15_000
SECRET = "browser-test-secret-0123456789abcdef"

# The README's ticket flow, as a page runs it: resolves with the first health event's data.
TICKET_FLOW = """
async (token) => {
  const answer = await fetch("/api/sse/ticket", {
    method: "POST", headers: { Authorization: "Bearer " + token },
  });
  const { ticket } = await answer.json();
  const source = new EventSource("/api/sse?ticket=" + encodeURIComponent(ticket));
  return await new Promise((resolve, reject) => {
    source.addEventListener("connectome_health", (e) => { source.close(); resolve(e.data); });
    source.onerror = () => { source.close(); reject(new Error("stream refused")); };
  });
}
"""


def token(ttl: float = 300, **claims: object) -> str:
    return jwt.encode({"exp": time.time() + ttl, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def gateway(tmp_path: Path, redis_server: RedisServer) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(
        redis_server.url,
        tmp_path / "gateway.log",
        env={"SSE_AUTH_SECRET": SECRET},
        args=("--ping-interval", "1"),
    )
    gateway.start()
    gateway.wait_ready()
    yield gateway
    gateway.stop()


@pytest.fixture
def browser_page() -> Iterator[tuple[Page, list[str]]]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(f"{request.method} {request.url}"))
        yield page, requested
        context.close()


def test_a_page_trades_a_bearer_token_for_a_ticket_and_streams(
    gateway: GatewayProcess, redis_server: RedisServer, browser_page: tuple[Page, list[str]]
) -> None:
    page, requested = browser_page
    publish(redis_server.url, payload("OK", "seen through a ticket", 0.4))
    page.goto(gateway.url + "/healthz")  # any page of the gateway's origin
    data = page.evaluate(TICKET_FLOW, token(events=["connectome_health"]))
    assert "seen through a ticket" in data
    streams = [url for url in requested if "/api/sse?ticket=" in url]
    assert len(streams) == 1 and streams[0].startswith("GET ")
    assert any(url.startswith("POST ") and url.endswith("/api/sse/ticket") for url in requested)


def test_a_page_with_the_cookie_streams_without_a_ticket(
    gateway: GatewayProcess, redis_server: RedisServer, browser_page: tuple[Page, list[str]]
) -> None:
    page, requested = browser_page
    page.context.add_cookies(
        [
            {
                "name": "sse_token",
                "value": token(sub="cookie-user"),
                "domain": "127.0.0.1",
                "path": "/api/sse",  # the README's advice: sent to the stream only
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    page.goto(gateway.url + "/")
    expect(page.locator("#conn")).to_have_text("live", timeout=SECONDS)
    publish(redis_server.url, payload("ERROR", "seen through a cookie", 0.9))
    expect(page.locator("#notes")).to_have_text("seen through a cookie", timeout=SECONDS)
    expect(page.locator("#signin")).to_be_hidden()
    assert not any("ticket" in url for url in requested)


def test_the_dashboard_without_credentials_says_sign_in_is_needed(
    gateway: GatewayProcess, browser_page: tuple[Page, list[str]], tmp_path: Path
) -> None:
    page, requested = browser_page
    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((f"{r.request.method} {r.url}", r.status)))
    page.goto(gateway.url + "/")
    expect(page.locator("#signin")).to_be_visible(timeout=SECONDS)
    expect(page.locator("#signin")).to_contain_text("Sign-in needed")
    expect(page.locator("#signin")).to_contain_text("sse_token")
    expect(page.locator("#signin")).to_contain_text("401")
    expect(page.locator("#conn")).to_have_text("sign-in needed")
    page.screenshot(path=str(tmp_path / "dashboard-sign-in.png"), full_page=True)
    # It learnt the status from the stream request itself (the client reads it with fetch;
    # a 401 opens no stream).
    assert (f"GET {gateway.url}/api/sse", 401) in answers
    knocks = len([url for url in requested if "/api/sse" in url])
    # Absence of retries needs a window: longer than the client's first backoff steps.
    page.wait_for_timeout(6_000)
    assert len([url for url in requested if "/api/sse" in url]) == knocks


def test_the_dashboard_with_a_token_fragment_streams_through_tickets(
    gateway: GatewayProcess, redis_server: RedisServer, browser_page: tuple[Page, list[str]]
) -> None:
    page, requested = browser_page
    page.goto(gateway.url + "/#token=" + token())
    expect(page.locator("#conn")).to_have_text("live", timeout=SECONDS)
    assert page.evaluate("location.hash") == ""  # the token left the address bar
    publish(redis_server.url, payload("OK", "seen through the fragment", 0.1))
    expect(page.locator("#notes")).to_have_text("seen through the fragment", timeout=SECONDS)
    assert any("/api/sse?ticket=" in url for url in requested)
    assert not any("token" in url.split("#")[0] for url in requested)


def test_the_dashboard_with_an_expired_token_says_so(
    gateway: GatewayProcess, browser_page: tuple[Page, list[str]]
) -> None:
    page, _ = browser_page
    page.goto(gateway.url + "/#token=" + token(ttl=-10))
    expect(page.locator("#signin")).to_be_visible(timeout=SECONDS)
    expect(page.locator("#signin")).to_contain_text("token expired")


def test_the_dashboard_stream_ends_with_its_token_then_asks_for_sign_in(
    gateway: GatewayProcess, browser_page: tuple[Page, list[str]]
) -> None:
    page, _ = browser_page
    page.goto(gateway.url + "/#token=" + token(ttl=4))
    expect(page.locator("#conn")).to_have_text("live", timeout=SECONDS)
    # At exp the gateway ends the stream; the new ticket it asks for is refused.
    expect(page.locator("#signin")).to_be_visible(timeout=SECONDS)
    expect(page.locator("#signin")).to_contain_text("token expired")
    expect(page.locator("#conn")).to_have_text("sign-in needed")
