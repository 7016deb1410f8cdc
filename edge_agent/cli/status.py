"""``edge-agent status``: find the running daemon's status file and show it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["SYSTEMD_STATUS_FILE", "add", "cmd_status", "format_status"]


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show the running daemon's status")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the daemon to report that it runs",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--status-file", type=Path, help="status file to read")
    where.add_argument("--config", type=Path, help="find the status file from this config")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="the state directory the daemon was started with ('run --state-dir'): with "
        "--config, instead of its [daemon] state_dir; alone, the demo config's",
    )


#: Where a daemon under systemd keeps its status (RuntimeDirectory=edge-agent).
SYSTEMD_STATUS_FILE = Path("/run/edge-agent/status.json")


def _find_status_file(
    config_path: Path | None, state_dir: Path | None
) -> tuple[Path | None, str]:
    """The status file to show and, when it is a guess, a note saying which file was read and
    how to point elsewhere. ``(None, message)`` when several daemons run (choose one) or the
    one running cannot be read. ``state_dir``: the one the daemon was started with, as ``run
    --state-dir`` overrides the config's (the demo config's without ``config_path``)."""
    import dataclasses

    from edge_agent.config.daemon import default_config, load_config
    from edge_agent.daemon import discovery
    from edge_agent.daemon.status import status_path

    if config_path is not None or state_dir is not None:
        config = load_config(config_path) if config_path is not None else default_config()
        if state_dir is not None:
            daemon = dataclasses.replace(config.daemon, state_dir=state_dir)
            config = dataclasses.replace(config, daemon=daemon)
        return status_path(config), ""
    elsewhere = "edge-agent status --config FILE (or --status-file PATH)"
    running = discovery.running_daemons()
    if len(running) == 1 and running[0].status_file is not None:
        return running[0].status_file, ""
    if running:
        listing = "\n".join(
            f"  pid {d.pid}: --config {d.config}  (--status-file {d.status_file})"
            if d.status_file is not None
            else f"  pid {d.pid}: {d.problem} (another user's daemon? try sudo)"
            for d in running
        )
        if len(running) == 1:
            return None, (
                f"a daemon is running, but its entry cannot be read:\n{listing}\n"
                f"or choose its file: {elsewhere}"
            )
        return None, (
            f"{len(running)} daemons are running; choose one:\n{listing}\nwith {elsewhere}"
        )
    searched = ", ".join(str(d) for d in discovery.search_dirs())
    if SYSTEMD_STATUS_FILE.exists():
        return SYSTEMD_STATUS_FILE, (
            f"no running daemon announced in {searched}; read the systemd unit's status file "
            f"{SYSTEMD_STATUS_FILE}. For another daemon: {elsewhere}"
        )
    demo = status_path(default_config())
    return demo, (
        f"no running daemon announced in {searched}; read the demo config's status file "
        f"{demo}. For another daemon: {elsewhere}"
    )


def cmd_status(args: argparse.Namespace) -> int:
    if args.status_file and args.state_dir:
        print(
            "--state-dir finds the status file: give it or --status-file, not both",
            file=sys.stderr,
        )
        return 2
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        final = time.monotonic() >= deadline
        code = _show_status(args, final=final)
        if code != 3 or final:
            return code
        time.sleep(0.2)


def _show_status(args: argparse.Namespace, *, final: bool) -> int:
    """Print the status; 0 while the daemon runs, 3 when it does not (stale, stopped, not
    found), 1 when the file cannot be read. With ``final`` false (``--wait`` will look again),
    nothing is printed unless the daemon runs."""
    from edge_agent.service.pids import pid_alive

    path, note = (
        (args.status_file, "")
        if args.status_file
        else _find_status_file(args.config, args.state_dir)
    )
    status: dict[str, Any] | None = None
    problem, code = note, 3
    if path is not None:
        try:
            status = json.loads(path.read_text())
        except FileNotFoundError:
            problem = note or f"no status at {path}: is edge-agentd running? (see --status-file)"
        except PermissionError as err:
            problem = (
                f"cannot read status {path}: {err.strerror} (the service's files are private "
                "to its user: sudo edge-agent status)"
            )
            code = 1
        except (OSError, ValueError) as err:
            problem, code = f"cannot read status {path}: {err}", 1
    if status is None or path is None:
        if final:
            print(problem, file=sys.stderr)
            return code
        return 3
    age = time.time() - float(status.get("updated_at", 0))
    alive = pid_alive(int(status.get("pid", -1)))
    status["stale"] = bool(age > 10 or not alive)
    status["age_s"] = round(age, 1)
    status["status_file"] = str(path)
    running = status["state"] == "running" and not status["stale"]
    if not running and not final:
        return 3
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    if note and status["stale"]:
        print(note, file=sys.stderr)
    return 0 if running else 3


def _mb(n: Any) -> str:
    from edge_agent.core.budget import format_bytes

    return format_bytes(int(n)) if n is not None else "n/a"


def format_status(s: dict[str, Any]) -> str:
    """Human view of a status dict."""
    budget, tick, th, snaps = s["budget"], s["tick"], s["thermal"], s["snapshots"]
    stale = f"  (STALE: last update {s['age_s']} s ago)" if s.get("stale") else ""
    temp = f"{th['temp_c']:.1f} C" if th.get("temp_c") is not None else "no sensor"
    last = snaps.get("last") or {}
    lines = [
        f"edge-agentd {s['version']}  pid {s['pid']}  {s['state']}{stale}",
        f"  config     {s['config']}",
        *([f"  status     {s['status_file']}"] if s.get("status_file") else []),
        f"  profile    {s['profile']}",
        f"  budget     {_mb(budget['used_bytes'])} used of {_mb(budget['total_bytes'])}, "
        f"{_mb(budget['available_bytes'])} left",
        f"  RSS        {_mb(s['rss_bytes'])} (peak {_mb(s['rss_peak_bytes'])}, soft limit "
        f"{_mb(s['soft_limit_bytes'])})",
        f"  ticks      {tick['ticks']} at {tick['hz']} Hz (base {tick['base_hz']}), "
        f"p50 {tick['p50_ms']:.2f} ms, p99 {tick['p99_ms']:.2f} ms, overruns {tick['overruns']}",
        f"  thermal    {temp}{' THROTTLED' if th['throttled'] else ''}",
        *_power_lines(s.get("power")),
        f"  snapshot   {last.get('path', 'none yet')}"
        + (f" ({_mb(last['bytes'])}, {last['seconds']} s)" if last else "")
        + f"; writes in last hour {snaps.get('writes_in_last_hour', 0)}",
        f"  agents     {s['agents']} in {len(s['groups'])} group(s)",
    ]
    for g in s["groups"]:
        flag = f" PAUSED ({g['paused_reason']})" if g["paused"] else ""
        world = ", ".join(f"{k}={v}" for k, v in g.get("world", {}).items())
        lines.append(
            f"    {g['name']:<10} {g['agents']:>6} x {g['model']} [{g['precision']}, prio "
            f"{g['priority']}] {g['bytes_per_agent']} B/agent, {g['steps']} steps{flag}"
        )
        if world:
            lines.append(f"               {world}")
        if g.get("bundle_sha256"):
            lines.append(
                f"               bundle {g.get('bundle') or ''} sha256 {g['bundle_sha256']}"
            )
        io = g.get("io")
        if io:
            waiting = (
                f", WAITING ({io['unobserved']} agents never observed)" if io["waiting"] else ""
            )
            refused = (
                f"; the broker REFUSED the subscription ({io['refusal']})"
                if io.get("refused")
                else ""
            )
            lines.append(
                f"               mqtt in: {io['rows']} rows, {io['rows_rejected']} rejected, "
                f"{io['stale_agent_ticks']} stale agent-ticks, oldest {io['max_age_ticks']} "
                f"ticks{waiting}{refused}"
            )
        actions = g.get("actions")
        if actions:
            refused = (
                f", {actions['refused']} REFUSED by the broker ({actions['refusal']})"
                if actions.get("refused")
                else ""
            )
            lines.append(
                f"               mqtt out: {actions['batches']} batches, "
                f"{actions['dropped']} refused by the outbox{refused}"
            )
        learning = g.get("learning")  # [groups.learning], docs/learning.md
        if learning:
            lines.append(
                f"               learning {', '.join(learning['tables'])} "
                f"({learning['scope']}, counts from {learning['counts_from']}"
                f"{', frozen' if learning.get('frozen') else ''}): "
                f"{learning['updates']} updates, divergence {learning['divergence']:.4g} nats, "
                f"surprise {learning['surprise']:.3f} nats/tick"
            )
        lines.extend(_planning_lines(g.get("planning")))
        lines.extend(_range_lines(g.get("observation_range")))
        lines.extend(_health_lines(g.get("health")))
    lines.extend(_state_lines(s))
    lines.extend(_fleet_lines(s))
    lines.extend(_coordination_lines(s))
    for d in s.get("degradations", [])[-3:]:
        lines.append(f"  degraded   {d}")
    if s["reloads"]["last_error"]:
        lines.append(f"  reload     refused: {s['reloads']['last_error'].splitlines()[0]}")
    return "\n".join(lines)


#: How the status names each health measure, in this order (docs/health.md).
_HEALTH_ORDER = (
    ("surprise", "surprise"),
    ("excess_surprise", "excess"),
    ("free_energy", "free energy"),
    ("policy_entropy", "policy entropy"),
    ("belief_change", "belief change"),
    ("preference", "preference"),
    ("score", "score"),
    ("experience", "experience"),
    ("divergence", "divergence"),
    ("confidence", "confidence"),
    ("low_confidence_share", "low-confidence share"),
    ("output_entropy", "output entropy"),
    ("out_of_range_share", "out of range"),
)


def _health_lines(health: dict[str, Any] | None) -> list[str]:
    """A group's health over its last reporting window (docs/health.md), when it has one."""
    if not health:
        return []
    measures = health["measures"]
    parts = []
    for key, label in _HEALTH_ORDER:
        m = measures.get(key)
        if m is None:
            continue
        part = f"{label} {m['mean']:.3g} (p95 {m['p95']:.3g})"
        if key == "excess_surprise":
            part = f"{label} {m['mean']:+.3g} (z {m['z']:+.1f}, p95 {m['p95']:.3g})"
        parts.append(part)
    lines = [
        f"               health of {health['model']} over the last window "
        f"({health['agent_steps']} agent-steps): " + (", ".join(parts) or "nothing measured")
    ]
    drift = health.get("drift")
    if drift:
        state = "ALARM" if drift["alarm"] else "ok"
        lines.append(
            f"               drift {state}: statistic {drift['statistic']:.2f} of "
            f"{drift['threshold']:g}"
        )
    return lines


def _planning_lines(planning: dict[str, Any] | None) -> list[str]:
    """A group's ``[groups.planning]`` at its last tick (docs/planning.md), when it has one."""
    if not planning:
        return []
    line = (
        f"               planning last tick: {planning['planned']} planned, "
        f"{planning['deferred']} deferred (duty cycle {planning['duty_cycle']:.1%}); plan age "
        f"mean {planning['plan_age_mean']:.1f}, max {planning['plan_age_max']} ticks"
    )
    if "ticks_cut" in planning:
        line += f"; {planning['ticks_cut']} tick(s) cut by the deadline so far"
    return [line]


def _range_lines(watch: dict[str, Any] | None) -> list[str]:
    """A neural group's observations outside its calibrated range (docs/neural-agents.md)."""
    if watch is None:
        return []
    if not watch.get("calibrated"):
        return [
            "               observations not checked: the bundle records no calibrated range "
            "(convert the model again to count them)"
        ]
    alert = (
        f" ALERT (from {100 * watch['alert_share']:g} % until below "
        f"{100 * watch['clear_share']:g} %)"
        if watch["alerting"]
        else ""
    )
    return [
        f"               observations out of calibrated range (+{100 * watch['margin']:g} %): "
        f"{watch['out_of_range']} of {watch['checked']} agent-steps, "
        f"{100 * watch['share']:.2f} % in the last {watch['window_ticks']} ticks{alert}"
    ]


def _power_lines(power: dict[str, int] | None) -> list[str]:
    """The Raspberry Pi firmware's flags (``vcgencmd get_throttled``), where there are any."""
    if power is None:
        return []
    from edge_agent.daemon.thermal import FirmwareFlags

    return [f"  power      {FirmwareFlags(int(power['raw'])).describe()}"]


def _state_lines(s: dict[str, Any]) -> list[str]:
    """Damaged state moved aside and storage errors, when there were any."""
    state = s.get("state_files") or {}
    lines = []
    for r in state.get("recovered", [])[-3:]:
        where = f"moved aside to {r['moved_to']}" if r.get("moved_to") else "NOT moved aside"
        lines.append(f"  recovered  {r['part']}: {r['path']} ({r['reason']}); {where}")
    if state.get("storage_errors_total"):
        last = state.get("last_storage_error") or {}
        failing = ", ".join(state.get("storage_failing") or []) or "none now"
        lines.append(
            f"  storage    {state['storage_errors_total']} error(s) {state['storage_errors']}; "
            f"failing: {failing}; last: {last.get('part')}: cannot {last.get('action')}: "
            f"{last.get('error')}"
        )
    return lines


def _fleet_lines(s: dict[str, Any]) -> list[str]:
    """The fleet link, hub commands and deployment part of the status view."""
    lines = []
    fleet = s.get("fleet")
    if fleet:
        link = fleet.get("link", {})
        depth = _mb(link.get("outbox.depth_bytes", 0))
        lines.append(
            f"  fleet      node {fleet['node_id']} of {fleet['fleet']} at {fleet['broker']}: "
            f"{'online' if fleet['online'] else 'OFFLINE'}, outbox "
            f"{link.get('outbox.depth_rows', 0)} messages ({depth})"
            f"{' FULL' if link.get('outbox.full') else ''}, bdseq {link.get('bdseq')}"
        )
        if not fleet["online"] and fleet.get("broker_problem"):
            lines.append(f"             broker {fleet['broker']}: {fleet['broker_problem']}")
        lines.append(
            f"             published: {fleet['telemetry_published']} telemetry, "
            f"{fleet['events_published']} events, {fleet['results_published']} results; "
            f"refused by the outbox {fleet['publish_refused'] + fleet['actions_refused']}"
        )
        malformed = {
            k.split(".", 1)[1]: v for k, v in link.items() if k.startswith("malformed.") and v
        }
        if malformed:
            lines.append(f"             malformed input: {malformed}")
    cmds = s.get("commands")
    if cmds:
        refused = {k.split(".", 1)[1]: v for k, v in cmds.items() if k.startswith("refused.")}
        lines.append(
            f"  commands   {cmds['received']} received: {cmds['ok']} ok, {cmds['accepted']} "
            f"accepted, {cmds['failed']} failed, {cmds['refused']} refused"
            + (f" {refused}" if refused else "")
        )
    deploy = s.get("deploy") or {}
    if deploy.get("phase"):
        progress = f" {deploy['received']}/{deploy['total']} chunks" if "received" in deploy else ""
        lines.append(
            f"  deploy     {deploy['phase']}{progress}: group {deploy['group']} -> "
            f"{deploy['sha256'][:12]} {deploy.get('detail', '')}".rstrip()
        )
    for problem in s.get("overlay_problems") or []:
        lines.append(f"  deployed   {problem}")
    return lines


def _coordination_lines(s: dict[str, Any]) -> list[str]:
    """The coordination part of the status view: tasks, holders, beliefs, problems."""
    c = s.get("coordination")
    if not c:
        return []
    m = c["metrics"]
    lines = [
        f"  coordination  {int(m['live_nodes'])} live node(s); {c['awarded']} task(s) awarded, "
        f"{int(m['tasks_open'])} open, {len(c['holding'])} held here; window {c['window_s']} s, "
        f"converged in <= {m['converge_s_max']:.3f} s, {int(m['reawards'])} re-award(s)",
        f"             conflicts {int(m['conflicts_detected'])} detected, "
        f"{int(m['conflicts_resolved'])} resolved; done {int(m['tasks_done'])}, expired "
        f"{int(m['tasks_expired'])}, re-auctioned after deaths {int(m['death_reauctions'])}; "
        f"ledger {c['digest'][:12]}, memory {_mb(c['reserved_bytes'])}",
    ]
    if m.get("teams_open"):
        lines.append(
            f"             teams {int(m['teams_open'])} open, {int(m['teams_formed'])} formed "
            f"(in <= {m['team_form_s_max']:.3f} s), {int(m['team_slots_vacant'])} slot(s) "
            f"vacant, {int(m['team_repairs'])} repaired (in <= {m['team_repair_s_max']:.3f} s)"
        )
    for name, g in sorted(c["groups"].items()):
        caps = ", ".join(g["capabilities"]) or "no tasks"
        share = g.get("sharing")
        what = ""
        if share:
            key = f"beliefs.{name}."
            what = (
                f", shares factor(s) {share['factors']} with {int(m.get(key + 'peers', 0))} "
                f"peer(s), {m.get(key + 'bytes_per_agent_s', 0.0):.1f} B/agent/s"
            )
        lines.append(f"             {name}: {caps}; {g['holding']} holding{what}")
    for name, problem in sorted(c.get("problems", {}).items()):
        lines.append(f"             {name}: {problem}")
    return lines
