"""Observations outside the range a neural model was calibrated on: counted, shown, alerted.

An int8 model is only as good as the range its scales were calibrated on: a static model clips
an input beyond it, and a faulty or unnormalised sensor (a value 100 times the others) gives its
agent a wrong action whatever the quantization. The converter records each observation feature's
``[low, high]`` in its calibration data (in its held-out data for a dynamic or float model,
which calibrates nothing; the manifest's ``neural.observation_range``,
:class:`~edge_agent.bundle.loader.ObservationRange`); a neural group (and the classifier in front
of an Active Inference group) counts, on every :data:`~edge_agent.core.health.HEALTH_EVERY`-th
tick (the first included: the cadence of the groups' health measures), the **agent-steps** with
a feature outside it by more than :data:`MARGIN` of the feature's width (a finite calibration
set misses the inputs' rarest values: without the margin 1 % of the sensor world's own
observations fell outside the example's 128 calibration windows, with it none of 16,000): one
agent's observation of one tick counts once, however many of its features are out. That is one
pass over the tick's ``(N, F)`` observations (:func:`count_outside`: two comparisons and an
``or``, element by element, against bounds laid out as the observations are, in blocks of at
most :data:`SCRATCH_BYTES` of scratch, and the agents out counted in one call, each agent's
flags read as 64-bit words; which agents are out is worked out only when some are), no
per-agent Python, nothing allocated. A tick between two checks costs a counter.

:class:`RangeWatch` keeps the counts (``obs_checked``, ``obs_out_of_range``: counters in status,
telemetry and Prometheus), the share of the last window of :data:`WINDOW_TICKS` ticks
(``obs_out_of_range_share``) and the alert: when a window's share reaches :data:`ALERT_SHARE` the
group raises one ``input_out_of_range`` event (a warning: the share, the window, the first agents
out of range in its last tick checked), and raises it again only after a window whose share fell
below :data:`CLEAR_SHARE` (the hysteresis: a share that wobbles around 1 % raises one event, not one
per window). A bundle without a range (converted before the range was recorded) counts nothing, and
the status says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.core.contract import GroupEvent, MetricFamily
from edge_agent.core.health import HEALTH_EVERY
from edge_agent.errors import ModelError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from edge_agent.bundle.manifest import ObservationRange

__all__ = [
    "ALERT_SHARE",
    "CLEAR_SHARE",
    "INPUT_RANGE_METRICS",
    "MARGIN",
    "SCRATCH_BYTES",
    "WINDOW_TICKS",
    "RangeWatch",
    "count_outside",
    "flag_width",
    "scratch_per_agent",
]

#: Ticks per window over which the share of agent-steps out of range is taken.
WINDOW_TICKS = 100
#: How far beyond a feature's calibrated ``[low, high]`` a value may be before it counts: this
#: share of the feature's width ``high - low`` (of the mean width over the features, for a
#: feature that was constant in calibration).
MARGIN = 0.25
#: A window's share at or above this raises the ``input_out_of_range`` event (1 %: ten agents
#: of 1,000 on every tick, or every agent on one tick in a hundred).
ALERT_SHARE = 0.01
#: After an event, a window's share must fall below this before the next one can be raised.
CLEAR_SHARE = 0.005
#: Scratch for the comparison, at most (the observations are compared in blocks of agents: per
#: agent of a block, :func:`scratch_per_agent` bytes).
SCRATCH_BYTES = 1 << 17
#: Agents named in an event (the first ones out of range in the window's last tick checked).
NAMED_AGENTS = 8


def flag_width(features: int) -> int:
    """Columns of a block's flags for ``features``: rounded up to a multiple of 8, so that each
    row's flags read as whole 64-bit words (:func:`count_outside`)."""
    return -(-max(1, features) // 8) * 8


def scratch_per_agent(features: int) -> int:
    """Scratch bytes per agent of a block (:func:`count_outside`): its bounds (float32, two per
    feature), its flags below and above, and a 64-bit word when its flags are longer than one."""
    width = flag_width(features)
    return 9 * features + width + (8 if width > 8 else 0)


def count_outside(
    obs: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    outside: NDArray[np.bool_],
    above: NDArray[np.bool_],
    rows: NDArray[np.bool_],
    words: NDArray[np.uint64] | None = None,
) -> int:
    """How many rows of ``obs`` ``(N, F)`` have a value below ``low`` or above ``high``. When
    some have, ``rows`` ``(N,)`` is set to which; when none has, ``rows`` is left as it was (the
    count says so). ``low`` and ``high`` are the bounds of a block of ``B`` rows, ``(B, F)``,
    every row the same (compared element by element: numpy's fastest loop), or ``(F,)`` or
    ``(1,)`` (broadcast). Scratch: ``outside`` ``(B, flag_width(F))`` bool whose columns from
    ``F`` on stay False, so that each row's flags read as 64-bit words and a block's rows out
    are counted in one call (the words of a row, when it has more than one, first or-ed into
    ``words`` ``(B,)`` uint64); ``above`` ``(B, F)`` bool. The last block uses part of them.
    NaN is in range (it compares false: the sources drop it before a group sees it)."""
    n, f = obs.shape
    block = outside.shape[0]
    per_row = outside.shape[1] // 8
    tiled = low.ndim == 2
    count = 0
    quiet: list[int] = []  # blocks with no row out: their rows are cleared if another has one
    for start in range(0, n, block):  # over blocks of agents, never over agents
        part = obs[start : start + block]
        m = part.shape[0]
        out, up = outside[:m, :f], above[:m]
        np.less(part, low[:m] if tiled else low, out=out)
        np.greater(part, high[:m] if tiled else high, out=up)
        np.logical_or(out, up, out=out)
        flags = outside[:m].view(np.uint64)  # (m, per_row): a row is out when a word is not 0
        if per_row == 1:
            agent = flags[:, 0]
        else:
            if words is None:
                raise ValueError("flags of more than 8 features need the words scratch")
            agent = words[:m]
            np.bitwise_or.reduce(flags, axis=1, out=agent)
        found = int(np.count_nonzero(agent))
        if found:
            np.not_equal(agent, 0, out=rows[start : start + m])
            count += found
        else:
            quiet.append(start)
    if count:
        for start in quiet:
            rows[start : start + block] = False
    return count


class RangeWatch:
    """A group's count of observations outside its bundle's calibrated range (module doc).

    ``bounds`` None: the bundle has no range, nothing is counted. ModelError when the range has
    neither one value nor one per feature.
    """

    def __init__(
        self, bounds: ObservationRange | None, features: int, n_agents: int, *, group: str
    ) -> None:
        self.group = group
        self.features = int(features)
        self.calibrated = bounds is not None
        self.samples = 0 if bounds is None else bounds.samples
        if bounds is not None and len(bounds.low) not in (1, self.features):
            raise ModelError(
                f"the bundle's observation range has {len(bounds.low)} values per bound, the "
                f"model takes {self.features} features: one value, or one per feature"
            )
        low = np.asarray(() if bounds is None else bounds.low, dtype=np.float64)
        high = np.asarray(() if bounds is None else bounds.high, dtype=np.float64)
        width = high - low
        if width.size:
            width = np.where(width > 0, width, width.mean())  # a constant feature: the mean
        #: What counts as in range: the calibrated range widened by MARGIN of its width.
        self.low = (low - MARGIN * width).astype(np.float32)
        self.high = (high + MARGIN * width).astype(np.float32)
        self.checked = 0
        self.out_of_range = 0
        self.share = 0.0  # the last full window's
        self._clock = 0  # ticks observed: every HEALTH_EVERY-th is checked, the first included
        self.alerting = False
        self.alerts_raised = 0
        self._window_ticks = 0
        self._window_checked = 0
        self._window_out = 0
        self._last_out = 0  # agents out in the last tick checked
        self._pending: list[GroupEvent] = []
        self.n_agents = 0
        self.resize(n_agents)

    # -- memory ----------------------------------------------------------------------------------
    def block_rows(self, n_agents: int) -> int:
        """Agents compared at once (their scratch within :data:`SCRATCH_BYTES`)."""
        return max(1, min(n_agents, SCRATCH_BYTES // scratch_per_agent(self.features)))

    def scratch_nbytes(self, n_agents: int) -> int:
        """Bytes of the comparison's scratch for ``n_agents`` (at most :data:`SCRATCH_BYTES`,
        or one agent's where a frame is larger; 0 without a range): per agent of a block,
        :func:`scratch_per_agent`."""
        if not self.calibrated:
            return 0
        return scratch_per_agent(self.features) * self.block_rows(n_agents)

    def nbytes_for(self, n_agents: int) -> int:
        """Bytes the watch allocates for ``n_agents``: its scratch and a flag per agent (0
        without a range)."""
        return self.scratch_nbytes(n_agents) + (n_agents if self.calibrated else 0)

    def resize(self, n_agents: int) -> None:
        self.n_agents = int(n_agents)
        if not self.calibrated:
            return
        block = self.block_rows(self.n_agents)
        width = flag_width(self.features)
        self._outside = np.zeros((block, width), dtype=bool)  # columns from F on stay False
        self._above = np.zeros((block, self.features), dtype=bool)
        self._words = np.zeros(block if width > 8 else 0, dtype=np.uint64)
        # The bounds laid out as a block of observations (one value: every feature's).
        self._low_rows = np.empty((block, self.features), dtype=np.float32)
        self._high_rows = np.empty((block, self.features), dtype=np.float32)
        self._low_rows[...] = self.low
        self._high_rows[...] = self.high
        self._rows = np.zeros(self.n_agents, dtype=bool)
        self._last_out = 0

    # -- ticking ---------------------------------------------------------------------------------
    def observe(self, obs: np.ndarray) -> None:
        """One tick's observations ``(N, F)`` (already checked by the group): counted on every
        :data:`~edge_agent.core.health.HEALTH_EVERY`-th tick, the first included."""
        if not self.calibrated:
            return
        out = None
        if self._clock % HEALTH_EVERY == 0:
            out = count_outside(
                obs,
                self._low_rows,
                self._high_rows,
                outside=self._outside,
                above=self._above,
                rows=self._rows,
                words=self._words,
            )
        self.counted(obs.shape[0], out)

    def due(self) -> bool:
        """Whether the next tick is one the watch checks (a calibrated range, every
        :data:`~edge_agent.core.health.HEALTH_EVERY`-th tick): for a caller that counts the
        agents out itself (a group's compiled pass, :meth:`bounds`), then :meth:`counted`."""
        return self.calibrated and self._clock % HEALTH_EVERY == 0

    def bounds(self) -> tuple[np.ndarray, np.ndarray, NDArray[np.bool_]]:
        """What a caller that counts itself compares with: the bounds ``low``, ``high``
        ``(F,)`` float32 (one value: every feature's) and the flags ``(N,)`` it sets to which
        agents are out (only when the range is calibrated; new arrays after :meth:`resize`)."""
        return self._low_rows[0], self._high_rows[0], self._rows

    def counted(self, n: int, out: int | None) -> None:
        """One tick of ``n`` agents observed: ``out`` of them out of range, counted by the
        caller when :meth:`due` said so (its flags in :meth:`bounds`' ``rows``), None on a
        tick not checked."""
        if not self.calibrated:
            return
        self._clock += 1
        if out is not None:
            self._last_out = out  # rows holds the last tick checked's agents out, if any
            self.checked += n
            self.out_of_range += out
            self._window_checked += n
            self._window_out += out
        self._window_ticks += 1
        if self._window_ticks >= WINDOW_TICKS:
            self._close_window()

    def _close_window(self) -> None:
        self.share = self._window_out / max(1, self._window_checked)
        if not self.alerting and self.share >= ALERT_SHARE:
            self.alerting = True
            self.alerts_raised += 1
            rows = self._rows if self._last_out else self._rows[:0]  # none out: rows is stale
            agents = np.flatnonzero(rows)[:NAMED_AGENTS].tolist()
            self._pending.append(
                GroupEvent(
                    "input_out_of_range",
                    "warning",
                    f"group {self.group}: {100 * self.share:.2f} % of agent-steps in the last "
                    f"{self._window_ticks} ticks observed values outside the range the model "
                    f"was calibrated on (alert at {100 * ALERT_SHARE:g} %); agents "
                    f"{agents or 'none'} in the last tick checked: a faulty or unnormalised "
                    "sensor?",
                    {
                        "share": round(self.share, 6),
                        "out_of_range": self._window_out,
                        "agent_steps": self._window_checked,
                        "ticks": self._window_ticks,
                        "threshold": ALERT_SHARE,
                        "agents": agents,
                    },
                )
            )
        elif self.alerting and self.share < CLEAR_SHARE:
            self.alerting = False
        self._window_ticks = self._window_checked = self._window_out = 0

    def alerts(self) -> list[GroupEvent]:
        """The events raised since the last call."""
        pending, self._pending = self._pending, []
        return pending

    # -- what it tells ---------------------------------------------------------------------------
    def metrics(self) -> dict[str, object]:
        """The group's numbers (none without a range: nothing is counted)."""
        if not self.calibrated:
            return {}
        return {
            "obs_checked": self.checked,
            "obs_out_of_range": self.out_of_range,
            "obs_out_of_range_share": round(self.share, 6),
            "obs_range_alert": int(self.alerting),
        }

    def describe(self) -> dict[str, Any]:
        """What the status shows (``observation_range``)."""
        if not self.calibrated:
            return {"observation_range": {"calibrated": False}}
        return {
            "observation_range": {
                "calibrated": True,
                "features": len(self.low),
                "samples": self.samples,
                "margin": MARGIN,
                "checked": self.checked,
                "out_of_range": self.out_of_range,
                "share": round(self.share, 6),
                "window_ticks": WINDOW_TICKS,
                "alert_share": ALERT_SHARE,
                "clear_share": CLEAR_SHARE,
                "alerting": self.alerting,
                "alerts": self.alerts_raised,
            }
        }


def _totals(groups: Sequence[Mapping[str, object]]) -> dict[str, float | int]:
    counting = [g for g in groups if "obs_checked" in g]
    if not counting:
        return {}

    def total(key: str) -> int:
        return sum(int(v) for g in counting if isinstance(v := g.get(key), int | float))

    return {
        "groups": len(counting),
        "checked": total("obs_checked"),
        "out_of_range": total("obs_out_of_range"),
        "alerting": total("obs_range_alert"),
    }


INPUT_RANGE_METRICS = MetricFamily(
    "input_range",
    "observations outside the calibrated range",
    _totals,
    gauges=("groups", "alerting"),
    describe={
        "groups": "Neural groups (and perception classifiers) whose bundle records the range its "
        "model was calibrated on: their observations are counted.",
        "checked": "Agent-steps those groups checked against the calibrated range.",
        "out_of_range": "Agent-steps with a feature outside the calibrated range.",
        "alerting": "Groups whose share of agent-steps out of range raised the "
        "input_out_of_range event and has not fallen back below 0.5 %.",
    },
    group_gauges=("obs_out_of_range_share", "obs_range_alert"),
    group_describe={
        "obs_checked": "Agent-steps checked against the range the model was calibrated on.",
        "obs_out_of_range": "Agent-steps with a feature outside the calibrated range.",
        "obs_out_of_range_share": "Share of agent-steps out of range in the last window of 100 "
        "ticks.",
        "obs_range_alert": "1 while the group's share out of range has raised the "
        "input_out_of_range event (at 1 %) and not fallen back below 0.5 %.",
    },
)
"""What a neural group with a calibrated range reports and the node's totals over such groups
(declared by the ``neural`` and ``perception`` kinds)."""
