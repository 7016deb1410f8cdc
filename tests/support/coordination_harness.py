"""Several coordination nodes in one process, on the in-memory broker (tests and benchmarks).

Each :class:`SimNode` is a real :class:`~edge_agent.fleet.link.FleetLink` (with its SQLite outbox)
on a :class:`~edge_agent.fleet.comms.memory.MemoryTransport`, a :class:`CoordinationEngine`, and
for each of its groups a simulated world. :class:`SimFleet` ticks all nodes on one test-owned clock
and can partition the broker: a message whose sender is on the other side of the partition is
dropped on delivery (the sender's broker acknowledged it, as a broken bridge would), wills included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.settings import AifSettings
from edge_agent.coordination import (
    CoordinatedGroup,
    CoordinationEngine,
    CoordinationSettings,
    SharingSettings,
)
from edge_agent.core.agents import AifAgentGroup
from edge_agent.fleet.comms.base import Incoming
from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.link import FleetLink
from edge_agent.fleet.outbox import Outbox
from edge_agent.sim import BatchEnv

FLEET = "coord"
TICK_S = 0.1
WALL_START = 1.7e9
"""The wall clock of the test's clock's zero (the links stamp messages with it)."""


class Clock:
    """The monotonic clock every node of a test reads."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class World(Protocol):
    """What a node needs of a simulated world: the last observations and a step."""

    @property
    def obs(self) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> np.ndarray: ...


WorldFactory = Callable[[GenerativeModel, int, int], World]


class SharedTruthWorld:
    """One static hidden state per channel, the same on every node (``truth``); each node sees
    it through its own sensor noise (``A`` of the model, sampled with the node's ``seed``)."""

    def __init__(self, model: GenerativeModel, truth: np.ndarray, seed: int) -> None:
        self.A = model.A[0]
        self.truth = truth
        self.rng = np.random.default_rng(seed)
        self.cdf = np.cumsum(self.A[:, truth], axis=0).T  # (N, O)
        self._obs = np.zeros((truth.size, 1), dtype=np.int64)
        self.step(np.zeros((truth.size, 1), dtype=np.int64))

    @property
    def obs(self) -> np.ndarray:
        return self._obs

    def step(self, actions: np.ndarray) -> np.ndarray:
        del actions
        u = self.rng.random((self.truth.size, 1))
        self._obs[:, 0] = np.minimum((self.cdf < u).sum(axis=1), self.A.shape[0] - 1)
        return self._obs


@dataclass
class GroupSpec:
    """A group to build on a node: model, size, what it shares, what tasks it takes."""

    model: GenerativeModel
    n_agents: int
    sharing: SharingSettings | None = None
    capabilities: tuple[str, ...] = ()
    settings: AifSettings | None = None
    precision: str = "int8"


def memory_link(
    broker: MemoryBroker, root: Path, node_id: str, clock: Clock
) -> tuple[FleetLink, Outbox, MemoryTransport]:
    """A node's FleetLink with its SQLite outbox (under ``root/node_id``) on ``broker``, on the
    test's clock; the caller starts it."""
    outbox = Outbox(root / node_id / "outbox.log", max_inflight=256)
    transport = MemoryTransport(broker, f"ea-{node_id}", max_incoming=100_000)
    link = FleetLink(
        transport,
        outbox,
        node_id,
        FLEET,
        root / node_id,
        monotonic=clock,
        wall_clock=lambda: WALL_START + clock.now,  # the times stamped on messages follow it
        clock_sync_check=lambda: False,
        max_inbox=100_000,
    )
    return link, outbox, transport


class SimNode:
    def __init__(
        self,
        broker: MemoryBroker,
        root: Path,
        node_id: str,
        groups: Mapping[str, GroupSpec],
        clock: Clock,
        *,
        settings: CoordinationSettings,
        seed: int,
        env_factory: WorldFactory | None = None,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.alive = True
        self.link, self.outbox, self.transport = memory_link(broker, root, node_id, clock)
        self.groups: dict[str, AifAgentGroup] = {}
        self.envs: dict[str, World] = {}
        coordinated = {}
        make_env: WorldFactory = env_factory or (lambda model, n, s: BatchEnv(model, n, seed=s))
        for i, (name, spec) in enumerate(groups.items()):
            group = AifAgentGroup(
                spec.model,
                spec.n_agents,
                settings=spec.settings or AifSettings(),
                precision=spec.precision,  # type: ignore[arg-type]
                seed=seed * 100 + i,
                name=name,
            )
            self.groups[name] = group
            self.envs[name] = make_env(spec.model, spec.n_agents, seed * 100 + i)
            coordinated[name] = CoordinatedGroup(
                group=group, sharing=spec.sharing, capabilities=spec.capabilities
            )
        self.engine = CoordinationEngine(self.link, coordinated, settings, monotonic=clock)
        self.engine.start()
        self.link.start()
        self.blocked: set[str] = set()
        inner = self.transport.on_message
        assert inner is not None

        def deliver(msg: Incoming) -> None:
            if self.blocked and _sender(msg.payload) in self.blocked:
                return
            inner(msg)

        self.transport.on_message = deliver
        self.link.pump()

    def receive(self) -> None:
        self.link.pump()
        for msg in self.link.receive():
            self.engine.handle(msg)

    def tick(self) -> None:
        """One full tick: merge, fuse, step every group in its world, publish."""
        self.receive()
        self.engine.before_step()
        for name, env in self.envs.items():
            env.step(self.engine.step(name, env.obs))
        self.engine.after_step()
        self.link.pump()
        self.link.flush()

    def close(self) -> None:
        self.outbox.close()


def _sender(payload: bytes) -> str | None:
    try:
        env = msgspec.msgpack.decode(payload)
    except ValueError:
        return None
    node = env.get("node") if isinstance(env, dict) else None
    return node if isinstance(node, str) else None


class SimFleet:
    """``n_nodes`` nodes with the same groups, ticked together."""

    def __init__(
        self,
        root: Path,
        n_nodes: int,
        groups: Mapping[str, GroupSpec],
        settings: CoordinationSettings,
        *,
        env_factory: WorldFactory | None = None,
    ) -> None:
        self.broker = MemoryBroker()
        self.clock = Clock()
        self.nodes = [
            SimNode(
                self.broker,
                root,
                f"node{i}",
                groups,
                self.clock,
                settings=settings,
                seed=i + 1,
                env_factory=env_factory,
            )
            for i in range(n_nodes)
        ]
        self.ticks = 0

    @property
    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if n.alive]

    def node(self, node_id: str) -> SimNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.live:
                node.tick()
            self.clock.now += TICK_S
            self.ticks += 1

    def stall(self, node_id: str, ticks: int) -> None:
        """``ticks`` ticks of the others while ``node_id`` does not tick (a process starved of
        CPU): what they send waits in its link, and it sends nothing."""
        stalled = self.node(node_id)
        for _ in range(ticks):
            for node in self.live:
                if node is not stalled:
                    node.tick()
            self.clock.now += TICK_S
            self.ticks += 1

    def partition(self, sides: Iterable[Iterable[str]]) -> None:
        """Drop every message between nodes of different sides."""
        side_of = {node: i for i, side in enumerate(sides) for node in side}
        for node in self.nodes:
            mine = side_of[node.node_id]
            node.blocked = {n for n, s in side_of.items() if s != mine}

    def heal(self) -> None:
        for node in self.nodes:
            node.blocked = set()

    def kill(self, node_id: str) -> None:
        """The node's connection dies (the broker publishes its will); it stops ticking."""
        node = self.node(node_id)
        node.alive = False
        self.broker.kick(f"ea-{node_id}")

    def assignments(self) -> list[dict[str, tuple[str, str, int]]]:
        return [n.engine.assignment() for n in self.live]

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def static_world_model(num_states: int, accuracy: float) -> GenerativeModel:
    """One static hidden factor seen through a noisy sensor: ``A[s, s] = accuracy``."""
    S = num_states
    A = np.full((S, S), (1.0 - accuracy) / (S - 1))
    np.fill_diagonal(A, accuracy)
    B = np.eye(S)[:, :, None]
    return GenerativeModel.from_arrays([A], [B], [np.zeros(S)], [np.full(S, 1.0 / S)])


def held_by_node(fleet: SimFleet) -> dict[str, list[tuple[str, str, int]]]:
    """``task -> [(node, group, agent)]`` of every agent pursuing it right now, fleet-wide."""
    out: dict[str, list[tuple[str, str, int]]] = {}
    for node in fleet.live:
        for name, gs in node.engine.groups.items():
            for agent, (task, _) in gs.prefs.held.items():
                out.setdefault(task, []).append((node.node_id, name, agent))
    return out
