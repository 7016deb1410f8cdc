"""Deploying a bundle: the chunked plan and the driver that pushes chunks and waits for acks.

:class:`DeployPlan` cuts a signed bundle into chunks and says what the ``deploy`` command carries;
:func:`deploy_bundle` (behind :meth:`HubClient.deploy`) sends it to every node with a window of
unacknowledged chunks, resuming from what the device already holds, and resends lost chunks.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.writer import pack_tar
from edge_agent.errors import BundleError
from edge_agent.fleet.commands import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from edge_agent.fleet.protocol import CommandResult, ResultCode
from edge_agent_host.hub.errors import HubError


class DeployClient(Protocol):
    """What the deploy driver needs of a hub client (:class:`~edge_agent_host.hub.HubClient`
    is one): send signed commands and chunks, poll the broker, take the results."""

    def poll(self, timeout_s: float = 0.0) -> Sequence[object]: ...

    def send_command(
        self, node: str, name: str, args: Mapping[str, Any] | None = None, *, ttl_s: float = 60.0
    ) -> bytes: ...

    def send_chunk(self, node: str, sha256: str, index: int, data: bytes) -> bytes: ...

    def take_results(self, nonce: bytes) -> list[CommandResult]: ...


__all__ = ["DEFAULT_CHUNK_BYTES", "DeployClient", "DeployPlan", "deploy_bundle"]

DEFAULT_CHUNK_BYTES: Final = 64 * 1024


def deploy_bundle(
    client: DeployClient,
    bundle: str | Path,
    group: str,
    nodes: Sequence[str],
    *,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    window: int = 8,
    chunk_timeout_s: float = 10.0,
    timeout_s: float = 300.0,
    watch_ticks: int = 50,
    watch_timeout_s: float = 120.0,
    health_steps: int = 20,
    progress: Callable[[str, int, int, str], None] | None = None,
) -> dict[str, CommandResult]:
    """Deploy a signed bundle (directory or tar) to ``group`` on every node of ``nodes``.

    Returns each node's final result (``ok``: switched and watched; anything else: failed).
    """
    plan = DeployPlan.from_bundle(bundle, chunk_size)
    args = plan.args(group, watch_ticks=watch_ticks, health_steps=health_steps)
    args["watch_timeout_s"] = watch_timeout_s
    runs = {node: _NodeDeploy(node, plan) for node in nodes}
    for run in runs.values():
        run.deploy_nonce = client.send_command(run.node, "deploy", args)
    deadline = time.monotonic() + timeout_s
    while any(not r.finished for r in runs.values()):
        if time.monotonic() > deadline:
            for r in runs.values():
                if not r.finished:
                    r.finish(
                        CommandResult(
                            nonce=r.deploy_nonce or b"\0" * 16,
                            name="deploy",
                            code=ResultCode.FAILED,
                            detail=f"no final result within {timeout_s:g} s",
                        )
                    )
            break
        client.poll(0.02)
        for r in runs.values():
            if not r.finished:
                _advance(client, r, window, chunk_timeout_s, progress)
    return {node: r.result for node, r in runs.items() if r.result is not None}


def _advance(
    client: DeployClient,
    run: _NodeDeploy,
    window: int,
    chunk_timeout_s: float,
    progress: Callable[[str, int, int, str], None] | None,
) -> None:
    plan = run.plan
    assert run.deploy_nonce is not None
    for result in client.take_results(run.deploy_nonce):
        if result.code is ResultCode.ACCEPTED and run.missing is None:
            have = result.data.get("have")
            if result.data.get("phase") != "receiving":
                run.start_sending(b"\xff" * (plan.chunks // 8 + 1))  # nothing to send
            else:
                run.start_sending(bytes(have) if isinstance(have, bytes) else None)
            if progress is not None:
                progress(run.node, run.acked, plan.chunks, str(result.data.get("phase")))
        elif result.code is not ResultCode.ACCEPTED:
            run.finish(result)
            return
    if run.missing is None:
        return
    now = time.monotonic()
    for nonce, (index, _sent) in list(run.inflight.items()):
        for result in client.take_results(nonce):
            del run.inflight[nonce]
            if result.code is ResultCode.OK:
                run.acked += 1
                if progress is not None:
                    progress(run.node, run.acked, plan.chunks, "receiving")
            else:
                run.finish(result)
                return
            break
        else:
            if now - _sent > chunk_timeout_s:  # lost: send that chunk again
                del run.inflight[nonce]
                run.missing.insert(0, index)
    while run.missing and len(run.inflight) < window:
        index = run.missing.pop(0)
        nonce = client.send_chunk(run.node, plan.sha256, index, plan.chunk(index))
        run.inflight[nonce] = (index, now)


@dataclass
class DeployPlan:
    """A bundle file cut into chunks, with what the ``deploy`` command must say about it."""

    data: bytes
    sha256: str
    name: str
    version: str
    chunk_size: int

    @classmethod
    def from_bundle(cls, bundle: str | Path, chunk_size: int = DEFAULT_CHUNK_BYTES) -> DeployPlan:
        if not MIN_CHUNK_BYTES <= chunk_size <= MAX_CHUNK_BYTES:
            raise HubError(f"chunk size must be {MIN_CHUNK_BYTES}-{MAX_CHUNK_BYTES} bytes")
        path = Path(bundle)
        if path.is_dir():
            with tempfile.TemporaryDirectory() as tmp:
                tar = Path(tmp) / "bundle.tar"
                pack_tar(path, tar)
                data = tar.read_bytes()
        else:
            data = path.read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "bundle.tar"
            copy.write_bytes(data)
            loaded = load_bundle(copy, trusted_keys=None, require_signature=False)
        if loaded.key_id is None:
            raise BundleError(f"{path}: unsigned; sign it (edge-agent-host sign) before deploying")
        return cls(data, loaded.sha256, loaded.manifest.name, loaded.manifest.version, chunk_size)

    @property
    def chunks(self) -> int:
        return -(-len(self.data) // self.chunk_size)

    def chunk(self, index: int) -> bytes:
        return self.data[index * self.chunk_size : (index + 1) * self.chunk_size]

    def args(self, group: str, *, watch_ticks: int = 50, health_steps: int = 20) -> dict[str, Any]:
        return {
            "group": group,
            "sha256": self.sha256,
            "file_sha256": hashlib.sha256(self.data).hexdigest(),
            "size": len(self.data),
            "chunk_size": self.chunk_size,
            "chunk_hashes": b"".join(
                hashlib.sha256(self.chunk(i)).digest() for i in range(self.chunks)
            ),
            "watch_ticks": watch_ticks,
            "health_steps": health_steps,
        }


@dataclass
class _NodeDeploy:
    node: str
    plan: DeployPlan
    deploy_nonce: bytes | None = None
    missing: list[int] | None = None
    inflight: dict[bytes, tuple[int, float]] = field(default_factory=dict)
    acked: int = 0
    result: CommandResult | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None

    def start_sending(self, have: bytes | None) -> None:
        held = [
            have is not None and i // 8 < len(have) and bool(have[i // 8] >> (i % 8) & 1)
            for i in range(self.plan.chunks)
        ]
        self.missing = [i for i, h in enumerate(held) if not h]
        self.acked = self.plan.chunks - len(self.missing)

    def finish(self, result: CommandResult) -> None:
        self.result = result
