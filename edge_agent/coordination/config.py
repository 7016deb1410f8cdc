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

Everything here is a :class:`~edge_agent.records.Record` (as are the engine's own settings):
unknown keys are errors, instances are frozen, every field is described and bounded.
``docs/configuration.md`` lists the keys; ``docs/coordination.md`` explains them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Annotated, Any, Final

from edge_agent.coordination.settings import AuctionSettings, CoordinationSettings, SharingSettings
from edge_agent.fleet.names import NAME_PATTERN, UINT32
from edge_agent.records import Check, Record, Rule

__all__ = ["AuctionConfig", "CoordinationConfig", "GroupCoordinationConfig", "coordinates"]

_NAME_RE: Final = re.compile(NAME_PATTERN)
OUTBOX_CLASS: Final = "coordination"
"""The outbox class of task messages in the daemon (``outbox.DEFAULT_POLICIES``)."""


def _known_class(name: str, _context: Mapping[str, Any]) -> str:
    from edge_agent.fleet.outbox import DEFAULT_POLICIES  # noqa: PLC0415 - only when given

    if name not in DEFAULT_POLICIES:
        raise ValueError(
            f"unknown outbox class {name!r}; known: {', '.join(sorted(DEFAULT_POLICIES))}"
        )
    return name


def _capability_names(caps: tuple[str, ...], _context: Mapping[str, Any]) -> tuple[str, ...]:
    for cap in caps:
        if _NAME_RE.fullmatch(cap) is None:
            raise ValueError(
                f"capability {cap!r} must be 1-64 characters of A-Z a-z 0-9 _ . - "
                "starting with a letter or digit"
            )
    if len(set(caps)) != len(caps):
        raise ValueError(f"capabilities repeat a name: {list(caps)}")
    return caps


class AuctionConfig(AuctionSettings):
    """``[coordination.auction]``: :class:`AuctionSettings` as a daemon reads them.

    Two differences: task messages go to the daemon's ``coordination`` outbox class by default,
    and ``complete_at_goal = false`` stands for ``done_belief = None``, which TOML cannot write.
    """

    outbox_class: Annotated[
        str,
        Rule(
            min_length=1,
            max_length=64,
            description="Outbox class of task messages (its TTL and overflow policy).",
        ),
        Check(_known_class),
    ] = OUTBOX_CLASS
    complete_at_goal: Annotated[
        bool,
        Rule(
            description="Release a task as done once its holder believes it reached the goal "
            "(q >= done_belief); false: tasks stay held until their deadline passes."
        ),
    ] = True

    def settings(self) -> AuctionSettings:
        """The engine's :class:`AuctionSettings`."""
        names = {f.name for f in dataclasses.fields(AuctionSettings)}
        data = {name: getattr(self, name) for name in names}
        if not self.complete_at_goal:
            data["done_belief"] = None
        return AuctionSettings(**data)


class CoordinationConfig(Record):
    """``[coordination]``: the node's coordination engine (see ``docs/coordination.md``)."""

    enabled: Annotated[
        bool, Rule(description="Coordinate the groups that have a [groups.coordination] table.")
    ] = True
    auction: Annotated[
        AuctionConfig,
        Rule(description="[coordination.auction]: task allocation; the same on every node."),
    ] = field(default_factory=AuctionConfig)
    max_inbox: Annotated[
        int,
        Rule(
            ge=16,
            le=1 << 20,
            description="Coordination messages queued between ticks; more are dropped and counted.",
        ),
    ] = 4096
    max_messages_per_tick: Annotated[
        int,
        Rule(
            ge=1,
            le=1 << 20,
            description="Queued coordination messages merged per tick (the rest wait a tick).",
        ),
    ] = 1024
    max_peers: Annotated[int, Rule(ge=1, le=1 << 20, description="Peer nodes tracked.")] = 4096

    def settings(self, tick_period_s: float) -> CoordinationSettings:
        """The engine's settings for a node ticking every ``tick_period_s``."""
        return CoordinationSettings(
            auction=self.auction.settings(),
            max_inbox=self.max_inbox,
            max_messages_per_tick=self.max_messages_per_tick,
            tick_period_s=tick_period_s,
            max_peers=self.max_peers,
        )


class GroupCoordinationConfig(Record):
    """``[groups.coordination]``: what one group takes part in."""

    capabilities: Annotated[
        tuple[str, ...],
        Rule(
            max_length=64,
            description="Task capabilities the group bids for (a task names one capability).",
        ),
        Check(_capability_names),
    ] = ()
    sharing: Annotated[
        SharingSettings | None,
        Rule(
            description="[groups.coordination.sharing]: share beliefs about these hidden-state "
            "factors with the groups of the same name on other nodes."
        ),
    ] = None
    channel_offset: Annotated[
        int,
        Rule(
            ge=0,
            lt=UINT32,
            description="Agent i watches shared instance (channel) channel_offset + i; agents with "
            "the same channel on different nodes observe the same thing.",
        ),
    ] = 0

    @property
    def active(self) -> bool:
        """Whether the group takes part in anything (tasks or sharing)."""
        return bool(self.capabilities) or self.sharing is not None


def coordinates(
    coordination: CoordinationConfig | None,
    groups: Iterable[GroupCoordinationConfig | None],
    mqtt_enabled: bool,
) -> bool:
    """Whether a daemon with this config coordinates: ``[mqtt]`` on, ``[coordination]`` not
    disabled, and some group (its coordination table, None without one) taking part in tasks or
    sharing. From the config alone, so that a daemon that does not coordinate never imports the
    engine (:mod:`edge_agent.coordination.runtime` and what it imports: 2.2 MB resident)."""
    enabled = coordination is None or coordination.enabled
    return mqtt_enabled and enabled and any(g is not None and g.active for g in groups)
