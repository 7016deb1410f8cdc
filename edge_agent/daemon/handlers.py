"""Hub commands: the whole handler table in one class (Frigate's ``dispatcher.py`` shape).

:class:`~edge_agent.fleet.commands.CommandProcessor` verifies a signed command (signature, target,
expiry, nonce) and calls the handler registered under its name with the validated arguments;
every handler returns an :class:`~edge_agent.fleet.commands.Outcome`. Handlers act on the
daemon only through :class:`DaemonControl`, the small protocol the daemon implements, so this
module never imports the service module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge_agent.config.profiles import FirmwareProfile
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.daemon.scheduler import TickClock, TickStats
from edge_agent.fleet.commands import (
    ChunkArgs,
    DeployArgs,
    GroupArgs,
    LearningArgs,
    Outcome,
    ResizeArgs,
    TickRateArgs,
)
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import Command

logger = logging.getLogger(__name__)


class DeploymentControl(Protocol):
    """What hub commands may ask of the node's deployment (its one owner, the A/B switch)."""

    @property
    def watching(self) -> str | None: ...

    @property
    def shadowing(self) -> str | None: ...

    def start(self, args: DeployArgs, nonce: bytes) -> Outcome: ...

    def chunk(self, args: ChunkArgs) -> Outcome: ...


class DaemonControl(Protocol):
    """What hub commands may read and do on the running daemon (between two ticks)."""

    groups: list[GroupRuntime]
    profile: FirmwareProfile
    stats: TickStats
    clock: TickClock
    started_mono: float
    base_hz: float
    last_snapshot: dict[str, Any] | None

    @property
    def ab_switch(self) -> DeploymentControl: ...

    @property
    def total_agents(self) -> int: ...

    def find_group(self, name: str) -> GroupRuntime | None: ...

    def snapshot(self, *, force: bool = False) -> None: ...

    def rebirth(self) -> None: ...

    def set_base_rate(self, hz: float) -> None: ...


class CommandHandlers:
    """One method per hub command; :meth:`table` is what the command processor dispatches on."""

    def __init__(self, daemon: DaemonControl) -> None:
        self.daemon = daemon

    def table(self) -> dict[str, Callable[[Any, Command], Outcome]]:
        return {
            "ping": self.ping,
            "snapshot": self.snapshot,
            "rebirth": self.rebirth,
            "start_group": self.start_group,
            "stop_group": self.stop_group,
            "resize_group": self.resize_group,
            "learning_freeze": self.learning_freeze,
            "learning_resume": self.learning_resume,
            "learning_reset": self.learning_reset,
            "set_tick_rate": self.set_tick_rate,
            "deploy": self.deploy,
            "deploy_chunk": self.deploy_chunk,
        }

    def _group(self, name: str) -> GroupRuntime | Outcome:
        g = self.daemon.find_group(name)
        if g is None:
            known = ", ".join(x.name for x in self.daemon.groups)
            return Outcome(ResultCode.BAD_ARGS, f"no group {name!r} (groups: {known})")
        if g.name == self.daemon.ab_switch.watching:
            return Outcome(ResultCode.BUSY, f"group {name!r} is being watched after a deployment")
        if g.name == self.daemon.ab_switch.shadowing:
            return Outcome(ResultCode.BUSY, f"group {name!r} runs a deployment's shadow")
        return g

    def ping(self, _args: Any, _cmd: Command) -> Outcome:
        return Outcome(
            ResultCode.OK,
            "pong",
            {
                "uptime_s": round(time.monotonic() - self.daemon.started_mono, 3),
                "ticks": self.daemon.stats.ticks,
            },
        )

    def snapshot(self, _args: Any, _cmd: Command) -> Outcome:
        before = self.daemon.last_snapshot
        self.daemon.snapshot(force=True)
        after = self.daemon.last_snapshot
        if after is None or after is before:
            return Outcome(ResultCode.FAILED, "snapshot not written; see the events")
        return Outcome(
            ResultCode.OK, after["path"], {"path": after["path"], "bytes": after["bytes"]}
        )

    def rebirth(self, _args: Any, _cmd: Command) -> Outcome:
        self.daemon.rebirth()
        return Outcome(ResultCode.OK, "birth published again")

    def stop_group(self, args: GroupArgs, _cmd: Command) -> Outcome:
        g = self._group(args.group)
        if isinstance(g, Outcome):
            return g
        if not g.pause("command"):
            return Outcome(ResultCode.OK, f"group {g.name!r} already paused ({g.paused_reason})")
        logger.info("group %s stopped by a hub command", g.name)
        return Outcome(ResultCode.OK, f"group {g.name!r} stopped")

    def start_group(self, args: GroupArgs, _cmd: Command) -> Outcome:
        g = self._group(args.group)
        if isinstance(g, Outcome):
            return g
        if not g.paused:
            return Outcome(ResultCode.OK, f"group {g.name!r} already running")
        if not g.resume("command"):
            return Outcome(
                ResultCode.FAILED,
                f"group {g.name!r} was paused by {g.paused_reason} degradation and resumes by "
                "itself",
            )
        logger.info("group %s started by a hub command", g.name)
        return Outcome(ResultCode.OK, f"group {g.name!r} started")

    def resize_group(self, args: ResizeArgs, _cmd: Command) -> Outcome:
        g = self._group(args.group)
        if isinstance(g, Outcome):
            return g
        n = args.agents
        profile = self.daemon.profile
        total = self.daemon.total_agents - g.n_agents + n
        if total > profile.max_agents:
            return Outcome(
                ResultCode.FAILED,
                f"{total} agents in all would exceed max_agents {profile.max_agents} of "
                f"profile {profile.name!r}",
            )
        old = g.n_agents
        g.resize(n)  # reserves first: BudgetError leaves the group as it was
        self.daemon.rebirth()
        logger.info("group %s resized from %d to %d agents by a hub command", g.name, old, n)
        return Outcome(ResultCode.OK, f"group {g.name!r}: {old} -> {n} agents", {"agents": n})

    def set_tick_rate(self, args: TickRateArgs, _cmd: Command) -> Outcome:
        factor = self.daemon.profile.thermal.throttled_tick_factor
        slowest = 1.0 / (args.hz * factor)
        if slowest * 2 > self.daemon.profile.watchdog_interval_s:
            return Outcome(
                ResultCode.BAD_ARGS,
                f"{args.hz:g} Hz is too slow for the {self.daemon.profile.watchdog_interval_s:g} s "
                f"watchdog (a throttled tick takes {slowest:g} s)",
            )
        old = self.daemon.base_hz
        self.daemon.set_base_rate(args.hz)
        self.daemon.rebirth()  # the birth says the rate: what a hub bounds its deltas by
        logger.info("tick rate %.3g -> %.3g Hz by a hub command", old, args.hz)
        return Outcome(ResultCode.OK, f"{old:g} -> {args.hz:g} Hz", {"hz": self.daemon.clock.hz})

    def deploy(self, args: DeployArgs, cmd: Command) -> Outcome:
        return self.daemon.ab_switch.start(args, cmd.nonce)

    def deploy_chunk(self, args: ChunkArgs, _cmd: Command) -> Outcome:
        return self.daemon.ab_switch.chunk(args)

    # -- learning ---------------------------------------------------------------------------------
    def _learning_groups(self, args: LearningArgs) -> list[GroupRuntime] | Outcome:
        """The group named (refused when it does not learn), or every group that learns."""
        if args.group is not None:
            g = self._group(args.group)
            if isinstance(g, Outcome):
                return g
            if g.learning is None:
                return Outcome(
                    ResultCode.BAD_ARGS,
                    f"group {g.name!r} does not learn (it has no [groups.learning] table)",
                )
            return [g]
        groups = [g for g in self.daemon.groups if g.learning is not None]
        if not groups:
            return Outcome(ResultCode.BAD_ARGS, "no group on this node learns")
        watched = self.daemon.ab_switch.watching
        if any(g.name == watched for g in groups):
            return Outcome(
                ResultCode.BUSY, f"group {watched!r} is being watched after a deployment"
            )
        return groups

    def _on_learning(
        self, args: LearningArgs, verb: str, act: Callable[[GroupRuntime], str]
    ) -> Outcome:
        """``act`` on each group of ``args`` (its words for the detail), then a snapshot, so
        that a crash cannot undo the change; the result's data is the groups' learning
        (:func:`_learning_data`)."""
        groups = self._learning_groups(args)
        if isinstance(groups, Outcome):
            return groups
        said = [act(g) for g in groups]
        for g in groups:
            logger.info("group %s: learning %s by a hub command", g.name, verb)
        self.daemon.snapshot(force=True)
        return Outcome(ResultCode.OK, "; ".join(said), _learning_data(groups))

    def learning_freeze(self, args: LearningArgs, _cmd: Command) -> Outcome:
        def act(g: GroupRuntime) -> str:
            assert g.learning is not None
            done = g.learning.freeze()
            return f"group {g.name!r}: learning {'frozen' if done else 'already frozen'}"

        return self._on_learning(args, "frozen", act)

    def learning_resume(self, args: LearningArgs, _cmd: Command) -> Outcome:
        def act(g: GroupRuntime) -> str:
            assert g.learning is not None
            done = g.learning.resume()
            return f"group {g.name!r}: learning {'resumed' if done else 'was not frozen'}"

        return self._on_learning(args, "resumed", act)

    def learning_reset(self, args: LearningArgs, _cmd: Command) -> Outcome:
        def act(g: GroupRuntime) -> str:
            assert g.learning is not None
            g.learning.forget()
            state = "frozen" if g.learning.frozen else "learning"
            return f"group {g.name!r}: counts back to the priors ({state})"

        return self._on_learning(args, "reset", act)


def _learning_data(groups: list[GroupRuntime]) -> dict[str, Any]:
    """A learning command's result data, flat (the protocol's values are scalars or lists):
    ``groups`` (names), ``frozen`` and, per kind of counts any of them learns, ``version_pA``
    and ``reset_at_pA`` ..., one entry per group in that order (None: the group does not learn
    that kind)."""
    states = [g.learning.summary() for g in groups if g.learning is not None]
    data: dict[str, Any] = {
        "groups": [g.name for g in groups],
        "frozen": [bool(state["frozen"]) for state in states],
    }
    for kind in ("pA", "pB", "pD"):
        if any(kind in state["counts"] for state in states):
            for field in ("version", "reset_at"):
                data[f"{field}_{kind}"] = [
                    state["counts"][kind][field] if kind in state["counts"] else None
                    for state in states
                ]
    return data
