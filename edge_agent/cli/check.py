"""``edge-agent check-config``: validate a config and admit its groups against the budget."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_agent.daemon.statelock import held_by

__all__ = ["add", "cmd_check_config"]


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
