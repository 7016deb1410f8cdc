"""Sequence numbers on the ring of 2**32 (docs/protocol.md): how far one is ahead of another,
and :class:`SeqTracker`, which a receiver keeps per node to tell messages in order from gaps,
late ones, stale sessions and nodes heard before their birth."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol.bodies import Birth

_HALF: Final = 1 << 31


def seq_distance(older: int, newer: int) -> int:
    """``(newer - older) mod 2**32``: how far ``newer`` is ahead of ``older`` on the ring."""
    return (newer - older) % UINT32


class SeqVerdict(StrEnum):
    BIRTH = "birth"
    """A birth: tracking restarts from its seq."""
    IN_ORDER = "in_order"
    GAP = "gap"
    """``missing`` messages were skipped; ask for a rebirth."""
    LATE = "late"
    """Not ahead of the last one seen: a duplicate or a re-send after reconnect."""
    STALE_SESSION = "stale_session"
    """From an older birth/death session (an outbox re-send from before the current birth)."""
    NO_BIRTH = "no_birth"
    """No birth of this session was seen; ask for a rebirth."""
    UNTRACKED = "untracked"
    """Presence and deaths are not sequenced (the will is built before the session starts)."""


@dataclass(frozen=True, slots=True)
class SeqResult:
    verdict: SeqVerdict
    missing: int = 0

    @property
    def needs_rebirth(self) -> bool:
        return self.verdict in (SeqVerdict.GAP, SeqVerdict.NO_BIRTH)


_UNSEQUENCED: Final = frozenset({"state", "death"})


class SeqTracker:
    """Gap detection for the messages of one remote node (wrap-around safe).

    A birth sets the reference ``(bdseq, seq)``. A later message of the same ``bdseq`` is in order
    when its ``seq`` is exactly one ahead, a gap when it is further ahead (by less than 2**31),
    and late (duplicate or re-send) otherwise. A message of an older ``bdseq`` is a stale-session
    re-send; one of a newer ``bdseq`` means its birth was missed.
    """

    __slots__ = ("bdseq", "gaps", "last_seq", "missing")

    def __init__(self) -> None:
        self.bdseq: int | None = None
        self.last_seq = 0
        self.gaps = 0
        self.missing = 0

    def observe(self, msg_type: str, bdseq: int, seq: int) -> SeqResult:
        if msg_type in _UNSEQUENCED:
            return SeqResult(SeqVerdict.UNTRACKED)
        if msg_type == Birth.TYPE:
            self.bdseq, self.last_seq = bdseq, seq
            return SeqResult(SeqVerdict.BIRTH)
        if self.bdseq is None:
            return SeqResult(SeqVerdict.NO_BIRTH)
        if bdseq != self.bdseq:
            if 0 < seq_distance(self.bdseq, bdseq) < _HALF:
                return SeqResult(SeqVerdict.NO_BIRTH)
            return SeqResult(SeqVerdict.STALE_SESSION)
        ahead = seq_distance(self.last_seq, seq)
        if ahead == 1:
            self.last_seq = seq
            return SeqResult(SeqVerdict.IN_ORDER)
        if ahead == 0 or ahead >= _HALF:
            return SeqResult(SeqVerdict.LATE)
        self.last_seq = seq
        self.gaps += 1
        self.missing += ahead - 1
        return SeqResult(SeqVerdict.GAP, ahead - 1)
