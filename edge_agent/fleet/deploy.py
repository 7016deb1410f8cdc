"""Over-the-air bundle deployment: transfer, verify, stage, preflight, switch, watch, roll back.

The hub sends a signed ``deploy`` command naming the group, the bundle's identity (``sha256`` of
its canonical manifest), the file's sha256 and size, the chunk size and the sha256 of every chunk;
then the chunks (``deploy_chunk``), each checked against its listed hash as it arrives. What
happens on the device, one deployment at a time:

==============  ==================================================================================
``receiving``   chunks are written into ``bundles/incoming/{sha256}.part`` (preallocated, written
                at their offsets); a ``deploy`` command for the same bundle resumes the transfer
                and is answered with the bitmap of the chunks already held.
``verifying``   (a worker thread) the whole file's sha256;
                :func:`~edge_agent.bundle.loader.load_bundle` with the trusted bundle keys
                (signature and every payload hash); the manifest's identity must be the one the
                signed command named. Only then is the file *staged*: renamed to
                ``bundles/{sha256}.tar``, beside the running bundle. Then the preflight: the
                daemon loads it for the group and steps a scratch group of at most 64 agents
                ``health_steps`` times on random valid observations within
                ``health_timeout_s``, with finite beliefs and policies after every step.
``watching``    between two ticks the daemon builds the group on the new bundle (the old group is
                kept, with its memory reservation) and switches. For ``watch_ticks`` ticks of the
                group, an exception or non-finite beliefs roll the group back to the old one; so
                does a group that has not stepped ``watch_ticks`` times within
                ``watch_timeout_s`` (it was paused, or got no observations): not proven.
``done``        the old group is released; the overlay names the new bundle.
``failed``      anything before the switch failed; the group never changed.
``rolled_back`` the new bundle failed while watched (or the daemon restarted while watching).
==============  ==================================================================================

Every outcome is answered with a result to the latest ``deploy`` command's nonce (``accepted``
first, then ``ok`` or ``failed``) and an event (``deploy`` or ``rollback``).

Crash safety. The journal ``bundles/deploy.json`` records the deployment and its phase; it and
the overlay are written with write-temp, fsync, rename, fsync-directory. On start
(:meth:`DeployManager.recover`, before any group is built):

- ``receiving``: the partial file is kept and the chunks it holds are found again by hashing
  them, unless nothing arrived for ``transfer_timeout_s`` (the file's mtime): then it is
  discarded and the deployment fails;
- ``verifying``: verification and the preflight run again (they are idempotent);
- ``watching``: the switch is rolled back (the overlay entry of the group is restored to what it
  was before), since the new bundle was not proven and may be what stopped the daemon.

The switch writes the journal (``watching``, with the overlay entry to restore) before the
overlay; a rollback restores the overlay before the journal says ``rolled_back``, so every crash
point lands in a state the rules above complete.

The overlay (:mod:`edge_agent.fleet.overlay`, ``deployed.json`` in the state directory) maps a
group to its deployed bundle; a switch writes it, a rollback restores it.

Damage (reported to the :class:`~edge_agent.state_faults.StateFaults` the manager is given): an
overlay, a journal or a ``bundles`` directory that is damaged (not JSON, not the schema, a
directory where a file should be or a file where the directory should be) is moved aside at start
(``NAME.corrupt-STAMP``) and the daemon starts without it: with a lost overlay the config's models
run (the bundle files are kept this time, so the overlay can be put back by hand); with a lost
journal no deployment is in progress (one that was watched is not rolled back: the journal held
what to restore). Writes at start that the storage refuses (a full disk) are counted and the
state in memory is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.outcomes import Outcome, ResultCode
from edge_agent.fleet.overlay import (
    BUNDLES_DIR,
    DEPLOY_COUNTERS,
    Overlay,
    OverlayEntry,
    read_json,
    write_json_atomic,
)
from edge_agent.fsutil import fsync_dir, is_storage_error, not_a_dir, not_a_file
from edge_agent.records import Record, Rule, from_json
from edge_agent.state_faults import StateFaults

if TYPE_CHECKING:  # the wire models: imported by the command handlers, with [mqtt] only
    from edge_agent.fleet.commands import ChunkArgs, DeployArgs
    from edge_agent.fleet.protocol import BundleChunk

logger = logging.getLogger(__name__)

__all__ = [
    "BUNDLES_DIR",
    "DeployManager",
    "Phase",
    "PreflightCheck",
    "PrepareCheck",
    "ReadyToSwitch",
    "Report",
]

INCOMING_DIR: Final = "incoming"
JOURNAL_FILE: Final = "deploy.json"
SPACE_MARGIN_BYTES: Final = 1024 * 1024
_HASH_BLOCK: Final = 1 << 20

PreflightCheck = Callable[[Path, int, float], object]
"""``check(bundle_path, steps, timeout_s) -> payload``: the bundle's preflight (``health_steps`` and
``health_timeout_s``, the deploy command's wire names); raises EdgeAgentError when it fails.

Runs on the deployment's worker thread, on what :data:`PrepareCheck` took for it. The payload
(e.g. the loaded model) is handed back to the daemon with :class:`ReadyToSwitch`.
"""

PrepareCheck = Callable[[str], PreflightCheck]
"""``prepare(group) -> check``: on the loop thread, as the verification starts, take what the
preflight of ``group`` needs (a snapshot); raises EdgeAgentError when it cannot be checked.
The check it returns reads nothing else, so the daemon may change meanwhile."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------- journal
class Phase(StrEnum):
    """The states of one deployment (the module docstring's table); before the first: none."""

    RECEIVING = "receiving"
    VERIFYING = "verifying"
    WATCHING = "watching"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


ACTIVE_PHASES: Final = frozenset({Phase.RECEIVING, Phase.VERIFYING, Phase.WATCHING})


class JournalRecord(Record):
    """``bundles/deploy.json``: the current or last deployment."""

    version: int = 1
    group: str
    sha256: str
    file_sha256: str
    size: int
    chunk_size: int
    watch_ticks: int
    health_steps: int
    health_timeout_s: float
    transfer_timeout_s: float
    watch_timeout_s: float = 120.0
    shadow_s: float = 0.0
    nonce: Annotated[
        str, Rule(description="hex nonce of the latest deploy command: results answer it")
    ]
    phase: Phase
    started_at: float
    updated_at: float
    previous: OverlayEntry | None = None
    detail: str = ""
    broadcast: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    """Something to tell the hub: a result to ``nonce`` and/or an event of kind ``event``."""

    nonce: bytes | None
    code: ResultCode | None
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    event: str | None = None
    severity: str = "info"
    group: str | None = None


@dataclass(frozen=True, slots=True)
class ReadyToSwitch:
    """A verified, preflighted, staged bundle the daemon should switch ``group`` to now."""

    group: str
    path: Path
    sha256: str
    name: str
    version: str
    payload: object


@dataclass
class _Transfer:
    args: DeployArgs
    have: bytearray
    received: int
    fd: int | None
    last_progress: float


class DeployManager:
    """One node's deployments (see the module docstring). Owned by the daemon's loop thread."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        bundle_keys: TrustedKeys | None,
        clock: Callable[[], float] = time.time,
        faults: StateFaults | None = None,
        overlay: Overlay | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.faults = faults if faults is not None else StateFaults()
        self.dir = self.state_dir / BUNDLES_DIR
        self.incoming = self.dir / INCOMING_DIR
        self.journal_path = self.dir / JOURNAL_FILE
        self.bundle_keys = bundle_keys
        #: The overlay it writes (``overlay``: one its owner reads too; else its own).
        self.overlay = Overlay(self.state_dir, faults=self.faults) if overlay is None else overlay
        self.journal: JournalRecord | None = None
        self._clock = clock
        self._transfer: _Transfer | None = None
        self._prepare: PrepareCheck | None = None
        self._current_sha: Callable[[str], str | None] = lambda _group: None
        self._group_exists: Callable[[str], bool] = lambda _group: False
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._worker_result: ReadyToSwitch | EdgeAgentError | None = None
        self._watched = 0
        self._watch_started = 0.0
        self._reports: list[Report] = []
        #: The shadow evaluation's paired result (``shadow_*`` keys), added to the deployment's
        #: final result; empty without one.
        self._shadow_data: dict[str, Any] = {}
        self.counters: dict[str, int] = dict.fromkeys(DEPLOY_COUNTERS, 0)

    # Start-up ---------------------------------------------------------------------------------
    def recover(self) -> None:
        """Load the overlay and the journal; complete or undo what a crash interrupted.

        Damaged files are moved aside; writes the storage refuses are counted (module doc)."""
        if not_a_dir(self.dir):
            self.faults.move_aside("bundles", self.dir, "not a directory")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.faults.storage_error("bundles", err, f"create {self.dir}")
        self.overlay.load()
        self.journal = self._load_journal()
        try:
            self._recover_journal()
        except OSError as err:
            if not is_storage_error(err):
                raise
            self.faults.storage_error("journal", err, "record the recovered deployment")
        if self.dir.is_dir():
            self._cleanup()

    def _load_journal(self) -> JournalRecord | None:
        path = self.journal_path
        reason = "not a regular file" if not_a_file(path) else ""
        if not reason:
            try:
                raw = read_json(path)
                return from_json(JournalRecord, raw) if raw is not None else None
            except OSError as err:
                self.faults.storage_error("journal", err, f"read {path}")
                return None
            except ValueError as err:
                reason = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        self.faults.move_aside("journal", path, f"{reason}; no deployment is in progress")
        return None

    def _recover_journal(self) -> None:
        rec = self.journal
        if rec is not None and rec.phase is Phase.WATCHING:
            self.overlay.restore(rec.group, rec.previous)
            self._finish(
                Phase.ROLLED_BACK,
                "the daemon restarted while the new bundle was watched; rolled back",
                event="rollback",
            )
            self.counters["rolled_back"] += 1
        elif rec is not None and rec.phase is Phase.RECEIVING:
            self._recover_transfer(rec)
        elif rec is not None and rec.phase is Phase.VERIFYING and self._verify_source(rec) is None:
            self._fail("verify", "the daemon restarted and the received bundle file is gone")

    def _recover_transfer(self, rec: JournalRecord) -> None:
        part = self._part(rec.sha256)
        hashes = self._hashes_path(rec.sha256)
        try:
            mtime = part.stat().st_mtime
            from edge_agent.fleet.commands import DeployArgs  # noqa: PLC0415 - a resumed transfer only

            args = DeployArgs(
                group=rec.group,
                sha256=rec.sha256,
                file_sha256=rec.file_sha256,
                size=rec.size,
                chunk_size=rec.chunk_size,
                chunk_hashes=hashes.read_bytes(),
                watch_ticks=rec.watch_ticks,
                health_steps=rec.health_steps,
                health_timeout_s=rec.health_timeout_s,
                transfer_timeout_s=rec.transfer_timeout_s,
                watch_timeout_s=rec.watch_timeout_s,
                shadow_s=rec.shadow_s,
            )
        except (OSError, ValueError) as err:  # msgspec's ValidationError is a ValueError
            self.counters["discarded"] += 1
            self._fail(
                "transfer", f"the daemon restarted and the partial transfer is unusable: {err}"
            )
            return
        idle = self._clock() - mtime
        if idle > rec.transfer_timeout_s:
            self.counters["discarded"] += 1
            self._fail(
                "transfer",
                f"the daemon restarted and the transfer had been idle {idle:.0f} s "
                f"(> {rec.transfer_timeout_s:.0f} s): discarded",
            )
            return
        have = bytearray((args.chunks + 7) // 8)
        received = 0
        with open(part, "rb") as f:
            for index in range(args.chunks):
                data = f.read(args.chunk_length(index))
                if hashlib.sha256(data).digest() == args.chunk_hash(index):
                    have[index // 8] |= 1 << (index % 8)
                    received += 1
        fd = os.open(part, os.O_WRONLY)
        self._transfer = _Transfer(args, have, received, fd, time.monotonic() - idle)
        self.counters["resumed"] += 1
        msg = (
            f"transfer of {rec.sha256[:12]} resumes after a restart: "
            f"{received}/{args.chunks} chunks held"
        )
        logger.info("%s", msg)
        self._report(None, None, msg, event="deploy")
        if received == args.chunks:
            self._received_all()

    def bind(
        self,
        prepare_check: PrepareCheck,
        *,
        current_sha: Callable[[str], str | None],
        group_exists: Callable[[str], bool],
    ) -> None:
        """Connect to the daemon's groups; restarts an interrupted verification."""
        self._prepare = prepare_check
        self._current_sha = current_sha
        self._group_exists = group_exists
        rec = self.journal
        if rec is not None and rec.phase is Phase.VERIFYING and self._worker is None:
            source = self._verify_source(rec)
            if source is not None:
                self._start_worker(rec, source)

    # Commands -----------------------------------------------------------------------------------
    @property
    def phase(self) -> Phase | None:
        """The phase of the current or last deployment; None before the first."""
        return None if self.journal is None else self.journal.phase

    def deployed(self, group: str) -> OverlayEntry | None:
        """The bundle deployed to ``group`` (the overlay's entry), or None."""
        return self.overlay.get(group)

    def deployed_bundles(self) -> dict[str, OverlayEntry]:
        """Every group's deployed bundle (a copy of the overlay)."""
        return dict(self.overlay.entries)

    def forget(self, group: str) -> None:
        """Drop ``group``'s deployed bundle (the config's model of it changed)."""
        self.overlay.restore(group, None)

    @property
    def active(self) -> bool:
        return self.journal is not None and self.journal.phase in ACTIVE_PHASES

    @property
    def watching_group(self) -> str | None:
        rec = self.journal
        return rec.group if rec is not None and rec.phase is Phase.WATCHING else None

    def start(self, args: DeployArgs, nonce: bytes) -> Outcome:
        """Handle a verified ``deploy`` command."""
        if self.bundle_keys is None:
            return Outcome(
                ResultCode.FAILED,
                "this node has no [daemon] trusted_keys_dir: bundles deployed over the air must be "
                "signed by a trusted key",
            )
        if not self._group_exists(args.group):
            return Outcome(ResultCode.BAD_ARGS, f"no group {args.group!r} on this node")
        rec = self.journal
        if rec is not None and rec.phase in ACTIVE_PHASES:
            same = (
                rec.group == args.group
                and rec.sha256 == args.sha256
                and rec.file_sha256 == args.file_sha256
                and rec.size == args.size
                and rec.chunk_size == args.chunk_size
            )
            if not same:
                return Outcome(
                    ResultCode.BUSY,
                    f"deployment of {rec.sha256[:12]} to group {rec.group!r} is {rec.phase.value}",
                    {"phase": rec.phase.value, "group": rec.group, "sha256": rec.sha256},
                )
            now = self._clock()
            self._save(
                dataclasses.replace(
                    rec, nonce=nonce.hex(), updated_at=now, broadcast=args.broadcast
                )
            )
            self.counters["resumed"] += 1
            return Outcome(ResultCode.ACCEPTED, f"resuming ({rec.phase.value})", self._progress())
        if self._current_sha(args.group) == args.sha256:
            return Outcome(ResultCode.OK, f"group {args.group!r} already runs {args.sha256[:12]}")
        free = shutil.disk_usage(self.dir).free
        if free < args.size + SPACE_MARGIN_BYTES:
            return Outcome(
                ResultCode.FAILED,
                f"{free} bytes free in {self.dir}, the bundle needs {args.size} + "
                f"{SPACE_MARGIN_BYTES} margin",
            )
        now = self._clock()
        rec = JournalRecord(
            group=args.group,
            sha256=args.sha256,
            file_sha256=args.file_sha256,
            size=args.size,
            chunk_size=args.chunk_size,
            watch_ticks=args.watch_ticks,
            health_steps=args.health_steps,
            health_timeout_s=args.health_timeout_s,
            transfer_timeout_s=args.transfer_timeout_s,
            watch_timeout_s=args.watch_timeout_s,
            shadow_s=args.shadow_s,
            nonce=nonce.hex(),
            phase=Phase.RECEIVING,
            started_at=now,
            updated_at=now,
            broadcast=args.broadcast,
        )
        self._cleanup()
        self._shadow_data = {}
        staged = self.dir / f"{args.sha256}.tar"
        self.counters["started"] += 1
        if staged.is_file():  # already here (e.g. deployed to another group): no transfer
            self._save(dataclasses.replace(rec, phase=Phase.VERIFYING))
            self._start_worker(self.journal, staged)  # type: ignore[arg-type]  # just saved
            return Outcome(
                ResultCode.ACCEPTED, "bundle already staged; verifying", self._progress()
            )
        self.incoming.mkdir(parents=True, exist_ok=True)
        write_hashes = self._hashes_path(args.sha256)
        tmp = write_hashes.with_name(write_hashes.name + ".tmp")
        tmp.write_bytes(args.chunk_hashes)
        os.replace(tmp, write_hashes)
        part = self._part(args.sha256)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, args.size)
        except OSError:
            os.close(fd)
            raise
        self._transfer = _Transfer(args, bytearray((args.chunks + 7) // 8), 0, fd, time.monotonic())
        self._save(rec)
        logger.info(
            "deployment of %s to group %s: receiving %d bytes in %d chunks",
            args.sha256[:12],
            args.group,
            args.size,
            args.chunks,
        )
        return Outcome(ResultCode.ACCEPTED, "receiving", self._progress())

    @property
    def broadcast_bundle(self) -> str | None:
        """The bundle whose broadcast chunks (``Topics.bundle``) this node takes now: the one a
        broadcast deployment is receiving, else None. The uplink keeps its subscription to it."""
        rec = self.journal
        if rec is None or not rec.broadcast or rec.phase is not Phase.RECEIVING:
            return None
        return rec.sha256 if self._transfer is not None else None

    def broadcast_chunk(self, chunk: BundleChunk) -> Outcome:
        """One chunk heard on the bundle topic: stored when this node is receiving that bundle
        and the chunk matches its signed hash, else counted and ignored. Never answered: the
        hub learns what a node holds from its answer to the next ``deploy`` command."""
        if chunk.sha256 != self.broadcast_bundle:
            self.counters["chunks_ignored"] += 1
            return Outcome(ResultCode.OK, "not receiving this bundle")
        self.counters["chunks_broadcast"] += 1
        return self._store(chunk.sha256, chunk.index, chunk.data)

    def chunk(self, args: ChunkArgs) -> Outcome:
        """Handle one ``deploy_chunk`` (authenticated here by its hash)."""
        return self._store(args.sha256, args.index, args.data)

    def _store(self, sha256: str, index: int, data: bytes) -> Outcome:
        rec = self.journal
        tr = self._transfer
        if rec is None or rec.sha256 != sha256:
            self.counters["chunks_rejected"] += 1
            return Outcome(ResultCode.BAD_ARGS, f"no transfer of {sha256[:12]} in progress")
        if rec.phase is not Phase.RECEIVING or tr is None:
            self.counters["chunks_duplicate"] += 1
            return Outcome(
                ResultCode.OK, f"not receiving ({rec.phase.value})", self._progress(index)
            )
        a = tr.args
        if index >= a.chunks:
            self.counters["chunks_rejected"] += 1
            return Outcome(ResultCode.BAD_ARGS, f"chunk {index} of {a.chunks}")
        if len(data) != a.chunk_length(index):
            self.counters["chunks_rejected"] += 1
            return Outcome(
                ResultCode.BAD_ARGS,
                f"chunk {index} has {len(data)} bytes, expected {a.chunk_length(index)}",
            )
        if hashlib.sha256(data).digest() != a.chunk_hash(index):
            self.counters["chunks_rejected"] += 1
            return Outcome(
                ResultCode.BAD_ARGS,
                f"chunk {index} does not match its hash in the signed deploy command",
            )
        bit = 1 << (index % 8)
        if tr.have[index // 8] & bit:
            self.counters["chunks_duplicate"] += 1
            return Outcome(ResultCode.OK, "duplicate", self._progress(index))
        assert tr.fd is not None  # open while receiving
        os.pwrite(tr.fd, data, index * a.chunk_size)
        tr.have[index // 8] |= bit
        tr.received += 1
        tr.last_progress = time.monotonic()
        self.counters["chunks"] += 1
        self.counters["chunk_bytes"] += len(data)
        if tr.received == a.chunks:
            self._received_all()
        return Outcome(ResultCode.OK, "stored", self._progress(index))

    def _received_all(self) -> None:
        tr = self._transfer
        rec = self.journal
        assert tr is not None
        assert rec is not None
        if tr.fd is not None:
            os.fsync(tr.fd)
            os.close(tr.fd)
            tr.fd = None
        self._save(dataclasses.replace(rec, phase=Phase.VERIFYING, updated_at=self._clock()))
        self._hashes_path(rec.sha256).unlink(missing_ok=True)  # only a transfer needs them
        self._report(
            None, None, f"received {rec.sha256[:12]} ({rec.size} bytes); verifying", event="deploy"
        )
        if self._prepare is not None:
            self._start_worker(self.journal, self._part(rec.sha256))  # type: ignore[arg-type]

    def _progress(self, index: int | None = None) -> dict[str, Any]:
        """Transfer state for a result: with ``index`` (a chunk's answer) without the bitmap."""
        rec = self.journal
        tr = self._transfer
        out: dict[str, Any] = {}
        if rec is not None:
            out.update(phase=rec.phase.value, group=rec.group, sha256=rec.sha256)
            chunks = -(-rec.size // rec.chunk_size)
            out["total"] = chunks
            if tr is not None and rec.phase is Phase.RECEIVING:
                out["received"] = tr.received
                if index is None:
                    out["have"] = bytes(tr.have)
            else:
                out["received"] = chunks
        if index is not None:
            out["index"] = index
        return out

    # Worker -------------------------------------------------------------------------------------
    def _verify_source(self, rec: JournalRecord) -> Path | None:
        for path in (self.dir / f"{rec.sha256}.tar", self._part(rec.sha256)):
            if path.is_file():
                return path
        return None

    def _start_worker(self, rec: JournalRecord, source: Path) -> None:
        """On the loop thread: take the trusted keys and the preflight's snapshot, then verify
        and check on a worker thread (:meth:`poll` collects the verdict)."""
        with self._worker_lock:
            self._worker_result = None
        try:
            if self._prepare is None:
                raise EdgeAgentError("no preflight bound")
            check = self._prepare(rec.group)
        except EdgeAgentError as err:
            with self._worker_lock:
                self._worker_result = EdgeAgentError(f"health: {err}")
            return
        self._worker = threading.Thread(
            target=self._work,
            args=(rec, source, self.bundle_keys, check),
            name="edge-agent-deploy",
            daemon=True,
        )
        self._worker.start()

    def _work(
        self, rec: JournalRecord, source: Path, keys: TrustedKeys | None, check: PreflightCheck
    ) -> None:
        try:
            result: ReadyToSwitch | EdgeAgentError = self._verify_and_check(
                rec, source, keys, check
            )
        except EdgeAgentError as err:
            result = err
        except Exception as err:  # the worker's boundary: a failed deployment, not a dead daemon
            logger.exception("deployment verification failed")
            result = EdgeAgentError(f"verify: {type(err).__name__}: {err}")
        with self._worker_lock:
            self._worker_result = result

    def _verify_and_check(
        self, rec: JournalRecord, source: Path, keys: TrustedKeys | None, check: PreflightCheck
    ) -> ReadyToSwitch:
        """The worker: ``keys`` and ``check`` were taken on the loop thread; nothing else of the
        manager's state but its directory is read here."""
        staged = self.dir / f"{rec.sha256}.tar"
        if source != staged:
            digest = file_sha256(source)
            if digest != rec.file_sha256:
                raise EdgeAgentError(
                    f"verify: the received file hashes to {digest[:12]}, the command said "
                    f"{rec.file_sha256[:12]}"
                )
        try:
            from edge_agent.bundle.loader import load_bundle  # noqa: PLC0415 - pydantic

            bundle = load_bundle(source, trusted_keys=keys, require_signature=True)
        except EdgeAgentError as err:
            raise EdgeAgentError(f"verify: {err}") from err
        if bundle.sha256 != rec.sha256:
            raise EdgeAgentError(
                f"verify: the file is bundle {bundle.sha256[:12]}, the command named "
                f"{rec.sha256[:12]}"
            )
        if source != staged:
            os.replace(source, staged)
            fsync_dir(self.dir)
        try:
            payload = check(staged, rec.health_steps, rec.health_timeout_s)
        except EdgeAgentError as err:
            raise EdgeAgentError(f"health: {err}") from err
        return ReadyToSwitch(
            rec.group, staged, rec.sha256, bundle.manifest.name, bundle.manifest.version, payload
        )

    # Tick ---------------------------------------------------------------------------------------
    def poll(self) -> ReadyToSwitch | None:
        """Between ticks: time out idle transfers, collect the worker's verdict."""
        rec = self.journal
        if rec is None:
            return None
        tr = self._transfer
        if (
            rec.phase is Phase.RECEIVING
            and tr is not None
            and time.monotonic() - tr.last_progress > rec.transfer_timeout_s
        ):
            self.counters["discarded"] += 1
            self._fail(
                "transfer", f"no chunk for {rec.transfer_timeout_s:.0f} s: transfer discarded"
            )
            return None
        if rec.phase is not Phase.VERIFYING:
            return None
        with self._worker_lock:
            result, self._worker_result = self._worker_result, None
        if result is None:
            return None
        self._worker = None
        if isinstance(result, EdgeAgentError):
            stage, _, detail = str(result).partition(": ")
            self._fail(stage if detail else "verify", detail or str(result))
            return None
        return result

    def switched(self, ready: ReadyToSwitch, config_model: str) -> None:
        """The daemon switched ``ready.group``: journal first (what to restore), then overlay."""
        rec = self.journal
        assert rec is not None
        previous = self.overlay.get(rec.group)
        self._save(
            dataclasses.replace(
                rec, phase=Phase.WATCHING, previous=previous, updated_at=self._clock()
            )
        )
        self.overlay.restore(
            rec.group,
            OverlayEntry(
                path=str(ready.path),
                sha256=ready.sha256,
                name=ready.name,
                version=ready.version,
                config_model=config_model,
                deployed_at=self._clock(),
            ),
        )
        self._watched = 0
        self._watch_started = time.monotonic()
        self._report(
            None,
            None,
            f"group {rec.group!r} switched to {ready.name} {ready.version} ({ready.sha256[:12]}); "
            f"watching {rec.watch_ticks} ticks",
            event="deploy",
            group=rec.group,
        )

    def watch_expired(self) -> bool:
        """True when the watched group did not step ``watch_ticks`` times in ``watch_timeout_s``
        (paused, or an MQTT group without observations): the bundle is not proven."""
        rec = self.journal
        return (
            rec is not None
            and rec.phase is Phase.WATCHING
            and time.monotonic() - self._watch_started > rec.watch_timeout_s
        )

    def switch_failed(self, detail: str) -> None:
        self._fail("switch", detail)

    @property
    def shadow_s(self) -> float:
        """How long the bundle just checked runs as a shadow before the switch (0: none)."""
        rec = self.journal
        return rec.shadow_s if rec is not None and rec.phase is Phase.VERIFYING else 0.0

    def shadowed(self, detail: str, data: dict[str, Any]) -> None:
        """The shadow evaluation ended with ``data`` (``shadow_*`` keys, docs/protocol.md): an
        event now, and the same data in the deployment's final result."""
        rec = self.journal
        assert rec is not None
        self._shadow_data = dict(data)
        self._report(None, None, detail, data=dict(data), event="deploy", group=rec.group)

    def shadow_failed(self, detail: str) -> None:
        """The shadow could not run (it does not fit the budget, the candidate failed): the
        deployment fails and the group never changed."""
        self._fail("shadow", detail)

    def watch_tick(self) -> bool:
        """The watched group stepped well once more; True when the watch is over (done)."""
        rec = self.journal
        if rec is None or rec.phase is not Phase.WATCHING:
            return False
        self._watched += 1
        if self._watched < rec.watch_ticks:
            return False
        self.counters["done"] += 1
        self._finish(
            Phase.DONE,
            f"group {rec.group!r} runs {rec.sha256[:12]}: {rec.watch_ticks} good ticks",
            code=ResultCode.OK,
            event="deploy",
            data={"group": rec.group, "sha256": rec.sha256},
        )
        self._cleanup()
        return True

    def rollback(self, detail: str) -> None:
        """The watched group failed and the daemon switched back: restore the overlay, report."""
        rec = self.journal
        if rec is None or rec.phase is not Phase.WATCHING:
            return
        self.overlay.restore(rec.group, rec.previous)
        self.counters["rolled_back"] += 1
        self._finish(
            Phase.ROLLED_BACK,
            f"rolled back group {rec.group!r} after {self._watched} good tick(s): {detail}",
            event="rollback",
        )
        self._cleanup()

    def take_reports(self) -> list[Report]:
        out, self._reports = self._reports, []
        return out

    def stats(self) -> dict[str, Any]:
        rec = self.journal
        out: dict[str, Any] = dict(self.counters)
        if rec is not None:
            out["phase"] = rec.phase.value
            out["group"] = rec.group
            out["sha256"] = rec.sha256
            out["detail"] = rec.detail
            tr = self._transfer
            if tr is not None and rec.phase is Phase.RECEIVING:
                out["received"] = tr.received
                out["total"] = tr.args.chunks
            if rec.phase is Phase.WATCHING:
                out["watched_ticks"] = self._watched
        out["overlay"] = {g: e.sha256 for g, e in self.overlay.entries.items()}
        return out

    def close(self) -> None:
        tr = self._transfer
        if tr is not None and tr.fd is not None:
            os.close(tr.fd)
            tr.fd = None

    # Internals ----------------------------------------------------------------------------------
    def _part(self, sha: str) -> Path:
        return self.incoming / f"{sha}.part"

    def _hashes_path(self, sha: str) -> Path:
        return self.incoming / f"{sha}.hashes"

    def _save(self, rec: JournalRecord) -> None:
        """Journal ``rec``; every change of phase is logged here, the one place it happens."""
        prev = self.journal
        write_json_atomic(self.journal_path, dataclasses.asdict(rec))
        self.journal = rec
        same = prev is not None and (prev.sha256, prev.started_at) == (rec.sha256, rec.started_at)
        before = prev.phase.value if same and prev is not None else "idle"
        if before != rec.phase.value:
            logger.info(
                "deployment of %s to group %s: %s -> %s",
                rec.sha256[:12],
                rec.group,
                before,
                rec.phase.value,
            )

    def _report(
        self,
        nonce: bytes | None,
        code: ResultCode | None,
        detail: str,
        *,
        data: dict[str, Any] | None = None,
        event: str | None = None,
        severity: str = "info",
        group: str | None = None,
    ) -> None:
        self._reports.append(Report(nonce, code, detail, data or {}, event, severity, group))
        del self._reports[:-64]  # bounded: the daemon drains them every tick

    def _finish(
        self,
        phase: Phase,
        detail: str,
        *,
        code: ResultCode = ResultCode.FAILED,
        event: str = "deploy",
        data: dict[str, Any] | None = None,
    ) -> None:
        rec = self.journal
        assert rec is not None
        progress = self._progress()  # the chunks received, before the transfer is let go
        tr = self._transfer
        if tr is not None and tr.fd is not None:
            os.close(tr.fd)
        self._transfer = None
        self._save(dataclasses.replace(rec, phase=phase, detail=detail[:512]))
        log = logger.info if code is ResultCode.OK else logger.error
        log("deployment of %s to group %s: %s", rec.sha256[:12], rec.group, detail)
        try:
            nonce: bytes | None = bytes.fromhex(rec.nonce)
        except ValueError:
            nonce = None
        self._report(
            nonce,
            code,
            detail,
            data={
                "phase": phase.value,
                "group": rec.group,
                "sha256": rec.sha256,
                "received": progress["received"],
                "total": progress["total"],
                **self._shadow_data,
                **(data or {}),
            },
            event=event,
            severity="info" if code is ResultCode.OK else "error",
            group=rec.group,
        )

    def _fail(self, stage: str, detail: str) -> None:
        self.counters["failed"] += 1
        self._finish(Phase.FAILED, f"{stage}: {detail}", event="deploy")
        self._cleanup()

    def _cleanup(self) -> None:
        """Delete bundle files no one needs: not in the overlay, not the active deployment's."""
        rec = self.journal
        active = rec.sha256 if rec is not None and rec.phase in ACTIVE_PHASES else None
        keep = self.overlay.referenced()
        if active is not None:
            keep.add(f"{active}.tar")
        for path in self.dir.glob("*.tar"):
            if path.name not in keep and not self.overlay.recovered:
                path.unlink(missing_ok=True)
        for path in self.dir.glob("*.tmp"):
            path.unlink(missing_ok=True)
        if self.incoming.is_dir():
            for path in self.incoming.iterdir():
                if active is None or not path.name.startswith(active):
                    path.unlink(missing_ok=True)
