"""A node named on a command line that the fleet never saw: said at once, with the known names
closest to it, instead of a command that waits for an answer that cannot come (``edge-agent-host
hub command --node pi-0499 ping``) or a reader that prints nothing (``edge-agent-hub telemetry
pi-9999``).

Shared by the operator's client (:mod:`edge_agent_host.fleetctl`: the nodes it heard, retained
messages included, and the ones its store remembers) and the hub service's command line
(:mod:`edge_agent_host.hub`: the nodes in its registry). Each command that takes a node has
``--force`` to go ahead all the same (a node that is about to join, a registry that was reset).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Collection, Iterable
from typing import Final

from edge_agent_host.fleet.errors import FleetError

__all__ = ["UnknownNodeError", "add_force_argument", "require_seen"]

CLOSEST: Final = 4
"""How many of the known names closest to an unknown one are shown."""


class UnknownNodeError(FleetError):
    """A node named on the command line was never seen (the message says which, and the known
    names closest to it)."""


def add_force_argument(parser: argparse.ArgumentParser, does: str) -> None:
    """``--force``: ``does`` (what the command then does) for a node never seen."""
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"{does} a node never seen (without it: an error naming the known nodes closest "
        "to it)",
    )


def require_seen(names: Iterable[str], known: Collection[str], *, where: str) -> None:
    """:class:`UnknownNodeError` when a name of ``names`` is not in ``known``: one line, e.g.
    ``node 'pi-0499' was never seen by the hub (known: pi-0049, pi-0409, ...); --force ...``
    (``where``: ``by the hub``, ``in fleet 'plant-3'``)."""
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if not unknown:
        return
    if len(unknown) == 1:
        text = f"node {unknown[0]!r} was never seen {where} ({_closest(unknown[0], known)})"
    else:
        parts = ", ".join(f"{name!r} ({_closest(name, known)})" for name in unknown)
        text = f"nodes {parts} were never seen {where}"
    raise UnknownNodeError(f"{text}; --force to go ahead")


def _closest(name: str, known: Collection[str]) -> str:
    if not known:
        return "no node seen yet"
    close = difflib.get_close_matches(name, sorted(known), n=CLOSEST, cutoff=0.6)
    if not close:
        return f"none alike of {len(known)} known"
    more = ", ..." if len(known) > len(close) else ""
    return f"known: {', '.join(close)}{more}"
