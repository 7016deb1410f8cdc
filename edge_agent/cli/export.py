"""``edge-agent export-model``: a learning group's learned model as ``.npz``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add", "cmd_export_model"]


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="read the snapshots here instead of [daemon] state_dir",
    )
    p.add_argument(
        "--agent",
        type=int,
        default=None,
        metavar="I",
        help="a group that learns per agent: export agent I's counts",
    )


def cmd_export_model(args: argparse.Namespace) -> int:
    from edge_agent.daemon.model_export import export_model

    report = export_model(
        args.config, args.group, args.out, state_dir=args.state_dir, agent=args.agent
    )
    print(report.describe())
    return 0
