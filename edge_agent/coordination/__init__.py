"""Coordination between agents on different nodes: belief sharing and task allocation.

* :mod:`~edge_agent.coordination.fusion` -- pure kernels: the wire code of likelihood messages
  and the fusion rule (a tempered product of experts, bounded per peer).
* :mod:`~edge_agent.coordination.beliefs` -- :class:`BeliefSharer`: which agents publish, token
  buckets, the peer table, fusing into a group's prior.
* task allocation, from the maths up: :mod:`~edge_agent.coordination.utility` (task utilities
  and batched EFE bid costs), :mod:`~edge_agent.coordination.preferences` (per-agent task
  preferences), :mod:`~edge_agent.coordination.ledger` (the award rule and the replicated
  ledger), :mod:`~edge_agent.coordination.auction` (one node's auction bookkeeping).
* :mod:`~edge_agent.coordination.messages` -- the task messages on the ``tasks`` topic.
* :mod:`~edge_agent.coordination.engine` -- :class:`CoordinationEngine`, one node's layer
  between its groups and its :class:`~edge_agent.fleet.link.FleetLink`;
  :mod:`~edge_agent.coordination.coordinated_group` -- a coordinated group as it sees it.
* :mod:`~edge_agent.coordination.config` -- ``[coordination]`` and ``[groups.coordination]`` of
  the daemon config.
* :mod:`~edge_agent.coordination.runtime` -- ``CoordinationRuntime``: the engine in the daemon
  (groups that change, memory, status, telemetry).

``docs/coordination.md`` derives the fusion rule and specifies the protocol.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names resolved on first use (PEP 562): validating a config imports coordination.config and
# coordination.settings only, never the engines a daemon without [coordination] does not run.
_WHERE = {
    "AuctionSettings": "settings",
    "Auctioneer": "auction",
    "BeliefSharer": "beliefs",
    "Bid": "ledger",
    "CoordinatedGroup": "coordinated_group",
    "CoordinationEngine": "engine",
    "CoordinationSettings": "settings",
    "ReleaseStatus": "messages",
    "SharingSettings": "settings",
    "TaskAnnounce": "messages",
    "TaskBids": "messages",
    "TaskBoard": "ledger",
    "TaskPreferences": "preferences",
    "TaskRelease": "messages",
    "TaskSpec": "messages",
    "TaskState": "messages",
    "TaskSync": "messages",
    "award": "ledger",
    "task_costs": "utility",
    "task_utility": "utility",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "AuctionSettings",
    "Auctioneer",
    "BeliefSharer",
    "Bid",
    "CoordinatedGroup",
    "CoordinationEngine",
    "CoordinationSettings",
    "ReleaseStatus",
    "SharingSettings",
    "TaskAnnounce",
    "TaskBids",
    "TaskBoard",
    "TaskPreferences",
    "TaskRelease",
    "TaskSpec",
    "TaskState",
    "TaskSync",
    "award",
    "task_costs",
    "task_utility",
]
