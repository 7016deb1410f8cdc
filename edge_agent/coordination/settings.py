"""The settings models of the coordination layer, apart from the engines that use them, so
that validating a config (``coordination.config``) imports no engine."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from edge_agent.coordination.fusion import WIRE_RANGE_NATS
from edge_agent.records import Record, Rule

__all__ = ["AuctionSettings", "CoordinationSettings", "SharingSettings"]


class AuctionSettings(Record):
    """Task allocation settings of a node (the same on every node of a fleet)."""

    window_s: Annotated[
        float,
        Rule(
            gt=0.0,
            le=3600.0,
            description="Bidding window, from when this node first saw a task's epoch.",
        ),
    ] = 1.0
    min_bids_per_task: Annotated[
        int,
        Rule(ge=1, le=4096, description="Fewest agents a group bids per task (when it has them)."),
    ] = 4
    max_bids_per_task: Annotated[
        int, Rule(ge=1, le=4096, description="Most agents a group bids per task in one round.")
    ] = 64
    preference_scale: Annotated[
        float,
        Rule(gt=0.0, le=100.0, description="Nats of preference per transition towards a goal."),
    ] = 1.0
    done_belief: Annotated[
        float | None,
        Rule(
            gt=0.0,
            le=1.0,
            description="A holder is done when q(goal state) reaches this; None: only when the "
            "application says so (CoordinationEngine.complete).",
        ),
    ] = 0.9
    state_every_s: Annotated[
        float,
        Rule(gt=0.0, le=3600.0, description="Period of task_state (digest and claims) messages."),
    ] = 1.0
    state_min_interval_s: Annotated[
        float, Rule(ge=0.0, le=3600.0, description="Least time between two task_state messages.")
    ] = 0.2
    sync_after_s: Annotated[
        float,
        Rule(
            gt=0.0,
            le=3600.0,
            description="Send a sync when a peer's digest matched none of ours for this long.",
        ),
    ] = 3.0
    sync_min_interval_s: Annotated[
        float, Rule(ge=0.0, le=3600.0, description="Least time between two syncs sent.")
    ] = 2.0
    max_held_per_group: Annotated[
        int, Rule(ge=1, le=1 << 20, description="Tasks one group's agents can hold at once.")
    ] = 256
    outbox_class: Annotated[
        str, Rule(min_length=1, max_length=64, description="Outbox class of task messages.")
    ] = "event"
    max_tasks: Annotated[int, Rule(ge=1, le=1 << 20, description="Tasks in the ledger.")] = 4096
    max_bids: Annotated[int, Rule(ge=1, le=1 << 24, description="Bids in the ledger.")] = 1 << 17


class SharingSettings(Record):
    """How a group shares beliefs over its shared factors."""

    factors: Annotated[
        tuple[int, ...],
        Rule(
            min_length=1, max_length=16, description="Indices of the hidden-state factors shared."
        ),
    ]
    every_ticks: Annotated[
        int,
        Rule(
            ge=1, le=100_000, description="An agent publishes at most once every this many ticks."
        ),
    ] = 1
    min_evidence_nats: Annotated[
        float,
        Rule(
            ge=0.0,
            le=WIRE_RANGE_NATS,
            description="Publish only evidence that shifts some log-odds by at least this much.",
        ),
    ] = 0.25
    trust: Annotated[
        float,
        Rule(
            gt=0.0,
            le=1.0,
            description="Weight w of a peer's evidence (1: independent sensors, exact Bayes).",
        ),
    ] = 0.5
    bound_nats: Annotated[
        float,
        Rule(
            gt=0.0,
            le=WIRE_RANGE_NATS,
            description="One peer moves any log-odds by at most trust * bound_nats per fusion.",
        ),
    ] = 4.0
    tau_s: Annotated[
        float, Rule(gt=0.0, le=1e6, description="Age decay: weight exp(-age / tau_s).")
    ] = 10.0
    max_age_s: Annotated[
        float, Rule(gt=0.0, le=1e6, description="Messages older than this are dropped.")
    ] = 30.0
    max_peers: Annotated[int, Rule(ge=1, le=1024, description="Peer nodes kept (table slots).")] = (
        16
    )
    bytes_per_agent_s: Annotated[
        float, Rule(gt=0.0, le=1e6, description="Sending budget per agent: bytes per second.")
    ] = 64.0
    burst_s: Annotated[
        float, Rule(gt=0.0, le=3600.0, description="Token bucket capacity, in seconds of budget.")
    ] = 2.0
    max_rows_per_message: Annotated[
        int,
        Rule(ge=1, le=65_536, description="Rows per BeliefBatch; more rows go in more messages."),
    ] = 4096
    qos: Annotated[Literal[0, 1], Rule(description="MQTT QoS of belief messages.")] = 0


class CoordinationSettings(Record):
    """Settings of a node's coordination engine."""

    auction: AuctionSettings = field(default_factory=AuctionSettings)
    max_inbox: Annotated[
        int, Rule(ge=1, le=1 << 20, description="Coordination messages queued between ticks.")
    ] = 4096
    max_messages_per_tick: Annotated[
        int, Rule(ge=1, le=1 << 20, description="Queued messages merged per tick (the rest wait).")
    ] = 1024
    tick_period_s: Annotated[
        float,
        Rule(gt=0.0, le=3600.0, description="The node's tick period (age of belief messages)."),
    ] = 0.1
    max_peers: Annotated[int, Rule(ge=1, le=1 << 20, description="Peer nodes tracked.")] = 4096
