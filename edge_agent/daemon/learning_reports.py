"""What the node's learning groups learned, published to the fleet (``docs/fleet-learning.md``).

:class:`LearningReporter` asks every group whose ``[groups.learning]`` sets ``report_every_s``
for what its agents learned since its last report (:meth:`~edge_agent.core.contract.Learns.
take_increments`: count increments summed over the agents before any forgetting, sparse by
column, with their agent-ticks and learning rate) at that cadence, and publishes them as
:class:`~edge_agent.fleet.protocol.LearningDelta` messages through the uplink (the outbox, class
``event``: kept across broker outages). Each message carries the model the counts were learned
against (the group's bundle ``name@version`` and its sha256; a built-in model is
``name@edge-agent-<version>``, identified by the digest of that name) and a ``seq`` per node and
group, from 1, never reused:

- the last ``seq`` of every group is written to ``learning_reports.json`` in the state directory
  (atomically) **before** its messages go into the outbox, so a crash between the two skips
  numbers, never reuses one; a restart goes on from the file;
- a damaged file is moved aside (an event says so) and numbering goes on above the wall clock
  in milliseconds since 1970: a node reporting at most every
  :data:`~edge_agent.aif.learning_table.MIN_REPORT_EVERY_S` seconds uses a few numbers a
  second at most, so (with a sane clock) none it used can come again;
- a file the storage refuses to write publishes nothing (the increments taken are dropped and
  counted, never sent under a number that may come again).

A group replaced by a deployment or a reload is asked once more for what its agents learned
against the old model (at the next call, within a second), then the new one starts from nothing:
the accumulator restarts with the model. At shutdown every reporting group reports what is left.
Nothing here imports the service module; it is built only by a daemon with ``[mqtt] enabled``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, cast

from edge_agent import __version__
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.errors import ProtocolError
from edge_agent.fleet.learning_deltas import learning_deltas
from edge_agent.fleet.protocol import LearningDelta
from edge_agent.fsutil import not_a_file, write_atomic
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:  # the learning maths: in a daemon only once a group learns
    from edge_agent.aif.learning_table import LearningTable

__all__ = ["STATE_FILE", "LearningPort", "LearningReporter", "model_of"]

logger = logging.getLogger(__name__)

#: The last ``seq`` sent per group, in the state directory.
STATE_FILE: Final = "learning_reports.json"
PART: Final = "learning_reports"


class LearningPort(Protocol):
    """Where the deltas go (the daemon's :class:`~edge_agent.daemon.uplink.FleetUplink`)."""

    @property
    def max_payload_bytes(self) -> int: ...

    def publish_learning(self, body: LearningDelta) -> bool: ...


def model_of(group: GroupRuntime) -> tuple[str, str]:
    """``(name@version, sha256)`` of the model ``group``'s agents learn against: its bundle's,
    or for a built-in model ``name@edge-agent-<version>`` and the sha256 of that text (the
    software version defines a built-in model)."""
    if group.bundle_name is not None and group.bundle_sha256 is not None:
        return group.bundle_name[:160], group.bundle_sha256
    name = f"{group.model_identity}@edge-agent-{__version__}"[:160]
    return name, hashlib.sha256(name.encode()).hexdigest()


def report_every_s(group: GroupRuntime) -> float:
    """The group's ``[groups.learning] report_every_s`` (0: it does not report)."""
    if group.learning is None:
        return 0.0
    # By its key: a daemon whose groups do not learn never imports the learning maths.
    table = cast("LearningTable | None", group.config.table("learning"))
    return 0.0 if table is None else table.report_every_s


class LearningReporter:
    """Publishes each reporting group's learning deltas at its cadence (module doc)."""

    def __init__(
        self,
        state_dir: Path,
        port: LearningPort,
        faults: StateFaults,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._path = state_dir / STATE_FILE
        self._port = port
        self._faults = faults
        self._wall = wall
        #: Numbers below this were maybe used (a damaged file): the next is above it.
        self._floor = 0
        self._seq: dict[str, int] = self._load()
        self._next_at: dict[str, float] = {}
        self._groups: dict[str, GroupRuntime] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("reports", "messages", "tables", "dropped"), 0
        )

    # -- the numbers ------------------------------------------------------------------------
    def last_seq(self, group: str) -> int:
        """The last ``seq`` group ``group`` used (0: none yet)."""
        return self._seq.get(group, 0)

    def _load(self) -> dict[str, int]:
        path = self._path
        if not_a_file(path):
            self._damaged("not a regular file")
            return {}
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as err:
            self._faults.storage_error(PART, err, f"read {path}")
            self._floor = int(self._wall() * 1000)
            return {}
        try:
            data = json.loads(text)
            groups = data["groups"]
            if not isinstance(groups, dict) or not all(
                isinstance(k, str) and type(v) is int and v >= 0 for k, v in groups.items()
            ):
                raise ValueError("groups is not a map of names to numbers >= 0")
        except (ValueError, KeyError, TypeError) as err:
            self._damaged(str(err)[:200] or type(err).__name__)
            return {}
        return dict(groups)

    def _damaged(self, reason: str) -> None:
        """Move the file aside; numbering goes on above the wall clock in milliseconds."""
        self._faults.move_aside(PART, self._path, reason)
        self._floor = int(self._wall() * 1000)

    def _save(self, seq: dict[str, int]) -> bool:
        data = json.dumps({"version": 1, "groups": seq}, sort_keys=True).encode()
        try:
            write_atomic(self._path, data)
        except OSError as err:
            self._faults.storage_error(PART, err, f"write {self._path}")
            return False
        self._faults.storage_ok(PART)
        return True

    # -- reporting ----------------------------------------------------------------------------
    def report_due(self, groups: Sequence[GroupRuntime], now: float) -> None:
        """Between ticks (``now``: monotonic): report every group whose cadence is due, and a
        group replaced since the last call once more against its old model."""
        for g in groups:
            previous = self._groups.get(g.name)
            if previous is not None and previous is not g and previous.learning is not None:
                self.report(previous)  # what it learned against the model it had
            self._groups[g.name] = g
            every = report_every_s(g)
            if not every:
                self._next_at.pop(g.name, None)
                continue
            due = self._next_at.setdefault(g.name, now + every)
            if now >= due:
                self._next_at[g.name] = now + every
                self.report(g)
        names = {g.name for g in groups}
        for name in [n for n in self._groups if n not in names]:  # a reload removed it
            gone = self._groups.pop(name)
            self._next_at.pop(name, None)
            if gone.learning is not None:
                self.report(gone)

    def report_all(self, groups: Sequence[GroupRuntime]) -> None:
        """Report every reporting group now, due or not (the daemon stops)."""
        for g in groups:
            if report_every_s(g):
                self.report(g)

    def report(self, group: GroupRuntime) -> int:
        """Publish what ``group``'s agents learned since its last report; the messages put in
        the outbox (0: nothing learned, or nothing could be sent)."""
        learning = group.learning
        if learning is None:
            return 0
        tables = learning.take_increments()
        if not tables:
            return 0
        model, sha256 = model_of(group)
        first = max(self._seq.get(group.name, 0), self._floor) + 1
        try:
            deltas = learning_deltas(
                group.name, model, sha256, tables, next_seq=first,
                max_payload_bytes=self._port.max_payload_bytes,
            )
        except ProtocolError as err:
            self.counters["dropped"] += 1
            logger.error("%s", err)
            return 0
        seq = {**self._seq, group.name: deltas[-1].seq}
        if not self._save(seq):  # numbers that could come again are never sent
            self.counters["dropped"] += len(deltas)
            return 0
        self._seq = seq
        sent = sum(self._port.publish_learning(d) for d in deltas)
        self.counters["reports"] += 1
        self.counters["messages"] += sent
        self.counters["dropped"] += len(deltas) - sent
        self.counters["tables"] += len(tables)
        return sent
