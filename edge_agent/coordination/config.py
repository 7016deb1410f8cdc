"""The daemon config of the coordination layer: ``[coordination]`` and ``[groups.coordination]``.

``[coordination]`` (:class:`CoordinationConfig`) holds what is the same for every group of a
node: the auction (``[coordination.auction]``, :class:`AuctionConfig`, which should be the same on
every node of a fleet) and the bounds of the engine's queues. ``[groups.coordination]``
(:class:`GroupCoordinationConfig`) says what one group takes part in: the task capabilities it
bids for, and the hidden-state factors it shares with its peers
(``[groups.coordination.sharing]``, :class:`~edge_agent.coordination.beliefs.SharingSettings`).

A node coordinates when ``[mqtt]`` is enabled and at least one group has a ``coordination`` table
(``[coordination] enabled = false`` turns it off without deleting the tables)::

    [coordination.auction]
    window_s = 0.5

    [[groups]]
    name = "grid"
    ...
    [groups.coordination]
    capabilities = ["grid"]
    [groups.coordination.sharing]
    factors = [0]
    trust = 0.5

Everything here is a :class:`~edge_agent.config.toml_lines.StrictModel` (or the engine's own strict
settings): unknown keys are errors, instances are frozen, every field is described and bounded.
``docs/configuration.md`` lists the keys; ``docs/coordination.md`` explains them.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import Field, field_validator

from edge_agent.coordination.settings import AuctionSettings, CoordinationSettings, SharingSettings
from edge_agent.fleet.names import NAME_PATTERN, UINT32
from edge_agent.strict import StrictModel

__all__ = ["AuctionConfig", "CoordinationConfig", "GroupCoordinationConfig"]

_NAME_RE: Final = re.compile(NAME_PATTERN)
OUTBOX_CLASS: Final = "coordination"
"""The outbox class of task messages in the daemon (``outbox.DEFAULT_POLICIES``)."""


class AuctionConfig(AuctionSettings):
    """``[coordination.auction]``: :class:`AuctionSettings` as a daemon reads them.

    Two differences: task messages go to the daemon's ``coordination`` outbox class by default,
    and ``complete_at_goal = false`` stands for ``done_belief = None``, which TOML cannot write.
    """

    outbox_class: str = Field(
        OUTBOX_CLASS,
        min_length=1,
        max_length=64,
        description="Outbox class of task messages (its TTL and overflow policy).",
    )
    complete_at_goal: bool = Field(
        True,
        description="Release a task as done once its holder believes it reached the goal "
        "(q >= done_belief); false: tasks stay held until their deadline passes.",
    )

    @field_validator("outbox_class")
    @classmethod
    def _known_class(cls, name: str) -> str:
        from edge_agent.fleet.outbox import DEFAULT_POLICIES  # noqa: PLC0415 - only when given

        if name not in DEFAULT_POLICIES:
            raise ValueError(
                f"unknown outbox class {name!r}; known: {', '.join(sorted(DEFAULT_POLICIES))}"
            )
        return name

    def settings(self) -> AuctionSettings:
        """The engine's :class:`AuctionSettings`."""
        data = self.model_dump(exclude={"complete_at_goal"})
        if not self.complete_at_goal:
            data["done_belief"] = None
        return AuctionSettings(**data)


class CoordinationConfig(StrictModel):
    """``[coordination]``: the node's coordination engine (see ``docs/coordination.md``)."""

    enabled: bool = Field(
        True, description="Coordinate the groups that have a [groups.coordination] table."
    )
    auction: AuctionConfig = Field(
        default_factory=AuctionConfig,
        description="[coordination.auction]: task allocation; the same on every node.",
    )
    max_inbox: int = Field(
        4096,
        ge=16,
        le=1 << 20,
        description="Coordination messages queued between ticks; more are dropped and counted.",
    )
    max_messages_per_tick: int = Field(
        1024,
        ge=1,
        le=1 << 20,
        description="Queued coordination messages merged per tick (the rest wait a tick).",
    )
    max_peers: int = Field(4096, ge=1, le=1 << 20, description="Peer nodes tracked.")

    def settings(self, tick_period_s: float) -> CoordinationSettings:
        """The engine's settings for a node ticking every ``tick_period_s``."""
        return CoordinationSettings(
            auction=self.auction.settings(),
            max_inbox=self.max_inbox,
            max_messages_per_tick=self.max_messages_per_tick,
            tick_period_s=tick_period_s,
            max_peers=self.max_peers,
        )


class GroupCoordinationConfig(StrictModel):
    """``[groups.coordination]``: what one group takes part in."""

    capabilities: tuple[str, ...] = Field(
        (),
        max_length=64,
        description="Task capabilities the group bids for (a task names one capability).",
    )
    sharing: SharingSettings | None = Field(
        None,
        description="[groups.coordination.sharing]: share beliefs about these hidden-state "
        "factors with the groups of the same name on other nodes.",
    )
    channel_offset: int = Field(
        0,
        ge=0,
        lt=UINT32,
        description="Agent i watches shared instance (channel) channel_offset + i; agents with "
        "the same channel on different nodes observe the same thing.",
    )

    @field_validator("capabilities")
    @classmethod
    def _names(cls, caps: tuple[str, ...]) -> tuple[str, ...]:
        for cap in caps:
            if _NAME_RE.fullmatch(cap) is None:
                raise ValueError(
                    f"capability {cap!r} must be 1-64 characters of A-Z a-z 0-9 _ . - "
                    "starting with a letter or digit"
                )
        if len(set(caps)) != len(caps):
            raise ValueError(f"capabilities repeat a name: {list(caps)}")
        return caps

    @property
    def active(self) -> bool:
        """Whether the group takes part in anything (tasks or sharing)."""
        return bool(self.capabilities) or self.sharing is not None
