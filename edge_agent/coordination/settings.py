"""The settings models of the coordination layer, apart from the engines that use them, so
that validating a config (``coordination.config``) imports no engine."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.coordination.fusion import WIRE_RANGE_NATS

__all__ = ["AuctionSettings", "CoordinationSettings", "SharingSettings"]


class AuctionSettings(BaseModel):
    """Task allocation settings of a node (the same on every node of a fleet)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(
        1.0,
        gt=0.0,
        le=3600.0,
        description="Bidding window, from when this node first saw a task's epoch.",
    )
    min_bids_per_task: int = Field(
        4, ge=1, le=4096, description="Fewest agents a group bids per task (when it has them)."
    )
    max_bids_per_task: int = Field(
        64, ge=1, le=4096, description="Most agents a group bids per task in one round."
    )
    preference_scale: float = Field(
        1.0, gt=0.0, le=100.0, description="Nats of preference per transition towards a goal."
    )
    done_belief: float | None = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="A holder is done when q(goal state) reaches this; None: only when the "
        "application says so (CoordinationEngine.complete).",
    )
    state_every_s: float = Field(
        1.0, gt=0.0, le=3600.0, description="Period of task_state (digest and claims) messages."
    )
    state_min_interval_s: float = Field(
        0.2, ge=0.0, le=3600.0, description="Least time between two task_state messages."
    )
    sync_after_s: float = Field(
        3.0,
        gt=0.0,
        le=3600.0,
        description="Send a sync when a peer's digest matched none of ours for this long.",
    )
    sync_min_interval_s: float = Field(
        2.0, ge=0.0, le=3600.0, description="Least time between two syncs sent."
    )
    max_held_per_group: int = Field(
        256, ge=1, le=1 << 20, description="Tasks one group's agents can hold at once."
    )
    outbox_class: str = Field(
        "event", min_length=1, max_length=64, description="Outbox class of task messages."
    )
    max_tasks: int = Field(4096, ge=1, le=1 << 20, description="Tasks in the ledger.")
    max_bids: int = Field(1 << 17, ge=1, le=1 << 24, description="Bids in the ledger.")


class SharingSettings(BaseModel):
    """How a group shares beliefs over its shared factors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factors: tuple[int, ...] = Field(
        min_length=1, max_length=16, description="Indices of the hidden-state factors shared."
    )
    every_ticks: int = Field(
        1, ge=1, le=100_000, description="An agent publishes at most once every this many ticks."
    )
    min_evidence_nats: float = Field(
        0.25,
        ge=0.0,
        le=WIRE_RANGE_NATS,
        description="Publish only evidence that shifts some log-odds by at least this much.",
    )
    trust: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Weight w of a peer's evidence (1: independent sensors, exact Bayes).",
    )
    bound_nats: float = Field(
        4.0,
        gt=0.0,
        le=WIRE_RANGE_NATS,
        description="One peer moves any log-odds by at most trust * bound_nats per fusion.",
    )
    tau_s: float = Field(10.0, gt=0.0, le=1e6, description="Age decay: weight exp(-age / tau_s).")
    max_age_s: float = Field(
        30.0, gt=0.0, le=1e6, description="Messages older than this are dropped."
    )
    max_peers: int = Field(16, ge=1, le=1024, description="Peer nodes kept (table slots).")
    bytes_per_agent_s: float = Field(
        64.0, gt=0.0, le=1e6, description="Sending budget per agent: bytes per second."
    )
    burst_s: float = Field(
        2.0, gt=0.0, le=3600.0, description="Token bucket capacity, in seconds of budget."
    )
    max_rows_per_message: int = Field(
        4096, ge=1, le=65_536, description="Rows per BeliefBatch; more rows go in more messages."
    )
    qos: Literal[0, 1] = Field(0, description="MQTT QoS of belief messages.")


class CoordinationSettings(BaseModel):
    """Settings of a node's coordination engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auction: AuctionSettings = Field(default_factory=AuctionSettings)
    max_inbox: int = Field(
        4096, ge=1, le=1 << 20, description="Coordination messages queued between ticks."
    )
    max_messages_per_tick: int = Field(
        1024, ge=1, le=1 << 20, description="Queued messages merged per tick (the rest wait)."
    )
    tick_period_s: float = Field(
        0.1, gt=0.0, le=3600.0, description="The node's tick period (age of belief messages)."
    )
    max_peers: int = Field(4096, ge=1, le=1 << 20, description="Peer nodes tracked.")
