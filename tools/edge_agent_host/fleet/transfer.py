"""Moving a bundle to nodes: the chunked plan and the two drivers that send it.

Shared by both clients that deploy: the operator's client (:mod:`edge_agent_host.fleetctl`,
:meth:`~edge_agent_host.fleetctl.client.FleetClient.deploy`) and the hub service's rollout runner
(:mod:`edge_agent_host.hub.rollouts.runner`), which never imports the client. Each drives it through
its own :class:`DeployClient`.

:class:`DeployPlan` cuts a signed bundle into chunks and says what the ``deploy`` command carries.

- :func:`broadcast_bundle` (the default behind ``FleetClient.deploy``): every node of the wave
  gets the signed ``deploy`` command (``broadcast=True``) and answers with the bitmap of the
  chunks it already holds; each chunk that any of them misses is then published **once** on the
  fleet's bundle topic (``Topics.bundle``), which every node receiving that bundle subscribes to,
  each storing only what it misses and checking every chunk against the signed hash list. After a
  round, nodes without a final result are asked again (the same command: a resume) and a repair
  round sends the union of what they still miss. Bytes the hub publishes grow with the bundle's
  size (times the rounds a lossy network needs), not with nodes x size.
- :func:`deploy_bundle` (``unicast``): the chunks as ``deploy_chunk`` commands to each node, with
  a window of unacknowledged chunks; for a single node or a broker without the bundle topic in its
  ACL.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from edge_agent.errors import BundleError
from edge_agent.fleet.commands import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import CommandResult
from edge_agent_host.fleet.errors import FleetError


class DeployClient(Protocol):
    """What the deploy driver needs of a client of the fleet
    (:class:`~edge_agent_host.fleetctl.client.FleetClient` is one; the hub service's rollout
    runner has its own): send signed commands and chunks, poll the broker, take the results."""

    def poll(self, timeout_s: float = 0.0) -> Sequence[object]: ...

    def send_command(
        self, node: str, name: str, args: Mapping[str, Any] | None = None, *, ttl_s: float = 60.0
    ) -> bytes: ...

    def send_chunk(self, node: str, sha256: str, index: int, data: bytes) -> bytes: ...

    def broadcast_chunk(self, sha256: str, index: int, data: bytes) -> None: ...

    def take_results(self, nonce: bytes) -> list[CommandResult]: ...


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "BroadcastStats",
    "DeployClient",
    "DeployPlan",
    "broadcast_bundle",
    "deploy_bundle",
]

DEFAULT_CHUNK_BYTES: Final = 64 * 1024


def deploy_bundle(
    client: DeployClient,
    bundle: str | Path | DeployPlan,
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
    """Deploy a signed bundle (directory or tar, or its plan) to ``group`` on every node of
    ``nodes``.

    Returns each node's final result (``ok``: switched and watched; anything else: failed).
    """
    plan = bundle if isinstance(bundle, DeployPlan) else DeployPlan.from_bundle(bundle, chunk_size)
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
class BroadcastStats:
    """What one broadcast deployment cost: rounds, chunks and bytes published, commands sent."""

    rounds: int = 0
    chunks_published: int = 0
    bytes_published: int = 0
    commands: int = 0


@dataclass
class _Receiver:
    node: str
    nonces: list[bytes] = field(default_factory=list)
    asked_at: float = 0.0
    have: bytes | None = None  # the bitmap of its latest answer; None: not answered since asked
    result: CommandResult | None = None


def broadcast_bundle(
    client: DeployClient,
    bundle: str | Path | DeployPlan,
    group: str,
    nodes: Sequence[str],
    *,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    rate_chunks_s: float = 32.0,
    answer_timeout_s: float = 10.0,
    repair_after_s: float = 5.0,
    timeout_s: float = 300.0,
    watch_ticks: int = 50,
    watch_timeout_s: float = 120.0,
    health_steps: int = 20,
    shadow_s: float = 0.0,
    progress: Callable[[str, int, int, str], None] | None = None,
    stats: BroadcastStats | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, CommandResult]:
    """Deploy a signed bundle to ``group`` on every node of ``nodes`` with one broadcast per
    chunk (module docstring). Returns each node's final result, as :func:`deploy_bundle`.
    ``shadow_s``: each node runs the bundle as a shadow that long before it switches (the
    deploy command's ``shadow_s``; its final result carries the paired result).

    ``rate_chunks_s`` paces the broadcast (a node takes at most a few dozen messages per tick);
    a round starts when every node asked has answered, or ``answer_timeout_s`` after asking;
    ``repair_after_s`` after a round, nodes still without a final result are asked again.
    ``cancel`` is asked once per loop: when it says True, the results so far are returned (the
    nodes without one keep what they received; deploying again resumes them).
    """
    plan = bundle if isinstance(bundle, DeployPlan) else DeployPlan.from_bundle(bundle, chunk_size)
    args = plan.args(group, watch_ticks=watch_ticks, health_steps=health_steps)
    args["watch_timeout_s"] = watch_timeout_s
    args["broadcast"] = True
    if shadow_s > 0.0:
        args["shadow_s"] = shadow_s
    st = stats if stats is not None else BroadcastStats()
    runs = {node: _Receiver(node) for node in nodes}
    full = bytes([0xFF]) * (plan.chunks // 8 + 1)

    def ask(run: _Receiver, now: float) -> None:
        run.nonces.append(client.send_command(run.node, "deploy", args))
        run.asked_at, run.have = now, None
        st.commands += 1

    start = time.monotonic()
    for run in runs.values():
        ask(run, start)
    deadline = start + timeout_s
    queue: list[int] = []
    sent_at = 0.0  # the pacing clock
    round_asked = start  # when the nodes of the coming round were asked
    round_done: float | None = None  # when the last round's last chunk went out
    while any(r.result is None for r in runs.values()):
        if cancel is not None and cancel():
            break
        now = time.monotonic()
        if now > deadline:
            for r in runs.values():
                if r.result is None:
                    r.result = CommandResult(
                        nonce=r.nonces[-1],
                        name="deploy",
                        code=ResultCode.FAILED,
                        detail=f"no final result within {timeout_s:g} s",
                    )
            break
        client.poll(0.02)
        for run in runs.values():
            if run.result is None:
                _take_answers(client, run, plan, full, progress)
        waiting = [r for r in runs.values() if r.result is None]
        if queue:
            # Pace: as many chunks as the rate allows since the last one, at least one.
            due = max(1, int((now - sent_at) * rate_chunks_s)) if sent_at else 1
            for _ in range(min(due, len(queue))):
                index = queue.pop(0)
                data = plan.chunk(index)
                client.broadcast_chunk(plan.sha256, index, data)
                st.chunks_published += 1
                st.bytes_published += len(data)
            sent_at = now
            if not queue:
                round_done = now
            continue
        if round_done is not None:
            if now - round_done < repair_after_s:
                continue
            for run in waiting:  # a repair: what do you still miss?
                ask(run, now)
            round_asked, round_done = now, None
            continue
        answered = [r for r in waiting if r.have is not None]
        if len(answered) < len(waiting) and now - round_asked < answer_timeout_s:
            continue
        missing = sorted({i for r in answered for i in range(plan.chunks) if not _held(r.have, i)})
        if missing:
            queue, sent_at = missing, 0.0
            st.rounds += 1
            continue
        # Nobody answered with anything missing: wait for final results, ask again later.
        round_done = now
    return {node: r.result for node, r in runs.items() if r.result is not None}


def _held(have: bytes | None, index: int) -> bool:
    return have is not None and index // 8 < len(have) and bool(have[index // 8] >> (index % 8) & 1)


def _take_answers(
    client: DeployClient,
    run: _Receiver,
    plan: DeployPlan,
    full: bytes,
    progress: Callable[[str, int, int, str], None] | None,
) -> None:
    for nonce in run.nonces:
        for result in client.take_results(nonce):
            if result.code is ResultCode.ACCEPTED:
                phase = str(result.data.get("phase"))
                have = result.data.get("have")
                run.have = bytes(have) if phase == "receiving" and isinstance(have, bytes) else full
                if progress is not None:
                    held = sum(_held(run.have, i) for i in range(plan.chunks))
                    progress(run.node, held, plan.chunks, phase)
            else:
                run.result = result
                if progress is not None:
                    progress(
                        run.node, _received(result, run.have, plan), plan.chunks, result.code.value
                    )
                return


def _received(result: CommandResult, have: bytes | None, plan: DeployPlan) -> int:
    """The chunks a node held when it answered ``result`` (its final answer): as it says
    (``received``: all of them for a failure after the transfer, a preflight's), else all
    for ``ok``, else its last bitmap's."""
    received = result.data.get("received")
    if isinstance(received, int) and not isinstance(received, bool):
        return received
    if result.code is ResultCode.OK:
        return plan.chunks
    return sum(_held(have, i) for i in range(plan.chunks)) if have is not None else 0


@dataclass
class DeployPlan:
    """A bundle file cut into chunks, with what the ``deploy`` command must say about it."""

    data: bytes
    sha256: str
    name: str
    version: str
    chunk_size: int
    key_id: str = ""
    """The id of the key that signed the bundle (what a node must trust to take it)."""

    @classmethod
    def from_bundle(cls, bundle: str | Path, chunk_size: int = DEFAULT_CHUNK_BYTES) -> DeployPlan:
        if not MIN_CHUNK_BYTES <= chunk_size <= MAX_CHUNK_BYTES:
            raise FleetError(f"chunk size must be {MIN_CHUNK_BYTES}-{MAX_CHUNK_BYTES} bytes")
        path = Path(bundle)
        if path.is_dir():
            # The bundle modules (pydantic's manifest: ~0.8 s) load when a plan is made, not with
            # every fleet command line that imports this module.
            from edge_agent.bundle.writer import pack_tar  # noqa: PLC0415

            with tempfile.TemporaryDirectory() as tmp:
                tar = Path(tmp) / "bundle.tar"
                pack_tar(path, tar)
                data = tar.read_bytes()
        else:
            data = path.read_bytes()
        return cls.from_bytes(data, chunk_size, where=str(path))

    @classmethod
    def from_bytes(
        cls, data: bytes, chunk_size: int = DEFAULT_CHUNK_BYTES, *, where: str = "bundle"
    ) -> DeployPlan:
        """A plan for a bundle tar already in memory (e.g. from the hub's database)."""
        if not MIN_CHUNK_BYTES <= chunk_size <= MAX_CHUNK_BYTES:
            raise FleetError(f"chunk size must be {MIN_CHUNK_BYTES}-{MAX_CHUNK_BYTES} bytes")
        from edge_agent.bundle.loader import load_bundle  # noqa: PLC0415 - see from_bundle

        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "bundle.tar"
            copy.write_bytes(data)
            loaded = load_bundle(copy, trusted_keys=None, require_signature=False)
        if loaded.key_id is None:
            raise BundleError(f"{where}: unsigned; sign it (edge-agent-host sign) before deploying")
        return cls(
            data, loaded.sha256, loaded.manifest.name, loaded.manifest.version, chunk_size,
            loaded.key_id,
        )  # fmt: skip

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
