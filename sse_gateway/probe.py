"""The path probe: ``GET /api/sse?probe=1``, a stream that shows what lies between.

A probe stream gets ``event: probe`` (``{"n": 0|1|2, "ts": …}``) 0, 1 and 2 seconds after
it starts, then only pings: ``connectome-sse doctor`` reads from the far side of every
proxy whether they arrive a second apart (nothing buffers) and whether an idle stream
is cut. The probes are offered from loop timers, as the hub offers any frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from connectome_core.contract import PROBE_EVENT
from sse_gateway.framing import Frame, encode_json_event
from sse_gateway.hub import Subscriber

# Seconds after the response starts at which probe n = 0, 1, 2 is sent.
PROBE_OFFSETS = (0.0, 1.0, 2.0)


def probe_frame(n: int, ts: float) -> Frame:
    return Frame(encode_json_event(PROBE_EVENT, {"n": n, "ts": round(ts, 3)}))


class ProbeSchedule:
    """Offers probe ``n`` to ``stream`` at ``PROBE_OFFSETS[n]`` seconds after ``start()``.

    ``cancel()`` (idempotent) stops whatever has not been sent yet; call it when
    the stream ends. A probe the stream refuses (it is full and cuts itself) ends
    the schedule too: the stream is over.
    """

    def __init__(self, stream: Subscriber, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.clock = clock
        self.sent = 0
        self._timers: list[asyncio.TimerHandle] = []

    def start(self) -> ProbeSchedule:
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._timers = [
            loop.call_at(began + offset, self._send, n) for n, offset in enumerate(PROBE_OFFSETS)
        ]
        return self

    def __enter__(self) -> ProbeSchedule:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def _send(self, n: int) -> None:
        if not self.stream.offer(probe_frame(n, self.clock())):
            self.cancel()
            return
        self.sent += 1

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []


def probes_for(stream: Subscriber, wanted: bool) -> contextlib.AbstractContextManager[object]:
    """The probes of ``stream`` for the duration of a ``with`` block, if ``wanted``."""
    if not wanted:
        return contextlib.nullcontext()
    return ProbeSchedule(stream)
