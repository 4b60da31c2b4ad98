"""Event ids and the per-process history a stream resumes from (SPEC "Event ids and resume").

Why an id derived from the message itself. Every gateway replica subscribes
to the same Redis channels and sees the same messages, raw ``redis-cli
publish`` included, but nothing a replica could count (a sequence number,
a clock) is shared between replicas. The message is: so the id is a hash of
the event name and the data bytes (BLAKE2b, 8 bytes, 16 hex digits), and
every replica gives the same message the same id without talking to Redis or
to the others, and without asking publishers to add anything. A snapshot
holds the same bytes as the message that set it (the publisher writes both
in one script), so a snapshot carries the id of that message and a browser's
last id advances through snapshots too. Sixty-four bits make an accidental
collision among the few thousand ids a history holds vanishingly unlikely
(about n²/2⁶⁵).

Why a per-process ring rather than a Redis-side history. A Redis history
(a stream or list per type) would cost a write per event on the publisher's
side, or a gateway that writes, and would not cover raw publishes. A ring
per process costs nothing but memory, and the frames in it are the very
``Frame`` objects the fan-out already built (references, not copies).

What the id cannot tell apart: the same (event, data) relayed twice (two
identical raw publishes). An id seen more than once in the history is
*ambiguous*: resuming from it cannot know which copy the client had, so it
is treated as unknown (``resync``): loud, never a silent gap or a duplicate.
A resume is also refused (``None`` from ``replay``) when an event of a
selected, ordinary type after the id has already left the ring; for
latest-only types only the newest one matters, so their evictions never
force a resync.

Ordering: ``seq`` is a process-local counter across all types, so a replay
merges the types in the order this process relayed them.

Memory: for a latest-only type only its newest frame is kept (a replay never
needs an older one); its older entries keep just their seq and id, so a
client that last saw one of them can still resume. For other types at most
``size`` frames per type, at most ``MAX_TYPES`` types (the
least recently relayed type is forgotten first), and at most ``max_bytes``
of frame bytes in all (the oldest frame of any type goes first). The frames
are shared with the fan-out and with clients' queues.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Iterable

from sse_gateway.framing import Frame

MAX_TYPES = 64
DEFAULT_MAX_BYTES = 32 * 1024 * 1024

Entry = tuple[int, str, Frame | None]  # (seq, id, frame; None once a newer latest-only one came)


def event_id(event: str, data: bytes) -> str:
    """The id every replica derives for ``data`` published as ``event``."""
    digest = hashlib.blake2b(event.encode(), digest_size=8)
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


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
        self.bytes = 0
        self._seq = 0
        # Least recently relayed type first: the one forgotten when a new type exceeds the cap.
        self._types: OrderedDict[str, deque[Entry]] = OrderedDict()
        self._count: dict[str, int] = {}  # id -> copies in the ring (more than one: ambiguous)
        self._seq_of: dict[str, int] = {}  # id -> seq of its newest copy
        self._evicted: dict[str, int] = {}  # type -> seq of its newest evicted entry
        self._forgotten = 0  # seq of the newest entry of a type forgotten whole

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._types.values())

    def add(self, event: str, frame: Frame) -> None:
        """Record ``frame`` (which carries its id) as the newest of ``event``."""
        assert frame.event_id is not None
        if self.size <= 0:
            return
        self._seq += 1
        entries = self._types.get(event)
        if entries is None:
            if len(self._types) >= self.max_types:
                self._forget_oldest_type()
            entries = self._types[event] = deque()
        else:
            self._types.move_to_end(event)
            seq, old_id, old = entries[-1]
            if event in self.latest_only and old is not None:
                entries[-1] = (seq, old_id, None)  # only the newest is ever replayed
                self.bytes -= len(old.data)
        if len(entries) >= self.size:
            self._evict(event, entries)
        entries.append((self._seq, frame.event_id, frame))
        self.bytes += len(frame.data)
        self._count[frame.event_id] = self._count.get(frame.event_id, 0) + 1
        self._seq_of[frame.event_id] = self._seq
        while self.bytes > self.max_bytes and self.bytes > len(frame.data):
            self._evict_oldest()

    def newest_id(self, event: str) -> str | None:
        entries = self._types.get(event)
        return entries[-1][1] if entries else None

    def lookup(self, last_id: str) -> int | None:
        """The seq of ``last_id``; None when unknown or ambiguous (seen more than once)."""
        if self._count.get(last_id) != 1:
            return None
        return self._seq_of[last_id]

    def replay(
        self, after: int, events: frozenset[str] | None, latest_only: frozenset[str]
    ) -> list[Frame] | None:
        """Frames of the selected types relayed after seq ``after``, in relay order.

        Latest-only types give at most their newest one. None when an ordinary
        event after ``after`` has already been evicted (the replay would have a gap).
        """
        if self._forgotten > after:
            return None
        found: list[tuple[int, Frame]] = []
        for event, entries in self._types.items():
            if events is not None and event not in events:
                continue
            if event in latest_only:
                seq, _, frame = entries[-1]
                if seq > after and frame is not None:
                    found.append((seq, frame))
                continue
            if self._evicted.get(event, 0) > after:
                return None
            found.extend((seq, frame) for seq, _, frame in _newer(entries, after) if frame)
        found.sort(key=lambda item: item[0])
        return [frame for _, frame in found]

    def _evict(self, event: str, entries: deque[Entry]) -> None:
        seq, old_id, frame = entries.popleft()
        if frame is not None:
            self.bytes -= len(frame.data)
        self._evicted[event] = seq
        left = self._count[old_id] - 1
        if left:
            self._count[old_id] = left  # the newer copy stays, and _seq_of already names it
        else:
            del self._count[old_id]
            del self._seq_of[old_id]

    def _evict_oldest(self) -> None:
        # The type whose oldest frame is the oldest (entries without a frame free nothing).
        event = min(
            (name for name, entries in self._types.items() if _oldest_frame(entries)),
            key=lambda name: _oldest_frame(self._types[name]),
        )
        entries = self._types[event]
        while entries and entries[0][2] is None:  # frameless entries before it go with it
            self._evict(event, entries)
        self._evict(event, entries)
        if not entries:
            del self._types[event]

    def _forget_oldest_type(self) -> None:
        event, entries = self._types.popitem(last=False)
        while entries:
            self._evict(event, entries)
        self._forgotten = max(self._forgotten, self._evicted.pop(event, 0))


def _newer(entries: deque[Entry], after: int) -> Iterable[Entry]:
    """The entries after seq ``after``, oldest first (walks back from the newest)."""
    newer: list[Entry] = []
    for entry in reversed(entries):
        if entry[0] <= after:
            break
        newer.append(entry)
    newer.reverse()
    return newer


def _oldest_frame(entries: deque[Entry]) -> int:
    """The seq of the oldest entry that still holds a frame; 0 when none does."""
    return next((seq for seq, _, frame in entries if frame is not None), 0)
