"""What every agent group is, whatever its kind: the contract the daemon runs groups through.

A kind of agent group (Active Inference, a neural policy, perception in front of Active
Inference, or one of your own) is a class whose objects satisfy :class:`AgentGroup`; the daemon
never asks which kind it has. :class:`GroupIO` says what the group's source must give and what
its sink takes: the daemon builds both from it.

A group at run time is source -> step -> sink. A :class:`Source` gives each tick's inputs (a
simulated world, :class:`edge_agent.sim.endpoints.WorldSource`, or an MQTT inbox,
:class:`edge_agent.fleet.agent_io.InboxSource`); a :class:`Sink` takes the tick's actions (the
world again, :class:`~edge_agent.sim.endpoints.WorldSink`; an MQTT publisher,
:class:`~edge_agent.fleet.agent_io.ActionPublisher`; the daemon's log). They satisfy these
protocols by their shape: the floors below (``sim``) and beside (``fleet``) never import
``core``. The ones that need the node's fleet link get it through :meth:`Source.connect` and
:meth:`Sink.connect` (a :class:`FleetPort`: the daemon's uplink); the others ignore it.

=================================  ==============================================================
``step`` / ``advance``             one batched step (``advance``: a tick's, with the world's
                                   outcomes for kinds that observe part of it directly)
``reset`` / ``resize``             new trials for some agents; grow or shrink the group
``state_dict`` / ``load_state_dict``  snapshots, and carry-over on reload
``per_agent_nbytes`` ...           memory: bytes per agent, shared model bytes, history rows
``io`` / ``io_signature``          what its source and sink are built for
``warm_up`` / ``finite``           the first real tick not cold; a deployment's watch
``random_inputs``                  valid inputs of one tick, for a deployment's preflight
``describe`` / ``metrics``         what the status shows of the kind; its numbers for telemetry
=================================  ==============================================================

A group that may learn its model (:mod:`edge_agent.core.learning`) is also a :class:`MayLearn`:
its ``learning`` part (None: its agents do not learn) is a :class:`Learns`, the verbs the
daemon's learning commands call, whatever the kind. A
group that raises events of its own (a neural group whose observations left the range its model
was calibrated on) is also an :class:`Alerting`: the daemon takes its :class:`GroupEvent`
objects between ticks. A group that measures how well its model fits what its agents observe
(``docs/health.md``) is also a :class:`ReportsHealth`: the daemon closes its reporting window
at the telemetry cadence. A group whose work in a tick can yield to the tick's end (planning bounded
in time, docs/planning.md) is also a :class:`Paced`: before each step the daemon tells it how
long the tick has left (:class:`TickWindow`).

What a kind's groups report beyond every group's numbers, and what those numbers add up to over
a node (planning, learning), the kind declares as :class:`MetricFamily` objects: the daemon
registers them as they come and never names them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from edge_agent.aif.learning_counts import TableIncrements
    from edge_agent.core.health_window import HealthSummary

__all__ = [
    "AgentGroup",
    "Alerting",
    "FleetPort",
    "GroupEvent",
    "GroupIO",
    "Learns",
    "MayLearn",
    "MetricFamily",
    "Paced",
    "ReportsHealth",
    "Scored",
    "Shadows",
    "Sink",
    "Source",
    "StateReader",
    "Taken",
    "TickWindow",
    "iter_rows",
    "state_under",
]


@runtime_checkable
class StateReader(Protocol):
    """A saved state that copies each array straight into a group's own (a snapshot's arrays,
    inflated chunk by chunk: a million agents are restored without a second copy of them).

    A group's ``load_state_dict`` takes it through this where it can, and as the
    ``Mapping[str, np.ndarray]`` it also is everywhere else."""

    def spec(self, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        """Shape and dtype of array ``name`` (``KeyError`` if there is none)."""
        ...

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Copy array ``name`` into ``out`` (of its shape; the dtype converts)."""
        ...

    def iter_rows(self, name: str, rows: int) -> Iterator[np.ndarray]:
        """Array ``name``'s rows, ``rows`` at a time (the last batch may hold fewer): each
        valid until the next is asked for."""
        ...


class _StateUnder(Mapping[str, np.ndarray]):
    """The arrays of ``state`` whose names start with ``prefix``, named without it."""

    def __init__(self, state: Mapping[str, np.ndarray], prefix: str) -> None:
        self._state, self._prefix = state, prefix
        self._names = [k[len(prefix) :] for k in state if k.startswith(prefix)]

    def __getitem__(self, name: str) -> np.ndarray:
        return self._state[self._prefix + name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._prefix + name in self._state

    def spec(self, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        if isinstance(self._state, StateReader):
            return self._state.spec(self._prefix + name)
        value = np.asarray(self[name])
        return value.shape, value.dtype

    def read_into(self, name: str, out: np.ndarray) -> None:
        if isinstance(self._state, StateReader):
            self._state.read_into(self._prefix + name, out)
        else:
            np.copyto(out, self[name], casting="unsafe")

    def iter_rows(self, name: str, rows: int) -> Iterator[np.ndarray]:
        return iter_rows(self._state, self._prefix + name, rows)


def iter_rows(state: Mapping[str, np.ndarray], name: str, rows: int) -> Iterator[np.ndarray]:
    """The rows of ``state[name]``, ``rows`` at a time (a :class:`StateReader`'s inflated as
    they go: no whole copy of the array is made)."""
    if isinstance(state, StateReader):
        yield from state.iter_rows(name, rows)
        return
    array = np.asarray(state[name])
    for start in range(0, len(array), rows):
        yield array[start : start + rows]


def state_under(state: Mapping[str, np.ndarray], prefix: str) -> Mapping[str, np.ndarray]:
    """The arrays of ``state`` under ``prefix`` (named without it), read as ``state`` reads
    them: a :class:`StateReader`'s straight into their destination."""
    return _StateUnder(state, prefix)


@dataclass(frozen=True)
class GroupIO:
    """What a group's source must give and its sink takes.

    ``features`` is None for agents that take one outcome index per modality (``num_obs``, one
    size per modality); otherwise they take ``features`` float32 values per agent per step, or a
    ``frame`` (an image) that flattens to them. ``actions`` is the action layout (one size per
    control factor, or ``(A,)`` for a policy's outputs); ``continuous`` the number of float
    action dimensions (0: discrete actions).
    """

    num_obs: tuple[int, ...] = ()
    features: int | None = None
    frame: tuple[int, ...] | None = None
    actions: tuple[int, ...] = ()
    continuous: int = 0


class AgentGroup(Protocol):
    """``n_agents`` agents of one kind stepped as one batch (the members every kind shares).

    Arrays are batch-first: ``obs`` is ``(n_agents, ...)`` as :meth:`io` describes it, the
    actions ``(n_agents, ...)``.
    """

    key: str
    """The model's identity (snapshots and carry-over match on it)."""

    @property
    def precision(self) -> str: ...

    @property
    def n_agents(self) -> int: ...

    @property
    def history_capacity(self) -> int: ...

    @property
    def shared_nbytes(self) -> int:
        """Bytes of the model, shared by every group that runs it."""
        ...

    @property
    def action(self) -> np.ndarray:
        """The last actions (the group's own array)."""
        ...

    def per_agent_nbytes(self) -> int: ...

    def step(self, obs: np.ndarray, now: float | None = None) -> np.ndarray: ...

    def advance(
        self, obs: np.ndarray, now: float | None, outcomes: np.ndarray | None,
        starts: np.ndarray | None = None,
    ) -> np.ndarray:
        """One tick's step: ``obs`` from the group's source, ``outcomes`` ``(n_agents, M)`` the
        simulated world's outcome indices when it has them (None otherwise), for kinds that
        observe some modalities directly; ``starts`` ``(n_agents,)`` bool, the agents whose
        episode starts at this tick (None: nobody's): the same as ``reset(starts)`` just
        before (a kind may start them inside its step: an Active Inference group's compiled
        pass does)."""
        ...

    def reset(self, mask: np.ndarray | None = None) -> None: ...

    def resize(self, n_agents: int) -> None:
        """Grow or shrink to ``n_agents`` (reserving first: a BudgetError leaves it as it was)."""
        ...

    def resize_history(self, capacity: int) -> None: ...

    def release(self) -> None:
        """Give every reservation back to the budget (and stop any worker processes)."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None: ...

    def io(self) -> GroupIO: ...

    def io_signature(self) -> tuple[object, ...]:
        """Kind name first, then what the source and sink are built for: a new model must match
        it to be switched in place."""
        ...

    def warm_up(self, obs: np.ndarray) -> None:
        """Run the kernels once on ``obs`` so the first real tick is not cold, then put the
        state back (histories untouched)."""
        ...

    def finite(self) -> bool:
        """Whether the state a deployment's watch checks is finite."""
        ...

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """Valid random ``(obs, outcomes)`` of one tick, as :meth:`advance` takes them."""
        ...

    def describe(self) -> dict[str, Any]:
        """What a group's description shows of its kind (workers, window, ...)."""
        ...

    def metrics(self) -> dict[str, object]:
        """The kind's own numbers of the group for telemetry and Prometheus (may be empty)."""
        ...


@dataclass(frozen=True)
class MetricFamily:
    """Numbers some kinds of group report: the keys they add to their groups'
    :meth:`AgentGroup.metrics` and the node's totals over those groups, one reader of the
    daemon's metrics registry under ``name`` (``planning.agents``, ``edge_agent_planning_agents``).

    ``total`` takes every group's numbers (``agents`` among them: the group's size) and returns
    the node's, empty when no group reports the family's keys. ``gauges`` are the totals' keys
    that are gauges (``"*"``: all; the others only grow), ``describe`` their HELP texts;
    ``group_gauges`` and ``group_describe`` the same of the per-group keys.
    """

    name: str
    help: str
    total: Callable[[Sequence[Mapping[str, object]]], dict[str, float | int]]
    gauges: tuple[str, ...] = ()
    describe: Mapping[str, str] = field(default_factory=dict)
    group_gauges: tuple[str, ...] = ()
    group_describe: Mapping[str, str] = field(default_factory=dict)


class Learns(Protocol):
    """A group's learning, the part that holds what its agents learn: whether it is frozen, the
    verbs on it (the signed commands ``learning_freeze``, ``learning_resume``, ``learning_reset``
    call them between ticks), what the status and a command's result show of it, what the fleet
    is sent of it, and what its counts were learned from (``export-model`` checks a snapshot's)."""

    @property
    def frozen(self) -> bool:
        """Whether the counts are frozen (:meth:`freeze`)."""
        ...

    def freeze(self) -> bool:
        """Stop updating what is learned, keep using it; False if frozen already."""
        ...

    def resume(self) -> bool:
        """Learn again; False if it was not frozen."""
        ...

    def forget(self) -> None:
        """Forget what was learned: back to the model as loaded."""
        ...

    def summary(self) -> dict[str, Any]:
        """What a command's result and the status show of the learning (frozen, versions)."""
        ...

    def take_increments(self) -> list[TableIncrements]:
        """What the agents learned since the last call, per learned table (the fleet's
        learning deltas, ``docs/fleet-learning.md``); the accumulation starts anew."""
        ...

    def identity(self) -> bytes:
        """What the counts were learned from (a digest): a snapshot's counts of another
        identity are another learning's."""
        ...


@runtime_checkable
class MayLearn(Protocol):
    """A group whose agents may learn their model: its learning part (None: they do not)."""

    @property
    def learning(self) -> Learns | None:
        """The verbs on what the agents learn (None: the group was built without learning)."""
        ...


@dataclass(frozen=True)
class GroupEvent:
    """An event a group raises: the daemon records it in the status and publishes it to the
    fleet (``kind``: the daemon's event name, such as ``input_out_of_range``; ``data``: a few
    JSON numbers and strings)."""

    kind: str
    severity: str
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Alerting(Protocol):
    """A group that raises events of its own (see :class:`GroupEvent`)."""

    def alerts(self) -> list[GroupEvent]:
        """The events raised since the last call (each returned once; usually none)."""
        ...


@runtime_checkable
class ReportsHealth(Protocol):
    """A group that measures its health (``docs/health.md``): surprise, free energy, confidence,
    ..., per reporting window."""

    def health_summary(self) -> HealthSummary | None:
        """The measures since the last call (each window reported once), and the drift alarm's
        state; None: the group measures nothing."""
        ...


@runtime_checkable
class Shadows(Protocol):
    """A group that can run as a shadow beside a live group of the same contract (a deployment's
    shadow evaluation, ``docs/health.md``): it takes over the live group's beliefs when it runs
    the same model, measures the same agents on the same ticks, tells each measured tick's
    excess surprise to a tap, and follows actions it did not choose."""

    def shadow(self, live: Shadows, tap: Callable[[int, np.ndarray], None]) -> bool:
        """Run beside ``live`` from now on, telling ``tap`` this group's measured ticks; True
        when it took over ``live``'s beliefs (same model and size), False when it starts from
        its own priors."""
        ...

    def tap_excess(self, tap: Callable[[int, np.ndarray], None] | None) -> None:
        """Tell ``tap`` each measured tick's ``(clock, excess surprise (r,))`` (None: stop)."""
        ...

    def set_action(self, actions: np.ndarray) -> None:
        """Commit actions chosen elsewhere: the next prior follows from them."""
        ...


@runtime_checkable
class Scored(Protocol):
    """A source that defines a score (a simulated world's rewards, goals reached): each agent's
    score over the health window that ends now (``docs/health.md``, the ``score`` measure)."""

    def score_window(self) -> np.ndarray | None:
        """``(n_agents,)`` each agent's score since the last call (None: none defined)."""
        ...


@dataclass(frozen=True, slots=True)
class TickWindow:
    """When the daemon's current tick must end and when the previous one ended (seconds of the
    daemon's monotonic clock; ``last_end`` None: the previous tick failed, or there was none)."""

    due: float
    last_end: float | None


@runtime_checkable
class Paced(Protocol):
    """A group whose tick can yield to the tick's end: told, before each step, how long the tick
    has left (durations only: the group measures the rest on its own clock)."""

    def pace(self, left_s: float, rest_s: float | None) -> None:
        """The tick must end ``left_s`` seconds from now; the previous one went on ``rest_s``
        seconds after this group's step returned (None: not known)."""
        ...


Taken = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]
"""A tick's inputs from a :class:`Source`: ``(obs, outcomes, starts)``. ``obs`` as the agents'
:meth:`AgentGroup.advance` takes it; ``outcomes`` ``(n_agents, M)`` the simulated world's outcome
indices when it has them (None otherwise); ``starts`` ``(n_agents,) bool`` the agents whose
episode starts at this tick (reset before the step), None when no agent's does."""


class FleetPort(Protocol):
    """The node's fleet link as a source and a sink see it (the daemon's uplink).

    ``core`` does not import ``fleet``: ``body`` is a protocol
    :class:`~edge_agent.fleet.protocol.ActionBatch` and ``inbox`` a
    :class:`~edge_agent.fleet.agent_io.ObservationBuffer`.
    """

    def send_actions(self, topic: str, body: Any) -> bool:
        """Queue one batch of actions for ``topic``; False if it was refused (counted)."""
        ...

    def listen(self, topic: str, inbox: Any) -> None:
        """Route the observations arriving on the filter ``topic`` to ``inbox`` (and the
        broker's refusal of the subscription: ``inbox.refused``)."""
        ...

    def publishes(self, topic: str, publisher: Any) -> None:
        """``publisher`` (an :class:`~edge_agent.fleet.agent_io.ActionPublisher`) sends on
        ``topic``: what the broker refuses of it goes back to it (``publisher.refused``)."""
        ...


class Source(Protocol):
    """Where a group's observations come from: a simulated world or an MQTT inbox."""

    @property
    def obs(self) -> np.ndarray:
        """The last observation of every agent (what a warm-up steps on)."""
        ...

    def take(self) -> Taken | None:
        """This tick's inputs, or None while the group cannot step yet (an inbox waits until
        every agent has had an observation)."""
        ...

    def resize(self, n_agents: int) -> None:
        """Follow the group to ``n_agents`` (a world is built again: every agent's episode
        starts afresh)."""
        ...

    def carry_over(self, prev: Source) -> None:
        """Take over ``prev``'s pending input on a reload that kept the group's model and size
        (an inbox keeps its rows and counters; a world starts afresh)."""
        ...

    def connect(self, port: FleetPort) -> None:
        """The node's fleet link (an inbox listens on its topic filter through it)."""
        ...

    def rejected(self) -> tuple[str, dict[str, int]] | None:
        """Input dropped since the last call: the last reason and the counters (None: nothing
        new)."""
        ...

    def counters(self) -> dict[str, int]:
        """Cumulative input counters (``obs_rows``, ``rows_rejected``, ``batches_rejected``,
        ``stale_agent_ticks``) for telemetry; empty for a world."""
        ...

    def describe(self) -> dict[str, Any]:
        """What a group's description shows of its source (``world`` or ``io``)."""
        ...

    def report_line(self) -> str:
        """The source in one line, for the demo's report."""
        ...


class Sink(Protocol):
    """Where a group's actions go: the simulated world, an MQTT publisher, the log."""

    def put(self, tick: int, actions: np.ndarray) -> None:
        """Take the actions of the group's ``tick``-th step (``(n_agents, ...)``, the agents'
        own array: read it now, do not keep it)."""
        ...

    def resize(self, n_agents: int) -> None: ...

    def connect(self, port: FleetPort) -> None:
        """The node's fleet link (an MQTT sink publishes through it)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What a group's description shows of its sink (``actions`` counters; may be empty)."""
        ...
