"""A group's health measures over one reporting window: per measure its mean, 95th percentile
and count, in bounded memory (``docs/health.md``).

:class:`HealthWindow` is told each tick's values of each measure (:meth:`HealthWindow.add`, one
value per agent-step sampled) and, once per reporting window (the telemetry interval), closed
(:meth:`HealthWindow.close`): it returns a :class:`HealthSummary` and starts again. The mean (and
the standard deviation behind the excess surprise's z-score) are exact, from running sums; the
95th percentile is that of a systematic sample of at most :data:`RESERVOIR` of the window's
values: every ``stride``-th value, the stride doubling (and every other value kept dropped)
whenever the sample is full, so that it spans the whole window evenly, with no random numbers
and a few slices per batch: a measure holds ``RESERVOIR`` floats whatever the window's length
or the group's size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.arrays import percentiles

__all__ = ["RESERVOIR", "DriftReading", "HealthSummary", "HealthWindow", "MeasureStats"]

#: Values a measure keeps per window for its 95th percentile (8 bytes each).
RESERVOIR = 512


@dataclass(frozen=True, slots=True)
class MeasureStats:
    """One measure over a window: ``mean`` and ``p95`` of its ``n`` values, their standard
    deviation ``std`` (population), and ``z``: the mean in standard errors from 0,
    ``mean / (std / sqrt(n))`` (0 when ``std`` is 0)."""

    mean: float
    p95: float
    n: int
    std: float

    @classmethod
    def of(cls, values: np.ndarray) -> MeasureStats:
        """The summary of ``values`` (at least one), exactly."""
        v = np.asarray(values, dtype=np.float64)
        return cls(
            mean=float(v.mean()), p95=float(percentiles(v, [95.0])[0]), n=int(v.size),
            std=float(v.std()),
        )

    @property
    def z(self) -> float:
        if self.n < 2 or self.std <= 0.0:
            return 0.0
        return self.mean / (self.std / math.sqrt(self.n))


@dataclass(frozen=True, slots=True)
class DriftReading:
    """A group's change detector on its excess surprise (:mod:`edge_agent.core.drift`):
    whether it alarms, its statistic and the threshold the alarm fires at, since when (wall
    clock seconds, None when not in alarm)."""

    alarm: bool
    statistic: float
    threshold: float
    since: float | None


@dataclass(frozen=True, slots=True)
class HealthSummary:
    """A group's health over one window: the agent-steps it held, each measure that had values
    (:class:`MeasureStats`), the drift detector's state (None: the group has none)."""

    agent_steps: int
    measures: Mapping[str, MeasureStats]
    drift: DriftReading | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON numbers for the status file and ``edge-agent status --json``."""
        return {
            "agent_steps": self.agent_steps,
            "measures": {
                name: {
                    "mean": _round(s.mean),
                    "p95": _round(s.p95),
                    "n": s.n,
                    "z": _round(s.z),
                }
                for name, s in self.measures.items()
            },
            "drift": None
            if self.drift is None
            else {
                "alarm": self.drift.alarm,
                "statistic": _round(self.drift.statistic),
                "threshold": self.drift.threshold,
                "since": self.drift.since,
            },
        }


def _round(x: float) -> float:
    return round(x, 6) if math.isfinite(x) else 0.0


class _Measure:
    """One measure's running sums and systematic sample (the values whose index in the window
    is a multiple of ``stride``, ``kept`` of them; ``sample``: its row of the window's)."""

    __slots__ = ("kept", "n", "sample", "stride", "sum", "sumsq")

    def __init__(self, sample: np.ndarray) -> None:
        self.sample = sample
        self.n = self.kept = 0
        self.stride = 1
        self.sum = 0.0
        self.sumsq = 0.0

    def add(self, values: np.ndarray) -> None:
        self.add_summed(values, float(values.sum()), float(np.dot(values, values)))

    def add_summed(self, values: np.ndarray, total: float, squares: float) -> None:
        """:meth:`add` of ``values`` whose sum and sum of squares are known."""
        k = values.shape[0]
        if k == 0:
            return
        self.sum += total
        self.sumsq += squares
        picked = values[(-self.n) % self.stride :: self.stride]
        while self.kept + picked.shape[0] > RESERVOIR:  # full: every other one, twice the stride
            half = self.sample[: self.kept : 2].copy()
            self.kept = half.shape[0]
            self.sample[: self.kept] = half
            self.stride *= 2
            picked = values[(-self.n) % self.stride :: self.stride]
        self.sample[self.kept : self.kept + picked.shape[0]] = picked
        self.kept += picked.shape[0]
        self.n += k

    def stats(self) -> MeasureStats:
        n = self.n
        mean = self.sum / n
        var = max(0.0, self.sumsq / n - mean * mean)
        p95 = float(percentiles(self.sample[: self.kept], [95.0])[0])
        return MeasureStats(mean=mean, p95=p95, n=n, std=math.sqrt(var))

    def clear(self) -> None:
        self.n = self.kept = 0
        self.stride = 1
        self.sum = self.sumsq = 0.0


class HealthWindow:
    """Per-measure summaries of one reporting window (see the module docstring); ``names``: the
    measures it may be told (a fixed set: memory is ``len(names) * RESERVOIR`` floats);
    ``together``: those of them told together as one block (:meth:`add_block`), in its
    order, whose samples are kept side by side in that order (a block of them, or of a run of
    them, takes one slice and one copy for all)."""

    def __init__(self, names: Iterable[str], *, together: Sequence[str] = ()) -> None:
        names = list(names)
        order = [*(n for n in together if n in names), *(n for n in names if n not in together)]
        #: Every measure's sample, a row each (the measures ``together`` first, in order).
        self._samples = np.empty((len(order), RESERVOIR))
        at = {name: i for i, name in enumerate(order)}
        self._measures = {name: _Measure(self._samples[at[name]]) for name in names}
        #: Per block of names told to :meth:`add_block`: its measures and their samples' rows
        #: (a slice where they are side by side in the block's order, else their indices).
        self._blocks: dict[tuple[str, ...], tuple[list[_Measure], slice | list[int]]] = {}
        self._at = at
        #: The block :meth:`add_block` told last, when no measure was told since (its measures
        #: then in step: the same count and stride), else None.
        self._last: tuple[str, ...] | None = None
        self.agent_steps = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._measures)

    def kept(self, name: str) -> np.ndarray:
        """The values of measure ``name`` kept for its percentile so far (a read-only view of
        at most :data:`RESERVOIR`)."""
        m = self._measures[name]
        view = m.sample[: m.kept]
        view.flags.writeable = False
        return view

    def add(self, name: str, values: np.ndarray) -> None:
        """Values of measure ``name`` (one per agent-step, ``(k,)`` float64; non-finite ones
        are left out)."""
        self._last = None
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(v).all():
            v = v[np.isfinite(v)]
        self._measures[name].add(v)

    def add_rows(self, names: Sequence[str], values: np.ndarray) -> None:
        """:meth:`add` of every row of ``values`` ``(len(names), k)`` float64, row ``i`` to
        measure ``names[i]``: the sums of all rows in two calls (a measured tick of a small group
        is mostly the fixed cost of its numpy calls)."""
        self._last = None
        if not np.isfinite(values).all():
            for name, row in zip(names, values, strict=True):
                self.add(name, row)
            return
        totals = np.add.reduce(values, axis=1).tolist()
        squares = np.add.reduce(values * values, axis=1).tolist()
        for name, row, total, square in zip(names, values, totals, squares, strict=True):
            self._measures[name].add_summed(row, total, square)

    def add_rows_summed(
        self, names: Sequence[str], values: np.ndarray, totals: np.ndarray, squares: np.ndarray
    ) -> None:
        """:meth:`add_rows` of ``values`` whose row sums ``totals`` and sums of squares
        ``squares`` the caller worked out in its own buffers (nothing is allocated here). A row
        whose sums are not finite holds a non-finite value and goes through :meth:`add`, which
        leaves those out."""
        self._last = None
        for name, row, total, square in zip(
            names, values, totals.tolist(), squares.tolist(), strict=True
        ):
            if math.isfinite(total) and math.isfinite(square):
                self._measures[name].add_summed(row, total, square)
            else:
                self.add(name, row)

    def add_block(
        self, names: tuple[str, ...], values: np.ndarray, totals: np.ndarray,
        squares: np.ndarray,
    ) -> None:
        """:meth:`add_rows_summed` of a block whose measures are told together (and so keep
        the same count and sample stride: each one's sample takes the same positions of its
        row), all their samples at once: one slice of ``values`` and one copy (the stride
        doubled as :meth:`_Measure.add_summed` does, every measure's sample halved at once),
        the same samples and sums. Measures not in step (told apart before, a value left out)
        or a row whose sums are not finite: :meth:`add_rows_summed`."""
        plan = self._blocks.get(names)
        if plan is None:
            at = [self._at[name] for name in names]
            rows: slice | list[int] = (
                slice(at[0], at[0] + len(at)) if at == list(range(at[0], at[0] + len(at)))
                else at)
            plan = self._blocks[names] = ([self._measures[name] for name in names], rows)
        measures, rows = plan
        first = measures[0]
        n, kept, stride = first.n, first.kept, first.stride
        k = values.shape[1]
        sums, sumsq = totals.tolist(), squares.tolist()
        if k == 0 or not math.isfinite(sum(sums) + sum(sumsq)) or (
                self._last != names
                and any(m.n != n or m.kept != kept or m.stride != stride for m in measures)):
            self.add_rows_summed(names, values, totals, squares)
            return
        self._last = names
        samples = self._samples
        picked = values[:, (-n) % stride :: stride]
        while kept + picked.shape[1] > RESERVOIR:  # full: every other one, twice the stride
            half = samples[rows, :kept:2].copy()
            kept = half.shape[1]
            samples[rows, :kept] = half
            stride *= 2
            picked = values[:, (-n) % stride :: stride]
        samples[rows, kept : kept + picked.shape[1]] = picked
        kept += picked.shape[1]
        n += k
        for m, total, square in zip(measures, sums, sumsq, strict=True):
            m.sum += total
            m.sumsq += square
            m.n, m.kept, m.stride = n, kept, stride

    def add_steps(self, n: int) -> None:
        """``n`` agent-steps were taken (whether or not any was sampled)."""
        self.agent_steps += int(n)

    def close(self, drift: DriftReading | None = None) -> HealthSummary:
        """The window's summary (a measure with no value left out), and a new window."""
        summary = HealthSummary(
            agent_steps=self.agent_steps,
            measures={name: m.stats() for name, m in self._measures.items() if m.n},
            drift=drift,
        )
        for m in self._measures.values():
            m.clear()
        self.agent_steps = 0
        self._last = None
        return summary
