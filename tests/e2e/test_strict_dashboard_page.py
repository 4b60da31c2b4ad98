"""A page that behaves like the seed's dashboard stays alive through everything upstream.

The dashboard the service was specified for opens ``new EventSource("/api/sse")``,
listens only for ``connectome_health`` and on the first ``error`` calls
``close()`` and never reconnects. Our page does the same, served at the
project's nginx's origin (playwright answers that one URL; the stream goes
through nginx to two real gateways for real). Two real publishers feed it. A
Redis restart, a publisher failover, a burst of 500 large health events and a
minute of quiet with only pings must not end its stream; the page must keep
rendering the newest health, without one error.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from connectome_core.contract import LEADER_KEY
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.processes import ManagedProcess
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.support.chromium import chromium
from tests.support.nginx import NginxServer
from tests.support.publisher import publisher_process

PAGE = """<!doctype html><meta charset="utf-8"><title>strict dashboard</title>
<div id="health">none</div><script>
window.errors = 0; window.healths = 0; window.newest = null;
const source = new EventSource("/api/sse");
window.source = source;
source.addEventListener("connectome_health", (ev) => {
  const p = JSON.parse(ev.data);
  window.healths += 1; window.newest = p;
  document.getElementById("health").textContent = ev.data.slice(0, 80);
});
source.onerror = () => { window.errors += 1; source.close(); };  // as the seed's dashboard
</script>"""
QUIET_S = 60.0


@pytest.fixture
def stack(tmp_path: Path, own_redis: RedisServer) -> Iterator[dict[str, object]]:
    gateways = [
        GatewayProcess(own_redis.url, tmp_path / f"gateway-{n}.log", env={"SSE_PING_INTERVAL": "5"})
        for n in range(2)
    ]
    publishers: dict[str, ManagedProcess] = {}
    nginx: NginxServer | None = None
    try:
        for gateway in gateways:
            gateway.start()
        for gateway in gateways:
            gateway.wait_ready()
        nginx = NginxServer([f"127.0.0.1:{g.port}" for g in gateways]).start()
        env = {"HEALTH_INTERVAL": "0.5", "PUBLISHER_LEASE_MS": "1500"}
        for name in ("pub-a", "pub-b"):
            publishers[name] = publisher_process(
                own_redis, tmp_path / f"{name}.log", {**env, "PUBLISHER_CONSUMER": name}
            )
        yield {"gateways": gateways, "nginx": nginx, "publishers": publishers, "env": env}
    finally:
        for proc in publishers.values():
            proc.stop()
        if nginx is not None:
            nginx.stop()
        for gateway in gateways:
            gateway.stop()


def alive(page: Page) -> None:
    assert page.evaluate("window.errors") == 0, "the page saw an error and closed its stream"
    assert page.evaluate("window.source.readyState") == 1  # OPEN


def healths_after(page: Page, seen: int, what: str, timeout: float = 30) -> int:
    wait_for(lambda: page.evaluate("window.healths") > seen, timeout, what=what)
    alive(page)
    return int(page.evaluate("window.healths"))


def test_a_close_on_first_error_page_survives_everything_upstream(
    stack: dict[str, object], own_redis: RedisServer, tmp_path: Path
) -> None:
    nginx = stack["nginx"]
    assert isinstance(nginx, NginxServer)
    publishers = stack["publishers"]
    assert isinstance(publishers, dict)
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.route(
            nginx.url + "/strict.html",
            lambda route: route.fulfill(body=PAGE, content_type="text/html; charset=utf-8"),
        )
        page.goto(nginx.url + "/strict.html")
        seen = healths_after(page, 2, "health from the publishers")

        own_redis.restart()  # Redis restarts under everyone
        seen = healths_after(page, seen, "health after the Redis restart", timeout=60)

        with own_redis.client() as client:
            leader = str(client.get(LEADER_KEY) or b"", "utf-8").split(":")[0]
        assert leader in publishers
        publishers[leader].signal(signal.SIGKILL)  # publisher failover
        seen = healths_after(page, seen, "health from the other publisher", timeout=30)

        burst_start = time.time()
        with own_redis.client() as client:
            for n in range(500):  # 500 large health events, as fast as Redis takes them
                body = {"ts": time.time(), "burst": n, "pad": "x" * 32_000}
                client.publish("sse:connectome_health", json.dumps(body))
        burst_end = time.time()

        def newest_after_the_burst() -> bool:
            newest = page.evaluate("window.newest") or {}
            return bool(newest.get("burst") == 499 or newest.get("ts", 0) >= burst_end)

        wait_for(newest_after_the_burst, 30, what="the newest health after the burst")
        assert page.evaluate("window.newest")["ts"] >= burst_start
        alive(page)

        for proc in publishers.values():
            proc.stop()
        deadline = time.monotonic() + QUIET_S  # a minute with only pings
        while time.monotonic() < deadline:
            alive(page)
            page.wait_for_timeout(2000)
        quiet_from = page.evaluate("window.healths")
        restarted = publisher_process(own_redis, tmp_path / "pub-c.log", stack["env"])  # type: ignore[arg-type]
        try:
            healths_after(page, quiet_from, "health from a new publisher", timeout=30)
        finally:
            restarted.stop()
        context.close()
