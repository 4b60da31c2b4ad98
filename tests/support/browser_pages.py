"""Pages under test in Chromium: tabs of one context, and what a page's stream saw.

``RECORDER`` is installed in a page on its stream (``window.connectomeStream``)
and keeps its states, errors and events in ``window.log``; the functions below
read them back.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from playwright.sync_api import BrowserContext, Page

from connectome_sse.localrun.wait import wait_for

# Installed in a page on its stream (window.connectomeStream): what it saw, and when.
RECORDER = """
function record(s, types) {
  const log = { states: [], errors: [], events: [], heldAt: null };
  window.log = log;
  s.on("state", (state, info) => log.states.push([state, info.reason, Date.now()]));
  s.on("error", (e) => log.errors.push({ ...e, at: Date.now() }));
  for (const type of types) s.on(type, (e) => log.events.push([e.type, e.data, e.id]));
  const look = () => { if (s.role === "holder" && log.heldAt === null) log.heldAt = Date.now(); };
  look();
  setInterval(look, 5);
}
"""
RECORD_DASHBOARD = f"(types) => {{ {RECORDER}; record(window.connectomeStream, types); }}"
# A page of the gateway's origin that opens a stream of its own with these options.
OPEN_STREAM = f"""async ([options, types]) => {{
  {RECORDER}
  const {{ ConnectomeStream }} = await import("/client.js");
  window.connectomeStream = new ConnectomeStream("/api/sse", options);
  record(window.connectomeStream, types);
}}"""


class Tabs:
    """Pages of one browser context (one "browser" as far as locks and channels go)."""

    def __init__(self, context: BrowserContext, url: str) -> None:
        self.context = context
        self.url = url
        self.errors: list[str] = []

    def open(self, path: str = "/") -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        page.goto(self.url + path)
        return page


def state(page: Page) -> str:
    return str(page.evaluate("window.connectomeStream && window.connectomeStream.state"))


def is_live(page: Page) -> bool:
    return state(page) == "live"


def role(page: Page) -> str:
    return str(page.evaluate("window.connectomeStream.role"))


def page_log(page: Page) -> dict[str, Any]:
    log = page.evaluate("window.log")
    assert isinstance(log, dict)
    return log


def received(page: Page, event: str) -> list[str]:
    return [data for type_, data, _ in page_log(page)["events"] if type_ == event]


def has(page: Page, event: str, data: str) -> bool:
    return data in received(page, event)


def new_holder(pages: list[Page]) -> Page | None:
    """The tab among ``pages`` that took the stream (none of them held it before)."""
    return next((page for page in pages if page_log(page)["heldAt"] is not None), None)


def states_since(page: Page, since_ms: float) -> list[str]:
    return [s for s, _, at in page_log(page)["states"] if at >= since_ms]


def wait_live(*pages: Page) -> None:
    for page in pages:
        wait_for(partial(is_live, page), 20, what="the page's stream live")
