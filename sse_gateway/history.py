"""Event ids and the per-process history a stream resumes from.

An id is a hash of the event name and the data, the same on every replica. The history
keeps, per type, the newest entries; ``replay`` says exactly what a stream missed after
an id, or None (ambiguous, outside its types, or gone from the history): never a silent
gap. Memory is capped in bytes counted as what the history really holds.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque

from sse_gateway.framing import Frame

MAX_TYPES = 64
DEFAULT_MAX_BYTES = 32 * 1024 * 1024

# Measured on CPython 3.11 (tests/unit/test_history.py checks the total against tracemalloc):
# an entry's 4-tuple, its id string, its seq int, its deque slot and its slot in the id index;
ENTRY_COST = 224
# a frame's object, the headers of its two bytes objects and of its event name.
FRAME_COST = 168

# (seq, id, frame: None once a newer latest-only one came, event type)
Entry = tuple[int, str, Frame | None, str]


def event_id(event: str, data: bytes) -> str:
    """The id every replica derives for ``data`` published as ``event``."""
    digest = hashlib.blake2b(event.encode(), digest_size=8)
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def frame_cost(frame: Frame) -> int:
    """Bytes a frame holds beyond its entry: the object, its data and chunk, its event name."""
    return FRAME_COST + len(frame.data) + len(frame.chunk) + len(frame.event or "")


class History:
    def __init__(
        self,
        size: int,
        max_types: int = MAX_TYPES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        latest_only: frozenset[str] = frozenset(),
    ) -> None:
        self.size = size
        self.latest_only = latest_only
        self.max_types = max_types
        self.max_bytes = max_bytes
        self._seq = 0
        self.clear()

    def clear(self) -> None:
        """Forget everything: every id is unknown from now on (a resume gets ``resync``)."""
        self.bytes = 0
        # Least recently relayed type first: the one forgotten when a new type exceeds the cap.
        self._types: OrderedDict[str, deque[Entry]] = OrderedDict()
        self._newest: dict[str, Entry] = {}  # id -> its newest entry
        self._copies: dict[str, int] = {}  # id -> older copies still held (ambiguous ids only)
        self._evicted: dict[str, int] = {}  # type held -> seq of its newest evicted entry
        # Resumes from before this seq are refused: a whole type, or the oldest entries, left.
        self._forgotten = self._seq

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._types.values())

    def add(self, event: str, frame: Frame) -> None:
        """Record ``frame`` (which carries its id) as the newest of ``event``."""
        ident = frame.event_id
        assert ident is not None
        if self.size <= 0:
            return
        self._seq += 1
        entries = self._types.get(event)
        if entries is None:
            if len(self._types) >= self.max_types:
                self._forget_type(next(iter(self._types)))
            entries = self._types[event] = deque()
        else:
            self._types.move_to_end(event)
            event = entries[-1][3]  # one name string per type, not one per entry
            if event in self.latest_only:
                self._drop_frame(entries)
            if len(entries) >= self.size:
                self._evicted[event] = self._evict_first(entries)
        entry = (self._seq, ident, frame, event)
        entries.append(entry)
        if ident in self._newest:
            self._copies[ident] = self._copies.get(ident, 0) + 1
        self._newest[ident] = entry
        cost = ENTRY_COST + frame_cost(frame)
        self.bytes += cost
        while self.bytes > self.max_bytes and self.bytes > cost:
            self._evict_oldest()

    def newest_id(self, event: str) -> str | None:
        entries = self._types.get(event)
        return entries[-1][1] if entries else None

    def lookup(self, last_id: str, events: frozenset[str] | None = None) -> int | None:
        """The seq of ``last_id``; None when unknown, ambiguous (held more than once), or of
        a type outside ``events`` (None: every type): such an id is answered as unknown."""
        entry = self._newest.get(last_id)
        if entry is None or last_id in self._copies:
            return None
        if events is not None and entry[3] not in events:
            return None
        return entry[0]

    def replay(self, after: int, events: frozenset[str] | None) -> list[Frame] | None:
        """Frames of the selected types relayed after seq ``after``, in relay order.

        Latest-only types give at most their newest one. None when an ordinary
        event after ``after`` has already left the history (the replay would have a gap).
        """
        if self._forgotten > after:
            return None
        found: list[tuple[int, Frame]] = []
        names = self._types if events is None else [e for e in events if e in self._types]
        for event in names:
            entries = self._types[event]
            if event in self.latest_only:
                seq, _, frame, _ = entries[-1]
                if seq > after and frame is not None:
                    found.append((seq, frame))
                continue
            if self._evicted.get(event, 0) > after:
                return None
            for seq, _, frame, _ in reversed(entries):
                if seq <= after:
                    break
                if frame is not None:
                    found.append((seq, frame))
        found.sort(key=lambda item: item[0])
        return [frame for _, frame in found]

    def _drop_frame(self, entries: deque[Entry]) -> None:
        # Only the newest frame of a latest-only type is ever replayed: keep the id alone.
        seq, ident, frame, event = entries[-1]
        if frame is None:
            return
        kept = (seq, ident, None, event)
        entries[-1] = kept
        self._newest[ident] = kept  # the newest of its type is the newest copy of its id
        self.bytes -= frame_cost(frame)

    def _evict_first(self, entries: deque[Entry]) -> int:
        """Drop the oldest entry of a type; returns its seq."""
        seq, ident, frame, _ = entries.popleft()
        self.bytes -= ENTRY_COST + (0 if frame is None else frame_cost(frame))
        older = self._copies.get(ident, 0)
        if older > 1:
            self._copies[ident] = older - 1  # a newer copy stays, and _newest names it
        elif older == 1:
            del self._copies[ident]
        else:
            del self._newest[ident]
        return seq

    def _evict_oldest(self) -> None:
        # The oldest entry of all: whatever is older than it is gone already, so no id
        # still known can have an evicted event after it from here.
        event = min(self._types, key=lambda name: self._types[name][0][0])
        entries = self._types[event]
        self._forgotten = max(self._forgotten, self._evict_first(entries))
        if not entries:
            del self._types[event]
            self._evicted.pop(event, None)

    def _forget_type(self, event: str) -> None:
        entries = self._types.pop(event)
        newest = entries[-1][0]
        while entries:
            self._evict_first(entries)
        self._evicted.pop(event, None)
        self._forgotten = max(self._forgotten, newest)
