"""Which nodes run an older version of a model line than the fleet's current one: the nodes a
hub brings up to date when they join late or come back reset (docs/fleet-learning.md, "A node
that joins late or was reset").

A node asks by what it already says: its retained birth names, for every group, the bundle it
runs (``bundle``: ``name@version`` of its manifest, the name being the line's; ``bundle_sha256``:
the version's identity) and is sent on every connect. A group whose bundle is of a line the hub
has a current version of, and is not that version, is behind; the answer is a signed ``deploy``
of the current version to that node and group, through the deploy path every deployment takes
(chunks, verification, the preflight, the A/B switch). Pure: the caller (the hub service)
gives the fleet's rows, each line's current version and what it must not try (below), and
deploys what :func:`behind` returns.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent_host.fleet.presence import SILENT_AFTER_S, presence
from edge_agent_host.hub.learning.store import split_model

__all__ = ["CatchUp", "behind"]


@dataclass(frozen=True)
class CatchUp:
    """Deploy version ``target`` (a manifest sha256) of model line ``line`` to ``group`` of
    ``node``, which runs ``running`` (another version of the line)."""

    node: str
    group: str
    line: str
    running: str | None
    target: str


def behind(
    fleet: Iterable[Mapping[str, Any]],
    current: Mapping[str, str],
    *,
    skip: Container[tuple[str, str, str]] = (),
    silent_after_s: float = SILENT_AFTER_S,
    now: float | None = None,
) -> list[CatchUp]:
    """The groups of the registry's nodes (``HubDatabase.fleet()`` rows: ``node``, ``birth``,
    presence) whose birth says they run a bundle of a line in ``current`` (line name -> the
    manifest sha256 of its current version) other than that version, sorted by node and group.
    A birth's ``bundle`` is ``name@version`` (as a daemon says it); the line is the name.

    Only online nodes (:func:`~edge_agent_host.fleet.presence.presence`): a deployment needs the
    node there, and an offline one asks again with the birth of its next connect. ``skip``
    holds ``(node, group, target)`` the caller must not try: a rollout in progress selected
    the node's group (the rollout decides what it runs, its gate included: a canary runs the
    candidate, a version newer than the current one), or a deployment of that version to that
    group failed already (the node rolled back; tried again only for a newer version). A group
    that runs a built-in model (no bundle) is of no line and never behind."""
    out: list[CatchUp] = []
    for row in fleet:
        birth = row.get("birth") or {}
        groups: Mapping[str, Mapping[str, Any]] = birth.get("groups") or {}
        node = str(row["node"])
        for group, info in groups.items():
            bundle = info.get("bundle")
            line = split_model(str(bundle))[0] if bundle is not None else None
            target = current.get(line) if line is not None else None
            running = info.get("bundle_sha256")
            if target is None or running == target or (node, group, target) in skip:
                continue
            if presence(row, silent_after_s, now) != "online":
                break
            out.append(CatchUp(node, str(group), str(line), running, target))
    return sorted(out, key=lambda c: (c.node, c.group))
