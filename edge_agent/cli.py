"""``edge-agent`` and ``edge-agentd`` command lines; the only place that configures logging."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from edge_agent import __version__
from edge_agent.daemon.statelock import StateDirBusyError, held_by
from edge_agent.errors import (
    BackendUnavailableError,
    BudgetError,
    BundleError,
    ConfigError,
    EdgeAgentError,
    ModelError,
    missing_module_message,
)
from edge_agent.service.logs import configure_logging

logger = logging.getLogger("edge_agent")

DESCRIPTION = "edge-agent: run thousands of int8 Active Inference agents on a small device."
RUN_DESCRIPTION = (
    "Start edge-agentd in the foreground. Stops on SIGTERM/SIGINT after a final snapshot; "
    "SIGHUP reloads the config file."
)


def _terminal_columns() -> int:
    """The width ``shutil.get_terminal_size`` would give (``$COLUMNS``, the terminal, else 80)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized without ``shutil``: argparse imports it for the terminal's
    width whenever a parser gets an argument, and with it ``bz2`` and ``lzma``, into the daemon
    for as long as it runs (0.24 MB traced)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2  # as argparse does
        super().__init__(prog, indent_increment, max_help_position, width)


class ArgumentParser(argparse.ArgumentParser):
    """Our parsers (and their subcommands' parsers) format help with :class:`HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def print_clash_notice(prog: str) -> None:
    """On stderr, the line saying that PyPI's ``edge-agent`` shares this environment, if it does
    (edge_agent/distribution.py: half a millisecond, no import of importlib.metadata)."""
    from edge_agent.distribution import clash_notice

    notice = clash_notice(prog)
    if notice is not None:
        print(notice, file=sys.stderr)


class VersionAction(argparse.Action):
    """``--version``: the version on stdout, then :func:`print_clash_notice`."""

    def __init__(self, option_strings: Sequence[str], version: str, dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS,
                 help: str = "show program's version number and exit") -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(self.version)
        print_clash_notice(parser.prog)
        parser.exit()


# -- run ------------------------------------------------------------------------------------------
def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="start the daemon in the foreground (--demo: built-in simulated agents)",
        description=RUN_DESCRIPTION,
    )
    _run_arguments(p)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", type=Path, help="daemon config (TOML)")
    src.add_argument(
        "--demo",
        action="store_true",
        help="the embedded default config: x86-dev profile, simulated grid-world and T-maze "
        "agents, no broker",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument(
        "--report-every",
        type=float,
        default=None,
        metavar="S",
        help="log what the agents do and cost every S seconds (default: 2 with --demo, else off)",
    )
    p.add_argument("--state-dir", type=Path, help="override [daemon] state_dir")
    p.add_argument("--log-level", default=None, help="override [daemon] log_level")


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.daemon.footprint import keep_unused_modules_out

    keep_unused_modules_out()  # before anything imports hashlib, ssl or urllib.request

    import dataclasses

    from edge_agent.config.isolated import read_config_isolated
    from edge_agent.daemon.service import Daemon

    path = None if (args.demo or args.config is None) else args.config
    source = read_config_isolated(path)
    config = source.config
    if args.state_dir is not None:
        from edge_agent.daemon.admission import state_dir_problem

        problem = state_dir_problem(args.state_dir, create=True)
        if problem is not None:
            raise ConfigError(f"--state-dir {problem}")
        daemon_section = dataclasses.replace(config.daemon, state_dir=args.state_dir)
        config = dataclasses.replace(config, daemon=daemon_section)
        source = dataclasses.replace(source, config=config)
    configure_logging(args.log_level or config.daemon.log_level)
    from edge_agent.service.systemd import fault_dumps_to_journal

    fault_dumps_to_journal()  # a watchdog kill's thread stacks at priority warning
    report = args.report_every if args.report_every is not None else (2.0 if args.demo else 0.0)
    daemon = Daemon.from_file(source, path, report_interval_s=report)
    daemon.install_signal_handlers()
    return daemon.run(duration_s=args.duration)


def build_daemon_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="edge-agentd", description=RUN_DESCRIPTION)
    parser.add_argument("--version", action=VersionAction, version=f"edge-agentd {__version__}")
    _run_arguments(parser)
    return parser


def daemon_main(argv: Sequence[str] | None = None) -> int:
    """``edge-agentd``: the same as ``edge-agent run``, under its own name."""
    args = build_daemon_parser().parse_args(argv)
    args.command, args.error_prefix = "run", "edge-agentd"
    print_clash_notice("edge-agentd")
    return _dispatch(args)


# -- status ---------------------------------------------------------------------------------------
def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


#: Where a daemon under systemd keeps its status (RuntimeDirectory=edge-agent).
SYSTEMD_STATUS_FILE = Path("/run/edge-agent/status.json")


def _find_status_file(config_path: Path | None) -> tuple[Path | None, str]:
    """The status file to show and, when it is a guess, a note saying which file was read and
    how to point elsewhere. ``(None, message)`` when several daemons run (choose one) or the
    one running cannot be read."""
    from edge_agent.config.daemon import default_config, load_config
    from edge_agent.daemon import discovery
    from edge_agent.daemon.status import status_path

    if config_path is not None:
        return status_path(load_config(config_path)), ""
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

    path, note = (args.status_file, "") if args.status_file else _find_status_file(args.config)
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
            lines.append(
                f"               mqtt in: {io['rows']} rows, {io['rows_rejected']} rejected, "
                f"{io['stale_agent_ticks']} stale agent-ticks, oldest {io['max_age_ticks']} "
                f"ticks{waiting}"
            )
        actions = g.get("actions")
        if actions:
            lines.append(
                f"               mqtt out: {actions['batches']} batches, "
                f"{actions['dropped']} refused"
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
    lines.extend(_state_lines(s))
    lines.extend(_fleet_lines(s))
    lines.extend(_coordination_lines(s))
    for d in s.get("degradations", [])[-3:]:
        lines.append(f"  degraded   {d}")
    if s["reloads"]["last_error"]:
        lines.append(f"  reload     refused: {s['reloads']['last_error'].splitlines()[0]}")
    return "\n".join(lines)


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


# -- check-config ---------------------------------------------------------------------------------
def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a daemon config and its memory budget",
        description="Validate FILE: schema errors print as 'file:line: field: problem'; then the "
        "groups are admitted against the profile's memory budget, as the daemon does at start.",
    )
    p.add_argument("file", type=Path, help="the daemon config (TOML) to check")


def cmd_check_config(args: argparse.Namespace) -> int:
    from edge_agent.config.daemon import describe_config, read_config
    from edge_agent.core.budget import format_bytes
    from edge_agent.daemon.admission import admit

    source = read_config(args.file)
    profile, budget, groups = admit(source)
    print(describe_config(source, profile))
    holder = held_by(source.config.daemon.state_dir)
    if holder is not None:
        print(f"  state_dir in use by the running daemon, {holder}")
    print("  memory plan:")
    owners = budget.by_owner()
    for g in groups:
        learning = owners.get(f"{g.name}:learning")  # [groups.learning]'s counts
        cost = g.footprint()
        print(
            f"    group {g.name}: {cost.agents} agents x {cost.bytes_per_agent} B, "
            f"model {format_bytes(cost.shared_bytes)} shared"
            + ("" if learning is None else f", learning {format_bytes(learning)}")
        )
    print(
        f"    budget: {format_bytes(budget.used)} of {format_bytes(budget.total)} "
        f"({format_bytes(budget.available)} left)"
    )
    for g in groups:
        g.release()
    return 0


# -- profiles -------------------------------------------------------------------------------------
def _add_profiles(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("profiles", help="list firmware profiles")
    p = sub.add_parser("profile", help="explain one firmware profile")
    psub = p.add_subparsers(dest="profile_cmd", required=True)
    show = psub.add_parser("show", help="explain one profile")
    show.add_argument("name", help="profile name, or 'auto' for this device")


def cmd_profiles(_args: argparse.Namespace) -> int:
    from edge_agent.config.profiles import format_profiles_table, load_profiles

    print(format_profiles_table(load_profiles()))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from edge_agent.config.profiles import explain_profile, select_profile

    print(explain_profile(select_profile(args.name)))
    return 0


def _add_unit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "systemd-unit",
        help="print the static systemd unit (to /etc/systemd/system/edge-agent.service)",
        description="Print the unit shipped with the package (systemd/edge-agent.service in the "
        "repository). Per-device values go in a drop-in: see systemd-dropin.",
    )
    p = sub.add_parser(
        "systemd-dropin",
        help="print the systemd drop-in with a profile's memory limits and watchdog",
        description="The unit (systemd/edge-agent.service) is a static file; what differs per "
        "device goes in a drop-in: sudo edge-agent systemd-dropin --profile NAME | sudo tee "
        "/etc/systemd/system/edge-agent.service.d/profile.conf, then systemctl daemon-reload.",
    )
    p.add_argument("--profile", default="auto", help="profile name (default: this device's)")
    p.add_argument(
        "--exec-start",
        default=None,
        metavar="CMD",
        help="also replace the unit's ExecStart= with CMD (an absolute command line)",
    )


def cmd_static_unit(_args: argparse.Namespace) -> int:
    from importlib import resources

    unit = resources.files("edge_agent").joinpath("data", "edge-agent.service")
    print(unit.read_text(encoding="utf-8"), end="")
    return 0


def cmd_unit(args: argparse.Namespace) -> int:
    from edge_agent.config.profiles import select_profile
    from edge_agent.daemon.unit import profile_dropin

    try:
        print(profile_dropin(select_profile(args.profile), exec_start=args.exec_start), end="")
    except ValueError as err:
        print(f"edge-agent systemd-dropin: {err}", file=sys.stderr)
        return 2
    return 0


# -- replay ---------------------------------------------------------------------------------------
def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a recorded episode through one agent",
        description="Replay REC.npz (obs (T, M), actions (T, F), optional trial_start (T,) "
        "and planned (T,)) "
        "through one agent on MODEL.npz (pymdp keys A0.., B0.., C0.., D0.., E) and write per "
        "step qs{f}, q_pi, chosen_action, tied, recorded_shortfall and the policies to OUT.npz.",
    )
    p.add_argument(
        "model",
        type=Path,
        help="the model: a float .npz (pymdp keys A0.., B0.., ...) or an Active "
        "Inference bundle (directory or .tar, run in int8 with its own settings)",
    )
    p.add_argument(
        "--trusted-keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="require a bundle to be signed by one of these keys",
    )
    p.add_argument(
        "--recording",
        type=Path,
        required=True,
        help="REC.npz: obs (T, M), actions (T, F), optional trial_start (T,) and planned (T,) "
        "(the steps a run under a planning policy planned at; the agent plans at those)",
    )
    p.add_argument("--out", type=Path, required=True, help="OUT.npz to write, one row per step")
    p.add_argument(
        "--policy-len",
        type=int,
        default=None,
        help="planning horizon (default: the bundle's, 1 for a .npz)",
    )
    p.add_argument(
        "--precision",
        choices=("float64", "int8"),
        default="float64",
        help="a .npz's tables: float64 as given, or int8 as on a device (a bundle "
        "always runs int8)",
    )
    plan = p.add_argument_group(
        "planning",
        "the agent plans as a group under [groups.planning] does (same keys; docs/planning.md) "
        "and OUT.npz also holds, per step, planned, plan_policy, plan_left, plan_age and "
        "deferred; default: every tick, as before",
    )
    plan.add_argument(
        "--every", type=int, default=None, metavar="K",
        help="plan when the plan is K ticks old (1: every tick; 0: never for its age alone)",
    )
    plan.add_argument(
        "--belief-change", type=float, default=None, metavar="X",
        help="plan when the beliefs moved this much (total variation, 0 < X <= 1)",
    )
    plan.add_argument(
        "--surprise", type=float, default=None, metavar="NATS",
        help="plan when the observation's surprise -ln p(o) under the prior predictive reaches "
        "NATS (instead of --belief-change)",
    )
    plan.add_argument(
        "--max-agents", type=int, default=None, metavar="N",
        help="at most N agents plan a tick (one agent alone is never put off: a run's "
        "budget choice comes as the recording's planned)",
    )
    plan.add_argument(
        "--deadline-ms", type=float, default=None, metavar="MS",
        help="no new block of planning MS ms into a tick (the first block, one agent here, "
        "always plans: a run's choice comes as the recording's planned)",
    )
    learn = p.add_argument_group(
        "learning",
        "a .npz with Dirichlet counts pA0.., pB0.., pD0.. (pymdp's keys) learns those tables "
        "while it replays and writes the final pA{m}, pB{f}, pD{f} (docs/learning.md)",
    )
    for table in ("pA", "pB", "pD"):
        learn.add_argument(
            f"--lr-{table}", type=float, default=1.0, metavar="RATE",
            help=f"learning rate of {table} (pymdp's lr_{table}; default 1.0)",
        )
    learn.add_argument(
        "--forgetting", type=float, default=0.0, metavar="F",
        help="share of the learned difference from the prior counts lost at each update, "
        "0 <= F < 1 (default 0: pymdp, no forgetting)",
    )
    learn.add_argument(
        "--pD-from", choices=("last", "first"), default="last", dest="pD_from",
        help="the posterior of a trial pD learns from at its end (default: its last; 'first' "
        "is pymdp's update_D default)",
    )
    learn.add_argument(
        "--param-info-gain", action="store_true",
        help="add the parameter information gain of pA and pB to the expected free energy "
        "(pymdp's use_param_info_gain)",
    )


def _replay_learning(args: argparse.Namespace, counts: dict[str, dict[int, Any]]) -> Any:
    """The LearningSpec a replay runs with, or None: counts in the model file turn it on."""
    from edge_agent.aif.learning import LearningSettings, LearningSpec
    from edge_agent.errors import InputError

    options = [
        name for name, default in (("lr_pA", 1.0), ("lr_pB", 1.0), ("lr_pD", 1.0),
                                   ("forgetting", 0.0))
        if getattr(args, name) != default
    ] + (["param_info_gain"] if args.param_info_gain else [])
    if not counts:
        if options:
            flags = ", ".join("--" + o.replace("_", "-") for o in options)
            raise InputError(
                f"{flags}: {args.model} has no Dirichlet counts (pA0.., pB0.., pD0..) to learn"
            )
        return None
    settings = LearningSettings(
        lr_pA=args.lr_pA, lr_pB=args.lr_pB, lr_pD=args.lr_pD, forgetting=args.forgetting
    )
    return LearningSpec(
        pA=counts.get("A", {}), pB=counts.get("B", {}), pD=counts.get("D", {}),
        settings=settings, param_info_gain=args.param_info_gain,
    )


#: ``edge-agent replay``'s planning options: flag -> [groups.planning] key.
_PLANNING_FLAGS: Final = {
    "--every": "every",
    "--belief-change": "belief_change",
    "--surprise": "surprise",
    "--max-agents": "max_agents",
    "--deadline-ms": "deadline_ms",
}


def _replay_planning(args: argparse.Namespace) -> Any:
    """The PlanningPolicy a replay runs with (the every-tick one without planning flags)."""
    from edge_agent.aif.planning import PlanningPolicy
    from edge_agent.errors import InputError
    from edge_agent.records import RecordError

    fields = {
        key: getattr(args, key)
        for key in _PLANNING_FLAGS.values()
        if getattr(args, key) is not None
    }
    try:
        return PlanningPolicy(**fields)
    except RecordError as err:
        flags = {key: flag for flag, key in _PLANNING_FLAGS.items()}
        raise InputError(
            "; ".join(f"{flags[str(loc[0])]}: {message}" for loc, message in err.problems)
        ) from err


def cmd_replay(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from edge_agent.aif.agreement import ROUNDING_TOL
    from edge_agent.aif.quant import QuantizedModel
    from edge_agent.aif.settings import AifSettings
    from edge_agent.bundle.signing import TrustedKeys
    from edge_agent.core.agents import Precision
    from edge_agent.core.replay import load_recording, load_replay_model, replay

    keys = TrustedKeys.from_dir(args.trusted_keys) if args.trusted_keys else None
    counts: dict[str, dict[int, Any]] = {}
    model, settings, what = load_replay_model(args.model, trusted_keys=keys, counts=counts)
    learning = _replay_learning(args, counts)
    planning = _replay_planning(args)
    if args.policy_len is not None or settings is None:
        base = settings if settings is not None else AifSettings()
        settings = dataclasses.replace(base, policy_len=args.policy_len or 1)
    rec = load_recording(args.recording, model)
    precision: Precision = "int8" if isinstance(model, QuantizedModel) else args.precision
    out = replay(
        model, rec, settings=settings, precision=precision, learning=learning,
        pD_from=args.pD_from, planning=planning,
    )
    np.savez(args.out, **out)  # type: ignore[arg-type]
    print(f"replayed {what}, policy_len {settings.policy_len}")
    if not planning.every_tick:
        print(
            f"planning {planning.describe()}: planned at {int(out['planned'].sum())} of "
            f"{len(out['planned'])} steps (per step in {args.out}: planned, plan_policy, "
            "plan_left, plan_age, deferred)"
        )
    if learning is not None:
        learned = ", ".join(f"p{kind}{i}" for kind in "ABD" for i in sorted(counts.get(kind, {})))
        print(f"learned {learned} (final counts in {args.out})")
    steps = len(rec["obs"])
    same = int((out["chosen_action"] == rec["actions"]).all(axis=1).sum())
    optimal = int(np.count_nonzero(out["recorded_shortfall"] <= ROUNDING_TOL))
    print(
        f"replayed {steps} steps -> {args.out}\n"
        f"  the recorded action was optimal for the agent at {optimal} of {steps} steps "
        f"(ties count; the agent's own argmax equals it at {same})\n"
        f"  {int(out['tied'].sum())} of {steps} steps had tied actions "
        "(two or more equally good: argmax picks one on rounding noise)"
    )
    return 0


# -- export-model ---------------------------------------------------------------------------------
def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export-model",
        help="write a learning group's learned model as .npz (for edge-agent-host convert aif)",
        description="Write GROUP's learned model as the daemon last saved it (the newest "
        "snapshot in its state_dir; the daemon may be running or stopped) to OUT.npz in "
        "pymdp's keys: A0.., B0.., D0.. as the agents infer with them, C0.., E, the Dirichlet "
        "counts pA0.., pB0.., pD0.., and meta_* keys (versions, prior counts, the snapshot). "
        "edge-agent-host convert aif OUT.npz makes a bundle of it (docs/learning.md).",
    )
    p.add_argument("--config", type=Path, required=True, help="the daemon config (TOML)")
    p.add_argument("--group", required=True, help="the group (it has a [groups.learning] table)")
    p.add_argument("--out", type=Path, required=True, help="OUT.npz to write")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="read the snapshots here instead of [daemon] state_dir")
    p.add_argument("--agent", type=int, default=None, metavar="I",
                   help="a group that learns per agent: export agent I's counts")


def cmd_export_model(args: argparse.Namespace) -> int:
    from edge_agent.daemon.model_export import export_model

    report = export_model(
        args.config, args.group, args.out, state_dir=args.state_dir, agent=args.agent
    )
    print(report.describe())
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "status": cmd_status,
    "check-config": cmd_check_config,
    "profiles": cmd_profiles,
    "profile": cmd_profile,
    "systemd-unit": cmd_static_unit,
    "systemd-dropin": cmd_unit,
    "replay": cmd_replay,
    "export-model": cmd_export_model,
}


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = ArgumentParser(prog="edge-agent", description=DESCRIPTION)
    parser.add_argument("--version", action=VersionAction, version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_run, _add_status, _add_check, _add_profiles, _add_replay, _add_export, _add_unit
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        configure_logging("warning")
    if args.command in {"run", "check-config"}:
        print_clash_notice(f"edge-agent {args.command}")
    return _dispatch(args)


#: What a refused configuration raises: the config file, the models and bundles it names, their
#: keys, the memory plan, a backend it needs, a state directory another daemon holds. Restarting
#: cannot help, so ``run`` exits 2 (the unit's RestartPreventExitStatus=2); anything else that
#: stops the daemon exits 1 and systemd restarts it (damaged runtime state does not stop it at
#: all: edge_agent/state_health.py).
CONFIG_ERRORS: Final = (
    ConfigError,
    BudgetError,
    BundleError,
    ModelError,
    BackendUnavailableError,
    StateDirBusyError,
)


def _dispatch(args: argparse.Namespace) -> int:
    name = getattr(args, "error_prefix", None) or f"edge-agent {args.command}"
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:  # already one 'path:line: field: problem' per line
        print(str(err), file=sys.stderr)
        return 2
    except EdgeAgentError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2 if args.command != "run" or isinstance(err, CONFIG_ERRORS) else 1
    except ModuleNotFoundError as err:
        message = missing_module_message(err)
        if message is None:
            raise
        print(f"{name}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
