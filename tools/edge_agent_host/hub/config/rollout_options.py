"""The options of a staged rollout, as ``rollout start`` takes them (docs/hub.md "Staged
rollouts"): the one definition that ``rollout start``, ``learn publish`` and the learning
policy's ``[learning] rollout`` (:func:`parse_start_options`, checked by ``check-config``) share.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from edge_agent_host.fleet.transfer import DEFAULT_CHUNK_BYTES
from edge_agent_host.hub.gates.criteria import parse_criteria
from edge_agent_host.hub.gates.criterion_text import CriterionError

__all__ = ["add_start_options", "parse_start_options"]


def add_start_options(start: argparse.ArgumentParser, *, files: bool = True) -> None:
    """``rollout start``'s options but the bundle and what it prints: the group, the nodes, the
    waves and the criteria (``learn publish`` takes the same ones for a round's bundle; without
    ``files``, no ``--rollback-bundle``: ``[learning] rollout``)."""
    start.add_argument("--group", required=True, help="the group that runs the bundle")
    who = start.add_mutually_exclusive_group()
    who.add_argument("--all", action="store_true", help="every node with the group (default)")
    who.add_argument(
        "--node", action="append", default=[], metavar="PATTERN", help="node names (globs)"
    )
    start.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="nodes with this label"
    )
    how = start.add_mutually_exclusive_group()
    how.add_argument(
        "--waves",
        default="1,10%,50%,100%",
        help="cumulative node counts or percentages (default 1,10%%,50%%,100%%)",
    )
    how.add_argument("--exponential", type=float, help="waves of 1, F, F^2, ... nodes")
    start.add_argument(
        "--soak", type=float, default=60.0, help="seconds each wave soaks (default 60)"
    )
    start.add_argument(
        "--max-failed-pct",
        type=float,
        default=0.0,
        help="halt when more of a wave's nodes fail or roll back (percent, default 0)",
    )
    start.add_argument(
        "--max-error-events-pct",
        type=float,
        default=100.0,
        help="halt when more deployed nodes send error events while soaking (100: off)",
    )
    start.add_argument(
        "--max-tick-p99-ratio",
        type=float,
        default=0.0,
        help="halt when the wave's median tick p99 grows more than this factor (0: off)",
    )
    start.add_argument(
        "--baseline", type=float, default=300.0, help="baseline telemetry (s, default 300)"
    )
    start.add_argument(
        "--criterion",
        action="append",
        default=[],
        metavar="MEASURE:max_increase=D[:group=G][:min_samples=N][:alpha=A][:dry_run]",
        help="judge each wave on a health measure against the untouched nodes (docs/hub.md); "
        "max_decrease=D for a measure that is better higher; "
        "shadow:excess_surprise:max_increase=D[:min_pairs=N][:alpha=A][:dry_run] judges the "
        "canaries' shadow (needs --shadow-s); repeatable",
    )
    start.add_argument(
        "--shadow-s",
        type=float,
        default=0.0,
        metavar="S",
        help="the first wave's nodes run the bundle as a shadow beside the live model for S "
        "seconds before they switch, and report the paired result (docs/health.md)",
    )
    if files:
        start.add_argument(
            "--rollback-bundle", type=Path, help="signed bundle the nodes get back after a halt"
        )
    start.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_BYTES,
        help=f"bytes per chunk (default {DEFAULT_CHUNK_BYTES})",
    )
    start.add_argument(
        "--rate", type=float, default=32.0, help="broadcast chunks per second (default 32)"
    )
    start.add_argument(
        "--deploy-timeout",
        type=float,
        default=600.0,
        help="seconds a wave's nodes have to answer their deployment (transfer, verification, "
        "preflight, switch) before they count as failed (default 600)",
    )
    start.add_argument(
        "--watch-ticks", type=int, default=50, help="ticks watched after switch (default 50)"
    )
    start.add_argument(
        "--preflight-steps",
        "--health-steps",
        dest="health_steps",
        metavar="N",
        type=int,
        default=20,
        help="steps of the preflight each node runs the bundle's model for in a scratch group "
        "before switching (default 20; --health-steps is its former name)",
    )
    start.add_argument(
        "--include-offline", action="store_true", help="select offline and silent nodes too"
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def parse_start_options(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` (e.g. ``["--group", "grid", "--waves", "1,100%"]``) as rollout options, without
    a rollback bundle, with ``dry_run`` false; ValueError (one line) when they are not."""
    parser = _Parser(prog="rollout", add_help=False, exit_on_error=False)
    add_start_options(parser, files=False)
    try:
        args = parser.parse_args(list(argv))
        parse_criteria(args.criterion, args.shadow_s)
    except (argparse.ArgumentError, CriterionError) as err:
        raise ValueError(str(err)) from err
    args.rollback_bundle = None
    args.dry_run = False
    return args
