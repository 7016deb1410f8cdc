"""``edge-agent-hub rollout``: start, watch and steer staged rollouts (docs/hub.md).

::

    edge-agent-hub rollout start BUNDLE --group G [--all | --node PATTERN ... | --label K=V ...]
        [--waves 1,10%,50%,100% | --exponential F] [--soak S] [--max-failed-pct P]
        [--max-error-events-pct P] [--max-tick-p99-ratio R] [--rollback-bundle FILE]
        [--include-offline] [--dry-run] [--follow] [--json]
    edge-agent-hub rollout status [ID] [--follow] [--json]   # the newest rollout without ID
    edge-agent-hub rollout list [--json]
    edge-agent-hub rollout pause|resume|abort ID

The commands write the rollout into the hub's database; the service replica with
``[rollouts] key_file`` carries it out (``rollouts.runner.RolloutRunner``). ``start`` prints the
command that follows the rollout it stored; ``--follow`` (``start`` and ``status``) prints a line
each time the rollout moves (its wave, the wave's nodes by state, a pause, a halt) until it ends,
and exits with its outcome (:data:`FOLLOW_EXIT`): 0 done, 4 halted, 5 rolled back.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.cli.access import open_database
from edge_agent_host.hub.config.hub_toml import load_hub_config
from edge_agent_host.hub.config.rollout_options import add_start_options
from edge_agent_host.hub.gates.criterion_text import CriterionError
from edge_agent_host.hub.gates.health import HealthCriterion
from edge_agent_host.hub.gates.shadow import (
    ShadowCriterion,
)
from edge_agent_host.hub.rollouts.plan import (
    RolloutState,
)
from edge_agent_host.hub.rollouts.start import store_rollout
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase

__all__ = [
    "FOLLOW_EVERY_S",
    "FOLLOW_EXIT",
    "add_output_options",
    "add_parser",
    "follow_line",
    "rollback_plan",
    "run",
    "start_plan",
    "verdict_line",
]

FOLLOW_EXIT: Final[Mapping[str, int]] = MappingProxyType(
    {RolloutState.DONE.value: 0, RolloutState.HALTED.value: 4, RolloutState.ROLLED_BACK.value: 5}
)
"""``--follow``'s exit status by how the rollout ended (1 and 2 keep edge-agent-hub's meaning: the
database cannot be read, a bad config)."""
FOLLOW_EVERY_S: Final = 1.0
"""How often ``--follow`` reads the rollout (the runner applies a request within a second)."""
_FOLLOW_HELP: Final = (
    "then print a line each time the rollout moves until it ends; exit 0 when it is done, 4 "
    "when it halted, 5 when it was rolled back"
)


def add_parser(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    rollout: argparse.ArgumentParser = sub.add_parser(
        "rollout", help="staged rollouts of a signed bundle (start, status, ...)"
    )
    steps = rollout.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")

    start = steps.add_parser("start", help="plan a rollout; the service carries it out")
    with_config(start)
    start.add_argument("bundle", type=Path, help="signed bundle directory or .tar")
    add_start_options(start)
    add_output_options(start)

    status = steps.add_parser("status", help="a rollout's waves and nodes")
    with_config(status)
    status.add_argument("id", nargs="?", help="default: the newest rollout")
    status.add_argument("--follow", action="store_true", help=_FOLLOW_HELP)
    status.add_argument(
        "--json", action="store_true", help="print it as JSON (with --follow: JSON lines)"
    )

    listing = steps.add_parser("list", help="rollouts, newest first")
    with_config(listing)
    listing.add_argument("--json", action="store_true", help="print them as JSON")

    for action in ("pause", "resume", "abort"):
        p = steps.add_parser(action, help=f"{action} a rollout")
        with_config(p)
        p.add_argument("id", help="the rollout's id (rollout list)")
    return rollout


def add_output_options(start: argparse.ArgumentParser) -> None:
    """What ``rollout start`` (and ``learn publish``) print: the plan only, following, JSON."""
    start.add_argument("--dry-run", action="store_true", help="print the plan, store nothing")
    start.add_argument("--follow", action="store_true", help=_FOLLOW_HELP)
    start.add_argument(
        "--json", action="store_true", help="print the plan as JSON (with --follow: JSON lines)"
    )


def _open(args: argparse.Namespace) -> HubDatabase:
    return open_database(load_hub_config(args.config), write=True)


def _start(args: argparse.Namespace) -> int:
    plan = DeployPlan.from_bundle(args.bundle, args.chunk_size)
    return start_plan(args, plan, rollback=rollback_plan(args))


def rollback_plan(args: argparse.Namespace) -> DeployPlan | None:
    """The plan of ``--rollback-bundle`` (None without one): read before the config, as every
    file named on the command line."""
    if args.rollback_bundle is None:
        return None
    return DeployPlan.from_bundle(args.rollback_bundle, args.chunk_size)


def start_plan(
    args: argparse.Namespace,
    plan: DeployPlan,
    command: str = "rollout start",
    *,
    rollback: DeployPlan | None = None,
    on_stored: Callable[[HubDatabase, str], None] | None = None,
) -> int:
    """Store a rollout of ``plan`` as the options of :func:`add_start_options` in ``args`` say,
    print it (and follow it with ``--follow``); ``on_stored(db, id)`` runs once it is stored. A bad
    criterion is one line naming ``command``, exit 2."""
    config = load_hub_config(args.config)
    db = open_database(config, write=True)
    try:
        try:
            summary = store_rollout(
                db, args, plan, rollback=rollback, silent_after_s=config.config.hub.silent_after_s,
                on_stored=on_stored,
            )  # fmt: skip
        except CriterionError as err:  # bad input: one line, exit 2, nothing stored or sent
            print(f"edge-agent-hub {command}: {err}", file=sys.stderr)
            return 2
        if args.dry_run:
            print(json.dumps(summary) if args.json else _plan_text(summary))
            return 0
        rollout_id = summary["id"]
        summary["follow"] = shlex.join(
            ["edge-agent-hub", "rollout", "status", "--config", str(args.config), rollout_id,
             "--follow"]
        )  # fmt: skip
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            print(f"rollout {rollout_id}\n{_plan_text(summary)}", flush=True)
            if not args.follow:
                print(f"follow it: {summary['follow']}")
        if args.follow:
            return _follow(RolloutStore(db), rollout_id, as_json=args.json)
    finally:
        db.close()
    return 0


def _plan_text(summary: dict[str, Any]) -> str:
    waves = summary["waves"]
    sizes = [b - a for a, b in zip([0, *waves], waves, strict=False)]
    text = (
        f"{len(summary['nodes'])} node(s) of group {summary['group']} in {len(waves)} wave(s) "
        f"of {', '.join(map(str, sizes))}"
    )
    if summary["skipped_offline"]:
        text += f"; {len(summary['skipped_offline'])} offline or silent node(s) left out"
    if summary.get("shadow_s"):
        text += f"\n  the first wave runs it as a shadow for {summary['shadow_s']:g} s"
    for criterion in summary.get("criteria") or ():
        text += f"\n  criterion {criterion}"
    return text


def _status(args: argparse.Namespace) -> int:
    db = _open(args)
    try:
        store = RolloutStore(db)
        rollout_id = args.id
        if rollout_id is None:
            ids = store.ids(limit=1)
            if not ids:
                raise FleetError("no rollout yet")
            rollout_id = ids[0]
        if args.follow:
            return _follow(store, rollout_id, as_json=args.json)
        summary = store.get(rollout_id).summary()
    finally:
        db.close()
    print(to_json(summary) if args.json else describe(summary))
    return 0


def _follow(store: RolloutStore, rollout_id: str, *, as_json: bool) -> int:
    """Print a line each time the rollout moves (:func:`follow_line`), until it ends; its
    outcome's exit status (:data:`FOLLOW_EXIT`)."""
    shown: tuple[Any, ...] = ()
    verdicts_shown = len(store.get(rollout_id).verdicts)
    while True:
        summary = store.get(rollout_id).summary()
        if not as_json:
            for verdict in summary["verdicts"][verdicts_shown:]:
                print(f"{summary['id']} {verdict_line(verdict)}", flush=True)
        verdicts_shown = len(summary["verdicts"])
        moved = _position(summary)
        if moved != shown:
            shown = moved
            print(to_json(summary) if as_json else follow_line(summary), flush=True)
        exit_status = FOLLOW_EXIT.get(summary["state"])
        if exit_status is not None:
            return exit_status
        time.sleep(FOLLOW_EVERY_S)


def _position(summary: Mapping[str, Any]) -> tuple[Any, ...]:
    """Where a rollout is: what a new ``--follow`` line is printed for."""
    wave = _current_wave(summary)
    states = tuple(sorted(wave["states"].items())) if wave is not None else ()
    return (summary["state"], summary["wave"], summary["phase"], summary["request"], states,
            summary["detail"], len(summary["verdicts"]))  # fmt: skip


def _current_wave(summary: Mapping[str, Any]) -> Mapping[str, Any] | None:
    table = summary["wave_table"]
    index = summary["wave"] - 1
    return table[index] if 0 <= index < len(table) else None


def follow_line(summary: Mapping[str, Any]) -> str:
    """One ``--follow`` line: the wave and its nodes by state while running, the state and why
    otherwise, and at the end the outcome over every node.

    ``r-20261123-6b46e2 wave 1/2 soaking: 1 node(s): ok 1``;
    ``r-20261123-6b46e2 halted: 0 of 2 node(s) ok, 1 failed; wave 1: 1 failed (100.0 % > 0 %)``
    """
    s = summary
    state = s["state"]
    why = f"; {s['detail']}" if s["detail"] else ""
    if state in FOLLOW_EXIT:
        return (
            f"{s['id']} {state}: {s['nodes_done']} of {s['nodes_total']} node(s) ok, "
            f"{s['nodes_failed']} failed{why}"
        )
    at = f"wave {s['wave']}/{s['waves']}" + (f" {s['phase']}" if s["phase"] else "")
    if state == RolloutState.RUNNING.value:
        wave = _current_wave(s)
        nodes = ""
        if wave is not None:
            states = ", ".join(f"{k} {v}" for k, v in sorted(wave["states"].items()))
            nodes = f": {wave['nodes']} node(s): {states}"
        request = f" ({s['request']} requested)" if s["request"] else ""
        return f"{s['id']} {at}{nodes}{request}"
    if state == RolloutState.PENDING.value:
        return f"{s['id']} pending: the replica with [rollouts] key_file has not taken it yet"
    return f"{s['id']} {state} at {at}{why}"


def _list(args: argparse.Namespace) -> int:
    db = _open(args)
    try:
        store = RolloutStore(db)
        rows = [store.get(i).summary() for i in store.ids()]
    finally:
        db.close()
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "nodes"} for r in rows]))
        return 0
    for r in rows:
        print(
            f"{r['id']}  {r['state']:<11} group {r['group']} <- {r['bundle_sha256'][:12]}  "
            f"wave {r['wave']}/{r['waves']}  {r['nodes_done']}/{r['nodes_total']} ok, "
            f"{r['nodes_failed']} failed"
        )
    return 0


def _request(args: argparse.Namespace) -> int:
    db = _open(args)
    try:
        r = RolloutStore(db).request(args.id, args.rollout_command)
    finally:
        db.close()
    print(f"rollout {r.id}: {args.rollout_command} requested (state {r.state.value})")
    return 0


def run(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "start": _start,
        "status": _status,
        "list": _list,
        "pause": _request,
        "resume": _request,
        "abort": _request,
    }
    return handlers[args.rollout_command](args)


def describe(summary: Mapping[str, Any]) -> str:
    """``rollout status``: the rollout, each wave, each node."""
    s = summary
    lines = [
        f"rollout {s['id']}: {s['state']}"
        + (f" (wave {s['wave']}/{s['waves']} {s['phase']})" if s["phase"] else "")
        + (f", request {s['request']}" if s["request"] else ""),
        f"  group {s['group']} <- {s['bundle']} {s['bundle_sha256'][:12]}",
        f"  nodes {s['nodes_total']}: {s['nodes_done']} ok, {s['nodes_failed']} failed; "
        f"soak {s['soak_s']:g} s; rollback "
        + (s["rollback_sha256"][:12] if s["rollback_sha256"] else "none"),
    ]
    if s["detail"]:
        lines.append(f"  {s['detail']}")
    for w in s["wave_table"]:
        states = ", ".join(f"{k} {v}" for k, v in sorted(w["states"].items()))
        lines.append(
            f"  wave {w['wave']}: {w['nodes']} node(s) (up to {w['cumulative']}): {states}"
        )
    for node, row in s["nodes"].items():
        detail = f"  {row['detail']}" if row["detail"] else ""
        lines.append(f"    {node:<24} wave {row['wave']}  {row['state']}{detail}")
    shadow = s["criteria"].get("shadow") or []
    if shadow:
        lines.append(f"  shadow criteria (the first wave's shadow of {s.get('shadow_s', 0):g} s):")
        lines += [f"    {ShadowCriterion.model_validate(c).text()}" for c in shadow]
    criteria = s["criteria"].get("health") or []
    if criteria:
        lines.append("  health criteria (each wave against the untouched nodes):")
        lines += [f"    {_criterion_text(c)}" for c in criteria]
    if s["verdicts"]:
        lines.append("  verdicts:")
        lines += [f"    {verdict_line(v)}" for v in s["verdicts"]]
    return "\n".join(lines)


def verdict_line(verdict: Mapping[str, Any]) -> str:
    """One verdict: its wave, its criterion, and its detail (outcome, value, threshold,
    samples and test): ``wave 1 excess_surprise:max_increase=0.1:min_samples=50:alpha=0.05
    fail: excess_surprise median shift +0.52 (max increase 0.1): 60 vs 240 samples, ...``."""
    return f"wave {verdict['wave']} {verdict['criterion']} {verdict['detail']}"


def _criterion_text(stored: Mapping[str, Any]) -> str:
    return HealthCriterion.model_validate(stored).text()


def to_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, sort_keys=True, default=str)
