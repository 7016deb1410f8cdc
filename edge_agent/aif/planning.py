"""When an agent plans: the planning policy of a group, and the pure choice of who plans a tick.

Every tick (the default, pymdp's behaviour) every agent infers its states, evaluates its
policies and acts. A :class:`PlanningPolicy` lets an agent skip the evaluation on the ticks where
nothing tells it that its plan is stale: it still infers its states every tick, and acts from the
plan it committed to the last time it planned. An agent plans when

- its plan is ``every`` ticks old (``every = 1``: every tick; ``0``: never for its age alone),
- its beliefs moved: the total-variation distance between the prior it predicted and the
  posterior the observation gave, ``0.5 * sum_s |qs(s) - prior(s)|`` (the largest over factors,
  in ``[0, 1]``), reaches ``belief_change``,
- or, instead, it was surprised: ``-ln p(o)``, the surprise of its observation under its prior
  predictive ``p(o) = sum_s A(o|s) prior(s)`` (in nats; the normaliser its state inference
  divides by), reaches ``surprise``,
- its committed plan is used up (policies of ``policy_len > 1`` steps), or it has none yet,
- it was deferred by the budget on an earlier tick.

A budget (``max_agents`` per tick, ``deadline_ms`` per tick, ``fit_tick``) bounds the planning of
a tick: the agents in most need go first (deferred ones, then the largest belief change, then the
oldest plan), the others keep acting from their plans and go first next tick. In the daemon a
deadline also ends planning early enough for the rest of the tick (the next priors, the world,
the history, the other groups) to end on time; ``fit_tick`` asks for that alone, with no fixed
deadline. :func:`planning_deadline` is that deadline, a pure function of the times it is given.

:func:`planning_order` is the pure part: the order in which the agents that must plan are served,
computed in preallocated buffers (no allocation per tick).

In the daemon's config the policy is a group's ``[groups.planning]`` table, the ``aif`` kind's
(:mod:`edge_agent.config.group_tables` lists it): its hooks refuse it in a group whose kind does
not plan, check its deadline against the node's tick and describe it for ``check-config``.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from numpy.typing import NDArray

from edge_agent.records import Problem, Record, Rule, raise_problems

#: Bits of the planning key (see :func:`planning_order`): the belief change, quantized, and the
#: plan's age, capped; a deferred agent's key has the top bit set.
CHANGE_BITS = 20
AGE_BITS = 10
_DEFERRED = np.int64(1) << (CHANGE_BITS + AGE_BITS)
_PRIORITY_TOP = np.int64(1) << (CHANGE_BITS + AGE_BITS + 1)

#: The surprise (nats) at the top of a budget's order: agents more surprised than this tie.
SURPRISE_TOP = 20.0

#: Share of the time left in a tick (when a group's tick began) that a planning deadline keeps
#: free beyond what it expects the rest of the tick to need: the estimate's error.
TICK_MARGIN = 0.1

#: The table's key in a ``[[groups]]`` table.
KEY = "planning"
#: How problems name the table (the config's reader finds its key by it).
TABLE = "[groups.planning]"


class PlanningPolicy(Record):
    """``[groups.planning]``: when the agents of an Active Inference group plan."""

    every: Annotated[
        int,
        Rule(
            ge=0,
            le=1_000_000,
            description="Plan when the plan is this many ticks old: 1, every tick (today's "
            "behaviour, the default); 0, never for its age alone.",
        ),
    ] = 1
    belief_change: Annotated[
        float | None,
        Rule(
            gt=0,
            le=1,
            description="Plan when the total-variation distance between an agent's predicted "
            "and posterior beliefs (the largest over factors) reaches this; default: off.",
        ),
    ] = None
    surprise: Annotated[
        float | None,
        Rule(
            gt=0,
            le=100,
            description="Plan when an agent's surprise -ln p(o) (nats) of its observation "
            "under its prior predictive reaches this; instead of belief_change; default: off.",
        ),
    ] = None
    max_agents: Annotated[
        int | None,
        Rule(
            ge=1,
            le=10_000_000,
            description="Plan at most this many agents a tick (most in need first); default: "
            "no limit.",
        ),
    ] = None
    deadline_ms: Annotated[
        float | None,
        Rule(
            gt=0,
            le=60_000,
            description="Start no new block of planning this many milliseconds after the "
            "group's tick began (its state inference counts; at least one block plans each "
            "tick); default: no deadline. In the daemon planning also stops early enough for "
            "the rest of the tick to end on time (see fit_tick).",
        ),
    ] = None
    fit_tick: Annotated[
        bool,
        Rule(
            description="In the daemon, start no new block of planning once the rest of the "
            "tick (measured over recent ticks) would make it end late; no fixed deadline "
            "needed. Default: off (a deadline_ms does it too).",
        ),
    ] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        problems: list[Problem] = []
        for key in ("belief_change", "surprise"):
            if self.every == 1 and getattr(self, key) is not None:
                problems.append(
                    (
                        (key,),
                        "needs every = 0 or every > 1 (with every = 1 each agent plans every "
                        "tick)",
                    )
                )
        if self.every == 0 and self.trigger is None:
            problems.append(
                (
                    ("every",),
                    "0 (never for age) needs belief_change or surprise, or agents would plan "
                    "only when a plan runs out",
                )
            )
        if self.belief_change is not None and self.surprise is not None:
            problems.append((("surprise",), "is instead of belief_change: give one of them"))
        raise_problems("PlanningPolicy", problems)

    @property
    def every_tick(self) -> bool:
        """Every agent plans every tick with no budget: today's path, bit for bit."""
        return (
            self.every == 1
            and self.max_agents is None
            and self.deadline_ms is None
            and not self.fit_tick
        )

    def describe(self) -> str:
        """One line: ``every 4 ticks or belief change >= 0.1, at most 500 agents a tick``."""
        when = []
        if self.every > 0:
            when.append("every tick" if self.every == 1 else f"every {self.every} ticks")
        if self.belief_change is not None:
            when.append(f"belief change >= {self.belief_change:g}")
        if self.surprise is not None:
            when.append(f"surprise >= {self.surprise:g} nats")
        parts = [" or ".join(when) + " or when a plan runs out"]
        if self.max_agents is not None:
            parts.append(f"at most {self.max_agents} agents a tick")
        if self.deadline_ms is not None:
            parts.append(f"deadline {self.deadline_ms:g} ms a tick")
        if self.fit_tick:
            parts.append("within the tick")
        return ", ".join(parts)

    @property
    def trigger(self) -> float | None:
        """The threshold an event triggers planning at: ``belief_change`` or ``surprise``."""
        return self.belief_change if self.belief_change is not None else self.surprise

    @property
    def measured(self) -> bool:
        """Whether a tick measures each agent's need (the trigger's, or a budget's order)."""
        return self.trigger is not None or self.budgeted

    @property
    def budgeted(self) -> bool:
        """A tick's planning is bounded (agents or time)."""
        return self.max_agents is not None or self.timed

    @property
    def timed(self) -> bool:
        """A tick's planning is bounded in time: a deadline, or the tick's end (``fit_tick``)."""
        return self.deadline_ms is not None or self.fit_tick

    # -- the table's hooks (edge_agent.config.group_tables) ------------------------------------
    def refusal(self, kind: object, kind_name: str) -> str | None:
        """Why a group of ``kind`` (a :class:`~edge_agent.kinds.base.GroupKind`) cannot take the
        policy: only kinds that plan do, unless it plans every agent every tick (None: it can)."""
        if self.every_tick or getattr(kind, "plans", False):
            return None
        return (
            f"{TABLE} is for Active Inference agents; a {kind_name} group steps every agent "
            "every tick"
        )

    def problem_keys(self, message: str) -> tuple[str, ...] | None:
        """A problem that names the table is reported at it."""
        return (KEY,) if not self.every_tick and TABLE in message else None

    def tick_problems(self, tick_hz: float) -> list[Problem]:
        """A deadline that is not within the node's tick (locations are the group's keys)."""
        period_ms = 1000.0 / tick_hz
        if self.deadline_ms is None or self.deadline_ms < period_ms:
            return []
        return [
            (
                (KEY, "deadline_ms"),
                f"{self.deadline_ms:g} ms is not within the {period_ms:g} ms tick "
                f"({tick_hz:g} Hz): planning would run into the next tick "
                "(docs/planning.md, choosing deadline_ms)",
            )
        ]

    def summary_tail(self) -> str | None:
        """What ``check-config`` adds at the end of the group's line (None: every tick)."""
        return None if self.every_tick else f"planning {self.describe()}"


EVERY_TICK = PlanningPolicy()


def planning_deadline(
    start: float,
    *,
    deadline_s: float | None,
    left_s: float | None,
    after_s: float,
    block_s: float,
    margin: float = TICK_MARGIN,
) -> float:
    """The time after which a group's tick starts no new block of planning (``inf``: none).

    ``start``: when the group's tick began; ``deadline_s``: its configured deadline from then
    (None: none); ``left_s``: how long the tick had left at ``start`` (None: not known, as
    outside the daemon); ``after_s``: what the rest of the tick needs once planning ends (the
    next priors, the world, the history, the other groups, the daemon's work); ``block_s``: one
    block of planning, which a process that starts it just before the deadline finishes after
    it. With ``left_s`` the deadline leaves ``after_s + block_s`` and ``margin`` of ``left_s``
    to the tick: planning ends by ``start + left_s * (1 - margin) - after_s``. All in seconds of
    one clock; a pure function of them (tests and replays give the times).
    """
    limit = math.inf if deadline_s is None else start + deadline_s
    if left_s is not None:
        limit = min(limit, start + left_s * (1.0 - margin) - after_s - block_s)
    return limit


def must_plan(
    policy: PlanningPolicy,
    change: NDArray[np.floating],
    age: NDArray[np.int32],
    plan_left: NDArray[np.int32],
    deferred: NDArray[np.bool_],
    *,
    out: NDArray[np.bool_],
    scratch: NDArray[np.bool_],
) -> NDArray[np.bool_]:
    """Which agents must plan this tick, into ``out (N,)`` (``scratch (N,)`` reused).

    ``change (N,)``: belief change (or surprise, with ``policy.surprise``) this tick; ``age
    (N,)``: ticks since the agent last planned;
    ``plan_left (N,)``: steps of its committed plan still to take (0: used up or none);
    ``deferred (N,)``: the budget put it off on an earlier tick.
    """
    np.less_equal(plan_left, 0, out=out)
    np.logical_or(out, deferred, out=out)
    if policy.every > 0:
        np.greater_equal(age, policy.every, out=scratch)
        np.logical_or(out, scratch, out=out)
    if policy.trigger is not None:
        np.greater_equal(change, policy.trigger, out=scratch)
        np.logical_or(out, scratch, out=out)
    return out


def planning_order(
    candidates: NDArray[np.int64],
    change: NDArray[np.floating],
    age: NDArray[np.integer],
    deferred: NDArray[np.bool_],
    *,
    priority: NDArray[np.int64],
    scratch: NDArray[np.int64],
    fscratch: NDArray[np.floating],
    top: float = 1.0,
) -> NDArray[np.int64]:
    """Sort ``candidates (k,)`` (agent indices, ascending) in place into the order they plan in:
    deferred agents first, the oldest plan first among them (then the largest change: a backlog
    is served in the order it formed, so no agent put off waits longer than the backlog takes,
    whatever the others' beliefs do), then the others by belief change (largest first; or
    surprise), then by plan age (oldest first), ties by index. ``change``, ``age``,
    ``deferred``: ``(N,)`` per agent; ``priority``, ``scratch`` (int64) and ``fscratch``
    (``change``'s dtype) are ``(N,)`` buffers; ``top``: the ``change`` at the top of the order
    (1: a belief change; :data:`SURPRISE_TOP`: a surprise), larger ones tie.

    One in-place sort of ``priority << 32 | index`` (indices below 2**32); returns
    ``candidates``."""
    k = len(candidates)
    if k == 0:
        return candidates
    lim = (1 << CHANGE_BITS) - 1
    # The belief change quantized to CHANGE_BITS bits, then the capped age (a deferred agent's
    # the other way round: its age above its change), the deferred bit.
    np.multiply(change, lim if top == 1.0 else lim / top, out=fscratch)
    np.clip(fscratch, 0, lim, out=fscratch)
    np.copyto(priority, fscratch, casting="unsafe")
    np.left_shift(priority, AGE_BITS, out=priority)
    np.right_shift(priority, AGE_BITS, out=priority, where=deferred)
    np.minimum(age, (1 << AGE_BITS) - 1, out=scratch)
    np.left_shift(scratch, CHANGE_BITS, out=scratch, where=deferred)
    np.bitwise_or(priority, scratch, out=priority)
    np.multiply(deferred, _DEFERRED, out=scratch)
    np.bitwise_or(priority, scratch, out=priority)
    # Highest priority first: sort (top - priority) ascending, the index in the low 32 bits.
    np.subtract(_PRIORITY_TOP, priority, out=priority)
    np.left_shift(priority, 32, out=priority)
    keys = np.take(priority, candidates, out=scratch[:k])
    np.bitwise_or(keys, candidates, out=keys)
    keys.sort()
    np.bitwise_and(keys, 0xFFFFFFFF, out=candidates)
    return candidates
