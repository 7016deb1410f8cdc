"""The outbox's index of the messages it holds, in columns: about 35 bytes a message, not an
object per message.

One numpy array per field (the message's id, when it expires, where its record is in the file,
its size, its class and topic as indexes into two small interned tables, its flags), appended at
the end: the outbox gives ids in increasing order, so the columns stay sorted by id and a message
is found by ``searchsorted``. A deleted message is marked gone; the columns are compacted (the
gone ones cut out) when more of them are gone than held, and reset when none is held, so a
draining backlog costs O(1) a deletion. They grow by half their capacity when full (at most a
third of the slots unused after a growth: 35 to 53 bytes a held message) and shrink at a
compaction that leaves them less than a quarter used.

What the index does not hold: a message's payload and creation time (the outbox keeps them, in a
dict, only while the message is not in the file: uncommitted or volatile), and its record's
length (the outbox derives it from the size and the class).

Single-threaded: the outbox's owner calls every method.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_CAPACITY", "OutboxIndex"]

MIN_CAPACITY: Final = 64
RETAIN: Final = 1
GONE: Final = 2
#: The columns' names and types (their bytes a slot: 8 + 8 + 8 + 4 + 2 + 4 + 1 = 35).
_COLUMNS: Final = (
    ("ids", np.int64),
    ("expires", np.float64),
    ("at", np.int64),
    ("size", np.uint32),
    ("cls", np.uint16),
    ("topic", np.uint32),
    ("flags", np.uint8),
)
#: The interned topic table is rebuilt at a compaction when it is more than this many entries
#: and twice the topics still referenced (topics of messages long gone are forgotten).
_TOPICS_KEPT: Final = 64

Int = npt.NDArray[np.int64]


class OutboxIndex:
    """The held messages' columns, sorted by id. Positions are valid until the next
    :meth:`remove` (which may compact) or :meth:`append`; ids are the stable handles."""

    ids: Int
    expires: npt.NDArray[np.float64]
    at: Int
    """The offset of the message's record's frame in the file; -1: not in the file."""
    size: npt.NDArray[np.uint32]
    cls: npt.NDArray[np.uint16]
    topic: npt.NDArray[np.uint32]
    flags: npt.NDArray[np.uint8]

    def __init__(self, capacity: int = MIN_CAPACITY) -> None:
        self.n = 0
        """Slots used (held and gone), at the start of every column."""
        self.live = 0
        """Messages held (slots used and not gone)."""
        self.compactions = 0
        self.classes: list[str] = []
        self.class_bytes: list[int] = []
        """Each class's length in UTF-8 bytes (a record's length is derived from it)."""
        self._class_of: dict[str, int] = {}
        self.topics: list[str] = []
        self._topic_of: dict[str, int] = {}
        self._alloc(max(capacity, MIN_CAPACITY))

    def _alloc(self, capacity: int) -> None:
        """Columns of ``capacity`` slots, the used ones copied."""
        n = self.n
        for name, dtype in _COLUMNS:
            column = np.empty(capacity, dtype)
            if n:
                column[:n] = getattr(self, name)[:n]
            setattr(self, name, column)

    @property
    def capacity(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """The columns' bytes (the interned tables not counted)."""
        return sum(getattr(self, name).nbytes for name, _ in _COLUMNS)

    # Interned tables ------------------------------------------------------------------------
    def class_index(self, name: str) -> int:
        i = self._class_of.get(name)
        if i is None:
            if len(self.classes) > np.iinfo(np.uint16).max:
                raise ValueError(f"more than {len(self.classes)} message classes")
            i = self._class_of[name] = len(self.classes)
            self.classes.append(name)
            self.class_bytes.append(len(name.encode()))
        return i

    def topic_index(self, name: str) -> int:
        i = self._topic_of.get(name)
        if i is None:
            i = self._topic_of[name] = len(self.topics)
            self.topics.append(name)
        return i

    # Adding ---------------------------------------------------------------------------------
    def append(
        self, row_id: int, cls: str, topic: str, *, expires: float, at: int, size: int, retain: bool
    ) -> None:
        """Hold a message. Its id is normally above every id here (appended); an id at or
        below the last one (a file this outbox did not write so) takes its place in order,
        replacing a message of the same id."""
        n = self.n
        cls_i = self._class_of.get(cls)
        if cls_i is None:
            cls_i = self.class_index(cls)
        topic_i = self._topic_of.get(topic)
        if topic_i is None:
            topic_i = self.topic_index(topic)
        flags = RETAIN if retain else 0
        if n and row_id <= self.ids.item(n - 1):
            self._place((row_id, expires, at, size, cls_i, topic_i, flags))
            return
        if n == len(self.ids):
            self._alloc(n + n // 2)
        # One field at a time: a message is appended per put (no tuple of columns built).
        self.ids[n] = row_id
        self.expires[n] = expires
        self.at[n] = at
        self.size[n] = size
        self.cls[n] = cls_i
        self.topic[n] = topic_i
        self.flags[n] = flags
        self.n = n + 1
        self.live += 1

    def _place(self, values: tuple[int, float, int, int, int, int, int]) -> None:
        row_id = values[0]
        n = self.n
        pos = int(np.searchsorted(self.ids[:n], row_id))
        if pos < n and int(self.ids[pos]) == row_id:  # the same id: replaced
            if self.flags[pos] & GONE:
                self.live += 1
            for (name, _), value in zip(_COLUMNS, values, strict=True):
                getattr(self, name)[pos] = value
            return
        if n == self.capacity:
            self._alloc(n + n // 2)
        for (name, _), value in zip(_COLUMNS, values, strict=True):
            column = getattr(self, name)
            column[pos + 1 : n + 1] = column[pos:n].copy()
            column[pos] = value
        self.n = n + 1
        self.live += 1

    # Finding --------------------------------------------------------------------------------
    def find(self, row_id: int) -> int:
        """The position of the message ``row_id``; -1 when it is not held."""
        n = self.n
        if not n:
            return -1
        ids = self.ids
        # Ids are given one after the other: unless a compaction cut gone ones out before it,
        # a message is as far from the first slot as its id is from the first id.
        pos = row_id - ids.item(0)
        if not (0 <= pos < n and ids.item(pos) == row_id):
            pos = int(ids[:n].searchsorted(row_id))
            if pos >= n or ids.item(pos) != row_id:
                return -1
        return -1 if self.flags.item(pos) & GONE else pos

    def find_many(self, row_ids: Int) -> Int:
        """The positions of ``row_ids`` (sorted or not), -1 for those not held."""
        n = self.n
        pos = np.searchsorted(self.ids[:n], row_ids)
        inside = pos < n
        pos[~inside] = 0
        found = inside & (self.ids[pos] == row_ids) & ((self.flags[pos] & GONE) == 0)
        return np.where(found, pos, -1)

    def held(self) -> Int:
        """The positions of the messages held, oldest first."""
        return np.flatnonzero((self.flags[: self.n] & GONE) == 0)

    def after(self, cursor: int, count: int) -> list[int]:
        """The ids of the first ``count`` messages held after id ``cursor``, oldest first."""
        n = self.n
        ids, flags = self.ids, self.flags
        if not self.live or cursor >= ids.item(n - 1):
            return []
        # Where the ids after ``cursor`` start: as far from the first slot as ``cursor + 1`` is
        # from the first id, unless a compaction cut gone ones out before it.
        start = max(0, cursor + 1 - ids.item(0))
        if not (
            start < n and ids.item(start) > cursor and (start == 0 or ids.item(start - 1) <= cursor)
        ):
            start = int(ids[:n].searchsorted(cursor, side="right"))
        out: list[int] = []
        stop = min(n, start + 2 * count + 16)
        while start < stop:  # the next few one at a time
            if not flags.item(start) & GONE:
                out.append(ids.item(start))
                if len(out) == count:
                    return out
            start += 1
        step = max(2 * count, 64)
        while start < n:  # past a long run of gone ones: a slice at a time
            stop = min(n, start + step)
            keep = np.flatnonzero((flags[start:stop] & GONE) == 0)[: count - len(out)]
            out.extend(ids[start:stop][keep].tolist())
            if len(out) == count:
                break
            start = stop
            step *= 2
        return out

    # Removing -------------------------------------------------------------------------------
    def remove(self, positions: Int | list[int]) -> None:
        """Mark the messages at ``positions`` (held ones, each once) gone; compact when more
        are gone than held, reset when none is held."""
        if len(positions) == 1:
            pos = int(positions[0])
            self.flags[pos] = self.flags.item(pos) | GONE
        elif len(positions):
            self.flags[positions] |= GONE
        else:
            return
        self.live -= len(positions)
        gone = self.n - self.live
        if self.live == 0:
            self.clear(keep_capacity=self.capacity <= 4 * MIN_CAPACITY)
        elif gone > self.live and gone >= MIN_CAPACITY:
            self.compact()

    def compact(self) -> None:
        """Cut the gone slots out of the columns (shrinking them when less than a quarter
        would be used) and forget the topics no message held refers to any more."""
        keep = self.held()
        live = len(keep)
        capacity = self.capacity
        if capacity > MIN_CAPACITY and 4 * live < capacity:
            capacity = max(MIN_CAPACITY, 2 * live)
        for name, dtype in _COLUMNS:
            old = getattr(self, name)
            column = old if capacity == len(old) else np.empty(capacity, dtype)
            column[:live] = old[: self.n][keep]
            setattr(self, name, column)
        self.n = live
        self.compactions += 1
        if len(self.topics) > _TOPICS_KEPT:
            used, inverse = np.unique(self.topic[:live], return_inverse=True)
            if len(self.topics) > 2 * len(used):
                self.topics = [self.topics[i] for i in used.tolist()]
                self._topic_of = {name: i for i, name in enumerate(self.topics)}
                self.topic[:live] = inverse.reshape(-1)

    def clear(self, *, keep_capacity: bool = False) -> None:
        """Hold nothing (the columns back to their smallest unless ``keep_capacity``)."""
        self.n = self.live = 0
        if not keep_capacity and self.capacity > MIN_CAPACITY:
            self._alloc(MIN_CAPACITY)
        if len(self.topics) > _TOPICS_KEPT:
            self.topics = []
            self._topic_of = {}
