"""The browser client against refusals it must ride out: 429 with Retry-After, and 401.

Real Chromium, one real gateway with authentication on and one stream per client
address, behind the project's nginx. The page (any page of nginx's origin) opens
its stream with ``getTicket`` that trades a bearer token for a one-time ticket,
as a web app would; the client asks it again before every connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
import redis
from playwright.sync_api import Browser, Page

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.support.browser_pages import RECORDER, page_log, state
from tests.support.chromium import chromium
from tests.support.nginx import NginxServer
from tests.support.raw_stream import RawStream

pytestmark = pytest.mark.e2e

SECRET = "browser-client-test-secret-0123456789abcdef"
RETRY_AFTER_S = 3

# getTicket as a web app writes it; the first ticket may be given (one already spent).
OPEN_WITH_TICKETS = f"""async ([token, firstTicket]) => {{
  {RECORDER}
  const {{ ConnectomeStream }} = await import("/client.js");
  window.tickets = [];
  async function getTicket() {{
    if (firstTicket && window.tickets.length === 0) {{
      window.tickets.push("given");
      return firstTicket;
    }}
    const r = await fetch("/api/sse/ticket", {{
      method: "POST", headers: {{ Authorization: "Bearer " + token }},
    }});
    window.tickets.push(r.status);
    if (r.status !== 201) throw Object.assign(new Error("no ticket"), {{ status: r.status }});
    return (await r.json()).ticket;
  }}
  window.connectomeStream = new ConnectomeStream("/api/sse", {{ getTicket, events: ["note"] }});
  record(window.connectomeStream, ["note"]);
}}"""


def token(ttl: float = 300) -> str:
    return jwt.encode({"exp": time.time() + ttl, "sub": "browser"}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    """(the gateway, nginx's URL)."""
    workdir = tmp_path_factory.mktemp("client-auth")
    server = RedisServer(workdir / "redis").start()
    gateway = GatewayProcess(
        server.url,
        workdir / "gateway.log",
        env={
            "SSE_AUTH_SECRET": SECRET,
            "SSE_MAX_STREAMS_PER_CLIENT": "1",
            "SSE_RETRY_MS": str(RETRY_AFTER_S * 1000),  # the Retry-After of a 429
            "SSE_PING_INTERVAL": "1",
            "SSE_HEALTH_STALE_AFTER": "3600",
        },
    )
    nginx = NginxServer([f"127.0.0.1:{gateway.port}"])
    try:
        gateway.start()
        gateway.wait_ready()
        nginx.start()
        yield gateway, nginx.url
    finally:
        nginx.stop()
        gateway.stop()
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, stack: tuple[GatewayProcess, str]) -> Iterator[Page]:
    gateway, url = stack
    wait_for(lambda: gateway.metric("sse_open_streams") == 0, 15, what="no stream left")
    context = browser.new_context()
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url + "/healthz")  # any page of nginx's origin
    yield page
    context.close()
    assert errors == [], "uncaught errors in the page"


def states(page: Page) -> list[str]:
    return [s for s, _, _ in page_log(page)["states"]]


def test_a_429_is_waited_out_for_its_retry_after_then_the_stream_opens(
    page: Page, stack: tuple[GatewayProcess, str]
) -> None:
    gateway, _ = stack
    # Another stream from this address holds its only slot (directly on the gateway: the
    # address is 127.0.0.1 both ways, nginx passing it on).
    holder = RawStream(gateway.port, headers=[("Authorization", f"Bearer {token()}")])
    try:
        assert holder.status == 200
        page.evaluate(OPEN_WITH_TICKETS, [token(), None])
        wait_for(lambda: page_log(page)["errors"], 15, what="the refusal")
    finally:
        holder.close()  # the slot is free again long before the client comes back
    wait_for(lambda: state(page) == "live", 15, what="live after the wait")
    log = page_log(page)
    refusal = log["errors"][0]
    assert (refusal["during"], refusal["status"]) == ("stream", 429)
    assert refusal["retryIn"] >= RETRY_AFTER_S * 1000
    live_at = next(at for s, _, at in log["states"] if s == "live")
    print(f"\n429: came back {(live_at - refusal['at']) / 1000:.2f} s after the refusal")
    assert live_at - refusal["at"] >= RETRY_AFTER_S * 1000
    assert states(page) == ["connecting", "reconnecting", "live"]
    # The refused attempt spent its ticket: the next one had a fresh one.
    assert page.evaluate("window.tickets") == [201, 201]


def test_a_401_for_a_spent_ticket_gets_a_fresh_one_from_get_ticket(
    page: Page, stack: tuple[GatewayProcess, str]
) -> None:
    gateway, url = stack
    answer = httpx.post(
        url + "/api/sse/ticket", headers={"Authorization": f"Bearer {token()}"}, timeout=5
    )
    assert answer.status_code == 201
    spent = answer.json()["ticket"]
    first = RawStream(gateway.port, path=f"/api/sse?ticket={spent}")
    assert first.status == 200
    first.close()
    wait_for(lambda: gateway.metric("sse_open_streams") == 0, 15, what="its slot free")

    page.evaluate(OPEN_WITH_TICKETS, [token(), spent])
    wait_for(lambda: state(page) == "live", 15, what="live with a fresh ticket")
    log = page_log(page)
    assert [(e["during"], e["status"]) for e in log["errors"]] == [("stream", 401)]
    assert states(page) == ["connecting", "reconnecting", "live"]
    assert page.evaluate("window.tickets") == ["given", 201]
    # ... and it streams: a note published now reaches the page.
    with redis.Redis.from_url(gateway.env["REDIS_URL"]) as client:
        client.publish("sse:note", '{"hello": 1}')
    wait_for(lambda: page_log(page)["events"], 15, what="the note")
    assert page_log(page)["events"][0][:2] == ["note", '{"hello": 1}']
