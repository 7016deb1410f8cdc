"""Belief sharing for one agent group: what to publish, and fusing what peers published.

A :class:`BeliefSharer` sits around one :class:`~edge_agent.core.agents.AifAgentGroup` and is called
three times a tick, in this order:

1. :meth:`BeliefSharer.fuse` before the group steps: peers' messages received since the last
   tick are fused into the group's ``prior`` of every shared factor (in place), and that prior is
   remembered -- it is what the group's inference will use;
2. the group steps (``group.step(obs)``);
3. :meth:`BeliefSharer.observe` after the step accumulates each agent's own new evidence,
   ``ln q(s) - ln prior(s)`` with the prior of step 1 (see :mod:`edge_agent.coordination.fusion`),
   and :meth:`BeliefSharer.publish` returns the messages to send this tick.

Incoming messages go to :meth:`BeliefSharer.receive` between ticks.

**Who publishes.** An agent publishes when (a) at least ``every_ticks`` ticks passed since its last
publication, (b) its accumulated evidence would shift some log-odds by at least
``min_evidence_nats`` (a smaller message could not move any receiver by more than that; it is
kept and sent later, not lost), and (c) its token bucket holds the bytes of its row. Buckets are
per agent: ``bytes_per_agent_s`` refill per second, ``burst_s`` seconds of capacity; a row's cost is
its 4-byte channel id, its codes, and its share of the message overhead. Agents lacking tokens are
deferred (counted ``rows_deferred_budget``); their evidence keeps accumulating.

**On the wire** a :class:`~edge_agent.fleet.protocol.BeliefBatch` on ``node/{node}/beliefs`` (QoS 0
by default: beliefs are perishable and the next message supersedes a lost one):

=============== ==========================================================================
``group``        the group's name; receivers fuse only into their group of the same name
``tick``         the sender's tick (age estimation, see :meth:`receive`)
``agent_ids``    channel ids (uint32): agents on different nodes with the same channel observe
                 the same world quantity; by default a group's channel ids are its agent indices
``dtype``        ``uint8``
``width``        ``sum(S_f)`` over the shared factors, in the order the settings list them
``values``       ``ea-llr8`` codes of the accumulated likelihood messages (fusion module)
=============== ==========================================================================

The envelope's ``(bdseq, seq)`` is the per-node sequence: a receiver fuses a peer's message only
if it is newer than the last one it took from that peer, so duplicates (QoS 1 re-sends) and
re-ordered stale messages are never counted twice.

**Peers** live in a preallocated table of ``max_peers`` slots (``(max_peers, N, width)`` float32
for the evidence waiting to be fused); a message from one more peer is dropped and counted
``peer_overflow``. :meth:`forget_peer` frees a dead peer's slot.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.arrays import distinct
from edge_agent.coordination import fusion
from edge_agent.coordination.settings import SharingSettings
from edge_agent.errors import InputError
from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import (
    BeliefBatch,
    Envelope,
    encode,
    seq_distance,
)

_HALF: Final = 1 << 31
ROW_ID_BYTES: Final = 4


def _newer(bdseq: int, seq: int, last: tuple[int, int]) -> bool:
    """Whether ``(bdseq, seq)`` comes after ``last`` (both wrap at 2**32)."""
    last_bdseq, last_seq = last
    if bdseq != last_bdseq:
        return 0 < seq_distance(last_bdseq, bdseq) < _HALF
    return 0 < seq_distance(last_seq, seq) < _HALF


class BeliefSharer:
    """Belief sharing state of one group (see the module docstring)."""

    def __init__(
        self,
        group: str,
        num_states: Sequence[int],
        n_agents: int,
        settings: SharingSettings,
        *,
        channels: NDArray[np.integer] | None = None,
        node_id: str | None = None,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        if n_agents < 1:
            raise InputError(f"n_agents must be >= 1, got {n_agents}")
        for f in settings.factors:
            if not 0 <= f < len(num_states):
                raise InputError(
                    f"shared factor {f} does not exist: the model has {len(num_states)} factor(s)"
                )
        if len(set(settings.factors)) != len(settings.factors):
            raise InputError(f"shared factors {settings.factors} repeat a factor")
        self.group = group
        self.settings = settings
        self.n_agents = n_agents
        self.factors = settings.factors
        widths = [int(num_states[f]) for f in self.factors]
        offsets = np.cumsum([0, *widths])
        self.columns = tuple(slice(int(a), int(b)) for a, b in itertools.pairwise(offsets))
        self.width = int(offsets[-1])
        if channels is None:
            chan = np.arange(n_agents, dtype=np.uint32)
        else:
            chan = np.asarray(channels)
            if chan.shape != (n_agents,):
                raise InputError(f"channels has shape {chan.shape}, expected ({n_agents},)")
            if chan.size and (chan.min() < 0 or chan.max() >= UINT32):
                raise InputError("channels must be in [0, 2**32)")
            chan = chan.astype(np.uint32)
            if distinct(chan).size != n_agents:
                raise InputError("channels must be unique within a group")
        self.channels = chan
        self._order = np.argsort(chan, kind="stable")
        self._sorted = chan[self._order]
        # Bytes of a message without rows, with the largest numbers it can carry: a row's share
        # of the overhead is charged to the agents of the message.
        empty = BeliefBatch(
            group=group,
            tick=(1 << 63) - 1,
            agent_ids=b"",
            dtype="uint8",
            width=self.width,
            values=b"",
        )
        env = Envelope(
            type=BeliefBatch.TYPE,
            node=node_id or "n" * 64,
            seq=UINT32 - 1,
            bdseq=UINT32 - 1,
            ts=1e10,
            clock_synced=True,
            body=empty,
        )
        self.overhead_bytes = len(encode(env)) + 8  # + bin length headers of the two columns
        self.row_bytes = ROW_ID_BYTES + self.width
        dt = np.dtype(dtype)
        N, W, P = n_agents, self.width, settings.max_peers
        self.used_prior = [np.zeros((N, w), dtype=dt) for w in widths]
        self.evidence = np.zeros((N, W), dtype=dt)
        self._scratch = [np.empty((N, w), dtype=dt) for w in widths]
        self._fuse_scratch = [np.empty((N, w), dtype=dt) for w in widths]
        self._rows_scratch = np.empty((N, W), dtype=dt)
        self._codes = np.empty((N, W), dtype=np.uint8)
        self._col = np.empty((N, 1), dtype=dt)
        self._strength = np.empty(N, dtype=dt)
        self._due = np.empty(N, dtype=bool)
        self._mask = np.empty(N, dtype=bool)
        self.last_published = np.full(N, -(1 << 62), dtype=np.int64)
        self._since = np.empty(N, dtype=np.int64)
        self.tokens = np.full(N, settings.bytes_per_agent_s * settings.burst_s, dtype=np.float64)
        self._last_refill: float | None = None
        self.pending = np.zeros((P, N, W), dtype=dt)
        self.has = np.zeros((P, N), dtype=bool)
        self._any = np.zeros(N, dtype=bool)
        self._fused = np.zeros((N, W), dtype=dt)
        self.trust = np.full(P, settings.trust, dtype=dt)
        self._slots: dict[str, int] = {}
        self._free = list(range(P - 1, -1, -1))
        self._last_seq: list[tuple[int, int] | None] = [None] * P
        self._peer_tick: list[int] = [0] * P
        self._used_slots = 0
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "messages_sent",
                "rows_sent",
                "bytes_sent",
                "rows_deferred_budget",
                "messages_received",
                "rows_received",
                "rows_fused",
                "dropped_duplicate",
                "dropped_stale",
                "dropped_mismatch",
                "dropped_unknown_channel",
                "peer_overflow",
            ),
            0,
        )

    @classmethod
    def bytes_for(
        cls,
        n_agents: int,
        num_states: Sequence[int],
        settings: SharingSettings,
        *,
        dtype: type[np.floating] = np.float32,
    ) -> int:
        """:attr:`nbytes` of a sharer of ``n_agents``, before allocating it (every one of its
        arrays has one row per agent, so it is ``n_agents`` times that of a one-agent sharer)."""
        if n_agents < 1:
            raise InputError(f"n_agents must be >= 1, got {n_agents}")
        return n_agents * cls("probe", num_states, 1, settings, dtype=dtype).nbytes

    @property
    def nbytes(self) -> int:
        """Bytes of every per-agent array (for the memory budget): the peer table,
        ``max_peers * (4 * width + 1)`` bytes per agent, dominates."""
        arrays = [
            *self.used_prior,
            self.evidence,
            *self._scratch,
            *self._fuse_scratch,
            self._rows_scratch,
            self._codes,
            self._col,
            self._strength,
            self._due,
            self._mask,
            self.last_published,
            self._since,
            self.tokens,
            self.pending,
            self.has,
            self._any,
            self._fused,
        ]
        return int(sum(a.nbytes for a in arrays))

    # -- peers ----------------------------------------------------------------------------------
    def set_trust(self, trust: Mapping[str, float]) -> None:
        """Per-peer trust weights (0 < w <= 1) for peers by node id; others keep the default."""
        for node, w in trust.items():
            if not 0.0 < w <= 1.0:
                raise InputError(f"trust of {node!r} is {w}, expected 0 < w <= 1")
            slot = self._slot(node)
            if slot is not None:
                self.trust[slot] = w

    def forget_peer(self, node: str) -> None:
        """Free ``node``'s slot (it died); what it sent and was not fused yet is dropped."""
        slot = self._slots.pop(node, None)
        if slot is None:
            return
        self.pending[slot] = 0
        self.has[slot] = False
        self._last_seq[slot] = None
        self._peer_tick[slot] = 0
        self.trust[slot] = self.settings.trust
        self._free.append(slot)

    @property
    def peers(self) -> list[str]:
        return sorted(self._slots)

    def _slot(self, node: str) -> int | None:
        slot = self._slots.get(node)
        if slot is None:
            if not self._free:
                return None
            slot = self._free.pop()
            self._slots[node] = slot
            self._used_slots = max(self._used_slots, slot + 1)
        return slot

    # -- receiving ------------------------------------------------------------------------------
    def receive(
        self,
        node: str,
        bdseq: int,
        seq: int,
        batch: BeliefBatch,
        *,
        transit_s: float = 0.0,
        tick_period_s: float = 0.0,
    ) -> bool:
        """Take a peer's message into the table; False (and counted) when it is not used.

        Age of the message = the larger of ``transit_s`` (receiver's wall clock minus the
        envelope's ``ts``, which the caller passes only when both clocks are synchronised) and
        how far its ``tick`` is behind the newest tick seen from that peer, times
        ``tick_period_s``. Its rows are weighted by ``exp(-age / tau_s)``.
        """
        self.counters["messages_received"] += 1
        if batch.group != self.group or batch.width != self.width or batch.dtype != "uint8":
            self.counters["dropped_mismatch"] += 1
            return False
        slot = self._slot(node)
        if slot is None:
            self.counters["peer_overflow"] += 1
            return False
        last = self._last_seq[slot]
        if last is not None and not _newer(bdseq, seq, last):
            self.counters["dropped_duplicate"] += 1
            return False
        self._last_seq[slot] = (bdseq, seq)
        newest = max(self._peer_tick[slot], batch.tick)
        self._peer_tick[slot] = newest
        age = max(transit_s, (newest - batch.tick) * tick_period_s)
        weight = fusion.age_weight(age, self.settings.tau_s, self.settings.max_age_s)
        if weight <= 0.0:
            self.counters["dropped_stale"] += 1
            return False
        ids, codes = batch.arrays()
        pos = np.searchsorted(self._sorted, ids)
        np.minimum(pos, self.n_agents - 1, out=pos)
        known = self._sorted[pos] == ids
        if not known.all():
            self.counters["dropped_unknown_channel"] += int(ids.size - np.count_nonzero(known))
        rows = self._order[pos[known]]
        if rows.size == 0:
            return False
        lam = fusion.decode_message(codes[known], np.empty((rows.size, self.width), np.float32))
        lam *= weight
        self.pending[slot, rows] += lam
        self.has[slot, rows] = True
        self.counters["rows_received"] += int(rows.size)
        return True

    # -- the tick -------------------------------------------------------------------------------
    def fuse(self, prior: Sequence[NDArray[np.floating]]) -> int:
        """Fuse pending peer evidence into ``prior[f]`` of each shared factor, in place.

        ``prior`` is the group's per-factor list (all factors). Returns how many agents received
        evidence. Always records the prior that inference will use (for :meth:`observe`).
        """
        n = self._used_slots
        fused = 0
        if n and self.has[:n].any():
            np.any(self.has[:n], axis=0, out=self._any)
            fused = int(np.count_nonzero(self._any))
            fusion.fused_evidence(
                self.pending[:n],
                self.has[:n],
                self.trust[:n],
                self.settings.bound_nats,
                out=self._fused,
                scratch=self._rows_scratch,
                col=self._col,
            )
            for f, cols, scratch in zip(
                self.factors, self.columns, self._fuse_scratch, strict=True
            ):
                fusion.fuse_prior(prior[f], self._fused[:, cols], self._any, scratch, self._col)
            self.pending[:n] = 0
            self.has[:n] = False
            self.counters["rows_fused"] += fused
        for f, used in zip(self.factors, self.used_prior, strict=True):
            np.copyto(used, prior[f])
        return fused

    def observe(self, qs: Sequence[NDArray[np.floating]]) -> None:
        """Accumulate every agent's own evidence of this step (``qs``: the group's posteriors)."""
        for f, cols, used, scratch in zip(
            self.factors, self.columns, self.used_prior, self._scratch, strict=True
        ):
            fusion.accumulate_message(qs[f], used, self.evidence[:, cols], scratch)

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        """Forget the accumulated evidence of the agents in ``mask`` (new episode)."""
        sel = slice(None) if mask is None else np.asarray(mask, dtype=bool)
        self.evidence[sel] = 0

    def publish(self, tick: int, now_s: float) -> list[BeliefBatch]:
        """The messages to send this tick (possibly none); charges the senders' buckets."""
        s = self.settings
        if self._last_refill is not None:
            dt = max(0.0, now_s - self._last_refill)
            self.tokens += dt * s.bytes_per_agent_s
            np.minimum(self.tokens, s.bytes_per_agent_s * s.burst_s, out=self.tokens)
        self._last_refill = now_s
        np.subtract(tick, self.last_published, out=self._since)
        np.greater_equal(self._since, s.every_ticks, out=self._due)
        fusion.evidence_strength(self.evidence, self._strength, self._col)
        np.greater_equal(self._strength, s.min_evidence_nats, out=self._mask)
        np.logical_and(self._due, self._mask, out=self._due)
        np.greater_equal(self.tokens, self.row_bytes, out=self._mask)
        deferred = int(np.count_nonzero(self._due & ~self._mask))
        self.counters["rows_deferred_budget"] += deferred
        np.logical_and(self._due, self._mask, out=self._due)
        rows = np.flatnonzero(self._due)
        if rows.size == 0:
            return []
        codes = fusion.encode_message(self.evidence, self._codes, self._rows_scratch, self._col)
        # Error feedback: what the codes do not carry (rounding, and evidence beyond the wire
        # range) stays in the accumulator for the next message.
        fusion.center(self.evidence, self._col)
        decoded = fusion.decode_message(
            codes[rows], np.empty((rows.size, self.width), self.evidence.dtype)
        )
        self.evidence[rows] -= decoded
        self.last_published[rows] = tick
        out = []
        step = s.max_rows_per_message
        for start in range(0, rows.size, step):
            chunk = rows[start : start + step]
            out.append(
                BeliefBatch.from_arrays(self.group, tick, self.channels[chunk], codes[chunk])
            )
            self.tokens[chunk] -= self.row_bytes + self.overhead_bytes / chunk.size
            self.counters["messages_sent"] += 1
            self.counters["rows_sent"] += int(chunk.size)
            self.counters["bytes_sent"] += self.overhead_bytes + int(chunk.size) * self.row_bytes
        return out

    def stats(self, elapsed_s: float) -> dict[str, float]:
        """Counters, and ``bytes_per_agent_s`` sent over ``elapsed_s`` seconds."""
        out: dict[str, float] = {k: float(v) for k, v in self.counters.items()}
        out["peers"] = float(len(self._slots))
        out["bytes_per_agent_s"] = (
            self.counters["bytes_sent"] / self.n_agents / elapsed_s if elapsed_s > 0 else 0.0
        )
        return out
