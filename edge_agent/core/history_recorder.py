"""An agent group's history: every agent's outcomes, actions and beliefs per tick in a
preallocated ring (:class:`~edge_agent.core.history.HistoryRing`), the ticks' timestamps (one per
tick, for the whole group), and the rows staged for the next append.

A tick stages its row block by block (:meth:`HistoryRecorder.stage_beliefs`, in whichever process
steps the block) and appends it once every block is done (:meth:`HistoryRecorder.record`): an append
only copies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.quant import encode_beliefs_u8
from edge_agent.core.agent_state import Allocate
from edge_agent.core.contract import state_under
from edge_agent.core.group_blocks import BlockRows, HistoryBeliefs, IntArray, small_uint
from edge_agent.core.history import HistoryRing
from edge_agent.errors import InputError

logger = logging.getLogger(__name__)

Fields = dict[str, tuple[tuple[int, ...], np.dtype[Any]]]


def history_fields(
    num_obs: Sequence[int],
    num_states: Sequence[int],
    num_controls: Sequence[int],
    beliefs: HistoryBeliefs,
) -> Fields:
    """The history ring's fields: outcomes, actions and the beliefs in ``beliefs``."""
    fields: Fields = {
        "obs": ((len(num_obs),), np.dtype(small_uint(max(num_obs)))),
        "action": ((len(num_controls),), np.dtype(small_uint(max(num_controls)))),
    }
    if beliefs == "full":
        fields["qs"] = ((sum(num_states),), np.dtype(np.uint8))
    else:  # per factor: the most probable state, and its probability as round(p * 255)
        fields["qs_map"] = ((len(num_states),), np.dtype(small_uint(max(num_states))))
        fields["qs_p"] = ((len(num_states),), np.dtype(np.uint8))
    return fields


def history_bytes_per_agent(
    fields: Fields, capacity: int, beliefs: HistoryBeliefs, dtype: np.dtype[Any]
) -> tuple[int, int]:
    """One agent's bytes of a history of ``capacity`` ticks: its ring's rows, and its rows staged
    for the next append (beliefs, outcomes and actions in the fields' dtypes; with ``"map"``
    beliefs also the float maximum of the block's beliefs). The timestamps are per tick and
    shared by the group (``8 * capacity`` bytes)."""
    if capacity <= 0:
        return 0, 0
    ring = HistoryRing.bytes_needed(1, capacity, fields, max_window=0)
    (M,), obs_dt = fields["obs"]
    (F,), act_dt = fields["action"]
    if beliefs == "full":
        staging = fields["qs"][0][0]
    else:  # index and code per factor, and the float maximum of the block's beliefs
        staging = F * (fields["qs_map"][1].itemsize + 1) + dtype.itemsize
    return ring, staging + M * obs_dt.itemsize + F * act_dt.itemsize


class HistoryRecorder:
    """The history of a group's agents (``capacity`` ticks, :class:`HistoryRing` ``ring``), its
    timestamps and the staged row: ``beliefs`` says how a row records the beliefs (see
    :data:`~edge_agent.core.group_blocks.HistoryBeliefs`)."""

    def __init__(
        self, fields: Fields, capacity: int, beliefs: HistoryBeliefs, dtype: np.dtype[Any]
    ) -> None:
        self.fields = fields
        self.capacity = int(capacity)
        self.beliefs: HistoryBeliefs = beliefs
        self.dtype = dtype
        self.ring: HistoryRing | None = None
        self.times = HistoryRing(1, self.capacity, {"t": ((), np.dtype(np.float64))})
        self._now = np.zeros(1, dtype=np.float64)
        empty8 = np.zeros((0, 0), dtype=np.uint8)
        self.qs_row: NDArray[np.uint8] = empty8
        self.map_row: np.ndarray = empty8
        self.p_row: NDArray[np.uint8] = empty8
        self.pmax: np.ndarray = np.zeros(0, dtype=dtype)
        self.obs_row: np.ndarray = empty8
        self.action_row: np.ndarray = empty8

    def allocate(self, n_agents: int, new: Allocate) -> None:
        """Rows for ``n_agents``: the ring keeps its agents' rows (new agents' are empty), the
        staged rows are made again."""
        if self.ring is not None:
            self.ring.resize_agents(n_agents)
        else:
            self.ring = HistoryRing(n_agents, self.capacity, self.fields, max_window=0)
        fields = self.fields
        F = fields["action"][0][0]
        # Rows staged in the history's own dtypes, so that append only copies; what the
        # workers write in shared memory with the rest of the state.
        if self.beliefs == "full":
            self.qs_row = new((n_agents, fields["qs"][0][0]), np.uint8)
        else:
            self.map_row = new((n_agents, F), fields["qs_map"][1])
            self.p_row = new((n_agents, F), np.uint8)
            self.pmax = np.empty(n_agents, dtype=self.dtype)
        self.obs_row = np.empty((n_agents, fields["obs"][0][0]), dtype=fields["obs"][1])
        self.action_row = np.empty((n_agents, F), dtype=fields["action"][1])

    def share(self) -> None:
        """Move the rows the workers stage into shared memory."""
        from edge_agent.core.workers import shared  # noqa: PLC0415 - multi-core groups only

        if self.beliefs == "full":
            self.qs_row = shared(self.qs_row)
        else:
            self.map_row, self.p_row = shared(self.map_row), shared(self.p_row)

    @property
    def nbytes(self) -> int:
        """Bytes of the ring, the timestamps and the staged rows."""
        assert self.ring is not None  # allocated with the agents
        total = self.ring.nbytes + self.times.nbytes + self.obs_row.nbytes + self.action_row.nbytes
        if self.beliefs == "full":
            return int(total + self.qs_row.nbytes)
        return int(total + self.map_row.nbytes + self.p_row.nbytes + self.pmax.nbytes)

    def resize(self, capacity: int) -> None:
        """Keep the newest ``capacity`` ticks."""
        assert self.ring is not None  # allocated with the agents
        self.ring.resize(capacity)
        self.times.resize(capacity)
        self.capacity = capacity

    # -- a tick ------------------------------------------------------------------------------------
    def stage_beliefs(self, rows: BlockRows) -> None:
        """Quantize the block's beliefs into the staged row (uint8, see quant): every state's
        probability, or (``"map"``) the most probable state's index and probability per
        factor."""
        sl = rows.sl
        if self.beliefs == "map":
            blk = rows.blk
            idx, pmax = blk.ibuf, self.pmax[sl]  # the block's index scratch
            at = blk.ibuf2
            for f, q in enumerate(rows.qs):
                np.argmax(q, axis=1, out=idx)
                np.copyto(self.map_row[sl, f], idx, casting="unsafe")
                # the maximum is the belief at the argmax: read it (a pass over q less)
                np.add(idx, blk.row_start(q.shape[1]), out=at)
                q.reshape(-1).take(at, out=pmax, mode="clip")
                np.multiply(pmax, 255.0, out=pmax)
                np.add(pmax, 0.5, out=pmax)
                np.copyto(self.p_row[sl, f], pmax, casting="unsafe")
            return
        offset = 0
        for q in rows.qs:
            w = q.shape[1]
            cols = slice(offset, offset + w)
            encode_beliefs_u8(q, out=self.qs_row[sl, cols], scratch=rows.blk.enc[:, cols])
            offset += w

    def stage_outcomes(self, rows: BlockRows, soft: Sequence[np.ndarray]) -> None:
        """Soft evidence: each modality's most probable outcome, into the block's staged row."""
        index = rows.blk.ibuf  # free between the kernels
        for m, p in enumerate(soft):
            np.argmax(p[rows.sl], axis=1, out=index)
            np.copyto(self.obs_row[rows.sl, m], index, casting="unsafe")

    def record(self, obs: IntArray | None, action: np.ndarray, now: float | None) -> None:
        """Append the tick's row: outcomes ``obs`` (None: staged by :meth:`stage_outcomes`),
        ``action`` and the staged beliefs, and the tick's time ``now`` (None: NaN)."""
        assert self.ring is not None  # allocated with the agents
        # obs were range-checked and actions come from the model: the casts cannot overflow.
        if obs is not None:
            np.copyto(self.obs_row, obs, casting="unsafe")
        np.copyto(self.action_row, action, casting="unsafe")
        if self.beliefs == "full":
            self.ring.append(obs=self.obs_row, action=self.action_row, qs=self.qs_row)
        else:
            self.ring.append(
                obs=self.obs_row, action=self.action_row, qs_map=self.map_row, qs_p=self.p_row
            )
        self._now[0] = np.nan if now is None else now
        self.times.append(t=self._now)

    # -- snapshots ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """``history.*`` and ``times.*``: read-only views (a copy would double the memory)."""
        assert self.ring is not None  # allocated with the agents
        out = {f"history.{k}": v for k, v in self.ring.state_views().items()}
        out.update({f"times.{k}": v for k, v in self.times.state_views().items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray], name: str) -> None:
        """Restore what :meth:`state_dict` gave; a history of another layout is dropped (the
        beliefs matter, they are restored) and the log says so."""
        assert self.ring is not None  # allocated with the agents
        hist = state_under(state, "history.")
        if not hist:
            return
        try:
            self.ring.load_state_dict(hist)
            self.times.load_state_dict(state_under(state, "times."))
        except InputError as err:
            logger.warning(
                "group %r: beliefs restored, history not (%s); it starts empty", name, err
            )
            self.ring.clear()
            self.times.clear()
