"""Redis server time seen from this process: stream ids are server milliseconds."""

from __future__ import annotations

from collections.abc import Callable

from health_publisher.reader import id_key, id_ms


class ServerClock:
    """The local wall clock plus the offset to Redis's, measured by ``TIME`` at each connect."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self.wall = wall
        self.offset = 0.0  # Redis server time minus local wall time

    def measured(self, before: float, server: float, after: float) -> None:
        """Take the offset from a ``TIME`` answer that came between ``before`` and ``after``."""
        self.offset = server - (before + after) / 2.0

    def server_ms(self, ago: float = 0.0) -> int:
        """Redis server time ``ago`` seconds ago, in ms (stream-id time)."""
        return max(0, int((self.wall() + self.offset - ago) * 1000))

    def entry_time(self, eid: bytes) -> float:
        """When an entry was written, on the local wall clock."""
        return id_ms(eid) / 1000.0 - self.offset

    def window_start_id(self, window: float, applied: bytes | None) -> str:
        """Where history that matters begins: ``window`` seconds ago, or after ``applied``."""
        start = f"{self.server_ms(window)}-0"
        if applied is not None and id_key(applied) > id_key(start):
            return applied.decode()
        return start
