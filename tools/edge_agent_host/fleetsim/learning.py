"""What a simulated node's learning group sends: plausible increments of one transition table,
and the schedule of when the nodes send them.

A :class:`DeltaMaker` stands for a learning group of ``agents`` agents that each walk ``ticks``
steps of a world's true transitions (``B{f}``: ``(next, state, action)``) with random actions,
adding ``lr`` of mass on each transition taken, against the line's bundle (``name@version`` and
its sha256). The walk is batched over the agents (one numpy step per tick, no per-agent loop).
:meth:`DeltaMaker.deltas` encodes what one report holds with the daemon's own encoder
(:func:`~edge_agent.fleet.learning_deltas.learning_deltas`: sparse within columns, split to fit
a message), numbered from the node's next ``seq``.

A :class:`Schedule` is a JSON file the benchmark writes: ``{"sends": [[at, nodes], ...]}``: at
wall time ``at`` (``time.time()``), the nodes numbered below ``nodes`` each send one report. All
the simulator's processes read the same file, so a fleet's reports arrive together (the worst
case for the hub). The file is read again when its modification time changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_agent.aif.learning_counts import TableIncrements, column_increments
from edge_agent.bundle.loader import load_bundle
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.learning_deltas import learning_deltas
from edge_agent.fleet.protocol import LearningDelta
from edge_agent.sim.registry import builtin_model

__all__ = ["DeltaMaker", "Schedule"]


class DeltaMaker:
    """Plausible reports of one learned ``B`` table (module docstring)."""

    def __init__(
        self,
        bundle: Path,
        *,
        group: str,
        table: str = "B0",
        world: str | None = None,
        agents: int = 10,
        ticks: int = 10,
        lr: float = 1.0,
    ) -> None:
        if not (table.startswith("B") and table[1:].isdigit()):
            raise EdgeAgentError(f"--learn-table {table}: only transition tables (B0, B1, ...)")
        loaded = load_bundle(bundle, trusted_keys=None, require_signature=False)
        manifest = loaded.manifest
        self.group = group
        self.model = f"{manifest.name}@{manifest.version}"
        self.sha256 = loaded.sha256
        self.table = table
        self.agents, self.ticks, self.lr = agents, ticks, lr
        factor = int(table[1:])
        b = np.asarray(builtin_model(world or manifest.name).B[factor], dtype=np.float64)
        self.shape = tuple(int(n) for n in b.shape)
        # cumulative next-state probabilities of each (state, action): one draw is a search
        self._cdf = np.cumsum(b.reshape(b.shape[0], -1), axis=0).T  # (state * action, next)
        self._cdf[:, -1] = 1.0

    def increments(self, rng: np.random.Generator) -> TableIncrements:
        """One report's increments: ``agents`` walks of ``ticks`` steps."""
        states, _, actions = self.shape
        counts = np.zeros((states, states * actions))
        s = rng.integers(states, size=self.agents)
        for _ in range(self.ticks):
            column = s * actions + rng.integers(actions, size=self.agents)
            u = rng.random(self.agents)[:, None]
            nxt = (self._cdf[column] < u).sum(axis=1)
            np.add.at(counts, (nxt, column), self.lr)
            s = nxt
        columns, values = column_increments(counts.reshape(self.shape))
        return TableIncrements(self.table, self.shape, columns, values,
                               self.agents * self.ticks, self.lr)  # fmt: skip

    def deltas(
        self, rng: np.random.Generator, *, next_seq: int, max_payload_bytes: int,
        model: str | None = None, sha256: str | None = None,
    ) -> list[LearningDelta]:  # fmt: skip
        """One report as the node sends it (against ``model``/``sha256`` when given: the bundle
        the node runs, else the line's bundle given)."""
        return learning_deltas(self.group, model or self.model, sha256 or self.sha256,
                               [self.increments(rng)], next_seq=next_seq,
                               max_payload_bytes=max_payload_bytes)  # fmt: skip


class Schedule:
    """When the nodes send (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self.sends: list[tuple[float, int]] = []

    def due(self, last: float, now: float) -> int:
        """How many nodes (the first ones) send for a time in ``(last, now]`` (the largest when
        several): 0 for none."""
        self._reload()
        return max((n for at, n in self.sends if last < at <= now), default=0)

    def _reload(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        try:
            sends = json.loads(self.path.read_text())["sends"]
            self.sends = [(float(at), int(n)) for at, n in sends]
        except (OSError, ValueError, KeyError, TypeError):
            return  # being written: read it at the next step
        self._mtime = mtime
