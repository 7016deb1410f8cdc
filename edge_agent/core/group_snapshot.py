"""An agent group's state in and out of snapshots: the arrays that restore its beliefs, actions,
committed plans and history exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from edge_agent.core.block_maths import BlockMaths
from edge_agent.core.contract import StateReader, state_under
from edge_agent.core.group_blocks import _PLAN_ARRAYS
from edge_agent.core.priors import (
    resets_of_kept_priors,
    saved_small_flags,
)
from edge_agent.errors import InputError, SnapshotError

logger = logging.getLogger(__name__)


class GroupSnapshot(BlockMaths):
    """:meth:`state_dict` and :meth:`load_state_dict` of an agent group."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that restore this group's beliefs, actions and history exactly: views of the
        group's own arrays (the history's read-only), valid until it next steps; copy them to
        keep them."""
        out: dict[str, np.ndarray] = {
            "action": self.action,
            "has_action": self.has_action,
            "q_pi": self.q_pi,
            "ticks": np.array(self.ticks, dtype=np.int64),
        }
        for f in range(self.cm.num_factors):
            out[f"qs{f}"] = self.qs[f]
            if self.keeps_prior:
                out[f"prior{f}"] = self.prior[f]
        if not self.keeps_prior:  # what the priors follow from besides beliefs and actions
            out["prior_reset"] = self._prior_reset
            out["prior_small"] = self._prior_small
        if not self.planning.every_tick:  # the committed plans
            for k in _PLAN_ARRAYS:
                out[k] = getattr(self, k)
        if self.history is not None:  # views, as the rest (a copy would double the memory)
            for k, v in self.history.state_views().items():
                out[f"history.{k}"] = v
            for k, v in self._times.state_views().items():
                out[f"times.{k}"] = v
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict`; shapes must match this group exactly.

        A :class:`~edge_agent.core.contract.StateReader` (a snapshot's arrays) has each array
        copied straight into the group's own, chunk by chunk, with no whole copy of it made."""
        reader = state if isinstance(state, StateReader) else None

        def take(name: str, out: np.ndarray) -> None:
            if name not in state:
                raise InputError(f"group {self.name!r} snapshot lacks {name!r}")
            if reader is not None:
                try:
                    reader.read_into(name, out)
                except SnapshotError as err:
                    raise InputError(f"group {self.name!r} snapshot {err}") from err
                return
            arr = np.asarray(state[name])
            if arr.shape != out.shape:
                raise InputError(
                    f"group {self.name!r} snapshot {name!r} has shape {arr.shape}, "
                    f"expected {out.shape}"
                )
            out[...] = arr

        take("action", self.action)
        take("has_action", self.has_action)
        take("q_pi", self.q_pi)
        for f in range(self.cm.num_factors):
            take(f"qs{f}", self.qs[f])
        self._beliefs_ahead = False
        kept = all(f"prior{f}" in state for f in range(self.cm.num_factors))
        if self.keeps_prior and (kept or "prior_reset" not in state):
            for f in range(self.cm.num_factors):
                take(f"prior{f}", self.prior[f])
        elif self.keeps_prior:  # a group's that kept none: made from what it kept
            reset = np.zeros(self.n_agents, dtype=bool)
            take("prior_reset", reset)
            small = saved_small_flags(state, len(self._blocks()))
            for rows in self._blocks():
                self._derive_prior(rows, reset[rows.sl], bool(small[rows.index]))
        elif "prior_reset" in state or not kept:
            take("prior_reset", self._prior_reset)
            self._prior_small[...] = saved_small_flags(state, len(self._prior_small))
        else:  # a group's that kept it (an earlier snapshot format): D where it is D
            resets_of_kept_priors(
                state, self.cm.D, self._prior_reset, rows=self.block_size, name=self.name
            )
            # an every-tick group's small blocks read the prior off the small-block planner
            self._prior_small.fill(1 if self.planning.every_tick else 0)
        self.ticks = int(state["ticks"]) if "ticks" in state else 0
        if not self.planning.every_tick:
            if all(k in state for k in _PLAN_ARRAYS):
                for k in _PLAN_ARRAYS:
                    take(k, getattr(self, k))
            else:  # a snapshot of an every-tick group: every agent plans at its next tick
                self.plan_left.fill(0)
                self.plan_age.fill(0)
                self.deferred.fill(False)
        if self.history is not None:
            hist = state_under(state, "history.")
            times = state_under(state, "times.")
            if hist:
                try:
                    self.history.load_state_dict(hist)
                    self._times.load_state_dict(times)
                except InputError as err:  # another history layout: beliefs matter, keep them
                    logger.warning(
                        "group %r: beliefs restored, history not (%s); it starts empty",
                        self.name,
                        err,
                    )
                    self.history.clear()
                    self._times.clear()
