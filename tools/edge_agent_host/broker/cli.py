"""``edge-agent-host broker init | issue | revoke``: the command line of
:mod:`edge_agent_host.broker.directory`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from edge_agent.errors import InputError
from edge_agent_host.broker.certs import utc_now
from edge_agent_host.broker.directory import init_broker, issue_identity, revoke_identity
from edge_agent_host.broker.identities import (
    Auth,
    BrokerState,
    Identity,
    Role,
    check_fleet,
    check_identity,
    check_io_filter,
)
from edge_agent_host.broker.mosquitto import snippet_name


# ----------------------------------------------------------------------------------------- CLI
def _identity_arg(value: str) -> str:
    try:
        return check_identity(value)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _add_identity_args(p: argparse.ArgumentParser, *, node_required: bool) -> None:
    p.add_argument(
        "--node",
        action="append",
        default=[],
        type=_identity_arg,
        required=node_required,
        help="a node's id (repeatable): its [mqtt] node_id and certificate CN",
    )
    p.add_argument(
        "--hub",
        action="append",
        default=None,
        type=_identity_arg,
        help="a hub identity (repeatable; init default: hub). One connection per identity: "
        "give a second hub process its own",
    )
    p.add_argument(
        "--observer",
        action="append",
        default=[],
        type=_identity_arg,
        help="a read-only identity (repeatable): dashboards, 'hub watch'",
    )
    p.add_argument(
        "--sensor", action="append", default=[], type=_identity_arg,
        help="an identity that writes observations into every node (repeatable)",
    )  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``broker`` subcommands."""
    sub = parser.add_subparsers(dest="broker_command", required=True, metavar="SUBCOMMAND")
    init = sub.add_parser("init", help="write a mosquitto config, CA, ACL and client files")
    init.add_argument("--fleet", required=True, help="fleet name (topics ea/v1/FLEET/...)")
    _add_identity_args(init, node_required=True)
    init.add_argument("--port", type=int, required=True, help="TLS listener port (e.g. 8883)")
    init.add_argument("--out", type=Path, required=True, help="directory to write (new)")
    init.add_argument("--bind", default="127.0.0.1", help="listener address (0.0.0.0: all)")
    init.add_argument(
        "--host", default=None, help="the broker's name for clients (default: --bind)"
    )
    init.add_argument(
        "--san", action="append", default=[], help="another name in the broker's certificate"
    )
    init.add_argument(
        "--auth", choices=[a.value for a in Auth], default=Auth.CERT.value,
        help="cert: client certificates (mutual TLS); password: user names over TLS",
    )  # fmt: skip
    init.add_argument(
        "--validity-days", type=int, default=825, help="certificate lifetime (CA: >= 10 years)"
    )
    init.add_argument(
        "--io-topic", action="append", default=[],
        help="a topic filter outside ea/ every identity may read and write (MQTT sources and "
        "sinks; %%u: the identity)",
    )  # fmt: skip
    init.add_argument(
        "--io-read", action="append", default=[], help="a topic filter every identity may read"
    )
    init.add_argument(
        "--device-dir", default=None,
        help="where a client's files will be on its device (the paths in mqtt.toml and "
        "hub.toml; default: here)",
    )  # fmt: skip
    init.add_argument(
        "--run-as", default=None, help="user mosquitto drops to when started as root "
        "(default: you; it must read DIR)",
    )  # fmt: skip

    issue = sub.add_parser("issue", help="add an identity, or --rotate one's key")
    issue.add_argument("--out", type=Path, required=True, help="the broker directory")
    _add_identity_args(issue, node_required=False)
    issue.add_argument("--rotate", action="store_true", help="replace an existing identity's key")

    revoke = sub.add_parser("revoke", help="lock an identity out (then reload mosquitto)")
    revoke.add_argument("--out", type=Path, required=True, help="the broker directory")
    revoke.add_argument("name", type=_identity_arg, help="the identity")


def _roles(args: argparse.Namespace, default_hub: list[str]) -> dict[str, Role]:
    named = [
        *((n, Role.NODE) for n in args.node),
        *((n, Role.HUB) for n in (default_hub if args.hub is None else args.hub)),
        *((n, Role.OBSERVER) for n in args.observer),
        *((n, Role.SENSOR) for n in args.sensor),
    ]
    roles: dict[str, Role] = {}
    for name, role in named:
        if name in roles:
            raise InputError(f"identity {name!r} is given twice (names are unique across roles)")
        roles[name] = role
    return roles


def _run_init(args: argparse.Namespace) -> int:
    check_fleet(args.fleet)
    if not 0 < args.port < 65536:
        raise InputError(f"port {args.port} is out of range")
    host = args.host or args.bind
    if host in ("0.0.0.0", "::"):
        raise InputError("--bind on every address: give --host, the name clients connect to")
    now = utc_now().isoformat()
    state = BrokerState(
        fleet=args.fleet,
        port=args.port,
        bind=args.bind,
        host=host,
        sans=list(args.san),
        auth=Auth(args.auth),
        validity_days=args.validity_days,
        io_topics=[check_io_filter(f, writable=True) for f in args.io_topic],
        io_reads=[check_io_filter(f, writable=False) for f in args.io_read],
        device_dir=args.device_dir,
        run_as=args.run_as or getpass.getuser(),
        identities={
            name: Identity(role=role, issued_at=now) for name, role in _roles(args, ["hub"]).items()
        },
    )
    init_broker(state, args.out)
    out = args.out.resolve()
    print(f"broker for fleet {state.fleet} in {out} ({state.auth.value} auth)")
    print(f"  run:     mosquitto -c {out / 'mosquitto.conf'}")
    for name, ident in state.identities.items():
        print(
            f"  {ident.role.value:<8} {name}: {out / 'clients' / name / snippet_name(ident.role)}"
        )
    if any(ident.role is Role.HUB for ident in state.identities.values()):
        for line in SIGNING_KEYS:
            print(f"  {line}")
    print(f"  keep {out / 'ca' / 'ca.key'} offline once every identity is issued")
    return 0


SIGNING_KEYS: Final = (
    "hub command key:  edge-agent-host keygen --out KEYS --name hub; hub.pub into the nodes' "
    "[mqtt] hub_keys_dir, hub.key is the hub service's [rollouts] key_file",
    "hub learning key: edge-agent-host keygen --out KEYS --name learning; learning.pub into the "
    "nodes' [daemon] trusted_keys_dir (beside the CI's), learning.key is its [learning] key_file",
)
"""What ``broker init`` tells the operator about the hub's two signing keys (docs/fleet.md: "Two
key directories, on purpose"): the command key is never a bundle key, nor the reverse."""


def _run_issue(args: argparse.Namespace) -> int:
    roles = _roles(args, [])
    if len(roles) != 1:
        raise InputError("issue one identity at a time (--node, --hub, --observer or --sensor)")
    ((name, role),) = roles.items()
    issue_identity(args.out, name, role, rotate=args.rotate)
    print(f"{role.value} {name}: {args.out.resolve() / 'clients' / name / snippet_name(role)}")
    print("reload mosquitto: kill -HUP <pid> (or systemctl reload mosquitto)")
    return 0


def _run_revoke(args: argparse.Namespace) -> int:
    revoke_identity(args.out, args.name)
    print(f"{args.name} revoked; reload mosquitto: kill -HUP <pid> (or systemctl reload mosquitto)")
    print("then new connections of it fail, and a session it still has may neither read nor write")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``edge-agent-host broker SUBCOMMAND``."""
    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "init": _run_init,
        "issue": _run_issue,
        "revoke": _run_revoke,
    }
    try:
        return runners[args.broker_command](args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
