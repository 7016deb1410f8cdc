"""The fleet table both clients print: ``edge-agent-host hub fleet`` and ``edge-agent-hub fleet``.

One row per node from what was heard of it (retained state, birth, the last telemetry): whether
it is there (:func:`~edge_agent_host.fleet.presence.presence`: ``online``, ``silent``, ``offline``,
``unknown``), its groups and bundles, its tick and memory. Shared by the operator's client
(:mod:`edge_agent_host.fleetctl`) and the hub service (:mod:`edge_agent_host.hub`), which never
imports the client.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Mapping
from typing import Any

from edge_agent_host.fleet.presence import SILENT_AFTER_S, presence

__all__ = ["add_silent_argument", "format_fleet"]


def _age(ts: float | None) -> str:
    if ts is None:
        return "-"
    age = time.time() - ts
    return f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}m"


def format_fleet(rows: Iterable[Mapping[str, Any]], silent_after_s: float = SILENT_AFTER_S) -> str:
    """The ``hub fleet`` table."""
    lines = [
        f"{'NODE':<16} {'STATE':<8} {'BDSEQ':>5} {'PROFILE':<12} {'GROUPS':<28} "
        f"{'TICK p50/p99 ms':<16} {'RSS':>8} {'OUTBOX':>6} {'SEEN':>5}"
    ]
    for row in rows:
        state = presence(row, silent_after_s)
        birth = row.get("birth") or {}
        groups = ", ".join(
            f"{name}={info['agents']}"
            + (f"@{info['bundle_sha256'][:8]}" if info.get("bundle_sha256") else "")
            for name, info in sorted((birth.get("groups") or {}).items())
        )
        tel = row.get("telemetry") or {}
        tick = f"{tel['tick_p50_ms']:.2f}/{tel['tick_p99_ms']:.2f}" if tel else "-"
        rss = f"{tel['rss_bytes'] / 2**20:.0f}MiB" if tel else "-"
        outbox = str((tel.get("outbox") or {}).get("depth_rows", "-")) if tel else "-"
        lines.append(
            f"{row['node']:<16} {state:<8} {row['bdseq'] if row['bdseq'] is not None else '-':>5} "
            f"{birth.get('profile', '-'):<12} {groups or '-':<28} {tick:<16} {rss:>8} "
            f"{outbox:>6} {_age(row.get('last_seen')):>5}"
        )
    return "\n".join(lines)


def add_silent_argument(parser: argparse.ArgumentParser, *, from_config: bool = False) -> None:
    """``--silent-after S`` of the fleet tables (:func:`~edge_agent_host.fleet.presence.presence`).

    ``from_config``: the default is the config file's (``None`` here; the hub's
    ``[hub] silent_after_s``), not :data:`~edge_agent_host.fleet.presence.SILENT_AFTER_S`."""
    default = (
        f"the config's [hub] silent_after_s, {SILENT_AFTER_S:g} unless set"
        if from_config
        else f"{SILENT_AFTER_S:g}"
    )
    parser.add_argument(
        "--silent-after",
        type=float,
        default=None if from_config else SILENT_AFTER_S,
        metavar="S",
        help="show an online node not heard for S seconds as 'silent' (a revoked node's "
        f"retained state stays online; default {default})",
    )
