"""A node's task key: the ed25519 key that signs what it states about itself, so that a peer
relaying it carries the node's signature, not a claim of its own (``docs/coordination.md``).

Every node publishes its public key retained on its own ``tasks`` topic (:class:`TaskKey`), which
a broker ACL lets no one else write; peers take a node's key only from there. What is signed:
the node's releases (:func:`release_bytes`), which are what closes a task (a relayed tombstone
must come with the holder's signed release), and the task specs it announces
(:func:`spec_bytes`; a spec is taken, directly or relayed, only with its announcer's signature).
A hub announces with its signing key (``edge-agent-host tasks announce --key``), whose public
half it publishes as its task key on its own ``tasks`` topic in the same way; a node that has
that key among its hub keys (``[mqtt] hub_keys_dir``) takes such an announcer as the fleet's
authority over task ids (:meth:`~edge_agent.coordination.ledger.TaskBoard.owner_key`).

The private key lives in the node's state directory (``coordination_key``, the raw 32-byte seed,
mode 0600), so the public key stays the same across restarts and a peer that joins later can
still check what the node signed before. A damaged file is moved aside and a new key made; when
the storage refuses the write the key lives in memory for this run (peers that learn the new key
cannot check releases signed with the old one: those are not relayed to them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from edge_agent.fsutil import is_storage_error, not_a_file, write_atomic
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from edge_agent.coordination.messages import Release, TaskSpec

logger = logging.getLogger(__name__)

KEY_FILE: Final = "coordination_key"
SEED_BYTES: Final = 32
PART: Final = "coordination_key"


def release_bytes(fleet: str, rel: Release) -> bytes:
    """What a release's signature covers: the fleet and every field of the release (a team
    member's role last: a one-agent task's release signs what it signed before teams)."""
    fields: list[object] = [
        "ea-task-release-v1",
        fleet,
        rel.task,
        rel.epoch,
        rel.node,
        rel.group,
        rel.agent,
        rel.bdseq,
        rel.bseq,
        str(rel.status),
    ]
    if rel.role is not msgspec.UNSET:
        fields.append(rel.role)
    packed: bytes = msgspec.msgpack.encode(fields)
    return packed


def spec_bytes(fleet: str, spec: TaskSpec) -> bytes:
    """What a task spec's signature covers: the fleet and every field of the spec. A team
    task's (``ea-task-spec-v2``) adds its roles, the spec's own first, as ``(capability,
    goal_factor, goal_state, count)``; a one-agent task signs what it signed before teams."""
    fields: list[object] = [
        "ea-task-spec-v2" if spec.is_team else "ea-task-spec-v1",
        fleet,
        spec.task,
        spec.epoch,
        spec.capability,
        spec.goal_factor,
        spec.goal_state,
        spec.deadline,
        spec.announced_by,
    ]
    if spec.is_team:
        fields.append([list(role) for role in spec.slots()])
    packed: bytes = msgspec.msgpack.encode(fields)
    return packed


def sign_specs(sign: Callable[[bytes], bytes], fleet: str, specs: Iterable[TaskSpec]) -> bytes:
    """The announcer's signatures of ``specs`` (each :func:`spec_bytes`), joined: a
    ``task_announce``'s ``sigs``. ``sign`` is the announcer's private key's ``sign``."""
    return b"".join(sign(spec_bytes(fleet, spec)) for spec in specs)


class TaskSigner:
    """The node's private task key (see the module docstring)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._private = private
        self.public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> TaskSigner:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, state_dir: Path, faults: StateFaults | None = None) -> TaskSigner:
        """The key kept in ``state_dir``; a new one (saved when the storage lets it) when there
        is none or the file is damaged. Never raises for the file's sake."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        faults = faults if faults is not None else StateFaults()
        path = state_dir / KEY_FILE
        if not_a_file(path):
            faults.move_aside(PART, path, "not a regular file")
        else:
            try:
                seed = path.read_bytes()
            except FileNotFoundError:
                pass
            except OSError as err:
                faults.storage_error(PART, err, f"read {path}")
            else:
                if len(seed) == SEED_BYTES:
                    return cls(Ed25519PrivateKey.from_private_bytes(seed))
                faults.move_aside(PART, path, f"{len(seed)} bytes, expected {SEED_BYTES}")
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        try:
            write_atomic(path, seed, mkdir=True, mode=0o600)
        except OSError as err:
            if not is_storage_error(err):
                logger.warning("coordination: cannot save the task key to %s: %s", path, err)
            faults.storage_error(PART, err, f"save the task key to {path}")
        return cls(private)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


class PeerKeys:
    """Peers' public task keys, as each node published its own (bounded; the oldest learned is
    forgotten first)."""

    def __init__(self, max_nodes: int) -> None:
        self.max_nodes = max_nodes
        self._raw: dict[str, bytes] = {}
        self._keys: dict[str, Ed25519PublicKey] = {}

    def learn(self, node: str, raw: bytes) -> bool:
        """Take ``raw`` as ``node``'s key (it came on ``node``'s own topic). True when new."""
        if self._raw.get(node) == raw:
            return False
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        key = Ed25519PublicKey.from_public_bytes(raw)
        self._raw.pop(node, None)
        self._keys.pop(node, None)
        while len(self._raw) >= self.max_nodes:
            oldest = next(iter(self._raw))
            del self._raw[oldest], self._keys[oldest]
        self._raw[node] = raw
        self._keys[node] = key
        return True

    def known(self, node: str) -> bool:
        return node in self._keys

    def raw(self, node: str) -> bytes | None:
        """``node``'s public key as it published it (32 raw bytes), or None."""
        return self._raw.get(node)

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` over ``data`` is ``node``'s (False for an unknown node)."""
        from cryptography.exceptions import InvalidSignature

        key = self._keys.get(node)
        if key is None:
            return False
        try:
            key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __len__(self) -> int:
        return len(self._keys)
