"""The fleet's MQTT topic names: every one is built by :class:`Topics` and parsed back into a
:class:`Route` here, and nowhere else (``docs/protocol.md``, "Topics").

Part of the wire protocol (:mod:`edge_agent.fleet.protocol` re-exports these names); apart from
the message schemas so that each file does one job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from edge_agent.errors import ProtocolError
from edge_agent.fleet.names import NAME_PATTERN

__all__ = ["NODE_OWNED_KINDS", "TOPIC_ROOT", "Route", "TopicKind", "Topics", "check_name"]

TOPIC_ROOT: Final = "ea/v1"

_NAME_RE: Final = re.compile(NAME_PATTERN)
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a valid topic level name, else raise :class:`ProtocolError`."""
    if not isinstance(value, str) or _NAME_RE.fullmatch(value) is None:
        raise ProtocolError(
            f"{what} {value!r} is not a valid name: 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return value


# --------------------------------------------------------------------------------------------
# Topics


class TopicKind(StrEnum):
    """The last fixed level of a topic: what the messages on it are."""

    STATE = "state"
    BIRTH = "birth"
    DEATH = "death"
    TELEMETRY = "telemetry"
    EVENT = "event"
    COMMAND = "cmd"
    RESULT = "result"
    REBIRTH = "rebirth"
    BELIEFS = "beliefs"
    OBS = "obs"
    ACTION = "action"
    TASKS = "tasks"
    BUNDLE = "bundle"
    HEALTH = "health"
    LEARNING = "learning"


_NODE_KINDS: Final = frozenset(
    {
        TopicKind.STATE,
        TopicKind.BIRTH,
        TopicKind.DEATH,
        TopicKind.TELEMETRY,
        TopicKind.EVENT,
        TopicKind.COMMAND,
        TopicKind.RESULT,
        TopicKind.REBIRTH,
        TopicKind.BELIEFS,
        TopicKind.TASKS,
        TopicKind.HEALTH,
        TopicKind.LEARNING,
    }
)
_GROUP_KINDS: Final = frozenset({TopicKind.OBS, TopicKind.ACTION})

# Topics written only by the node named in them: the envelope's ``node`` must match.
NODE_OWNED_KINDS: Final = frozenset(
    {
        TopicKind.STATE,
        TopicKind.BIRTH,
        TopicKind.DEATH,
        TopicKind.TELEMETRY,
        TopicKind.EVENT,
        TopicKind.RESULT,
        TopicKind.BELIEFS,
        TopicKind.ACTION,
        TopicKind.TASKS,
        TopicKind.HEALTH,
        TopicKind.LEARNING,
    }
)

# The one message type each topic kind carries; ``tasks`` carries any registered extension type.
_KIND_TYPE: Final[Mapping[TopicKind, str]] = {
    TopicKind.STATE: "state",
    TopicKind.BIRTH: "birth",
    TopicKind.DEATH: "death",
    TopicKind.TELEMETRY: "telemetry",
    TopicKind.EVENT: "event",
    TopicKind.COMMAND: "command",
    TopicKind.RESULT: "result",
    TopicKind.REBIRTH: "rebirth",
    TopicKind.BELIEFS: "beliefs",
    TopicKind.OBS: "obs",
    TopicKind.ACTION: "action",
    TopicKind.BUNDLE: "chunk",
    TopicKind.HEALTH: "health",
    TopicKind.LEARNING: "learning",
}


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed topic: which fleet, which node, what kind, for obs/action which group/agent, and
    for a bundle broadcast which bundle."""

    fleet: str
    kind: TopicKind
    node: str | None = None
    group: str | None = None
    agent: str | None = None
    bundle: str | None = None

    @property
    def node_owned(self) -> bool:
        """True when only ``node`` may publish here (its envelope ``node`` must equal it)."""
        return self.kind in NODE_OWNED_KINDS

    @property
    def expected_type(self) -> str | None:
        """The envelope ``type`` this topic carries, or None when any registered type may."""
        return _KIND_TYPE.get(self.kind)


class Topics:
    """Every topic name of one fleet, built in one place.

    ``ea/v1/{fleet}/node/{node}/{kind}`` for per-node topics (``tasks`` among them: task
    allocation messages of the node, or hub, named in the topic) and
    ``ea/v1/{fleet}/node/{node}/{obs|action}/{group}[/{agent}]`` for agent streams. Every topic a
    client writes names that client, so a broker ACL can bind it to the client's identity
    (``docs/security.md``).
    """

    def __init__(self, fleet: str) -> None:
        self.fleet = check_name(fleet, "fleet")
        self.base = f"{TOPIC_ROOT}/{fleet}"

    def _node(self, node: str, kind: TopicKind) -> str:
        return f"{self.base}/node/{check_name(node, 'node')}/{kind.value}"

    def node_state(self, node: str) -> str:
        """Retained online/offline :class:`NodeState`; also the topic of the node's MQTT will."""
        return self._node(node, TopicKind.STATE)

    def birth(self, node: str) -> str:
        """Retained :class:`Birth`, published on every connect and on rebirth requests."""
        return self._node(node, TopicKind.BIRTH)

    def death(self, node: str) -> str:
        """:class:`Death`, published by a node that stops on purpose."""
        return self._node(node, TopicKind.DEATH)

    def telemetry(self, node: str) -> str:
        return self._node(node, TopicKind.TELEMETRY)

    def event(self, node: str) -> str:
        return self._node(node, TopicKind.EVENT)

    def health(self, node: str) -> str:
        """Node -> hub :class:`Health`: each group's health measures over the last window."""
        return self._node(node, TopicKind.HEALTH)

    def learning(self, node: str) -> str:
        """Node -> hub :class:`LearningDelta`: what a learning group learned since its last
        report."""
        return self._node(node, TopicKind.LEARNING)

    def command(self, node: str) -> str:
        """Hub -> node :class:`Command`."""
        return self._node(node, TopicKind.COMMAND)

    def command_result(self, node: str) -> str:
        """Node -> hub :class:`CommandResult`."""
        return self._node(node, TopicKind.RESULT)

    def rebirth(self, node: str) -> str:
        """Anyone -> node :class:`RebirthRequest`."""
        return self._node(node, TopicKind.REBIRTH)

    def beliefs(self, node: str) -> str:
        """Node -> peers :class:`BeliefBatch`."""
        return self._node(node, TopicKind.BELIEFS)

    def _stream(self, node: str, kind: TopicKind, group: str, agent: str | int | None) -> str:
        topic = f"{self._node(node, kind)}/{check_name(group, 'group')}"
        if agent is not None:
            topic += "/" + check_name(str(agent), "agent")
        return topic

    def obs(self, node: str, group: str, agent: str | int | None = None) -> str:
        """Observations into ``node``'s ``group`` (:class:`ObservationBatch`)."""
        return self._stream(node, TopicKind.OBS, group, agent)

    def action(self, node: str, group: str, agent: str | int | None = None) -> str:
        """Actions out of ``node``'s ``group`` (:class:`ActionBatch`)."""
        return self._stream(node, TopicKind.ACTION, group, agent)

    def bundle(self, sha256: str) -> str:
        """Hub -> every node receiving bundle ``sha256`` (its manifest identity):
        :class:`BundleChunk` messages, one broadcast per chunk for a whole rollout wave."""
        if _SHA256_RE.fullmatch(sha256) is None:
            raise ProtocolError(f"bundle id {sha256!r} is not a lowercase sha256 hex digest")
        return f"{self.base}/bundle/{sha256}"

    def all_bundles(self) -> str:
        """Every bundle broadcast of the fleet (a broker ACL's read right for nodes)."""
        return f"{self.base}/bundle/+"

    def tasks(self, node: str) -> str:
        """Task allocation messages sent by ``node`` (types registered by the coordination
        layer); receivers subscribe to ``all_nodes("tasks")``."""
        return self._node(node, TopicKind.TASKS)

    # Wildcard subscriptions -------------------------------------------------------------
    def all_nodes(self, kind: TopicKind | str) -> str:
        """``kind`` of every node, e.g. ``all_nodes("state")`` for fleet presence."""
        kind = TopicKind(kind)
        if kind in _GROUP_KINDS:
            return f"{self.base}/node/+/{kind.value}/#"
        if kind not in _NODE_KINDS:
            raise ProtocolError(f"{kind.value!r} is not a per-node topic kind")
        return f"{self.base}/node/+/{kind.value}"

    def node_all(self, node: str) -> str:
        """Everything about one node."""
        return f"{self.base}/node/{check_name(node, 'node')}/#"

    def fleet_all(self) -> str:
        """Everything in the fleet (hub, debugging)."""
        return f"{self.base}/#"

    def obs_all(self, node: str) -> str:
        """Every observation stream into ``node``."""
        return f"{self._node(node, TopicKind.OBS)}/#"

    def node_inbox(self, node: str) -> list[str]:
        """The patterns a node subscribes to for messages addressed to it."""
        return [self.command(node), self.rebirth(node), self.obs_all(node)]

    def parse(self, topic: str) -> Route | None:
        """Parse a topic of this fleet; None when it is not one this protocol defines."""
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != "ea" or parts[1] != "v1" or parts[2] != self.fleet:
            return None
        if len(parts) == 5 and parts[3] == "bundle" and _SHA256_RE.fullmatch(parts[4]):
            return Route(self.fleet, TopicKind.BUNDLE, bundle=parts[4])
        if len(parts) < 6 or parts[3] != "node" or _NAME_RE.fullmatch(parts[4]) is None:
            return None
        try:
            kind = TopicKind(parts[5])
        except ValueError:
            return None
        node = parts[4]
        if kind in _NODE_KINDS:
            return Route(self.fleet, kind, node) if len(parts) == 6 else None
        if kind in _GROUP_KINDS and len(parts) in (7, 8):
            rest = parts[6:]
            if any(_NAME_RE.fullmatch(level) is None for level in rest):
                return None
            return Route(self.fleet, kind, node, rest[0], rest[1] if len(rest) == 2 else None)
        return None
