"""The ``edge-agent-host hub`` subcommands (``fleet``, ``watch``, ``command``, ``deploy``).

Their arguments (:func:`configure`), running them (:func:`run`) and what they print
(the ``watch`` lines; the fleet table is :mod:`edge_agent_host.fleet.table`'s, which the hub
service prints too); the usage is in :mod:`edge_agent_host.fleetctl`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import BundleError, ProtocolError
from edge_agent.fleet.comms.tls_probe import TlsOptions
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import (
    Birth,
    CommandResult,
    Death,
    Event,
    NodeState,
    Telemetry,
    as_builtins,
)
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.known_nodes import add_force_argument, require_seen
from edge_agent_host.fleet.presence import presence
from edge_agent_host.fleet.table import add_silent_argument, format_fleet
from edge_agent_host.fleet.transfer import DEFAULT_CHUNK_BYTES, DeployPlan
from edge_agent_host.fleetctl.client import FleetClient
from edge_agent_host.fleetctl.store import FleetStore, json_text
from edge_agent_host.fleetctl.views import FleetMessage

__all__ = [
    "SUCCESS",
    "add_broker_arguments",
    "configure",
    "connect",
    "run",
]

SUCCESS: Final = frozenset({ResultCode.OK, ResultCode.ACCEPTED})
TLS_OPTIONS: Final = TlsOptions(
    "--ca-file",
    "--cert-file",
    "--key-file",
    "edge-agent-host broker init issued them: DIR/clients/NAME/; docs/security.md",
)
"""What a broker that wants TLS asks of ``hub`` and ``tasks`` (:func:`add_broker_arguments`)."""


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


def _add_targets(p: argparse.ArgumentParser, sends: str) -> None:
    p.add_argument("--key", required=True, type=Path, help="hub private key (NAME.key)")
    p.add_argument("--node", action="append", default=[], help="target node (repeatable)")
    p.add_argument(
        "--all", action="store_true", help="every node currently online (heard for --wait s)"
    )
    p.add_argument("--wait", type=float, default=2.0, help="seconds to listen for nodes first")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for results")
    add_force_argument(p, f"{sends} to")


def add_broker_arguments(parser: argparse.ArgumentParser, hub_id_help: str) -> None:
    """The broker connection options of ``hub`` and ``tasks`` (read by :func:`connect`)."""
    parser.add_argument("--host", default="127.0.0.1", help="broker host")
    parser.add_argument("--port", type=int, default=1883, help="broker port")
    parser.add_argument("--fleet", default="default", help="fleet name (topics ea/v1/FLEET/...)")
    parser.add_argument("--hub-id", default="hub", help=hub_id_help)
    parser.add_argument("--username", default=None, help="broker user")
    parser.add_argument("--password-file", type=Path, default=None, help="broker password file")
    parser.add_argument("--ca-file", type=Path, default=None, help="CA (PEM) for TLS to the broker")
    parser.add_argument(
        "--cert-file",
        type=Path,
        default=None,
        help="client certificate (PEM) for mutual TLS; with --key-file",
    )
    parser.add_argument("--key-file", type=Path, default=None, help="client private key (PEM)")


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def connect(
    args: argparse.Namespace, key: Ed25519PrivateKey | None = None, store: FleetStore | None = None
) -> FleetClient:
    """A :class:`FleetClient` from :func:`add_broker_arguments`' options, connected; the store
    is closed if it cannot connect."""
    try:
        password = None
        if args.password_file is not None:
            lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
            password = lines[0] if lines else ""
        client = FleetClient(
            fleet=args.fleet,
            host=args.host,
            port=args.port,
            hub_id=args.hub_id,
            key=key,
            username=args.username,
            password=password,
            ca_file=_text(args.ca_file),
            cert_file=_text(args.cert_file),
            key_file=_text(args.key_file),
            store=store,
            tls_options=TLS_OPTIONS,
        )
        client.connect()
    except (FleetError, OSError):
        if store is not None:
            store.close()
        raise
    return client


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``hub`` arguments and its subcommands."""
    add_broker_arguments(
        parser, "this hub's name in the envelope (with a broker ACL: its broker identity)"
    )
    parser.add_argument("--db", type=Path, default=None, help="hub state (SQLite)")
    sub = parser.add_subparsers(dest="hub_command", required=True, metavar="SUBCOMMAND")

    fleet = sub.add_parser("fleet", help="list the fleet: presence, births, last telemetry")
    fleet.add_argument("--wait", type=float, default=2.0, help="seconds to listen first")
    fleet.add_argument("--json", action="store_true", help="print JSON")
    add_silent_argument(fleet)

    watch = sub.add_parser("watch", help="print telemetry, events, results and presence live")
    watch.add_argument("--node", action="append", default=[], help="only these nodes")
    watch.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")

    command = sub.add_parser("command", help="send a signed command and wait for its result")
    _add_targets(command, "send it")
    command.add_argument("--ttl", type=float, default=60.0, help="seconds until it expires")
    command.add_argument("--json", action="store_true", help="print results as JSON")
    command.add_argument(
        "name",
        help="ping, snapshot, rebirth, start_group, stop_group, learning_freeze, ... "
        "(docs/fleet.md#commands)",
    )
    command.add_argument("args", nargs="*", type=_arg_value, help="NAME=VALUE arguments")

    deploy = sub.add_parser("deploy", help="deploy a signed bundle to a group on nodes")
    _add_targets(deploy, "deploy")
    deploy.add_argument("bundle", type=Path, help="signed bundle directory or .tar")
    deploy.add_argument("--group", required=True, help="the group that runs the bundle")
    deploy.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_BYTES,
        help=f"bytes per chunk (default {DEFAULT_CHUNK_BYTES})",
    )
    deploy.add_argument(
        "--transfer",
        choices=("broadcast", "unicast"),
        default="broadcast",
        help="broadcast: each chunk published once on the fleet's bundle topic for every node "
        "(default); unicast: chunks sent to each node and acknowledged one by one",
    )
    deploy.add_argument(
        "--rate", type=float, default=32.0, help="broadcast chunks per second (default 32)"
    )
    deploy.add_argument(
        "--window", type=int, default=8, help="unicast: unacknowledged chunks at most"
    )
    deploy.add_argument("--watch-ticks", type=int, default=50, help="ticks watched after switch")
    deploy.add_argument(
        "--preflight-steps",
        "--health-steps",
        dest="health_steps",
        metavar="N",
        type=int,
        default=20,
        help="steps of the preflight the node runs the bundle's model for (default 20; "
        "--health-steps is its former name)",
    )
    deploy.add_argument(
        "--watch-timeout", type=float, default=120.0, help="seconds the watch may take"
    )
    deploy.set_defaults(timeout=300.0)


def _client(args: argparse.Namespace, key: Ed25519PrivateKey | None = None) -> FleetClient:
    return connect(args, key, FleetStore(args.db or _default_db(args.fleet)))


def _targets(client: FleetClient, args: argparse.Namespace) -> list[str]:
    """The nodes of ``--node`` and ``--all``, after listening ``--wait`` seconds; a ``--node``
    never seen (by this run or, in the store, an earlier one) is an error unless ``--force``."""
    client.listen(args.wait)
    if not args.force:
        known = set(client.nodes)
        if client.store is not None:
            known.update(row["node"] for row in client.store.nodes())
        require_seen(args.node, known, where=f"in fleet {args.fleet!r}")
    nodes = list(args.node)
    if args.all:
        nodes += [v.node for v in client.nodes.values() if v.online and v.node not in nodes]
    if not nodes:
        raise FleetError("no target: give --node NODE or --all (and is any node online?)")
    return nodes


def _describe(msg: FleetMessage) -> dict[str, Any]:
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
    body = as_builtins(env.body)
    if env.type in ("obs", "action", "beliefs"):
        body = {k: v for k, v in body.items() if k not in ("agent_ids", "values")}
        out["agents"] = len(env.body.agent_ids) // 4  # type: ignore[attr-defined]
    out["body"] = body
    return out


def _line(msg: FleetMessage) -> str:
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
        print(json_text({"node": node, **as_builtins(result)}))
    else:
        data = {k: v for k, v in result.data.items() if not isinstance(v, bytes)}
        extra = f" {data}" if data else ""
        print(f"{node}: {result.name} {result.code.value}: {result.detail}{extra}")


def _run_fleet(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        heard = client.listen(args.wait)
        assert client.store is not None
        rows = client.store.nodes()
        if not heard:
            print(nothing_heard(client, args.wait, rows), file=sys.stderr)
    finally:
        client.close()
    if args.json:  # each row with its presence, as edge-agent-hub fleet --json gives it
        now = time.time()
        shown = [{**row, "presence": presence(row, args.silent_after, now)} for row in rows]
        print(json_text(shown))
    else:
        print(format_fleet(rows, args.silent_after))
    return 0


def nothing_heard(client: FleetClient, waited_s: float, rows: list[dict[str, Any]]) -> str:
    """The one line ``hub fleet`` prints (to stderr) when the broker sent nothing while it
    listened: the table is the one cached from earlier runs, how old it is, and what to check."""
    where = f"the broker {client.broker} sent nothing in {waited_s:g} s (fleet {client.fleet!r})"
    check = "no node online, none retained: is --fleet right, and may this identity read it?"
    store = client.store.path if client.store is not None else "the client's database"
    times = [t for r in rows for t in (r.get("last_seen"), r.get("first_seen")) if t is not None]
    if not rows:
        return f"note: {where}, and nothing is cached in {store}: no node yet ({check})"
    age = f"last heard {format_age(time.time() - max(times))} ago" if times else "never heard"
    return (
        f"note: {where}: the table is the one cached in {store} by earlier runs, {age} "
        f"({check})"
    )


def format_age(seconds: float) -> str:
    """``42s``, ``12m``, ``3h``, ``2d``: an age in its largest whole unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(0.0, seconds):.0f}s"


def _run_watch(args: argparse.Namespace) -> int:
    # SIGINT and SIGTERM end the loop between two polls: a KeyboardInterrupt raised wherever the
    # main thread happens to be (inside the store's transaction, the transport's queue) could
    # leave what close() then needs half done; under Python 3.13 `watch` so interrupted did not
    # end at all.
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda _signum, _frame: stop.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        client = _client(args)
        only = set(args.node)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                for msg in client.poll(0.2):
                    if only and msg.envelope.node not in only:
                        continue
                    if msg.envelope.type in ("obs", "action", "beliefs") and not args.json:
                        continue
                    print(json_text(_describe(msg)) if args.json else _line(msg), flush=True)
        finally:
            client.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
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
            except FleetError as err:
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

    key = load_signing_key(args.key)
    plan = DeployPlan.from_bundle(args.bundle, args.chunk_size)  # a bad file: before connecting
    client = _client(args, key)
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
            plan,
            args.group,
            nodes,
            transfer=args.transfer,
            chunk_size=args.chunk_size,
            window=args.window,
            rate_chunks_s=args.rate,
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
    except (FleetError, ProtocolError, BundleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
