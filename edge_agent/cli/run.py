"""``edge-agent run`` and ``edge-agentd``: the daemon in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.service.logs import configure_logging

__all__ = ["DESCRIPTION", "add", "arguments", "cmd_run"]

#: ``edge-agent run --help`` and ``edge-agentd --help`` (its parser: edge_agent/cli/__init__.py).
DESCRIPTION = (
    "Start edge-agentd in the foreground. Stops on SIGTERM/SIGINT after a final snapshot; "
    "SIGHUP reloads the config file."
)


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="start the daemon in the foreground (--demo: built-in simulated agents)",
        description=DESCRIPTION,
    )
    arguments(p)


def arguments(p: argparse.ArgumentParser) -> None:
    """The run command's arguments, ``edge-agentd``'s too."""
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
    from edge_agent.daemon.heap import tune_allocator

    tune_allocator()  # before numpy and the groups allocate (docs/memory.md)
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
