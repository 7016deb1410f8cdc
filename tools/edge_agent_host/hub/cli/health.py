"""``edge-agent-hub health`` and ``edge-agent-hub alert-rules``: the groups' health the hub stored,
and the Prometheus alert rules shipped with it (docs/hub.md "Health on the hub").

::

    edge-agent-hub health [NODE] [--group G] [--since S] [--limit N] [--force] [--json]
    edge-agent-hub alert-rules

Without a node: the newest window of every node's groups, one line each. With a node: its
history (every window of every group, or of ``--group``), oldest first. A node the hub never saw,
or a ``--group`` the node (without one: any node) does not have, is one line and exit status 1
(``--force``: read it all the same).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Final

from edge_agent.fleet.health_measures import MEASURES
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.known_nodes import require_seen
from edge_agent_host.hub.cli.access import open_database
from edge_agent_host.hub.config.hub_toml import load_hub_config
from edge_agent_host.hub.storage.database import HubDatabase

__all__ = [
    "ALERT_RULES_FILE",
    "add_parsers",
    "alert_rules_text",
    "health_line",
    "require_group",
    "run",
]

ALERT_RULES_FILE: Final = "alerts.yml"
GROUPS_NAMED: Final = 20
"""How many of a node's groups an unknown ``--group`` names (by name)."""


def add_parsers(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    health = sub.add_parser(
        "health", help="the groups' health measures: the newest of every node, or one's history"
    )
    with_config(health)
    health.add_argument("node", nargs="?", help="this node's history (default: every node, now)")
    health.add_argument("--group", help="only this group")
    health.add_argument(
        "--since", type=float, default=3600.0, help="a node's history: seconds back (3600)"
    )
    health.add_argument("--limit", type=int, default=1000, help="rows at most (default 1000)")
    health.add_argument("--json", action="store_true", help="one JSON object per line")
    health.add_argument(
        "--force",
        action="store_true",
        help="read the health of a node never seen, or of a group it does not have (without "
        "it: an error naming the known nodes closest to it, or the node's groups)",
    )
    sub.add_parser("alert-rules", help="print the Prometheus alert rules for the hub's /metrics")


def run(args: argparse.Namespace) -> int:
    if args.command == "alert-rules":
        print(alert_rules_text(), end="")
        return 0
    db = open_database(load_hub_config(args.config))
    try:
        if not args.force and args.node is not None:
            require_seen([args.node], db.node_names(), where="by the hub")
        if not args.force and args.group is not None:
            require_group(db, args.node, args.group)
        if args.node is None:
            rows = [r for r in db.latest_health() if args.group in (None, r["group"])]
        else:
            rows = [
                {"node": args.node, **r}
                for r in db.health(
                    args.node, group=args.group, since=time.time() - args.since, limit=args.limit
                )
            ]
    finally:
        db.close()
    for row in rows:
        print(json.dumps(row, sort_keys=True) if args.json else health_line(row))
    if not rows and not args.json:
        print("no health reported" + (f" for group {args.group}" if args.group else ""))
    return 0


def require_group(db: HubDatabase, node: str | None, group: str) -> None:
    """:class:`FleetError` when ``node`` (None: every node) has no group ``group``: neither its
    newest birth declares it nor its newest health window is of it. One line naming the groups it
    has (the first :data:`GROUPS_NAMED` of them), e.g. ``node 'pi-a' has no group 'mazee' (its
    groups: maze, tmaze); --force to read it all the same``."""
    mine = {r["group"] for r in (*db.groups(), *db.latest_health()) if node in (None, r["node"])}
    if group in mine:
        return
    names = sorted(mine)
    listed = ", ".join(names[:GROUPS_NAMED]) or "none"
    if len(names) > GROUPS_NAMED:
        listed += f", ... ({len(names)} in all)"
    whose = "no node has a" if node is None else f"node {node!r} has no"
    theirs = "the fleet's groups" if node is None else "its groups"
    raise FleetError(
        f"{whose} group {group!r} ({theirs}: {listed}); --force to read it all the same"
    )


def health_line(row: Mapping[str, Any]) -> str:
    """One window of one group: when, node, group, model, agent-steps, the drift detector and
    each measure's ``mean/p95`` (in the vocabulary's order)::

        2026-11-27 01:20:05 pi-a  doors  doors@2  1000 steps  drift ok 3.1/50  excess_surprise
        0.021/1.104  surprise 1.213/2.497
    """
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
    drift = row.get("drift")
    if drift is None:
        drift_text = "drift -"
    else:
        state = "ALARM" if drift["alarm"] else "ok"
        drift_text = f"drift {state} {drift['statistic']:.3g}/{drift['threshold']:.3g}"
    measures: Mapping[str, Mapping[str, float]] = row.get("measures") or {}
    parts = [
        f"{name} {measures[name]['mean']:.4g}/{measures[name]['p95']:.4g}"
        for name in MEASURES
        if name in measures
    ]
    coarse = f" x{row['samples']}" if row.get("coarse") else ""
    return (
        f"{stamp}{coarse} {row['node']:<14} {row['group']:<12} {row['model']}  "
        f"{row['agent_steps']} steps  {drift_text}  " + "  ".join(parts)
    )


def alert_rules_text() -> str:
    """The shipped Prometheus rule file (``alerts.yml`` beside this module)."""
    return resources.files("edge_agent_host.hub").joinpath(ALERT_RULES_FILE).read_text("utf-8")
