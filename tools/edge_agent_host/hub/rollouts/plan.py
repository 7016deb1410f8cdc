"""A rollout's plan: its states, abort criteria, waves and which nodes it selects
(:mod:`.runner` carries it out; docs/hub.md "Staged rollouts")."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

from pydantic import Field

from edge_agent.fleet.names import NAME_PATTERN
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.presence import SILENT_AFTER_S, presence
from edge_agent_host.hub.base.strict import StrictModel
from edge_agent_host.hub.gates.health import HealthCriterion
from edge_agent_host.hub.gates.shadow import ShadowCriterion

__all__ = [
    "ACTIVE",
    "WENT_OFFLINE",
    "Criteria",
    "NodeState",
    "RolloutPlan",
    "RolloutState",
    "not_trusting",
    "plan_waves",
    "select_nodes",
    "untrusted_line",
    "wave_of",
]

SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"


class RolloutState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    HALTING = "halting"
    HALTED = "halted"
    ROLLED_BACK = "rolled_back"
    DONE = "done"


ACTIVE: Final = frozenset(
    {RolloutState.PENDING, RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTING}
)


WENT_OFFLINE: Final = "went offline while deploying"
"""The detail of a ``stop_if_offline`` plan's node whose state said offline before its
deployment's final answer."""


class NodeState(StrEnum):
    PENDING = "pending"  # its wave has not come
    OK = "ok"  # switched and watched
    FAILED = "failed"  # the deployment failed, or the node rolled back while soaking
    REVERTED = "reverted"  # the rollback bundle runs again after a halt
    REVERT_FAILED = "revert_failed"


class Criteria(StrictModel):
    """When a wave stops the rollout."""

    max_failed_pct: float = Field(
        0.0, ge=0.0, le=100.0, description="failed or rolled-back nodes of a wave, percent"
    )
    max_error_events_pct: float = Field(
        100.0,
        ge=0.0,
        le=100.0,
        description="deployed nodes that sent an error event while soaking, percent (100: off)",
    )
    max_tick_p99_ratio: float = Field(
        0.0, ge=0.0, le=1000.0, description="median tick p99 soaking / before; 0: off"
    )
    baseline_s: float = Field(
        300.0, gt=0.0, le=86400.0, description="telemetry before a wave that is its baseline (s)"
    )
    health: list[HealthCriterion] = Field(
        default_factory=list,
        max_length=32,
        description="criteria on health measures, judged at the end of each wave's soak "
        "against the untouched nodes (health_gate.py)",
    )
    shadow: list[ShadowCriterion] = Field(
        default_factory=list,
        max_length=8,
        description="criteria on the canaries' shadow, judged once the first wave is deployed "
        "(shadow_gate.py)",
    )


class RolloutPlan(StrictModel):
    """What ``rollout start`` decided: stored as JSON in the rollout's row."""

    group: str = Field(pattern=NAME_PATTERN)
    bundle_sha256: str = Field(pattern=SHA256_PATTERN)
    bundle_name: str = ""
    bundle_version: str = ""
    waves: list[int] = Field(min_length=1, max_length=64, description="cumulative node counts")
    soak_s: float = Field(60.0, ge=0.0, le=7 * 86400.0)
    criteria: Criteria = Field(default_factory=Criteria)
    rollback_sha256: str | None = Field(None, pattern=SHA256_PATTERN)
    chunk_size: int = Field(64 * 1024, ge=1024, le=192 * 1024)
    rate_chunks_s: float = Field(32.0, gt=0.0, le=10_000.0)
    deploy_timeout_s: float = Field(600.0, gt=0.0, le=86400.0)
    watch_ticks: int = Field(50, ge=1, le=100_000)
    health_steps: int = Field(20, ge=1, le=10_000)
    shadow_s: float = Field(
        0.0, ge=0.0, le=86400.0, description="the canaries' shadow before they switch (s); 0: none"
    )
    selector: dict[str, Any] = Field(default_factory=dict, description="as given, for status")
    stop_if_offline: bool = Field(
        False,
        description="a wave's node that goes offline before its deployment's final answer "
        "fails at once ('went offline while deploying'), not at deploy_timeout_s "
        "(a catch-up's one-node deployment)",
    )


# ------------------------------------------------------------------------------------ planning
def plan_waves(
    n_nodes: int, waves: Sequence[str] | None = None, *, exponential: float | None = None
) -> list[int]:
    """Cumulative node counts of each wave for ``n_nodes`` nodes.

    ``waves``: each an absolute count (``"1"``) or a share of all nodes (``"10%"``, rounded up),
    cumulative; counts that do not grow are dropped and a last wave of every node is added when
    missing. ``exponential``: waves of 1, f, f², ... nodes (f > 1) until every node is in.
    Default: ``1, 10%, 50%, 100%``.
    """
    if n_nodes < 1:
        raise FleetError("a rollout needs at least one node")
    counts: list[int] = []
    if exponential is not None:
        if exponential <= 1.0:
            raise FleetError("--exponential must be > 1")
        size, total = 1.0, 0
        while total < n_nodes:
            total = min(n_nodes, total + max(1, math.floor(size)))
            counts.append(total)
            size *= exponential
        return counts
    for given in waves if waves is not None else ("1", "10%", "50%", "100%"):
        text = given.strip()
        try:
            if text.endswith("%"):
                share = float(text[:-1])
                if not 0.0 < share <= 100.0:
                    raise ValueError
                count = math.ceil(n_nodes * share / 100.0 - 1e-9)
            else:
                count = int(text)
                if count < 1:
                    raise ValueError
        except ValueError:
            raise FleetError(
                f"wave {text!r}: a node count >= 1 or a percentage in (0, 100]"
            ) from None
        count = min(count, n_nodes)
        if not counts or count > counts[-1]:
            counts.append(count)
    if counts[-1] < n_nodes:
        counts.append(n_nodes)
    return counts


def select_nodes(
    fleet: Iterable[Mapping[str, Any]],
    group: str,
    *,
    names: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    include_offline: bool = False,
    silent_after_s: float = SILENT_AFTER_S,
    now: float | None = None,
) -> tuple[list[str], list[str]]:
    """The nodes of the registry (``HubDatabase.fleet()`` rows) whose birth has ``group``, whose
    name matches one of ``names`` (shell patterns; none: every name) and that carry every label
    of ``labels``. Returns ``(selected, skipped_offline)``, each sorted by name.

    A node is left out (``skipped_offline``) unless its presence
    (:func:`~edge_agent_host.fleet.presence.presence`, ``silent_after_s``) is ``online``: offline,
    silent (its state says online but nothing live came from it, as from a revoked node) or
    unknown; ``include_offline`` keeps them all."""
    chosen: list[str] = []
    offline: list[str] = []
    for row in fleet:
        birth = row.get("birth") or {}
        if group not in (birth.get("groups") or {}):
            continue
        node = str(row["node"])
        if names and not any(fnmatch.fnmatchcase(node, p) for p in names):
            continue
        have = birth.get("labels") or {}
        if labels and any(have.get(k) != v for k, v in labels.items()):
            continue
        if not include_offline and presence(row, silent_after_s, now) != "online":
            offline.append(node)
            continue
        chosen.append(node)
    return sorted(chosen), sorted(offline)


def not_trusting(
    fleet: Iterable[Mapping[str, Any]], nodes: Iterable[str], key_id: str
) -> dict[str, list[str]]:
    """Of ``nodes``, those whose birth says which bundle keys they trust (``bundle_keys``) and
    not ``key_id``: ``{node: the key ids it trusts}``. A node whose birth does not say (of an
    earlier version) is not among them: its deployment's answer will say."""
    wanted = set(nodes)
    out: dict[str, list[str]] = {}
    for row in fleet:
        node = str(row["node"])
        trusted = (row.get("birth") or {}).get("bundle_keys")
        if node in wanted and trusted is not None and key_id not in trusted:
            out[node] = [str(k) for k in trusted]
    return out


def untrusted_line(out: Mapping[str, list[str]], key_id: str, where: str) -> str:
    """One line for :func:`not_trusting`'s nodes: who, what they trust, what to do; ``where``
    names the key (``"bundle key K"``, ``"the learning key K ([learning] key_file = F)"``)."""
    names = sorted(out)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    trusted = sorted({k for keys in out.values() for k in keys})
    theirs = ", ".join(trusted[:5]) if trusted else "none"
    return (
        f"{len(names)} node(s) ({shown}) do not trust {where}: put its .pub in their [daemon] "
        f"trusted_keys_dir (their births say they trust {theirs}; key {key_id})"
    )


def wave_of(index: int, waves: Sequence[int]) -> int:
    """The wave (0-based) of the ``index``-th node of a rollout."""
    for w, count in enumerate(waves):
        if index < count:
            return w
    raise FleetError(f"node {index} is beyond the last wave ({waves[-1]} nodes)")
