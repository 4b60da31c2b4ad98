"""The fan-out hub: who listens to which events, and handing each frame to them.

It knows neither HTTP nor Redis. Subscribers are offered each frame synchronously, in
publish order, so the fan-out never awaits a client; one that refuses (its bound is
full) or raises is dropped without holding up the others. Closing the hub (draining)
ends every subscription, each with a final frame of its own, and refuses new ones.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Protocol

from connectome_core.logs import RateLimitedLog
from sse_gateway.framing import Frame

log = RateLimitedLog(logging.getLogger("sse_gateway.hub"))


class Subscriber(Protocol):
    def offer(self, frame: Frame) -> bool:
        """Take ``frame`` without blocking; False when the subscriber must be cut."""

    def close(self, final_frame: bytes, reason: str | None = None) -> None:
        """End the stream after ``final_frame``, for ``reason`` (the hub no longer feeds it)."""


class HubClosed(Exception):
    """The hub is draining: no new subscriptions."""


class Subscription:
    """``with hub.subscription(...)``: the subscriber is removed when the block ends.

    A small class rather than a ``@contextmanager`` generator: it lives as long
    as its stream, and a suspended generator and its wrapper cost about half a
    kilobyte a stream.
    """

    __slots__ = ("_hub", "_subscriber")

    def __init__(self, hub: Hub, subscriber: Subscriber) -> None:
        self._hub = hub
        self._subscriber = subscriber

    def __enter__(self) -> Subscriber:
        return self._subscriber

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._hub._remove(self._subscriber)


class Hub:
    def __init__(self, on_cut: Callable[[Subscriber], None] | None = None) -> None:
        # What each subscriber selected (None: every event), and the reverse index
        # that publish() walks: subscribers of every event, and of each named event.
        self._selection: dict[Subscriber, frozenset[str] | None] = {}
        self._everything: set[Subscriber] = set()
        self._by_event: dict[str, set[Subscriber]] = {}
        self._on_cut = on_cut
        self.closed = False

    def __len__(self) -> int:
        return len(self._selection)

    def subscription(
        self, subscriber: Subscriber, events: frozenset[str] | None = None
    ) -> Subscription:
        """Subscribe now, until the ``with`` block ends; ``events=None`` means every event.

        Raises ``HubClosed`` while draining.
        """
        if self.closed:
            raise HubClosed
        self._selection[subscriber] = events
        if events is None:
            self._everything.add(subscriber)
        else:
            for event in events:
                self._by_event.setdefault(event, set()).add(subscriber)
        return Subscription(self, subscriber)

    def _remove(self, subscriber: Subscriber) -> bool:
        if subscriber not in self._selection:
            return False
        events = self._selection.pop(subscriber)
        if events is None:
            self._everything.discard(subscriber)
            return True
        for event in events:
            group = self._by_event.get(event)
            if group is not None:
                group.discard(subscriber)
                if not group:
                    del self._by_event[event]
        return True

    def publish(self, event: str, frame: Frame) -> int:
        """Offer ``frame`` to every subscriber of ``event``; returns how many took it."""
        delivered = self._offer_all(self._everything, frame)
        named = self._by_event.get(event)
        if named:
            delivered += self._offer_all(named, frame)
        return delivered

    def publish_to(self, event: str, frame: Frame, subscribers: Iterable[Subscriber]) -> int:
        """Offer ``frame`` to those of ``subscribers`` still subscribed to ``event``."""
        chosen = [
            s
            for s in subscribers
            if s in self._selection
            and ((selected := self._selection[s]) is None or event in selected)
        ]
        return self._offer_all(chosen, frame) if chosen else 0

    def broadcast(self, frame: Frame) -> int:
        """Offer ``frame`` to every subscriber whatever its selection (pings)."""
        return self._offer_all(self._selection.keys(), frame)

    def _offer_all(self, subscribers: Iterable[Subscriber], frame: Frame) -> int:
        delivered = 0
        cut: list[Subscriber] = []
        failed: list[Subscriber] = []
        for subscriber in subscribers:
            try:
                taken = subscriber.offer(frame)
            except Exception as exc:
                log.warning("offer-failed", "dropped a subscriber whose offer raised: %r", exc)
                failed.append(subscriber)
                continue
            if taken:
                delivered += 1
            else:
                cut.append(subscriber)
        # Removed after the loop: the collections must not change while walked.
        for subscriber in cut:
            if self._remove(subscriber) and self._on_cut is not None:
                self._on_cut(subscriber)
        for subscriber in failed:
            self._remove(subscriber)
            with contextlib.suppress(Exception):
                subscriber.close(b"")
        return delivered

    def close(self, final_frame: Callable[[], bytes], reason: str | None = None) -> None:
        """Refuse new subscriptions and end every stream, each with its own final frame,
        telling each the ``reason``."""
        self.closed = True
        everyone = list(self._selection)
        self._selection.clear()
        self._everything.clear()
        self._by_event.clear()
        for subscriber in everyone:
            try:
                subscriber.close(final_frame(), reason)
            except Exception as exc:  # one broken stream must not keep the others open
                log.warning("close-failed", "closing a subscriber raised: %r", exc)
