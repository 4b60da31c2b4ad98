"""Draining on SIGTERM/SIGINT, before the server starts waiting for open streams.

uvicorn waits for every open connection before its lifespan shutdown, which for endless
streams means its timeout; so the gateway's handler schedules ``drain`` first, then hands
the signal on to the server's own handler.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def drain_on_signals(drain: Callable[[], None]) -> Callable[[], None]:
    """Chain ``drain`` in front of the current handlers; returns the function that undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals only reach the main thread (e.g. tests run apps elsewhere)
    loop = asyncio.get_running_loop()
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def handler(sig: int, frame: FrameType | None) -> None:
        # Signal handlers may interrupt the loop mid-step: run drain as a loop callback.
        loop.call_soon_threadsafe(drain)
        chained = previous.get(sig)
        if callable(chained):
            chained(sig, frame)

    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before if handler_before is not None else signal.SIG_DFL)

    return restore
