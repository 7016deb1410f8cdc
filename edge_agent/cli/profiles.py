"""``edge-agent profiles`` and ``edge-agent profile show``: the firmware profiles."""

from __future__ import annotations

import argparse

__all__ = ["add", "cmd_profile", "cmd_profiles"]


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
