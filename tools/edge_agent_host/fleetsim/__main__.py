"""``python -m edge_agent_host.fleetsim``: run simulated nodes until SIGTERM (or ``--duration``).

Nodes ``{prefix}{first:04d}`` .. ``{prefix}{first + nodes - 1:04d}``, each with its state in
``{state_dir}/{node}``; ``--fail-fraction`` of them (chosen by a hash of the name and ``--seed``)
fail every preflight. At each telemetry period every node publishes its group's health too
(``--no-health``: not), a worse model's while it runs a bundle of ``--worse-version``
(:mod:`.node`). All are stepped from one thread every ``--tick`` seconds; the status
line on stdout (JSON) says how many are online. SIGTERM stops them cleanly (death, offline will).

With ``--learn-bundle`` (the model line's bundle) the nodes' group learns one transition table
(``--learn-table``, of the world ``--learn-world``: the bundle's name by default): at each time
of the ``--learn-schedule`` file (:class:`~.learning.Schedule`) the nodes it names each publish
one report of learning deltas of ``--learn-agents`` x ``--learn-ticks`` agent-ticks
(:class:`~.learning.DeltaMaker`); the status line counts the reports sent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import EdgeAgentError
from edge_agent_host.fleetsim.learning import DeltaMaker, Schedule
from edge_agent_host.fleetsim.node import GROUP, SimNode


def fails(node: str, fraction: float, seed: int) -> bool:
    """Whether ``node`` is one of the failing ``fraction`` (deterministic for a seed)."""
    digest = hashlib.sha256(f"{seed}:{node}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


#: ~9 file descriptors per node must stay below select()'s 1024 (measured: 183 for 20 nodes).
MAX_NODES_PER_PROCESS = 100


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge_agent_host.fleetsim", description=__doc__)
    parser.add_argument("--nodes", type=int, default=100, help="simulated nodes in this process")
    parser.add_argument("--first", type=int, default=0, help="number of the first node")
    parser.add_argument("--prefix", default="sim-", help="node name prefix")
    parser.add_argument("--host", default="127.0.0.1", help="broker host")
    parser.add_argument("--port", type=int, default=1883, help="broker port")
    parser.add_argument("--fleet", default="sim", help="fleet name")
    parser.add_argument("--state-dir", type=Path, required=True, help="one directory per node")
    parser.add_argument("--hub-keys", type=Path, help="directory of the hub keys (*.pub)")
    parser.add_argument("--bundle-keys", type=Path, help="directory of the bundle keys (*.pub)")
    parser.add_argument("--fail-fraction", type=float, default=0.0, help="preflights fail")
    parser.add_argument("--seed", type=int, default=0, help="which nodes fail")
    parser.add_argument(
        "--fail-version", help="the failing nodes fail only bundles of this manifest version"
    )
    parser.add_argument("--telemetry", type=float, default=10.0, help="telemetry period (s)")
    parser.add_argument(
        "--no-health",
        action="store_true",
        help="publish no health messages (they come with each telemetry message by default)",
    )
    parser.add_argument(
        "--worse-version",
        help="nodes running a bundle of this manifest version report a worse model's health",
    )
    parser.add_argument(
        "--worse-shift", type=float, default=0.5, help="its excess surprise, nats (0.5)"
    )
    parser.add_argument("--tick", type=float, default=0.1, help="seconds between steps")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--connect-rate", type=float, default=50.0, help="nodes that start connecting per second"
    )
    parser.add_argument("--learn-bundle", type=Path, help="the model line's bundle: nodes learn")
    parser.add_argument("--learn-table", default="B0", help="the table learned (B0)")
    parser.add_argument("--learn-world", help="whose true transitions (the bundle's name)")
    parser.add_argument("--learn-agents", type=int, default=10, help="learning agents a node")
    parser.add_argument("--learn-ticks", type=int, default=10, help="ticks a report stands for")
    parser.add_argument(
        "--learn-schedule", type=Path, help="JSON file: when which nodes report (see above)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.learn_bundle is None) != (args.learn_schedule is None):
        parser.error("--learn-bundle and --learn-schedule go together")
    if args.nodes > MAX_NODES_PER_PROCESS:
        parser.error(
            f"--nodes {args.nodes}: at most {MAX_NODES_PER_PROCESS} per process. paho's network "
            "loop uses select(), which cannot watch a file descriptor above 1023, and every "
            "simulated node holds about 9 (its socket, paho's wake-up pair, its SQLite files): "
            "run several processes with --first"
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    learning = None
    if args.learn_bundle is not None:
        try:
            learning = DeltaMaker(
                args.learn_bundle, group=GROUP, table=args.learn_table, world=args.learn_world,
                agents=args.learn_agents, ticks=args.learn_ticks,
            )  # fmt: skip
        except (EdgeAgentError, OSError, KeyError) as err:
            parser.error(f"--learn-bundle {args.learn_bundle}: {err}")
    schedule = None if args.learn_schedule is None else Schedule(args.learn_schedule)
    hub_keys = TrustedKeys.from_dir(args.hub_keys) if args.hub_keys else None
    bundle_keys = TrustedKeys.from_dir(args.bundle_keys) if args.bundle_keys else None
    nodes = []
    for i in range(args.first, args.first + args.nodes):
        name = f"{args.prefix}{i:04d}"
        nodes.append(
            SimNode(
                name,
                args.state_dir / name,
                fleet=args.fleet,
                host=args.host,
                port=args.port,
                hub_keys=hub_keys,
                bundle_keys=bundle_keys,
                fails=fails(name, args.fail_fraction, args.seed),
                fail_version=args.fail_version,
                telemetry_s=args.telemetry,
                seed=i,
                health=not args.no_health,
                worse_version=args.worse_version,
                worse_shift=args.worse_shift,
                learning=learning,
            )
        )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Start connecting gradually, as a fleet powering up does, not as one burst of handshakes.
    pending = list(nodes)
    started_at = time.monotonic()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    reported = 0.0
    last_send = time.time()
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            start = time.monotonic()
            due = len(nodes) - len(pending)
            while pending and due < (start - started_at) * args.connect_rate + 1:
                pending.pop(0).start()
                due += 1
            for node in nodes[: len(nodes) - len(pending)]:
                node.step(start)
            if schedule is not None:
                now = time.time()
                due = schedule.due(last_send, now) - args.first
                last_send = now
                for node in nodes[: max(0, due)]:
                    node.report()
                    node.link.pump()
            if start - reported >= 2.0:
                reported = start
                online = sum(n.link.online for n in nodes)
                reports = sum(n.reports for n in nodes)
                print(json.dumps({"nodes": len(nodes), "online": online, "reports": reports}),
                      flush=True)  # fmt: skip
            stop.wait(max(0.0, args.tick - (time.monotonic() - start)))
    finally:
        for node in nodes:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
