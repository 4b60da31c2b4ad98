"""Real headless Chromium through the playwright package, using the system's browser.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (installed by
``scripts/test``); a missing one fails the test loudly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

from connectome_sse.localrun.redis_server import require_program

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """The browser, launched with ``CHROMIUM_ARGS`` and ``extra_args`` (Chromium switches)."""
    executable = require_program("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()
