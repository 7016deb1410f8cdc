"""``edge-agent-host hub``: the reference hub of the fleet protocol.

A hub is one MQTT client subscribed to everything of a fleet (``ea/v1/{fleet}/#``). From what it
hears it keeps a view of every node (retained state and birth, deaths, the last telemetry, sequence
gaps) in memory and in a small SQLite file, and it asks a node for a rebirth when it sees a gap in
that node's sequence numbers. It sends commands signed with a hub key made by
``edge-agent-host keygen`` (the device must trust the ``.pub``: ``[mqtt] hub_keys_dir``) and
waits for their results, and it deploys bundles in chunks with a window of unacknowledged chunks,
resuming from what the device already holds.

Subcommands::

    edge-agent-host hub [--host H --port P --fleet F] fleet [--wait S] [--json]
    edge-agent-host hub ... watch [--node N] [--duration S] [--json]
    edge-agent-host hub ... command --key K (--node N ... | --all) NAME [ARG=VALUE ...]
    edge-agent-host hub ... deploy BUNDLE --key K --group G (--node N ... | --all)

``ARG=VALUE``: the value is read as JSON when it parses (``agents=500``, ``hz=2.5``,
``flag=true``), else taken as a string (``group=grid``). ``docs/fleet.md`` has the details.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import key_id, sign_bytes
from edge_agent.bundle.writer import pack_tar
from edge_agent.errors import BundleError, EdgeAgentError, ProtocolError
from edge_agent.fleet.commands import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from edge_agent.fleet.comms.base import Transport
from edge_agent.fleet.protocol import (
    Birth,
    Command,
    CommandResult,
    Death,
    DecodeError,
    Envelope,
    Event,
    NodeState,
    RebirthRequest,
    ResultCode,
    Route,
    SeqTracker,
    Telemetry,
    Topics,
    clock_synced,
    decode,
    encode,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DeployPlan",
    "HubClient",
    "HubError",
    "HubMessage",
    "HubStore",
    "NodeView",
    "configure",
    "format_fleet",
    "run",
]

DEFAULT_CHUNK_BYTES: Final = 64 * 1024
SUCCESS: Final = frozenset({ResultCode.OK, ResultCode.ACCEPTED})


class HubError(EdgeAgentError):
    """The hub could not do what was asked (no broker, no answer, a refusal)."""


# -------------------------------------------------------------------------------------- storage
def _json(value: Any) -> str:
    def default(obj: object) -> object:
        if isinstance(obj, bytes | bytearray):
            return obj.hex()
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return json.dumps(value, default=default, sort_keys=True)


class HubStore:
    """The hub's memory between runs (SQLite): nodes, last telemetry, recent events, commands."""

    MAX_EVENTS: Final = 10_000

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS nodes (
                node TEXT PRIMARY KEY, online INTEGER, bdseq INTEGER, birth TEXT,
                last_seen REAL, deaths INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE IF NOT EXISTS telemetry (node TEXT PRIMARY KEY, ts REAL, body TEXT);
            CREATE TABLE IF NOT EXISTS events (
                id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT, ts REAL, body TEXT);
            CREATE TABLE IF NOT EXISTS commands (
                nonce TEXT PRIMARY KEY, node TEXT, name TEXT, sent REAL, code TEXT,
                detail TEXT, answered REAL);
            """
        )

    def node(
        self,
        node: str,
        *,
        online: bool | None = None,
        bdseq: int | None = None,
        birth: Birth | None = None,
        death: bool = False,
        live: bool = True,
    ) -> None:
        """Record what was heard of ``node``; ``live``: not a retained message (it is seen now)."""
        self.conn.execute("INSERT OR IGNORE INTO nodes (node) VALUES (?)", (node,))
        if live:
            self.conn.execute("UPDATE nodes SET last_seen = ? WHERE node = ?", (time.time(), node))
        if online is not None:
            self.conn.execute(
                "UPDATE nodes SET online = ?, bdseq = ? WHERE node = ?", (int(online), bdseq, node)
            )
        if birth is not None:
            self.conn.execute(
                "UPDATE nodes SET birth = ? WHERE node = ?", (_json(birth.model_dump()), node)
            )
        if death:
            self.conn.execute("UPDATE nodes SET deaths = deaths + 1 WHERE node = ?", (node,))

    def telemetry(self, node: str, ts: float, body: Telemetry) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO telemetry (node, ts, body) VALUES (?, ?, ?)",
            (node, ts, _json(body.model_dump())),
        )

    def event(self, node: str, ts: float, body: Event) -> None:
        cur = self.conn.execute(
            "INSERT INTO events (node, ts, body) VALUES (?, ?, ?)",
            (node, ts, _json(body.model_dump())),
        )
        if cur.lastrowid is not None and cur.lastrowid % 1000 == 0:
            self.conn.execute(
                "DELETE FROM events WHERE id <= ?", (cur.lastrowid - self.MAX_EVENTS,)
            )

    def command_sent(self, nonce: bytes, node: str, name: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO commands (nonce, node, name, sent) VALUES (?, ?, ?, ?)",
            (nonce.hex(), node, name, time.time()),
        )

    def command_result(self, result: CommandResult) -> None:
        self.conn.execute(
            "UPDATE commands SET code = ?, detail = ?, answered = ? WHERE nonce = ?",
            (result.code.value, result.detail, time.time(), result.nonce.hex()),
        )

    def nodes(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT n.node, n.online, n.bdseq, n.birth, n.last_seen, n.deaths, t.ts, t.body "
            "FROM nodes n LEFT JOIN telemetry t ON t.node = n.node ORDER BY n.node"
        ).fetchall()
        out = []
        for node, online, bdseq, birth, seen, deaths, tts, tbody in rows:
            out.append(
                {
                    "node": node,
                    "online": None if online is None else bool(online),
                    "bdseq": bdseq,
                    "birth": json.loads(birth) if birth else None,
                    "last_seen": seen,
                    "deaths": deaths,
                    "telemetry_ts": tts,
                    "telemetry": json.loads(tbody) if tbody else None,
                }
            )
        return out

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------------------------------- client
@dataclass
class NodeView:
    """What the hub knows of one node."""

    node: str
    online: bool | None = None
    bdseq: int | None = None
    birth: Birth | None = None
    telemetry: Telemetry | None = None
    telemetry_ts: float | None = None
    deaths: int = 0
    gaps: int = 0
    rebirths_requested: int = 0
    last_seen: float = 0.0
    tracker: SeqTracker = field(default_factory=SeqTracker, repr=False)
    resync: bool = False
    """Set by a retained birth: it says who the node is, not where its sequence is now."""


@dataclass(frozen=True, slots=True)
class HubMessage:
    """One valid message the hub heard (``gap``: messages missed before it, 0 if none)."""

    topic: str
    route: Route
    envelope: Envelope
    retained: bool
    gap: int = 0


class HubClient:
    """An MQTT client that sees the whole fleet, signs commands and deploys bundles."""

    def __init__(
        self,
        *,
        fleet: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        hub_id: str = "hub",
        key: Ed25519PrivateKey | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        store: HubStore | None = None,
        rebirth_interval_s: float = 10.0,
        transport: Transport | None = None,
    ) -> None:
        self.topics = Topics(fleet)
        self.fleet = fleet
        self.hub_id = hub_id
        self.key = key
        self.key_id = key_id(key.public_key()) if key is not None else ""
        self.store = store
        self.rebirth_interval_s = rebirth_interval_s
        self.nodes: dict[str, NodeView] = {}
        self.results: dict[bytes, list[CommandResult]] = {}
        self.malformed = 0
        self._seq = 0
        self._sent: set[bytes] = set()
        self._rebirth_asked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._body_handlers: dict[type, Callable[[Envelope, Any, bool], None]] = {
            NodeState: self._on_state,
            Birth: self._on_birth,
            Death: self._on_death,
            Telemetry: self._on_telemetry,
            Event: self._on_event,
            CommandResult: self._on_result,
        }
        if transport is None:
            # paho is imported only when a hub actually connects.
            from edge_agent.fleet.comms.base import Backoff  # noqa: PLC0415
            from edge_agent.fleet.comms.mqtt import (  # noqa: PLC0415
                MqttSettings,
                MqttTransport,
                TlsSettings,
            )

            settings = MqttSettings(
                client_id=f"ea-hub-{fleet}-{os.urandom(4).hex()}",
                host=host,
                port=port,
                username=username,
                password=password,
                tls=TlsSettings(ca_file=ca_file) if ca_file else None,
                connect_timeout_s=5.0,
            )
            transport = MqttTransport(
                settings,
                backoff=Backoff(initial_s=0.1, max_s=2.0, stable_after_s=2.0),
                max_incoming=100_000,
            )
        self.transport = transport
        self.transport.subscribe(self.topics.fleet_all(), 1)

    # Connection -------------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and wait until the broker accepted us; :class:`HubError` if it does not."""
        self.transport.connect()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.transport.is_connected:
                return
            time.sleep(0.02)
        self.transport.disconnect()
        raise HubError(f"no connection to the broker within {timeout_s:g} s")

    def close(self) -> None:
        self.transport.disconnect()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # Receiving --------------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> list[HubMessage]:
        """Process what arrived (waiting up to ``timeout_s`` for something); returns it."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.transport.events.drain()
            batch = self.transport.incoming.drain()
            if batch or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        out = []
        for msg in batch:
            handled = self._handle(msg.topic, msg.payload, msg.retain)
            if handled is not None:
                out.append(handled)
        return out

    def listen(self, seconds: float) -> list[HubMessage]:
        """Everything heard during ``seconds``."""
        out: list[HubMessage] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            out.extend(self.poll(min(left, 0.1)))
        return out

    def _view(self, node: str) -> NodeView:
        view = self.nodes.get(node)
        if view is None:
            view = self.nodes[node] = NodeView(node)
        return view

    def _handle(self, topic: str, payload: bytes, retained: bool) -> HubMessage | None:
        try:
            env = decode(payload)
        except DecodeError:
            self.malformed += 1
            return None
        route = self.topics.parse(topic)
        if route is None or (route.expected_type is not None and env.type != route.expected_type):
            self.malformed += 1
            return None
        if route.node_owned and env.node != route.node:
            self.malformed += 1
            return None
        gap = 0
        if route.node_owned and route.node is not None:
            gap = self._track(route.node, env, retained)
        handler = self._body_handlers.get(type(env.body))
        if handler is not None:
            handler(env, env.body, retained)
        if route.node_owned and not retained:
            self._view(env.node).last_seen = time.time()
        return HubMessage(topic, route, env, retained, gap)

    # -- what each kind of message does to the registry (one method per body type) -------------
    def _on_state(self, env: Envelope, body: NodeState, retained: bool) -> None:
        view = self._view(env.node)
        # A will from an older session than the birth we hold is stale (see the protocol).
        if body.online or view.bdseq is None or env.bdseq >= view.bdseq:
            view.online = body.online
            view.bdseq = env.bdseq
            if self.store is not None:
                self.store.node(env.node, online=body.online, bdseq=env.bdseq, live=not retained)

    def _on_birth(self, env: Envelope, body: Birth, retained: bool) -> None:
        # Presence is the state topic's: a retained birth may outlive its node.
        view = self._view(env.node)
        view.birth, view.bdseq = body, env.bdseq
        if not retained:
            view.online = True
        if self.store is not None:
            self.store.node(
                env.node,
                birth=body,
                bdseq=env.bdseq,
                online=None if retained else True,
                live=not retained,
            )

    def _on_death(self, env: Envelope, body: Death, retained: bool) -> None:
        del body, retained
        self._view(env.node).deaths += 1
        if self.store is not None:
            self.store.node(env.node, death=True)

    def _on_telemetry(self, env: Envelope, body: Telemetry, retained: bool) -> None:
        del retained
        view = self._view(env.node)
        view.telemetry, view.telemetry_ts = body, env.ts
        if self.store is not None:
            self.store.telemetry(env.node, env.ts, body)

    def _on_event(self, env: Envelope, body: Event, retained: bool) -> None:
        del retained
        if self.store is not None:
            self.store.event(env.node, env.ts, body)

    def _on_result(self, env: Envelope, body: CommandResult, retained: bool) -> None:
        del retained
        with self._lock:  # only answers to what this client sent: bounded by its own use
            if body.nonce in self._sent:
                self.results.setdefault(body.nonce, []).append(body)
        if self.store is not None:
            self.store.command_result(body)

    def _track(self, node: str, env: Envelope, retained: bool) -> int:
        view = self._view(node)
        tracker = view.tracker
        if env.type == Birth.TYPE:
            view.resync = retained
        elif view.resync and env.type not in ("state", "death") and env.bdseq == tracker.bdseq:
            # The first live message after a retained birth sets where the sequence is.
            view.resync = False
            tracker.last_seq = env.seq
            return 0
        verdict = tracker.observe(env.type, env.bdseq, env.seq)
        if not verdict.needs_rebirth:
            return 0
        view.gaps += 1
        now = time.monotonic()
        if now - self._rebirth_asked.get(node, -1e18) >= self.rebirth_interval_s:
            self._rebirth_asked[node] = now
            reason = f"sequence gap of {verdict.missing}" if verdict.missing else "no birth seen"
            self.publish(self.topics.rebirth(node), RebirthRequest(reason=reason))
            view.rebirths_requested += 1
        return max(verdict.missing, 1)

    # Sending ----------------------------------------------------------------------------------
    def publish(self, topic: str, body: Any) -> None:
        """Send one message body from the hub, with the hub's node id and next sequence number."""
        env = Envelope(
            type=body.TYPE,
            node=self.hub_id,
            seq=self._seq,
            bdseq=0,
            ts=time.time(),
            clock_synced=clock_synced(),
            body=body,
        )
        self._seq = (self._seq + 1) % (1 << 32)
        if self.transport.publish(topic, encode(env), 1) is None:
            raise HubError("not connected to the broker")

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
        unsigned = Command(
            target=node,
            nonce=os.urandom(16),
            expires=time.time() + ttl_s,
            key_id=self.key_id if sign else "",
            name=name,
            args=dict(args or {}),
        )
        if not sign:
            return unsigned
        if self.key is None:
            raise HubError("signing a command needs a hub key (--key)")
        signature = sign_bytes(self.key, unsigned.signing_bytes(self.fleet))
        return unsigned.model_copy(update={"signature": signature})

    def send(self, cmd: Command, *, to: str | None = None) -> bytes:
        """Publish ``cmd`` on its target's command topic (``to``: another node's, which must
        refuse it); returns its nonce."""
        node = to or cmd.target
        with self._lock:
            self._sent.add(cmd.nonce)
        self.publish(self.topics.command(node), cmd)
        if self.store is not None:
            self.store.command_sent(cmd.nonce, node, cmd.name)
        return cmd.nonce

    def send_command(
        self, node: str, name: str, args: Mapping[str, Any] | None = None, *, ttl_s: float = 60.0
    ) -> bytes:
        return self.send(self.make_command(node, name, args, ttl_s=ttl_s))

    def send_chunk(self, node: str, sha256: str, index: int, data: bytes) -> bytes:
        """One ``deploy_chunk`` (unsigned: the node checks it against the signed hash list)."""
        args = {"sha256": sha256, "index": index, "data": data}
        return self.send(self.make_command(node, "deploy_chunk", args, sign=False))

    def take_results(self, nonce: bytes) -> list[CommandResult]:
        with self._lock:
            return self.results.pop(nonce, [])

    def wait_result(
        self,
        nonce: bytes,
        timeout_s: float = 30.0,
        accept: Callable[[CommandResult], bool] = lambda _r: True,
    ) -> CommandResult:
        """The first result to ``nonce`` that ``accept`` takes; :class:`HubError` on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            for result in self.take_results(nonce):
                if accept(result):
                    return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise HubError(f"no result to command {nonce.hex()[:8]} within {timeout_s:g} s")
            self.poll(min(left, 0.05))

    def command(
        self,
        node: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        ttl_s: float = 60.0,
        timeout_s: float = 30.0,
    ) -> CommandResult:
        """Send one signed command and wait for its first result."""
        return self.wait_result(self.send_command(node, name, args, ttl_s=ttl_s), timeout_s)

    # Deploying --------------------------------------------------------------------------------
    def deploy(
        self,
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
            run.deploy_nonce = self.send_command(run.node, "deploy", args)
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
            self.poll(0.02)
            for r in runs.values():
                if not r.finished:
                    self._advance(r, window, chunk_timeout_s, progress)
        return {node: r.result for node, r in runs.items() if r.result is not None}

    def _advance(
        self,
        run: _NodeDeploy,
        window: int,
        chunk_timeout_s: float,
        progress: Callable[[str, int, int, str], None] | None,
    ) -> None:
        plan = run.plan
        assert run.deploy_nonce is not None
        for result in self.take_results(run.deploy_nonce):
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
            for result in self.take_results(nonce):
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
            nonce = self.send_chunk(run.node, plan.sha256, index, plan.chunk(index))
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


# ------------------------------------------------------------------------------------------ CLI
def _default_db(fleet: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-agent-host" / f"hub-{fleet}.sqlite3"


def _arg_value(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: write arguments as NAME=VALUE")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def _add_targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", required=True, type=Path, help="hub private key (NAME.key)")
    p.add_argument("--node", action="append", default=[], help="target node (repeatable)")
    p.add_argument(
        "--all", action="store_true", help="every node currently online (heard for --wait s)"
    )
    p.add_argument("--wait", type=float, default=2.0, help="seconds to listen for nodes first")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for results")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``hub`` arguments and its subcommands."""
    parser.add_argument("--host", default="127.0.0.1", help="broker host")
    parser.add_argument("--port", type=int, default=1883, help="broker port")
    parser.add_argument("--fleet", default="default", help="fleet name (topics ea/v1/FLEET/...)")
    parser.add_argument("--hub-id", default="hub", help="this hub's name in the envelope")
    parser.add_argument("--username", default=None, help="broker user")
    parser.add_argument("--password-file", type=Path, default=None, help="broker password file")
    parser.add_argument("--ca-file", default=None, help="CA (PEM) for TLS to the broker")
    parser.add_argument("--db", type=Path, default=None, help="hub state (SQLite)")
    sub = parser.add_subparsers(dest="hub_command", required=True, metavar="SUBCOMMAND")

    fleet = sub.add_parser("fleet", help="list the fleet: presence, births, last telemetry")
    fleet.add_argument("--wait", type=float, default=2.0, help="seconds to listen first")
    fleet.add_argument("--json", action="store_true", help="print JSON")

    watch = sub.add_parser("watch", help="print telemetry, events, results and presence live")
    watch.add_argument("--node", action="append", default=[], help="only these nodes")
    watch.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")

    command = sub.add_parser("command", help="send a signed command and wait for its result")
    _add_targets(command)
    command.add_argument("--ttl", type=float, default=60.0, help="seconds until it expires")
    command.add_argument("--json", action="store_true", help="print results as JSON")
    command.add_argument("name", help="ping, snapshot, rebirth, start_group, stop_group, ...")
    command.add_argument("args", nargs="*", type=_arg_value, help="NAME=VALUE arguments")

    deploy = sub.add_parser("deploy", help="deploy a signed bundle to a group on nodes")
    _add_targets(deploy)
    deploy.add_argument("bundle", type=Path, help="signed bundle directory or .tar")
    deploy.add_argument("--group", required=True, help="the group that runs the bundle")
    deploy.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_BYTES,
                        help=f"bytes per chunk (default {DEFAULT_CHUNK_BYTES})")
    deploy.add_argument("--window", type=int, default=8, help="unacknowledged chunks at most")
    deploy.add_argument("--watch-ticks", type=int, default=50, help="ticks watched after switch")
    deploy.add_argument("--health-steps", type=int, default=20, help="health-check steps")
    deploy.add_argument(
        "--watch-timeout", type=float, default=120.0, help="seconds the watch may take"
    )
    deploy.set_defaults(timeout=300.0)


def _client(args: argparse.Namespace, key: Ed25519PrivateKey | None = None) -> HubClient:
    password = None
    if args.password_file is not None:
        lines = args.password_file.read_text(encoding="utf-8").splitlines()
        password = lines[0] if lines else ""
    store = HubStore(args.db or _default_db(args.fleet))
    client = HubClient(
        fleet=args.fleet,
        host=args.host,
        port=args.port,
        hub_id=args.hub_id,
        key=key,
        username=args.username,
        password=password,
        ca_file=args.ca_file,
        store=store,
    )
    try:
        client.connect()
    except HubError:
        store.close()
        raise
    return client


def _targets(client: HubClient, args: argparse.Namespace) -> list[str]:
    client.listen(args.wait)
    nodes = list(args.node)
    if args.all:
        nodes += [v.node for v in client.nodes.values() if v.online and v.node not in nodes]
    if not nodes:
        raise HubError("no target: give --node NODE or --all (and is any node online?)")
    return nodes


def _age(ts: float | None) -> str:
    if ts is None:
        return "-"
    age = time.time() - ts
    return f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}m"


def format_fleet(rows: Iterable[Mapping[str, Any]]) -> str:
    """The ``hub fleet`` table."""
    lines = [
        f"{'NODE':<16} {'STATE':<8} {'BDSEQ':>5} {'PROFILE':<12} {'GROUPS':<28} "
        f"{'TICK p50/p99 ms':<16} {'RSS':>8} {'OUTBOX':>6} {'SEEN':>5}"
    ]
    for row in rows:
        state = {True: "online", False: "offline", None: "?"}[row["online"]]
        birth = row.get("birth") or {}
        groups = ", ".join(
            f"{name}={info['agents']}"
            + (f"@{info['bundle_sha256'][:8]}" if info.get("bundle_sha256") else "")
            for name, info in sorted((birth.get("groups") or {}).items())
        )
        tel = row.get("telemetry") or {}
        tick = f"{tel['tick_p50_ms']:.2f}/{tel['tick_p99_ms']:.2f}" if tel else "-"
        rss = f"{tel['rss_bytes'] / 2**20:.0f}MiB" if tel else "-"
        outbox = str((tel.get("outbox") or {}).get("depth_rows", "-")) if tel else "-"
        lines.append(
            f"{row['node']:<16} {state:<8} {row['bdseq'] if row['bdseq'] is not None else '-':>5} "
            f"{birth.get('profile', '-'):<12} {groups or '-':<28} {tick:<16} {rss:>8} "
            f"{outbox:>6} {_age(row.get('last_seen')):>5}"
        )
    return "\n".join(lines)


def _describe(msg: HubMessage) -> dict[str, Any]:
    env = msg.envelope
    out: dict[str, Any] = {
        "ts": env.ts,
        "node": env.node,
        "type": env.type,
        "seq": env.seq,
        "bdseq": env.bdseq,
        "retained": msg.retained,
    }
    if msg.gap:
        out["gap"] = msg.gap
    body = env.body.model_dump()
    if env.type in ("obs", "action", "beliefs"):
        body = {k: v for k, v in body.items() if k not in ("agent_ids", "values")}
        out["agents"] = len(env.body.agent_ids) // 4  # type: ignore[attr-defined]
    out["body"] = body
    return out


def _line(msg: HubMessage) -> str:
    env = msg.envelope
    body = env.body
    stamp = time.strftime("%H:%M:%S", time.localtime(env.ts))
    head = f"{stamp} {env.node:<14} {env.type:<9}"
    gap = f" [gap {msg.gap}: rebirth requested]" if msg.gap else ""
    if isinstance(body, Telemetry):
        depth = body.outbox.depth_rows if body.outbox is not None else 0
        text = (
            f"ticks {body.ticks} p50 {body.tick_p50_ms:.2f} ms p99 {body.tick_p99_ms:.2f} ms "
            f"overruns {body.overruns} rss {body.rss_bytes / 2**20:.0f} MiB outbox {depth} "
            f"groups {body.groups}"
        )
    elif isinstance(body, Event):
        text = f"{body.severity.value} {body.kind.value}: {body.detail}"
    elif isinstance(body, CommandResult):
        text = f"{body.name} {body.nonce.hex()[:8]} -> {body.code.value}: {body.detail}"
    elif isinstance(body, NodeState):
        text = "online" if body.online else "OFFLINE"
    elif isinstance(body, Birth):
        text = f"profile {body.profile}, groups " + ", ".join(
            f"{n}={g.agents}" + (f"@{g.bundle_sha256[:8]}" if g.bundle_sha256 else "")
            for n, g in body.groups.items()
        )
    elif isinstance(body, Death):
        text = f"stopped ({body.reason.value})"
    else:
        text = ""
    return f"{head} {text}{gap}".rstrip()


def _print_result(node: str, result: CommandResult, as_json: bool) -> None:
    if as_json:
        print(_json({"node": node, **result.model_dump()}))
    else:
        data = {k: v for k, v in result.data.items() if not isinstance(v, bytes)}
        extra = f" {data}" if data else ""
        print(f"{node}: {result.name} {result.code.value}: {result.detail}{extra}")


def _run_fleet(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        client.listen(args.wait)
        assert client.store is not None
        rows = client.store.nodes()
    finally:
        client.close()
    if args.json:
        print(_json(rows))
    else:
        print(format_fleet(rows))
    return 0


def _run_watch(args: argparse.Namespace) -> int:
    client = _client(args)
    only = set(args.node)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while deadline is None or time.monotonic() < deadline:
            for msg in client.poll(0.2):
                if only and msg.envelope.node not in only:
                    continue
                if msg.envelope.type in ("obs", "action", "beliefs") and not args.json:
                    continue
                print(_json(_describe(msg)) if args.json else _line(msg), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def _run_command(args: argparse.Namespace) -> int:
    from edge_agent_host.keys import load_signing_key  # noqa: PLC0415

    client = _client(args, load_signing_key(args.key))
    failures = 0
    try:
        nodes = _targets(client, args)
        nonces = {
            node: client.send_command(node, args.name, dict(args.args), ttl_s=args.ttl)
            for node in nodes
        }
        for node, nonce in nonces.items():
            try:
                result = client.wait_result(nonce, args.timeout)
            except HubError as err:
                print(f"{node}: {args.name}: {err}", file=sys.stderr)
                failures += 1
                continue
            _print_result(node, result, args.json)
            failures += result.code not in SUCCESS
    finally:
        client.close()
    return 1 if failures else 0


def _run_deploy(args: argparse.Namespace) -> int:
    from edge_agent_host.keys import load_signing_key  # noqa: PLC0415

    client = _client(args, load_signing_key(args.key))
    try:
        nodes = _targets(client, args)
        shown: dict[str, tuple[int, str]] = {}

        def progress(node: str, done: int, total: int, phase: str) -> None:
            step = max(1, total // 10)
            last = shown.get(node)
            if last is None or last[1] != phase or done == total or done - last[0] >= step:
                shown[node] = (done, phase)
                print(f"{node}: {phase} {done}/{total} chunks", flush=True)

        results = client.deploy(
            args.bundle,
            args.group,
            nodes,
            chunk_size=args.chunk_size,
            window=args.window,
            timeout_s=args.timeout,
            watch_ticks=args.watch_ticks,
            watch_timeout_s=args.watch_timeout,
            health_steps=args.health_steps,
            progress=progress,
        )
    finally:
        client.close()
    for node in nodes:
        result = results.get(node)
        if result is None:
            print(f"{node}: deploy: no result", file=sys.stderr)
        else:
            _print_result(node, result, False)
    return (
        0
        if all(r.code is ResultCode.OK for r in results.values()) and len(results) == len(nodes)
        else 1
    )


def run(args: argparse.Namespace) -> int:
    """Run ``edge-agent-host hub SUBCOMMAND``."""
    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "fleet": _run_fleet,
        "watch": _run_watch,
        "command": _run_command,
        "deploy": _run_deploy,
    }
    try:
        return runners[args.hub_command](args)
    except (HubError, ProtocolError, BundleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
