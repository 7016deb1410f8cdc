"""Wire messages of the coordination layer, registered on the fleet protocol.

Belief sharing reuses the protocol's :class:`~edge_agent.fleet.protocol.BeliefBatch` on
``node/{node}/beliefs`` (see :mod:`edge_agent.coordination.beliefs` for what its fields carry).
Task allocation adds six message types, each sent on the sender's own ``node/{node}/tasks``
topic (receivers subscribe to ``node/+/tasks``), registered with
:func:`~edge_agent.fleet.protocol.register_body_type` when this module is imported:

========================= ==================================================================
``task_announce``          :class:`TaskAnnounce`: signed tasks (id, epoch, goal, capability, ...)
``task_bids``              :class:`TaskBids`: one node's bids, columnar
``task_release``           :class:`TaskRelease`: a holder finished, gave up, or ran out of time
``task_state``             :class:`TaskState`: digest of the sender's ledger and what it pursues
``task_sync``              :class:`TaskSync`: part of a ledger, to merge after a partition
``task_key``               :class:`TaskKey`: the sender's public task key (retained)
========================= ==================================================================

Signed facts: a release carries the holder node's ed25519 signature
(:func:`~edge_agent.coordination.signing.release_bytes`), and a sync relays a tombstone only as
the signed release that closed the task (``closers``). A task spec carries its announcer's
signature (:func:`~edge_agent.coordination.signing.spec_bytes`) in the announcement and in every
sync that relays it (``sigs``, ``task_sigs``): an unsigned announcement is malformed, so a fleet
updates together. Other fields added later have defaults, so a receiver takes messages of older
senders (unsigned releases are merged, never relayed).

Arrays are little-endian ``bin`` columns, as in the protocol's batches; every length is checked
by the model (a :class:`~edge_agent.fleet.protocol.WireModel`, like the protocol's), so a body
either matches exactly or is refused at decode time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Final, NamedTuple, Self

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import UNSET, Meta, UnsetType

from edge_agent.fleet.names import UINT32
from edge_agent.fleet.protocol import (
    U32,
    Body,
    Name,
    NonNegFloat,
    WireModel,
    prepare_all,
    register_body_type,
)

MAX_TASKS_PER_MESSAGE: Final = 1024
"""Task specs, releases or task names in one message."""
MAX_BIDS_PER_MESSAGE: Final = 8192
"""Bid rows in one message (a sync part is then at most ~220 KB, under the 256 KiB limit)."""
MAX_CLAIMS: Final = 4096
DIGEST_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64
"""A raw ed25519 signature."""
KEY_BYTES: Final = 32
"""A raw ed25519 public key."""
MAX_GOAL_FACTOR: Final = 63
MAX_GOAL_STATE: Final = 1 << 20
MAX_TEAM: Final = 64
"""Agents one task may ask for (its slots, over all its roles)."""
MAX_ROLES: Final = 16
"""Roles of one task, the spec's own (role 0) included."""
MAX_TEAM_STATES: Final = 1024
"""Teams one ``task_state`` reports."""


class _Strict(WireModel, frozen=True, kw_only=True):
    """The parts of task messages: checked as the protocol's models are."""


GoalFactor = Annotated[
    int, Meta(ge=0, le=MAX_GOAL_FACTOR, description="hidden-state factor the goal is on")
]
GoalState = Annotated[
    int, Meta(ge=0, lt=MAX_GOAL_STATE, description="state of goal_factor the holder must reach")
]
RoleIndex = Annotated[int, Meta(ge=0, lt=MAX_ROLES)]


class Role(_Strict, frozen=True, kw_only=True):
    """``count`` agents of ``capability``, each to reach ``goal_state`` of ``goal_factor``: a
    role of a team task beyond the spec's own."""

    capability: Name
    count: Annotated[int, Meta(ge=1, le=MAX_TEAM)]
    goal_factor: GoalFactor = 0
    goal_state: GoalState


class Slots(NamedTuple):
    """One role of a task as the award sees it: ``agents`` slots, each for an agent of
    ``capability`` that is to reach ``goal_state`` of ``goal_factor``."""

    capability: str
    goal_factor: int
    goal_state: int
    agents: int


class TaskSpec(_Strict, frozen=True, kw_only=True):
    """What a task is. Two specs of one task are ordered by :meth:`order_key`; the larger wins.

    A **team task** asks for several agents: ``team`` of the spec's own capability and goal
    (role 0), and ``count`` more of each of ``roles`` (roles 1, 2, ...), at most
    :data:`MAX_TEAM` in all. Both fields are left out of a one-agent task (they are
    :data:`msgspec.UNSET`, not encoded): a one-agent spec is the same bytes as before teams
    existed, and a node of that version refuses a message carrying a team spec (an unknown
    field) -- counted by its link, never taken as a one-agent task. :attr:`is_team` is True as
    soon as either is given, even for a team of one.
    """

    task: Annotated[Name, Meta(description="task id, unique in the fleet")]
    epoch: Annotated[
        U32, Meta(description="auction round; a re-announced or released task has more")
    ]
    capability: Annotated[Name, Meta(description="only groups declaring this capability bid")]
    goal_factor: Annotated[
        int, Meta(ge=0, le=MAX_GOAL_FACTOR, description="hidden-state factor the goal is on")
    ] = 0
    goal_state: Annotated[
        int,
        Meta(ge=0, lt=MAX_GOAL_STATE, description="state of goal_factor the holder must reach"),
    ]
    deadline: Annotated[
        NonNegFloat, Meta(description="wall-clock seconds since the epoch; 0 means none")
    ] = 0.0
    announced_by: Name
    team: Annotated[int, Meta(ge=1, le=MAX_TEAM)] | UnsetType = UNSET
    """Agents of the spec's own capability and goal (role 0); absent: one (a one-agent task,
    unless ``roles`` is given)."""
    roles: Annotated[list[Role], Meta(min_length=1, max_length=MAX_ROLES - 1)] | UnsetType = UNSET
    """More roles of a team task (roles 1, 2, ...)."""

    def _check(self) -> None:
        if self.size > MAX_TEAM:
            raise ValueError(f"a team of {self.size} agents, at most {MAX_TEAM}")

    @property
    def is_team(self) -> bool:
        """Whether the spec asks for a team (``team`` or ``roles`` given)."""
        return self.team is not UNSET or self.roles is not UNSET

    @property
    def size(self) -> int:
        """Agents the task needs: its slots over all roles."""
        return sum(r.agents for r in self.slots())

    @property
    def n_roles(self) -> int:
        """``len(self.slots())``, without building them (admission asks it of every task of
        every bid message)."""
        return 1 if self.roles is UNSET else 1 + len(self.roles)

    def slots(self) -> tuple[Slots, ...]:
        """Its roles in order: the spec's own first (``team`` agents, or one), then ``roles``."""
        own = Slots(
            self.capability,
            self.goal_factor,
            self.goal_state,
            1 if self.team is UNSET else self.team,
        )
        more = () if self.roles is UNSET else self.roles
        return (own, *(Slots(r.capability, r.goal_factor, r.goal_state, r.count) for r in more))

    def order_key(self) -> tuple[object, ...]:
        base: tuple[object, ...] = (
            self.epoch,
            self.announced_by,
            self.capability,
            self.goal_factor,
            self.goal_state,
            self.deadline,
        )
        if not self.is_team:
            return base
        return (*base, tuple(self.slots()))


def announcement_parts(specs: list[TaskSpec]) -> list[tuple[int, int]]:
    """``(start, end)`` of each ``task_announce`` that carries ``specs`` (in that order): at most
    :data:`MAX_TASKS_PER_MESSAGE` each, and one-agent and team specs never in one message (a
    node of the version before teams refuses a message with a team spec whole)."""
    parts = []
    start = 0
    for i in range(1, len(specs) + 1):
        if (
            i == len(specs)
            or i - start == MAX_TASKS_PER_MESSAGE
            or specs[i].is_team != specs[start].is_team
        ):
            parts.append((start, i))
            start = i
    return parts


class TaskAnnounce(Body, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "task_announce"
    tasks: Annotated[list[TaskSpec], Meta(min_length=1, max_length=MAX_TASKS_PER_MESSAGE)]
    sigs: Annotated[
        bytes, Meta(description="the announcer's 64-byte ed25519 signature of each spec")
    ] = b""

    def _check(self) -> None:
        _check_sigs("sigs", self.sigs, len(self.tasks), optional=False)

    def signature(self, i: int) -> bytes:
        return self.sigs[i * SIGNATURE_BYTES : (i + 1) * SIGNATURE_BYTES]


def _u32(values: npt.ArrayLike) -> bytes:
    return np.asarray(values).astype("<u4").tobytes()


def _u16(values: npt.ArrayLike) -> bytes:
    return np.asarray(values).astype("<u2").tobytes()


def _u8(values: npt.ArrayLike) -> bytes:
    return np.asarray(values).astype(np.uint8).tobytes()


def _f32(values: npt.ArrayLike) -> bytes:
    return np.asarray(values).astype("<f4").tobytes()


def _check_column(name: str, data: bytes, itemsize: int, rows: int) -> None:
    if len(data) != rows * itemsize:
        raise ValueError(f"{name} has {len(data)} bytes, expected {rows} x {itemsize}")


def _check_team_columns(roles: bytes | UnsetType, holds: bytes | UnsetType, rows: int) -> None:
    """The optional uint8 columns of bids on team tasks: a role below :data:`MAX_ROLES`, a hold
    flag of 0 or 1."""
    if roles is not UNSET:
        _check_column("roles", roles, 1, rows)
        if rows and int(np.frombuffer(roles, np.uint8).max()) >= MAX_ROLES:
            raise ValueError(f"a role of {MAX_ROLES} or more")
    if holds is not UNSET:
        _check_column("holds", holds, 1, rows)
        if rows and int(np.frombuffer(holds, np.uint8).max()) > 1:
            raise ValueError("a hold flag other than 0 or 1")


def _team_columns(
    roles: bytes | UnsetType, holds: bytes | UnsetType, rows: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    zeros = np.zeros(rows, np.uint8)
    return (
        zeros if roles is UNSET else np.frombuffer(roles, np.uint8),
        zeros if holds is UNSET else np.frombuffer(holds, np.uint8),
    )


class TaskBids(Body, frozen=True, kw_only=True):
    """Bids of the sending node's ``group``: row ``i`` is agent ``agents[i]`` bidding ``costs[i]``
    on task ``tasks[task_index[i]]`` at epoch ``epochs[task_index[i]]``.

    ``bseq`` orders this node's bids and releases (with the envelope's ``bdseq`` in front): for
    the same (task, epoch, agent) the bid with the larger ``(bdseq, bseq)`` replaces the other.
    """

    TYPE: ClassVar[str] = "task_bids"
    group: Name
    bseq: U32
    tasks: Annotated[list[Name], Meta(min_length=1, max_length=MAX_TASKS_PER_MESSAGE)]
    epochs: Annotated[bytes, Meta(description="little-endian uint32 per task")]
    task_index: Annotated[bytes, Meta(description="little-endian uint16 per bid")]
    agents: Annotated[bytes, Meta(description="little-endian uint32 per bid")]
    costs: Annotated[bytes, Meta(description="little-endian float32 per bid, finite")]
    roles: (
        Annotated[bytes, Meta(description="uint8 per bid: the role of a team task it is for")]
        | UnsetType
    ) = UNSET
    holds: (
        Annotated[
            bytes, Meta(description="uint8 per bid: 1 when the agent takes its slot (a hold)")
        ]
        | UnsetType
    ) = UNSET

    def _check(self) -> None:
        _check_column("epochs", self.epochs, 4, len(self.tasks))
        if len(self.task_index) % 2:
            raise ValueError("task_index is not a whole number of uint16")
        rows = len(self.task_index) // 2
        if rows > MAX_BIDS_PER_MESSAGE:
            raise ValueError(f"{rows} bids in one message, at most {MAX_BIDS_PER_MESSAGE}")
        _check_column("agents", self.agents, 4, rows)
        _check_column("costs", self.costs, 4, rows)
        _check_team_columns(self.roles, self.holds, rows)
        if rows and int(np.frombuffer(self.task_index, "<u2").max()) >= len(self.tasks):
            raise ValueError("task_index points past the task list")
        if not np.isfinite(np.frombuffer(self.costs, "<f4")).all():
            raise ValueError("costs must be finite")

    @property
    def n_bids(self) -> int:
        return len(self.task_index) // 2

    @classmethod
    def from_arrays(
        cls,
        group: str,
        bseq: int,
        tasks: list[str],
        *,
        epochs: npt.ArrayLike,
        task_index: npt.ArrayLike,
        agents: npt.ArrayLike,
        costs: npt.ArrayLike,
        roles: npt.ArrayLike | None = None,
        holds: npt.ArrayLike | None = None,
    ) -> Self:
        """``roles`` and ``holds`` only for bids on team tasks (left out otherwise)."""
        return cls(
            group=group,
            bseq=bseq,
            tasks=tasks,
            epochs=_u32(epochs),
            task_index=_u16(task_index),
            agents=_u32(agents),
            costs=_f32(costs),
            roles=UNSET if roles is None else _u8(roles),
            holds=UNSET if holds is None else _u8(holds),
        )

    def team_columns(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """``(roles, holds)`` per bid (zeros when the message has none)."""
        return _team_columns(self.roles, self.holds, self.n_bids)

    def arrays(
        self,
    ) -> tuple[
        npt.NDArray[np.uint32],
        npt.NDArray[np.uint16],
        npt.NDArray[np.uint32],
        npt.NDArray[np.float32],
    ]:
        """``(epochs per task, task_index, agents, costs)`` as read-only arrays."""
        return (
            np.frombuffer(self.epochs, "<u4"),
            np.frombuffer(self.task_index, "<u2"),
            np.frombuffer(self.agents, "<u4"),
            np.frombuffer(self.costs, "<f4"),
        )


class ReleaseStatus(StrEnum):
    DONE = "done"
    """The holder reached the goal: the task is closed."""
    EXPIRED = "expired"
    """The deadline passed while it was held: the task is closed."""
    ABANDONED = "abandoned"
    """The holder gave it up: the task is auctioned again at ``epoch + 1``."""


class Release(_Strict, frozen=True, kw_only=True):
    """A holder let go of a task. ``node``/``group``/``agent`` name the holder; its bids up to
    ``(bdseq, bseq)`` are consumed (they can never win again)."""

    task: Name
    epoch: U32
    node: Name
    group: Name
    agent: U32
    bdseq: U32
    bseq: U32
    status: ReleaseStatus
    role: RoleIndex | UnsetType = UNSET
    """The role of a team task the agent held (left out for a one-agent task)."""

    @property
    def role_index(self) -> int:
        return 0 if self.role is UNSET else self.role


def _check_sigs(name: str, sigs: bytes, rows: int, *, optional: bool) -> None:
    if optional and not sigs:
        return
    _check_column(name, sigs, SIGNATURE_BYTES, rows)


class TaskRelease(Body, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "task_release"
    items: Annotated[list[Release], Meta(min_length=1, max_length=MAX_TASKS_PER_MESSAGE)]
    sigs: Annotated[
        bytes,
        Meta(description="64-byte ed25519 signature of each item by the sender; empty: unsigned"),
    ] = b""

    def _check(self) -> None:
        _check_sigs("sigs", self.sigs, len(self.items), optional=True)

    def signature(self, i: int) -> bytes:
        """Item ``i``'s signature (empty when the sender did not sign)."""
        return self.sigs[i * SIGNATURE_BYTES : (i + 1) * SIGNATURE_BYTES]


class Claim(_Strict, frozen=True, kw_only=True):
    """The sender's agent ``group/agent`` is pursuing ``task`` at ``epoch``."""

    task: Name
    epoch: U32
    group: Name
    agent: U32
    role: RoleIndex | UnsetType = UNSET
    """The role of a team task it fills (left out for a one-agent task)."""


class TeamState(_Strict, frozen=True, kw_only=True):
    """A team task as the sender's award has it: of its ``slots``, how many agents fill
    (``filled``: pursuing it) and how many finished their part (``done``); the rest are
    vacant."""

    task: Name
    epoch: U32
    slots: Annotated[int, Meta(ge=1, le=MAX_TEAM)]
    filled: Annotated[int, Meta(ge=0, le=MAX_TEAM)]
    done: Annotated[int, Meta(ge=0, le=MAX_TEAM)] = 0

    @property
    def vacant(self) -> int:
        return max(0, self.slots - self.filled - self.done)


class TaskState(Body, frozen=True, kw_only=True):
    """Sent periodically and when holdings change: peers compare digests (and ask for a sync
    when they differ) and check the claims against their own award (conflict detection)."""

    TYPE: ClassVar[str] = "task_state"
    digest: Annotated[bytes, Meta(min_length=DIGEST_BYTES, max_length=DIGEST_BYTES)]
    open_tasks: Annotated[int, Meta(ge=0, lt=UINT32)]
    claims: Annotated[list[Claim], Meta(max_length=MAX_CLAIMS)] = msgspec.field(
        default_factory=list
    )
    teams: Annotated[list[TeamState], Meta(max_length=MAX_TEAM_STATES)] | UnsetType = UNSET
    """The team tasks of the sender's award (left out when it has none)."""


class DeadSession(_Strict, frozen=True, kw_only=True):
    """Every message of ``node`` with a ``bdseq`` up to this one is from a session that died."""

    node: Name
    bdseq: U32


class Tombstone(_Strict, frozen=True, kw_only=True):
    """``task`` was closed (done or expired) at ``epoch``; a spec of a larger epoch reopens it."""

    task: Name
    epoch: U32


class Consumed(_Strict, frozen=True, kw_only=True):
    """Bids of ``node/group/agent`` up to ``(bdseq, bseq)`` were used up by a release."""

    node: Name
    group: Name
    agent: U32
    bdseq: U32
    bseq: U32


class BidColumns(_Strict, frozen=True, kw_only=True):
    """Bids of any nodes, columnar; names are indices into ``nodes``, ``groups`` and ``tasks``."""

    nodes: Annotated[list[Name], Meta(max_length=4096)] = msgspec.field(default_factory=list)
    groups: Annotated[list[Name], Meta(max_length=4096)] = msgspec.field(default_factory=list)
    tasks: Annotated[list[Name], Meta(max_length=MAX_BIDS_PER_MESSAGE)] = msgspec.field(
        default_factory=list
    )
    task_index: bytes = b""
    epoch: bytes = b""
    node_index: bytes = b""
    bdseq: bytes = b""
    group_index: bytes = b""
    agent: bytes = b""
    cost: bytes = b""
    bseq: bytes = b""
    role: bytes | UnsetType = UNSET
    """uint8 per bid: its role of a team task (left out when no bid is on one)."""
    held: bytes | UnsetType = UNSET
    """uint8 per bid: 1 for a hold."""

    _SIZES: ClassVar[tuple[tuple[str, int], ...]] = (
        ("task_index", 2),
        ("epoch", 4),
        ("node_index", 2),
        ("bdseq", 4),
        ("group_index", 2),
        ("agent", 4),
        ("cost", 4),
        ("bseq", 4),
    )

    def _check(self) -> None:
        if len(self.task_index) % 2:
            raise ValueError("task_index is not a whole number of uint16")
        rows = len(self.task_index) // 2
        if rows > MAX_BIDS_PER_MESSAGE:
            raise ValueError(f"{rows} bids in one message, at most {MAX_BIDS_PER_MESSAGE}")
        for name, size in self._SIZES:
            _check_column(name, getattr(self, name), size, rows)
        _check_team_columns(self.role, self.held, rows)
        if rows:
            for column, names in (
                ("task_index", self.tasks),
                ("node_index", self.nodes),
                ("group_index", self.groups),
            ):
                if int(np.frombuffer(getattr(self, column), "<u2").max()) >= len(names):
                    raise ValueError(f"{column} points past its name list")
            if not np.isfinite(np.frombuffer(self.cost, "<f4")).all():
                raise ValueError("costs must be finite")

    @property
    def n_bids(self) -> int:
        return len(self.task_index) // 2

    def column(self, name: str) -> npt.NDArray[np.generic]:
        dtype = {2: "<u2", 4: "<u4"}[dict(self._SIZES)[name]]
        if name == "cost":
            dtype = "<f4"
        return np.frombuffer(getattr(self, name), dtype)

    def team_columns(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """``(role, held)`` per bid (zeros when the columns are left out)."""
        return _team_columns(self.role, self.held, self.n_bids)


class TaskSync(Body, frozen=True, kw_only=True):
    """One part of a node's ledger. Parts are independent: each merges on its own."""

    TYPE: ClassVar[str] = "task_sync"
    tasks: Annotated[list[TaskSpec], Meta(max_length=MAX_TASKS_PER_MESSAGE)] = msgspec.field(
        default_factory=list
    )
    closed: Annotated[list[Tombstone], Meta(max_length=MAX_TASKS_PER_MESSAGE)] = msgspec.field(
        default_factory=list
    )
    consumed: Annotated[list[Consumed], Meta(max_length=MAX_TASKS_PER_MESSAGE)] = msgspec.field(
        default_factory=list
    )
    dead: Annotated[list[DeadSession], Meta(max_length=MAX_TASKS_PER_MESSAGE)] = msgspec.field(
        default_factory=list
    )
    bids: BidColumns = msgspec.field(default_factory=BidColumns)
    closers: Annotated[
        list[Release],
        Meta(max_length=MAX_TASKS_PER_MESSAGE, description="signed releases behind tombstones"),
    ] = msgspec.field(default_factory=list)
    closer_sigs: Annotated[
        bytes, Meta(description="the holder's 64-byte ed25519 signature of each closer")
    ] = b""
    task_sigs: Annotated[
        bytes, Meta(description="the announcer's 64-byte ed25519 signature of each spec")
    ] = b""

    def _check(self) -> None:
        _check_sigs("closer_sigs", self.closer_sigs, len(self.closers), optional=False)
        _check_sigs("task_sigs", self.task_sigs, len(self.tasks), optional=False)

    def task_signature(self, i: int) -> bytes:
        return self.task_sigs[i * SIGNATURE_BYTES : (i + 1) * SIGNATURE_BYTES]

    def closer_signature(self, i: int) -> bytes:
        return self.closer_sigs[i * SIGNATURE_BYTES : (i + 1) * SIGNATURE_BYTES]


class TaskKey(Body, frozen=True, kw_only=True):
    """The sender's public ed25519 task key, published retained on its own ``tasks`` topic:
    peers check what it signed (its releases, when someone relays them) against this key."""

    TYPE: ClassVar[str] = "task_key"
    key: Annotated[bytes, Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]


MESSAGE_TYPES: Final = (TaskAnnounce, TaskBids, TaskRelease, TaskState, TaskSync, TaskKey)
for _model in MESSAGE_TYPES:
    register_body_type(_model)
prepare_all()  # msgspec's type info of every model here now, not on two threads at once
