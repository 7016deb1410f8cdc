"""Telemetry downsampling, as a pure plan: which rows to keep, which to delete.

Raw telemetry older than ``[retention] telemetry_raw_s`` is reduced to one point per node per
``telemetry_step_s``: in every bucket ``(node, floor(ts / step))`` the newest row stays (it is
what a node said last in that interval, counters included) and records how many raw rows it
stands for (``samples``); the others are deleted. The data layer selects the rows, calls
:func:`plan_downsample` and applies the plan; nothing here touches a database or a clock.

The selection is cut at a bucket boundary (:func:`downsample_cut`), so a bucket is never half
raw; when it was limited (``complete=False``), the last bucket it saw may go on beyond it and is
left for the next pass, unless it is the only one (a bucket larger than the limit is then
downsampled in parts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["DownsamplePlan", "downsample_cut", "plan_downsample"]


@dataclass
class DownsamplePlan:
    """``keep``: row id -> the samples it stands for; ``drop``: row ids to delete."""

    keep: dict[int, int] = field(default_factory=dict)
    drop: list[int] = field(default_factory=list)


def downsample_cut(now: float, raw_s: float, step_s: float) -> float:
    """Rows older than this (wall clock) are downsampled: ``now - raw_s`` down to a step."""
    if step_s <= 0:
        raise ValueError(f"step_s is {step_s}, expected > 0")
    return math.floor((now - raw_s) / step_s) * step_s


def plan_downsample(
    rows: Sequence[tuple[int, str, float, int]], step_s: float, *, complete: bool
) -> DownsamplePlan:
    """The plan for ``rows``: ``(id, node, ts, samples)`` ordered by node, then ts, then id.

    ``complete``: the rows are every raw row before the cut (else the last bucket is left out,
    see the module docstring).
    """
    if step_s <= 0:
        raise ValueError(f"step_s is {step_s}, expected > 0")
    buckets: list[tuple[tuple[str, int], list[tuple[int, int]]]] = []
    for row_id, node, ts, samples in rows:
        key = (node, math.floor(ts / step_s))
        if not buckets or buckets[-1][0] != key:
            buckets.append((key, []))
        buckets[-1][1].append((row_id, samples))
    if not complete and len(buckets) > 1:
        buckets.pop()
    plan = DownsamplePlan()
    for _key, members in buckets:
        last_id = members[-1][0]
        plan.keep[last_id] = sum(samples for _id, samples in members)
        plan.drop.extend(row_id for row_id, _samples in members[:-1])
    return plan
