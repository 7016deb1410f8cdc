"""What a group's planning leaves to the rest of its tick (docs/planning.md, "In the daemon").

A group whose planning is bounded in time (``deadline_ms`` or ``fit_tick`` in
``[groups.planning]``) is told, before each step, how long its tick has left and how long the
previous tick went on after its step returned (:meth:`TickFit.pace`, from the daemon's group
runtime). It measures the rest itself with its own clock: when its planning ended, when its step
ended, how long one block of planning took. From recent ticks it keeps a high estimate of what
follows planning and of one block (:class:`RecentHigh`), and its planning deadline is
:func:`~edge_agent.aif.planning.planning_deadline` of those: a function of the times given, so a
test with its own clock gets the same deadline every run. Only durations cross from the daemon
(its monotonic clock) to the group (its own clock).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edge_agent.aif.planning import planning_deadline

#: Ticks a running estimate looks back over.
WINDOW = 32
#: Which of the window's largest samples an estimate takes (2: the second largest, so one odd
#: tick, a page fault or a late wake-up, does not cut planning for the whole window).
RANK = 2


class RecentHigh:
    """A high estimate of the last ``window`` samples: the ``rank``-th largest (the largest while
    there are fewer than ``rank``). A preallocated ring; None before the first sample."""

    def __init__(self, window: int = WINDOW, rank: int = RANK) -> None:
        if window < 1 or not 1 <= rank <= window:
            raise ValueError(f"need 1 <= rank <= window, got rank {rank}, window {window}")
        self._ring = np.zeros(window, dtype=np.float64)
        self._scratch = np.zeros(window, dtype=np.float64)
        self._rank = rank
        self._n = 0

    def add(self, value: float) -> None:
        self._ring[self._n % len(self._ring)] = value
        self._n += 1

    def value(self) -> float | None:
        n = min(self._n, len(self._ring))
        if n == 0:
            return None
        k = n - min(self._rank, n)  # ascending: the rank-th largest sits at n - rank
        part = self._scratch[:n]
        np.copyto(part, self._ring[:n])
        part.partition(k)
        return float(part[k])


class TickFit:
    """The tick's end as a group's planning sees it: what the daemon said of this tick, what the
    group measured of the last ones (seconds of the group's ``clock``, or durations)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        #: What follows planning to the tick's end, and one block of planning, recent ticks.
        self.after = RecentHigh()
        self.block = RecentHigh()
        #: This tick: how long it had left when the group's step began (None: not paced).
        self.left_s: float | None = None
        self._plan_end: float | None = None
        #: The last tick: from its planning's end to its step's end (the group's part of what
        #: follows planning), waiting for the daemon's part (:meth:`pace`).
        self._after_step: float | None = None
        #: The last tick's deadline from its start (None: none), for the status.
        self.last_deadline_s: float | None = None

    @property
    def paced(self) -> bool:
        """Whether the daemon said how long this tick has left."""
        return self.left_s is not None

    def pace(self, left_s: float, rest_s: float | None) -> None:
        """Before a step: the tick must end ``left_s`` seconds from now; the previous tick went on
        ``rest_s`` seconds after this group's step returned (None: not known, e.g. the group did
        not step then)."""
        if rest_s is not None and self._after_step is not None:
            self.after.add(self._after_step + max(0.0, rest_s))
        self._after_step = None
        self.left_s = left_s

    def deadline(self, start: float, deadline_s: float | None) -> float:
        """When this tick's planning starts no new block (``start``: when the group's tick began;
        read after its inference). Not paced: ``start + deadline_s``, as outside the daemon.
        Before any tick was measured, what follows planning is taken to cost what this tick's
        inference did (the next priors, a pass as long)."""
        if self.left_s is None:
            limit = math.inf if deadline_s is None else start + deadline_s
        else:
            after = self.after.value()
            if after is None:
                after = self._clock() - start
            limit = planning_deadline(
                start,
                deadline_s=deadline_s,
                left_s=self.left_s,
                after_s=after,
                block_s=self.block.value() or 0.0,
            )
        self.last_deadline_s = None if math.isinf(limit) else limit - start
        return limit

    def planned(self, began: float, blocks: int, processes: int) -> None:
        """The planning pass that began at ``began`` ended now, after ``blocks`` blocks shared by
        ``processes``: one block's time is a sample."""
        if self.left_s is None:
            return
        self._plan_end = end = self._clock()
        if blocks:
            self.block.add((end - began) / -(-blocks // max(1, processes)))

    def stepped(self) -> None:
        """The group's step ends now: what followed its planning in it is measured."""
        if self._plan_end is not None:
            self._after_step = self._clock() - self._plan_end
        self._plan_end = None
        self.left_s = None

    def estimates_ms(self) -> dict[str, float | None]:
        """What the status shows: the last deadline and the estimates, in milliseconds."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000.0, 3)

        return {
            "deadline_ms": ms(self.last_deadline_s),
            "after_planning_ms": ms(self.after.value()),
            "block_ms": ms(self.block.value()),
        }
