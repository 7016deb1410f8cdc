"""``edge-agent-hub``: run the hub service, check its config, and read what it recorded.

::

    edge-agent-hub run [--config FILE] [--duration S] [--log-level LEVEL]
    edge-agent-hub check-config [FILE]
    edge-agent-hub status [--config FILE] [--json] [--wait S]
    edge-agent-hub fleet [--config FILE] [--json]      # 'edge-agent-host hub fleet's table
    edge-agent-hub events [--config FILE] [--node N [--force]] [--limit N] [--follow [--duration S]]
        [--json]
    edge-agent-hub telemetry NODE [--config FILE] [--since S] [--limit N] [--force] [--json]
    edge-agent-hub commands [--config FILE] [--limit N] [--json]
    edge-agent-hub health [NODE] [--config FILE] [--group G] [--since S] [--json]  # cli/health.py
    edge-agent-hub alert-rules          # the Prometheus alert rules (cli/health.py)
    edge-agent-hub rollout start|status|list|pause|resume|abort ...   # hub/cli/rollout.py
    edge-agent-hub learn status|build|publish ...   # what the nodes learned (hub/cli/learn.py)
    edge-agent-hub systemd-unit | example-config

Exit status: 0 success; 1 the database cannot be read, a file named on the command line cannot
be read, a node never seen (``--force``: read it all the same) (or, for ``status``, the service
runs with its database or broker down); 2 a bad config (``path:line: field: problem``) or a
database of a newer schema; 3 (``status``) the service is not running; 4 and 5 (``rollout ...
--follow``) the rollout halted, or was rolled back; 141 standard output's reader went away
(``| head``: :mod:`edge_agent.service.closed_stdout`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

from edge_agent import __version__
from edge_agent.distribution import clash_notice
from edge_agent.errors import ConfigError, EdgeAgentError, file_problem
from edge_agent.service.closed_stdout import guard_stdout
from edge_agent.service.logs import configure_logging
from edge_agent.service.pids import pid_alive
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.known_nodes import add_force_argument, require_seen
from edge_agent_host.fleet.presence import presence
from edge_agent_host.fleet.table import add_silent_argument, format_fleet
from edge_agent_host.hub.cli import health, learn, rollout
from edge_agent_host.hub.cli.access import open_database
from edge_agent_host.hub.config.hub_toml import (
    HubConfigFile,
    LearningSection,
    PostgresDatabase,
    check_dependencies,
    example_config_text,
    file_problems,
    key_id_of,
    load_hub_config,
)
from edge_agent_host.hub.storage.database import DatabaseUnavailableError, HubDatabase, SchemaError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONFIG", "build_parser", "main", "open_database"]

DEFAULT_CONFIG: Final = Path("/etc/edge-agent-hub/hub.toml")
UNIT_FILE: Final = "edge-agent-hub.service"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent-hub",
        description="The fleet's hub service: hears every node over MQTT and keeps the fleet "
        "registry, telemetry history, events and the command journal in SQLite or PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent-hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            default=DEFAULT_CONFIG,
            help=f"hub config (default {DEFAULT_CONFIG})",
        )

    run = sub.add_parser("run", help="run the hub service in the foreground")
    with_config(run)
    run.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    run.add_argument("--log-level", default=None, help="override [hub] log_level")

    check = sub.add_parser("check-config", help="validate a config file and summarise it")
    check.add_argument(
        "path", type=Path, nargs="?", default=DEFAULT_CONFIG, help="the config file to check"
    )

    status = sub.add_parser("status", help="this replica's status, every replica, the fleet's size")
    with_config(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="wait up to S s for the service to run"
    )

    fleet = sub.add_parser("fleet", help="the fleet table from the hub's database")
    with_config(fleet)
    fleet.add_argument("--json", action="store_true", help="print JSON")
    add_silent_argument(fleet, from_config=True)

    events = sub.add_parser("events", help="events from the hub's database")
    with_config(events)
    events.add_argument(
        "--node",
        default=None,
        help="only this node's, or a hub replica's own (its id: a rollout's verdicts)",
    )
    events.add_argument("--limit", type=int, default=50, help="the newest N (default 50)")
    events.add_argument("--follow", action="store_true", help="then print new ones as they come")
    events.add_argument("--duration", type=float, default=None, help="stop following after S s")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    add_force_argument(events, "read (and with --follow wait for) the events of")

    telemetry = sub.add_parser("telemetry", help="one node's telemetry history")
    with_config(telemetry)
    telemetry.add_argument("node", help="the node")
    telemetry.add_argument(
        "--since", type=float, default=3600.0, help="seconds back (default 3600)"
    )
    telemetry.add_argument("--limit", type=int, default=1000, help="rows at most (default 1000)")
    telemetry.add_argument("--json", action="store_true", help="one JSON object per line")
    add_force_argument(telemetry, "read the telemetry of")

    commands = sub.add_parser("commands", help="the command journal with each newest result")
    with_config(commands)
    commands.add_argument("--limit", type=int, default=50, help="the newest N (default 50)")
    commands.add_argument("--json", action="store_true", help="print JSON")

    health.add_parsers(sub, with_config)
    rollout.add_parser(sub, with_config)
    learn.add_parser(sub, with_config)

    sub.add_parser("systemd-unit", help="print the systemd unit (edge-agent-hub.service)")
    sub.add_parser("example-config", help="print the commented example config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``edge-agent-hub``; returns the exit status (module docstring)."""
    notice = clash_notice("edge-agent-hub")  # PyPI's edge-agent in this environment
    if notice is not None:
        print(notice, file=sys.stderr)
    return guard_stdout(lambda: _main(argv), "edge-agent-hub")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "run": _run,
        "check-config": _check_config,
        "status": _status,
        "fleet": _fleet,
        "events": _events,
        "telemetry": _telemetry,
        "commands": _commands,
        "health": health.run,
        "alert-rules": health.run,
        "rollout": rollout.run,
        "learn": learn.run,
        "systemd-unit": _systemd_unit,
        "example-config": _example_config,
    }[args.command]
    try:
        return handler(args)
    except (ConfigError, SchemaError) as err:
        print(err, file=sys.stderr)
        return 2
    except DatabaseUnavailableError as err:
        print(f"edge-agent-hub {args.command}: database unreachable: {err}", file=sys.stderr)
        return 1
    except EdgeAgentError as err:
        print(f"edge-agent-hub {args.command}: {err}", file=sys.stderr)
        return 2 if args.command == "run" else 1
    except BrokenPipeError:
        raise  # standard output's reader left, or not: guard_stdout says which
    except OSError as err:  # a file named on the command line (a bundle, ...)
        print(f"edge-agent-hub {args.command}: {file_problem(err)}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------------ run/check
def _run(args: argparse.Namespace) -> int:
    from edge_agent_host.hub.service.loop import HubService  # noqa: PLC0415 - paho, only to run

    source = load_hub_config(args.config)
    check_dependencies(source)  # as check-config does
    configure_logging(args.log_level or source.config.hub.log_level)
    service = HubService.from_config(source)
    service.install_signal_handlers()
    return service.run(duration_s=args.duration)


def _check_config(args: argparse.Namespace) -> int:
    source = load_hub_config(args.path)
    check_dependencies(source)  # what run refuses before it starts
    problems = file_problems(source)
    if problems:
        raise source.error(problems)
    print(describe_config(source))
    return 0


def describe_config(source: HubConfigFile) -> str:
    """What ``check-config`` prints for a config that passed."""
    c = source.config
    mqtt = c.mqtt
    db = c.database
    where = (
        f"postgresql {db.user}@{db.host}:{db.port}/{db.dbname}"
        if isinstance(db, PostgresDatabase)
        else f"sqlite {c.sqlite_path}"
    )
    share = f", shared group {mqtt.share_group!r}" if mqtt.share_group else ", not shared"
    r = c.retention
    return "\n".join(
        [
            f"{source.path}: OK",
            f"  hub: {c.hub.effective_id()}, state_dir {c.hub.state_dir}, status "
            f"{c.hub.status_path}",
            f"  mqtt: {mqtt.host}:{mqtt.port}{' (TLS)' if mqtt.tls.enabled else ''}, fleet "
            f"{mqtt.fleet!r}{share}",
            f"  database: {where}, deadline {db.operation_deadline_s:g} s a call",
            f"  queue: {c.queue.max_messages} messages / {c.queue.max_bytes // 2**20} MiB, "
            f"batches of {c.queue.batch_max}, "
            + (
                f"spooled to {c.hub.state_dir / 'spool'} (fsync every "
                f"{c.queue.spool_sync_interval_s:g} s)"
                if c.queue.spool
                else "in memory only (no spool: a killed hub loses what it holds)"
            ),
            f"  telemetry: raw {r.telemetry_raw_s:g} s, then one point per "
            f"{r.telemetry_step_s:g} s, kept {r.telemetry_keep_s / 86400:g} d, at most "
            f"{r.telemetry_max_rows_per_node} rows per node",
            _learning_line(c.learning),
        ]
    )


def _learning_line(s: LearningSection) -> str:
    signed = (
        f"; rounds signed by bundle key {key_id_of(s.key_file)} ([learning] key_file: its .pub "
        "goes in the nodes' [daemon] trusted_keys_dir)"
        if s.key_file is not None
        else ""
    )
    if not s.enabled:
        return f"  learning: rounds by hand (edge-agent-hub learn build){signed}"
    when = [f"every {s.every_s:g} s"] if s.every_s > 0 else []
    when += [f"at {s.min_experience} agent-ticks"] if s.min_experience > 0 else []
    lines = ", ".join(s.lines) if s.lines else "every line"
    publish = f", published: rollout start {' '.join(s.rollout)}" if s.publish else ""
    return f"  learning: rounds of {lines} {' or '.join(when)}{publish}{signed}"


# ------------------------------------------------------------------------------ the database
def _fleet(args: argparse.Namespace) -> int:
    source = load_hub_config(args.config)
    silent_after = args.silent_after
    if silent_after is None:
        silent_after = source.config.hub.silent_after_s
    db = open_database(source)
    try:
        rows = db.fleet()
    finally:
        db.close()
    if args.json:
        now = time.time()
        print(_dumps([{**row, "presence": presence(row, silent_after, now)} for row in rows]))
    else:
        print(format_fleet(rows, silent_after))
    return 0


def _event_line(row: dict[str, Any]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
    group = f" [{row['group']}]" if row.get("group") else ""
    return f"{stamp} {row['node']:<14} {row['severity']:<8} {row['kind']}{group}: {row['detail']}"


def _require_seen(
    db: HubDatabase, args: argparse.Namespace, node: str | None, *, replicas: bool = False
) -> None:
    """A node the hub never registered is an error unless ``--force`` (known_nodes.py); with
    ``replicas``, the hub's replicas are known too (the events the hub stores under its own
    name: a rollout's verdicts)."""
    if node is not None and not args.force:
        known = db.node_names()
        if replicas:
            known += [hub["hub_id"] for hub in db.hubs()]
        require_seen([node], known, where="by the hub")


def _events(args: argparse.Namespace) -> int:
    db = open_database(load_hub_config(args.config))
    try:
        _require_seen(db, args, args.node, replicas=True)
        newest = db.events(node=args.node, limit=args.limit, newest=True)
        for row in newest:
            print(_dumps(row) if args.json else _event_line(row), flush=True)
        if not args.follow:
            return 0
        last = newest[-1]["id"] if newest else 0
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while deadline is None or time.monotonic() < deadline:
                for row in db.events(node=args.node, after_id=last, limit=1000):
                    last = row["id"]
                    print(_dumps(row) if args.json else _event_line(row), flush=True)
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    finally:
        db.close()
    return 0


def _telemetry(args: argparse.Namespace) -> int:
    db = open_database(load_hub_config(args.config))
    try:
        _require_seen(db, args, args.node)
        rows = db.telemetry(args.node, since=time.time() - args.since, limit=args.limit)
    finally:
        db.close()
    for row in rows:
        if args.json:
            print(_dumps(row))
            continue
        body = row["body"]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
        kind = f"x{row['samples']}" if row["coarse"] else "raw"
        print(
            f"{stamp} {kind:<5} ticks {body['ticks']} p50 {body['tick_p50_ms']:.2f} ms "
            f"p99 {body['tick_p99_ms']:.2f} ms rss {body['rss_bytes'] / 2**20:.0f} MiB "
            f"overruns {body['overruns']}"
        )
    return 0


def _commands(args: argparse.Namespace) -> int:
    db = open_database(load_hub_config(args.config))
    try:
        rows = db.commands(limit=args.limit)
    finally:
        db.close()
    if args.json:
        print(_dumps(rows))
        return 0
    for row in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
        answer = f"{row['code']}: {row['detail']}" if row["code"] else "no result yet"
        check = "" if row["verified"] else " (unverified)"
        what = f"{row['target']:<14} {row['name']:<14} {row['nonce'][:8]}"
        print(f"{stamp} {what} -> {answer}{check}")
    return 0


# ------------------------------------------------------------------------------------- status
def _status(args: argparse.Namespace) -> int:
    source = load_hub_config(args.config)
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        status = read_status(source)
        if status.get("running") or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    fleet: dict[str, Any] = {}
    try:
        db = open_database(source)
    except (FleetError, SchemaError) as err:
        fleet["error"] = str(err)
    else:
        try:
            fleet["summary"] = db.summary()
            fleet["replicas"] = db.hubs()
        except DatabaseUnavailableError as err:
            fleet["error"] = str(err)
        finally:
            db.close()
    status["database_view"] = fleet
    if args.json:
        print(_dumps(status))
    else:
        print(format_status(status))
    if not status.get("running"):
        return 3
    degraded = status.get("state") != "running" or not status["mqtt"]["connected"]
    return 1 if degraded else 0


def read_status(source: HubConfigFile) -> dict[str, Any]:
    """The replica's status file, with ``running`` (fresh and its pid alive) and ``age_s``."""
    config = source.config
    path = config.hub.status_path
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {"running": False, "problem": f"no status at {path}: is edge-agent-hub running?"}
    except (OSError, ValueError) as err:
        return {"running": False, "problem": f"cannot read {path}: {err}"}
    age = time.time() - float(status.get("updated_at", 0.0))
    alive = pid_alive(int(status.get("pid", -1)))
    fresh = age <= max(10.0, 3 * config.hub.status_interval_s)
    status["age_s"] = round(age, 1)
    status["status_file"] = str(path)
    status["running"] = bool(fresh and alive and status.get("state") not in ("stopped",))
    return status


def format_status(s: dict[str, Any]) -> str:
    """The human view of :func:`read_status` plus the database's view."""
    lines: list[str] = []
    if "problem" in s:
        lines.append(s["problem"])
    else:
        running = "" if s["running"] else f"  (NOT RUNNING: last update {s['age_s']} s ago)"
        db, q, mqtt = s["database"], s["queue"], s["mqtt"]
        db_state = "up" if db["up"] else f"DOWN for {db['down_s']:.0f} s ({db['last_error']})"
        lines += [
            f"edge-agent-hub {s['version']}  {s['hub_id']}  pid {s['pid']}  {s['state']}{running}",
            f"  broker     {mqtt['broker']} {'connected' if mqtt['connected'] else 'NOT CONNECTED'}"
            + (f" (refused: {mqtt['refused']})" if mqtt.get("refused") else "")
            + (f", shared group {mqtt['share_group']!r}" if mqtt["share_group"] else ""),
            f"  database   {db['where']} {db_state}, schema {db['schema_version']}, "
            f"written {db['written']}, rejected {db['rejected']}, outages {db['outages']}",
            f"  queue      {q['depth']} held ({q['bytes']} bytes) of {q['max_messages']}; "
            f"dropped {q['dropped']}, telemetry evicted {q['evicted_telemetry']}",
            f"  dropped    {s['dropped_malformed']} malformed, {s['dropped_forged']} forged",
        ]
        x = s.get("exposure")
        if x is not None:  # what a crash would cost now (docs/hub.md)
            lines.append(
                f"  exposure   {x['held']} acknowledged, not stored: a kill would lose "
                f"{x['lost_if_killed']}, a power cut {x['lost_if_power_cut']} "
                f"(unsynced for {x['unsynced_s']:.1f} s)"
            )
        heard = {k.split(".", 1)[1]: n for k, n in s["heard"].items() if k.startswith("received.")}
        lines.append(
            "  heard      " + (", ".join(f"{k} {n}" for k, n in sorted(heard.items())) or "nothing")
        )
    view = s.get("database_view", {})
    if "error" in view:
        lines.append(f"  (the database cannot be read: {view['error']})")
    if "summary" in view:
        c = view["summary"]
        lines.append(
            f"  fleet      {c['nodes']} nodes ({c['online']} online), {c['telemetry_rows']} "
            f"telemetry rows, {c['events']} events, {c['commands']} commands, "
            f"{c['results']} results"
        )
    for hub in view.get("replicas", []):
        age = time.time() - float(hub["heartbeat"])
        state = (hub.get("status") or {}).get("state", "?")
        lines.append(
            f"  replica    {hub['hub_id']:<12} {hub['host']} pid {hub['pid']}, {state}, "
            f"heartbeat {age:.0f} s ago"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- files
def _systemd_unit(args: argparse.Namespace) -> int:
    del args
    print(unit_text(), end="")
    return 0


def _example_config(args: argparse.Namespace) -> int:
    del args
    print(example_config_text(), end="")
    return 0


def unit_text() -> str:
    """The shipped systemd unit (``edge-agent-hub.service`` beside this module)."""
    return resources.files("edge_agent_host.hub").joinpath(UNIT_FILE).read_text("utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


if __name__ == "__main__":
    raise SystemExit(main())
