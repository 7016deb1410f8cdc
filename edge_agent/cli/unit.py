"""``edge-agent systemd-unit`` and ``systemd-dropin``: the unit and a profile's drop-in."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add", "cmd_static_unit", "cmd_unit"]


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
