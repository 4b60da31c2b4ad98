"""The browser client (``/client.js``) in real Chromium, through the project's nginx.

One topology for the module (a Redis of its own, three gateways, nginx) and
one browser; each test has its own browser context, so its tabs share locks
and channels with each other only. The dashboard at ``/`` is the page under
test wherever it can be: it exposes its stream as ``window.connectomeStream``,
and the tests listen on it for the event types they publish.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from connectome_sse.localrun.gateway import GatewayProcess as Gateway
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.topology import Topology
from connectome_sse.localrun.wait import wait_for
from tests.support.browser_pages import (
    OPEN_STREAM,
    RECORD_DASHBOARD,
    Tabs,
    has,
    is_live,
    new_holder,
    page_log,
    received,
    role,
    state,
    states_since,
    wait_live,
)
from tests.support.chromium import chromium
from tests.support.nginx_variants import BUFFERING_AND_GZIP, NginxVariant
from tests.support.page_feed import Feed, payloads, publish
from tests.support.topologies import running

pytestmark = pytest.mark.e2e

GATEWAY_ENV = {
    "SSE_RETRY_MS": "1000",
    "SSE_PING_INTERVAL": "1",
    "SSE_SHUTDOWN_GRACE": "2",
    # No publisher runs here: a silent publisher is not what these tests are about.
    "SSE_HEALTH_STALE_AFTER": "3600",
}

# -- the module's topology and browser -------------------------------------------------


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("client-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[Topology]:
    workdir = tmp_path_factory.mktemp("client-topology")
    topology = Topology(
        workdir, redis, gateways=3, publishers=0, engine=False, gateway_env=GATEWAY_ENV
    )
    with running(topology):
        yield topology


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def tabs(browser: Browser, topology: Topology) -> Iterator[Tabs]:
    restore(topology)
    context = browser.new_context()
    tabs = Tabs(context, topology.nginx.url)
    yield tabs
    context.close()
    assert tabs.errors == [], "uncaught errors in the pages"


def restore(topology: Topology) -> None:
    """Every gateway up and no stream left from an earlier test."""
    for gateway in topology.gateways:
        if not gateway.alive():
            gateway.start()
        wait_for(partial(ready, gateway), 30, what=f"gateway {gateway.port} ready")
    wait_for(lambda: open_streams(topology) == 0, 15, what="no stream left open")


def ready(gateway: Gateway) -> bool:
    try:
        return httpx.get(gateway.url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def open_streams(topology: Topology) -> int:
    """``sse_open_streams`` summed over the gateways that are up."""
    return sum(topology.open_streams(g) for g in topology.gateways if g.alive())


# -- the tests ---------------------------------------------------------------------------


def test_client_js_is_served_through_nginx_as_a_module(topology: Topology) -> None:
    module = Path(__file__).parents[2] / "sse_gateway/static/connectome-stream/connectome-stream.js"
    answer = httpx.get(topology.nginx.url + "/client.js", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.content == module.read_bytes()
    etag = answer.headers["etag"]
    again = httpx.get(topology.nginx.url + "/client.js", headers={"If-None-Match": etag}, timeout=5)
    assert again.status_code == 304 and again.content == b""
    for gateway in topology.gateways:  # every gateway serves the same bytes
        assert httpx.get(gateway.url + "/client.js", timeout=5).headers["etag"] == etag


def test_ten_tabs_hold_one_stream_and_each_shows_every_event_once(
    tabs: Tabs, topology: Topology, redis: RedisServer
) -> None:
    pages = [tabs.open() for _ in range(10)]
    wait_live(*pages)
    wait_for(lambda: open_streams(topology) == 1, 15, what="one stream for ten tabs")
    assert sorted(role(page) for page in pages) == ["follower"] * 9 + ["holder"]
    for page in pages:
        page.evaluate(RECORD_DASHBOARD, ["deploy"])

    deploys = payloads("deploy", 50)
    publish(redis.url, "deploy", deploys)
    marker = payloads("deploy", 1)  # after it, nothing of the 50 can still be on its way
    publish(redis.url, "deploy", marker)
    for page in pages:
        wait_for(partial(has, page, "deploy", marker[0]), 20, what="every deploy")
        assert received(page, "deploy") == deploys + marker
    streams = open_streams(topology)
    print(f"\nten tabs: {streams} open stream(s) on the gateways")
    assert streams == 1


def test_closing_the_holder_tab_hands_over_within_2s_losing_and_repeating_nothing(
    tabs: Tabs, topology: Topology, redis: RedisServer
) -> None:
    pages = [tabs.open() for _ in range(4)]
    wait_live(*pages)
    for page in pages:
        page.evaluate(RECORD_DASHBOARD, ["seq"])
    held: list[float] = []
    live: list[float] = []
    for _ in range(3):  # 4 tabs -> 3 -> 2 -> 1, a handover each time
        holder = next(page for page in pages if role(page) == "holder")
        pages.remove(holder)
        sequence = payloads("seq", 100)
        feed = Feed(redis.url, "seq", sequence, interval=0.02)
        feed.start()
        feed.wait_sent(30)
        closed_ms = time.time() * 1000
        holder.close()
        heir = wait_for(partial(new_holder, pages), 10, what="another tab holding the stream")
        assert heir is not None
        wait_for(partial(is_live, heir), 10, what="the new holder live")
        log = page_log(heir)
        held.append((log["heldAt"] - closed_ms) / 1000)
        live_at = min(at for s, _, at in log["states"] if s == "live" and at >= closed_ms)
        live.append((live_at - closed_ms) / 1000)
        feed.finish()
        for page in pages:
            last = sequence[-1]
            wait_for(partial(has, page, "seq", last), 20, what="the whole run")
            run = [d for d in received(page, "seq") if d in set(sequence)]
            assert run == sequence, "an event lost, repeated or out of order across the handover"
        wait_for(lambda: open_streams(topology) == 1, 15, what="one stream after the handover")
    print(
        f"\nhandover: held after {', '.join(f'{s:.3f}' for s in held)} s"
        f" (median {statistics.median(held):.3f}), live after"
        f" {', '.join(f'{s:.3f}' for s in live)} s (median {statistics.median(live):.3f})"
    )
    assert max(held) <= 2.0


def test_a_holder_that_stops_running_is_replaced_and_steps_down_when_it_wakes(
    tabs: Tabs, topology: Topology, redis: RedisServer
) -> None:
    pages = [tabs.open() for _ in range(3)]
    wait_live(*pages)
    for page in pages:
        page.evaluate(RECORD_DASHBOARD, ["seq"])
    holder = next(page for page in pages if role(page) == "holder")
    followers = [page for page in pages if page is not holder]
    # The holder's page stops running, as a frozen tab (or one stuck in a long task) does:
    # paused in the debugger. (Chromium freezes only hidden pages, and headless pages are
    # never hidden.) It keeps its lock and its connection; it only stops answering.
    cdp = tabs.context.new_cdp_session(holder)
    cdp.send("Debugger.enable")
    frozen_ms = time.time() * 1000
    cdp.send("Debugger.pause")
    heir = wait_for(partial(new_holder, followers), 10, what="a follower taking the stream")
    assert heir is not None
    print(f"\nstopped holder replaced after {(page_log(heir)['heldAt'] - frozen_ms) / 1000:.3f} s")
    wait_for(lambda: state(heir) == "live", 10, what="the new holder live")
    sequence = payloads("seq", 30)
    publish(redis.url, "seq", sequence, interval=0.01)
    for page in followers:
        wait_for(partial(has, page, "seq", sequence[-1]), 20, what="the events")
        assert [d for d in received(page, "seq") if d in set(sequence)] == sequence
    cdp.send("Debugger.resume")
    wait_for(lambda: role(holder) == "follower", 10, what="the woken tab following")
    wait_for(lambda: open_streams(topology) == 1, 15, what="its old stream closed")
    after = payloads("seq", 3)
    publish(redis.url, "seq", after)
    for page in pages:
        wait_for(partial(has, page, "seq", after[-1]), 20, what="events after waking")
        assert [d for d in received(page, "seq") if d in set(after)] == after


def holding_gateway(topology: Topology) -> Gateway:
    def holding() -> Gateway | None:
        return next((g for g in topology.gateways if topology.open_streams(g) == 1), None)

    gateway = wait_for(holding, 15, what="the gateway holding the stream")
    assert gateway is not None
    return gateway


@pytest.mark.parametrize("fault", ["drain", "kill"])
def test_a_gateway_that_goes_away_costs_a_reconnection_and_no_event(
    fault: str, tabs: Tabs, topology: Topology, redis: RedisServer
) -> None:
    page = tabs.open()
    wait_live(page)
    page.evaluate(RECORD_DASHBOARD, ["seq", "resync"])
    gateway = holding_gateway(topology)
    sequence = payloads("seq", 120)
    feed = Feed(redis.url, "seq", sequence, interval=0.02)
    feed.start()
    feed.wait_sent(40)
    fault_ms = time.time() * 1000
    gateway.signal(signal.SIGTERM if fault == "drain" else signal.SIGKILL)
    wait_for(lambda: "reconnecting" in states_since(page, fault_ms), 15, what="reconnecting")
    wait_for(lambda: states_since(page, fault_ms)[-1] == "live", 20, what="live again")
    feed.finish()
    wait_for(lambda: sequence[-1] in received(page, "seq"), 20, what="the whole run")
    got = received(page, "seq")
    # The snapshot an earlier test left may land just after recording began; from this
    # run's first event on, nothing else may come.
    first = got.index(sequence[0]) if sequence[0] in got else 0
    assert all(d not in sequence for d in got[:first]), "this run's events before its first"
    assert got[first:] == sequence, "an event lost, repeated or out of order"
    assert received(page, "resync") == []
    assert gateway.wait(15) is not None  # it did go away
    print(f"\n{fault}: states after the fault {states_since(page, fault_ms)}")


def test_a_redis_restart_keeps_the_stream_live_and_brings_what_was_published_after(
    tabs: Tabs, topology: Topology, redis: RedisServer
) -> None:
    page = tabs.open()
    wait_live(page)
    page.evaluate(RECORD_DASHBOARD, ["note"])
    restart_ms = time.time() * 1000
    redis.restart()
    # Published at once: whether a gateway is subscribed again by then or not, the stream
    # gets it (live, or in the snapshots the gateways re-send once they are back).
    note = payloads("note", 1)
    publish(redis.url, "note", note)
    wait_for(lambda: note[0] in received(page, "note"), 30, what="the note after the restart")
    assert states_since(page, restart_ms) == [], "a Redis restart must not end the stream"
    assert state(page) == "live"
    for gateway in topology.gateways:
        wait_for(partial(ready, gateway), 30, what="gateways back on Redis")


def test_a_proxy_that_holds_the_stream_makes_it_stale_then_reopened(
    tabs: Tabs, topology: Topology
) -> None:
    # Buffering on, X-Accel-Buffering ignored, gzip on for event streams: not even the
    # head of the answer comes through.
    nginx = NginxVariant([g.address for g in topology.gateways], BUFFERING_AND_GZIP).start()
    try:
        tabs.url = nginx.url
        page = tabs.open("/healthz")  # any page of that origin
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url) if "/api/sse" in r.url else None)
        page.evaluate(OPEN_STREAM, [{"pingInterval": 1, "events": ["none"]}, []])
        wait_for(lambda: len(page_log(page)["errors"]) >= 2, 15, what="the stream reopened")
        assert len(requests) >= 2
        assert all(e["message"] == "no answer in 2 s" for e in page_log(page)["errors"])
        states = page_log(page)["states"]
        assert [s for s, _, _ in states][:3] == ["connecting", "stale", "reconnecting"]
        sent_at = states[0][2]  # "connecting": the request goes out
        stale_at, reason = states[1][2], states[1][1]
        assert reason == "silent"
        print(f"\nbuffering proxy: stale {(stale_at - sent_at) / 1000:.2f} s after the request")
        # Two ping intervals of 1 s without one, and the watchdog looks four times a second.
        assert 2000 <= stale_at - sent_at <= 2000 + 1000
    finally:
        nginx.stop()


def test_a_frozen_gateway_makes_the_stream_stale_then_it_moves_on_losing_nothing(
    tabs: Tabs, topology: Topology, redis: RedisServer
) -> None:
    page = tabs.open()
    wait_live(page)
    page.evaluate(RECORD_DASHBOARD, ["seq", "resync"])
    # The dashboard names no ping interval: its client learns it from two pings.
    wait_for(lambda: page.evaluate("window.connectomeStream.learnedPing"), 10, what="learnt")
    gateway = holding_gateway(topology)
    sequence = payloads("seq", 120)
    feed = Feed(redis.url, "seq", sequence, interval=0.02)
    feed.start()
    feed.wait_sent(20)
    frozen_ms = time.time() * 1000
    gateway.signal(signal.SIGSTOP)  # its connections stay open, and say nothing
    try:
        wait_for(lambda: "stale" in states_since(page, frozen_ms), 10, what="stale")
        wait_for(lambda: states_since(page, frozen_ms)[-1:] == ["live"], 20, what="live again")
        feed.finish()
        wait_for(lambda: sequence[-1] in received(page, "seq"), 20, what="the whole run")
    finally:
        gateway.signal(signal.SIGCONT)
    assert received(page, "seq") == sequence, "an event lost, repeated or out of order"
    assert received(page, "resync") == []
    log = page_log(page)["states"]
    stale_at = next(at for s, r, at in log if s == "stale" and r == "silent" and at >= frozen_ms)
    print(f"\nfrozen gateway: stale {(stale_at - frozen_ms) / 1000:.2f} s after SIGSTOP,"
          f" states {states_since(page, frozen_ms)}")  # fmt: skip
    # The last ping came at most one interval before the freeze: two intervals after it.
    assert stale_at - frozen_ms <= 2000 + 1000
