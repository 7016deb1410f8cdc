"""The rollout runner's hub client: the service's connection out, the service's database in.

:func:`~edge_agent_host.fleet.transfer.broadcast_bundle` drives a deployment through a
:class:`~edge_agent_host.fleet.transfer.DeployClient`. In the hub service that client is
:class:`ServiceDeployClient`: it signs commands with the hub's key and publishes them, and the
bundle's chunks, through the service's own broker connection
(:class:`~edge_agent_host.hub.traffic.publisher.HubPublisher`: one connection per identity), and it
reads the nodes' answers from the results the service's listener stored
(:meth:`~.store.RolloutStore.results`), so that with replicas
sharing the results (``share_group``) the answers reach it whichever replica heard them.

A publish the broker refuses (``0x87 not authorized``: an identity without the hub role) raises
:class:`PublishRefusedError` at the next poll: the runner halts the rollout with that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.signing import key_id
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import BundleChunk, Command, CommandResult
from edge_agent.fleet.topics import TopicKind, Topics
from edge_agent_host.fleet.commands import new_command
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.traffic.publisher import HubPublisher

__all__ = ["PublishRefusedError", "ServiceDeployClient"]

RESULTS_EVERY_S: Final = 0.25
"""How often the client reads new results from the database while a deployment waits."""


class PublishRefusedError(FleetError):
    """The broker refused a command or chunk the rollout published (the reason, by name)."""


class ServiceDeployClient:
    """A :class:`~edge_agent_host.fleet.transfer.DeployClient` over the service (module docstring).

    ``store`` returns the runner's rollout store (its own database connection); used on the
    runner's thread only.
    """

    def __init__(
        self,
        publisher: HubPublisher,
        store: Callable[[], RolloutStore],
        key: Ed25519PrivateKey,
        *,
        results_every_s: float = RESULTS_EVERY_S,
    ) -> None:
        self.publisher = publisher
        self.topics: Topics = publisher.topics
        self._store = store
        self.key = key
        self.key_id = key_id(key.public_key())
        self.results_every_s = results_every_s
        self._awaiting: dict[bytes, float] = {}
        self._seen: set[int] = set()
        self._results: dict[bytes, list[CommandResult]] = {}
        self._last_read = 0.0
        self._refusal_mark = publisher.refused

    # sending ---------------------------------------------------------------------------------
    def make_command(
        self,
        node: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        ttl_s: float = 60.0,
        sign: bool = True,
    ) -> Command:
        """A command for ``node``, signed with the hub key (``sign=False``: deploy chunks)."""
        return new_command(
            node,
            name,
            args,
            fleet=self.topics.fleet,
            key=self.key if sign else None,
            key_id=self.key_id,
            ttl_s=ttl_s,
        )

    def _send(self, cmd: Command) -> bytes:
        self._publish(self.topics.command(cmd.target), cmd)
        self._awaiting[cmd.nonce] = time.monotonic()
        return cmd.nonce

    def _publish(self, topic: str, body: Any) -> None:
        if not self.publisher.publish(topic, body):
            raise FleetError("the hub service is not connected to the broker")

    def send_command(
        self, node: str, name: str, args: Mapping[str, Any] | None = None, *, ttl_s: float = 60.0
    ) -> bytes:
        return self._send(self.make_command(node, name, args, ttl_s=ttl_s))

    def send_chunk(self, node: str, sha256: str, index: int, data: bytes) -> bytes:
        args = {"sha256": sha256, "index": index, "data": data}
        return self._send(self.make_command(node, "deploy_chunk", args, sign=False))

    def broadcast_chunk(self, sha256: str, index: int, data: bytes) -> None:
        self._publish(
            self.topics.bundle(sha256), BundleChunk(sha256=sha256, index=index, data=data)
        )

    # receiving -------------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> Sequence[object]:
        """Raise :class:`PublishRefusedError` on a refusal; read new results from the database
        at most every ``results_every_s`` (sleeping up to ``timeout_s`` otherwise)."""
        refusals = self.publisher.refusals_since(self._refusal_mark)
        if refusals:
            self._refusal_mark = refusals[-1].number
            mine = [r for r in refusals if self._sent_by_rollouts(r.topic)]
            if mine:
                raise PublishRefusedError(mine[0].describe())
        now = time.monotonic()
        if now - self._last_read < self.results_every_s:
            if timeout_s > 0:
                time.sleep(min(timeout_s, self.results_every_s - (now - self._last_read)))
            return []
        self._last_read = now
        if not self._awaiting:
            return []
        for row_id, result in self._store().results(list(self._awaiting)):
            if row_id in self._seen:
                continue
            self._seen.add(row_id)
            self._results.setdefault(result.nonce, []).append(result)
            if result.code is not ResultCode.ACCEPTED:
                self._awaiting.pop(result.nonce, None)  # a final answer: nothing more to read
        return []

    def _sent_by_rollouts(self, topic: str) -> bool:
        route = self.topics.parse(topic)
        return route is not None and route.kind in (TopicKind.COMMAND, TopicKind.BUNDLE)

    def take_results(self, nonce: bytes) -> list[CommandResult]:
        return self._results.pop(nonce, [])

    def forget(self) -> None:
        """Drop what one deployment left (the runner calls it between deployments)."""
        self._awaiting.clear()
        self._results.clear()
        self._seen.clear()
        self._refusal_mark = self.publisher.refused
