"""Test doubles for what the gateway's parts call out to: a hub subscriber, a source listener."""

from __future__ import annotations

from sse_gateway.framing import Frame


class Recorder:
    """A hub subscriber that keeps every frame's bytes; full (refusing) at ``capacity``."""

    def __init__(self, capacity: int | None = None) -> None:
        self.frames: list[bytes] = []
        self.capacity = capacity
        self.final: bytes | None = None
        self.reason: str | None = None

    def offer(self, frame: Frame) -> bool:
        if self.capacity is not None and len(self.frames) >= self.capacity:
            return False
        self.frames.append(frame.data)
        return True

    def close(self, final_frame: bytes, reason: str | None = None) -> None:
        self.final = final_frame
        self.reason = reason

    def data(self, event: str) -> list[str]:
        """The data of every ``event`` frame."""
        prefix = f"event: {event}\ndata: ".encode()
        # Relayed frames open with their id: line.
        frames = [f.split(b"\n", 1)[1] if f.startswith(b"id: ") else f for f in self.frames]
        return [f[len(prefix) :].rstrip(b"\n").decode() for f in frames if f.startswith(prefix)]


class Listener:
    """A Redis source's listener that logs connects and disconnects and keeps the messages."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.messages: list[tuple[str, bytes]] = []

    def on_message(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))

    def on_connected(self, resumed: bool = False) -> None:
        self.log.append("resumed" if resumed else "connected")

    def on_disconnected(self) -> None:
        self.log.append("disconnected")
