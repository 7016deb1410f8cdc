"""What every agent group is, whatever its kind: the contract the daemon runs groups through.

A kind of agent group (Active Inference, a neural policy, perception in front of Active
Inference, or one of your own) is a class whose objects satisfy :class:`AgentGroup`; the daemon
never asks which kind it has. :class:`GroupIO` says what the group's source (a simulated world,
or an MQTT inbox) must give and what its sink (an MQTT publisher, or the world again) takes: the
daemon builds both from it.

=================================  ==============================================================
``step`` / ``advance``             one batched step (``advance``: a tick's, with the world's
                                   outcomes for kinds that observe part of it directly)
``reset`` / ``resize``             new trials for some agents; grow or shrink the group
``state_dict`` / ``load_state_dict``  snapshots, and carry-over on reload
``per_agent_nbytes`` ...           memory: bytes per agent, shared model bytes, history rows
``io`` / ``io_signature``          what its source and sink are built for
``warm_up`` / ``finite``           the first real tick not cold; a deployment's watch
``random_inputs``                  valid inputs of one tick, for a deployment's health check
``describe`` / ``metrics``         what the status shows of the kind; its numbers for telemetry
=================================  ==============================================================

A group that learns its model (:mod:`edge_agent.core.learning`) is also a :class:`Learns`: the
verbs the daemon's learning commands call, whatever the kind.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["AgentGroup", "GroupIO", "Learns", "StateReader", "state_under"]


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
        self, obs: np.ndarray, now: float | None, outcomes: np.ndarray | None
    ) -> np.ndarray:
        """One tick's step: ``obs`` from the group's source, ``outcomes`` ``(n_agents, M)`` the
        simulated world's outcome indices when it has them (None otherwise), for kinds that
        observe some modalities directly."""
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


@runtime_checkable
class Learns(Protocol):
    """A group whose agents learn their model: the verbs on its learning (the signed commands
    ``learning_freeze``, ``learning_resume``, ``learning_reset`` call them between ticks)."""

    @property
    def learning_frozen(self) -> bool: ...

    def freeze_learning(self) -> bool:
        """Stop updating what is learned, keep using it; False if frozen already."""
        ...

    def resume_learning(self) -> bool:
        """Learn again; False if it was not frozen."""
        ...

    def reset_learning(self) -> None:
        """Forget what was learned: back to the model as loaded."""
        ...

    def learning_state(self) -> dict[str, Any]:
        """What a command's result and the status show of the learning (frozen, versions)."""
        ...
