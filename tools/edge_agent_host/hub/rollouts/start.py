"""A rollout started from ``rollout start``'s options
(:mod:`edge_agent_host.hub.config.rollout_options`): the nodes it selects, its waves and criteria,
checked against what the hub's database knows, and stored with its bundles for the service's runner
(``rollouts.runner.RolloutRunner``) to carry out. ``rollout start``, ``learn publish`` and the
learning policy's rounds (``[learning] publish``) start rollouts here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.gates.criteria import parse_criteria
from edge_agent_host.hub.gates.health import check_reported
from edge_agent_host.hub.rollouts.plan import (
    Criteria,
    RolloutPlan,
    not_trusting,
    plan_waves,
    select_nodes,
    untrusted_line,
)
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase

__all__ = ["parse_labels", "store_rollout"]


def parse_labels(items: list[str]) -> dict[str, str]:
    """``--label K=V`` items as a mapping (FleetError, one line, for one without ``=``)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FleetError(f"--label {item!r}: KEY=VALUE")
        out[key] = value
    return out


def store_rollout(
    db: HubDatabase,
    args: argparse.Namespace,
    plan: DeployPlan,
    *,
    rollback: DeployPlan | None = None,
    silent_after_s: float,
    on_stored: Callable[[HubDatabase, str], None] | None = None,
) -> dict[str, Any]:
    """The rollout of ``plan`` (``rollback``: of ``--rollback-bundle``) the options of
    :func:`add_start_options` in ``args`` say, stored in ``db`` with its bundles (not with
    ``args.dry_run``): its summary, with ``id`` when stored. FleetError or CriterionError (one
    line) when it cannot be started: no node selected, a criterion no node reports, or nodes
    whose births say they do not trust the key that signed the bundle (their canary would
    refuse it: ``verify: bundle signed by untrusted key``)."""
    health, shadow = parse_criteria(args.criterion, args.shadow_s)
    store = RolloutStore(db)
    labels = parse_labels(args.label)
    fleet = db.fleet()
    nodes, offline = select_nodes(
        fleet,
        args.group,
        names=args.node,
        labels=labels,
        include_offline=args.include_offline,
        silent_after_s=silent_after_s,
    )
    if not nodes:
        raise FleetError(
            f"no {'' if args.include_offline else 'online '}node runs group {args.group!r}"
            + (f" with {labels}" if labels else "")
            + (f" matching {args.node}" if args.node else "")
            + (f" ({len(offline)} offline or silent)" if offline else "")
        )
    if plan.key_id and (refusing := not_trusting(fleet, nodes, plan.key_id)):
        where = f"bundle key {plan.key_id}, which signed {plan.name} {plan.version}"
        raise FleetError(untrusted_line(refusing, plan.key_id, where))
    if health:
        check_reported(health, args.group, db.health_reported())
    waves = plan_waves(
        len(nodes),
        args.waves.split(",") if args.exponential is None else None,
        exponential=args.exponential,
    )
    rollout = RolloutPlan(
        group=args.group,
        bundle_sha256=plan.sha256,
        bundle_name=plan.name,
        bundle_version=plan.version,
        waves=waves,
        soak_s=args.soak,
        criteria=Criteria(
            max_failed_pct=args.max_failed_pct,
            max_error_events_pct=args.max_error_events_pct,
            max_tick_p99_ratio=args.max_tick_p99_ratio,
            baseline_s=args.baseline,
            health=health,
            shadow=shadow,
        ),
        rollback_sha256=rollback.sha256 if rollback is not None else None,
        chunk_size=args.chunk_size,
        rate_chunks_s=args.rate,
        deploy_timeout_s=args.deploy_timeout,
        watch_ticks=args.watch_ticks,
        health_steps=args.health_steps,
        shadow_s=args.shadow_s,
        selector={"nodes": args.node, "labels": labels, "skipped_offline": offline},
    )
    summary: dict[str, Any] = {
        "group": args.group,
        "bundle_sha256": plan.sha256,
        "nodes": nodes,
        "waves": waves,
        "skipped_offline": offline,
        "criteria": [c.text() for c in shadow] + [c.text() for c in health],
    }
    if args.shadow_s > 0.0:
        summary["shadow_s"] = args.shadow_s
    if args.dry_run:
        return summary
    store.put_bundle(plan.data, plan.sha256, plan.name, plan.version)
    if rollback is not None:
        store.put_bundle(rollback.data, rollback.sha256, rollback.name, rollback.version)
    summary["id"] = store.create(rollout, nodes)
    if on_stored is not None:
        on_stored(db, summary["id"])
    return summary
