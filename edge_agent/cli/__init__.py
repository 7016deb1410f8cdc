"""``edge-agent`` and ``edge-agentd`` command lines; the only place that configures logging.

This module holds what both entry points share (the help formatter, ``--version``, the error
handling of :func:`_dispatch`) and ``edge-agentd``'s parser; each ``edge-agent`` command is a
module of this package with its arguments (``add``) and its code (``cmd_*``), named in
:data:`COMMANDS` and imported when ``edge-agent`` builds its parser: the named command's module
alone (``edge-agent run`` imports :mod:`edge_agent.cli.run` and no other), every one for
``edge-agent --help`` or a name it does not know. ``edge-agentd`` imports :mod:`edge_agent.cli.run`
alone too: the daemon never holds the code of the commands it does not run (docs/memory.md).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from edge_agent import __version__
from edge_agent.daemon.statelock import StateDirBusyError
from edge_agent.errors import (
    BackendUnavailableError,
    BudgetError,
    BundleError,
    ConfigError,
    EdgeAgentError,
    ModelError,
    file_problem,
    missing_module_message,
)
from edge_agent.service.closed_stdout import guard_stdout
from edge_agent.service.logs import configure_logging

logger = logging.getLogger("edge_agent")

DESCRIPTION = "edge-agent: run thousands of int8 Active Inference agents on a small device."


def print_clash_notice(prog: str) -> None:
    """On stderr, the line saying that PyPI's ``edge-agent`` shares this environment, if it does
    (edge_agent/distribution.py: half a millisecond, no import of importlib.metadata)."""
    from edge_agent.distribution import clash_notice

    notice = clash_notice(prog)
    if notice is not None:
        print(notice, file=sys.stderr)


class VersionAction(argparse.Action):
    """``--version``: the version on stdout, then :func:`print_clash_notice`."""

    def __init__(
        self,
        option_strings: Sequence[str],
        version: str,
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: str = "show program's version number and exit",
    ) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)
        self.version = version

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(self.version)
        print_clash_notice(parser.prog)
        parser.exit()


def build_daemon_parser() -> argparse.ArgumentParser:
    """``edge-agentd``'s parser: the ``run`` command's arguments (:mod:`edge_agent.cli.run`)."""
    run = _module("run")
    parser = argparse.ArgumentParser(prog="edge-agentd", description=run.DESCRIPTION)
    parser.add_argument("--version", action=VersionAction, version=f"edge-agentd {__version__}")
    run.arguments(parser)
    return parser


def daemon_main(argv: Sequence[str] | None = None) -> int:
    """``edge-agentd``: the same as ``edge-agent run``, under its own name."""

    def run() -> int:
        args = build_daemon_parser().parse_args(argv)
        args.command, args.error_prefix = "run", "edge-agentd"
        print_clash_notice("edge-agentd")
        return _dispatch(args)

    return guard_stdout(run, "edge-agentd")


#: Every ``edge-agent`` command: the module of this package that adds its arguments and runs it,
#: and its function there, in the order ``edge-agent --help`` lists them.
COMMANDS: Final[dict[str, str]] = {
    "run": "run:cmd_run",
    "status": "status:cmd_status",
    "check-config": "check:cmd_check_config",
    "profiles": "profiles:cmd_profiles",
    "profile": "profiles:cmd_profile",
    "replay": "replay:cmd_replay",
    "export-model": "export:cmd_export_model",
    "systemd-unit": "unit:cmd_static_unit",
    "systemd-dropin": "unit:cmd_unit",
}


def _module(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``edge-agent`` parser: imports every command's module (:data:`COMMANDS`), or only
    the module of ``command`` (a parser for that command alone: what running it needs)."""
    parser = argparse.ArgumentParser(prog="edge-agent", description=DESCRIPTION)
    parser.add_argument("--version", action=VersionAction, version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = dict.fromkeys(where.partition(":")[0] for where in COMMANDS.values())
    if command is not None:
        modules = {COMMANDS[command].partition(":")[0]: None}
    for module in modules:
        _module(module).add(sub)
    return parser


def named_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` starts with, or None (no command, an option first, an unknown
    name: the whole parser lists the commands or says what is wrong)."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    """``edge-agent``: parses with the named command's module alone (``edge-agent run`` holds no
    other command's code), with every command's when none is named."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def run() -> int:
        args = build_parser(named_command(argv)).parse_args(argv)
        if args.command != "run":
            configure_logging("warning")
        if args.command in {"run", "check-config"}:
            print_clash_notice(f"edge-agent {args.command}")
        return _dispatch(args)

    return guard_stdout(run, "edge-agent")


#: What a refused configuration raises: the config file, the models and bundles it names, their
#: keys, the memory plan, a backend it needs, a state directory another daemon holds. Restarting
#: cannot help, so ``run`` exits 2 (the unit's RestartPreventExitStatus=2); anything else that
#: stops the daemon exits 1 and systemd restarts it (damaged runtime state does not stop it at
#: all: edge_agent/state_faults.py).
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
    module, _, function = COMMANDS[args.command].partition(":")
    command: Callable[[argparse.Namespace], int] = getattr(_module(module), function)
    try:
        return command(args)
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
    except BrokenPipeError:
        raise  # standard output's reader left, or not: guard_stdout says which
    except OSError as err:  # a file named on the command line that nothing closer explained
        print(f"{name}: {file_problem(err)}", file=sys.stderr)
        return 2 if args.command != "run" else 1


if __name__ == "__main__":
    sys.exit(main())
