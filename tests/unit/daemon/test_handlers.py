"""The learning commands' handlers on a daemon stand-in holding real groups:
one group or every learning group, refusals with their code and reason, a snapshot per change,
the result's data flat (the protocol has no nested maps). The commands through a real daemon and
broker: tests/integration/fleet/test_learning_commands.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from edge_agent.aif.learning import LearningSpec
from edge_agent.core.agents import AifAgentGroup
from edge_agent.daemon.handlers import CommandHandlers
from edge_agent.fleet.commands import ARG_MODELS, LearningArgs, parse_args
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import CommandResult
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model


@dataclass
class Group:
    """What the handlers read of a group: its name and its learning (GroupRuntime's)."""

    name: str
    agents: Any

    @property
    def learning(self) -> Any:
        return self.agents.learning


@dataclass
class Switch:
    watching: str | None = None
    shadowing: str | None = None


@dataclass
class Daemon:
    groups: list[Group]
    ab_switch: Switch = field(default_factory=Switch)
    snapshots: int = 0

    def find_group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    def snapshot(self, *, force: bool = False) -> None:
        assert force
        self.snapshots += 1


def daemon(*learning: str, plain: str = "doors") -> Daemon:
    model = tmaze_reversal_model()
    groups = [Group(plain, AifAgentGroup(model, 2))]
    for name, kinds in zip(learning, ("A", "AB"), strict=False):
        spec = LearningSpec(
            pA={1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)},
            pB={0: model.B[0] * 4.0 + 0.5 * (model.B[0] > 0)} if "B" in kinds else {},
        )
        groups.append(Group(name, AifAgentGroup(model, 2, learning=spec)))
    return Daemon(groups)


def call(d: Daemon, command: str, **args: str) -> Any:
    handlers = CommandHandlers(d)  # type: ignore[arg-type]
    return handlers.table()[command](parse_args(command, args), None)  # type: ignore[arg-type]


def test_the_commands_have_a_group_argument_that_may_be_left_out() -> None:
    for name in ("learning_freeze", "learning_resume", "learning_reset"):
        assert ARG_MODELS[name] is LearningArgs
        assert parse_args(name, {}) == LearningArgs()
        assert parse_args(name, {"group": "maze"}) == LearningArgs(group="maze")


def test_every_learning_group_when_none_is_named_and_the_data_is_flat() -> None:
    d = daemon("maze", "grid")
    out = call(d, "learning_freeze")
    assert out.code is ResultCode.OK
    assert out.detail == ("group 'maze': learning frozen; group 'grid': learning frozen")
    assert out.data == {
        "groups": ["maze", "grid"], "frozen": [True, True],
        "version_pA": [0, 0], "reset_at_pA": [0, 0],
        "version_pB": [None, 0], "reset_at_pB": [None, 0],
    }
    # What the node publishes: the protocol takes it as it is.
    result = CommandResult(nonce=bytes(16), name="learning_freeze", code=out.code,
                           detail=out.detail, data=out.data)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(result), type=CommandResult) == result
    assert d.snapshots == 1
    again = call(d, "learning_freeze", group="grid")
    assert again.detail == "group 'grid': learning already frozen"
    reset = call(d, "learning_reset", group="maze")
    assert reset.detail == "group 'maze': counts back to the priors (frozen)"
    assert reset.data["version_pA"] == [1]
    assert reset.data["reset_at_pA"] == [1]
    resumed = call(d, "learning_resume")
    assert resumed.data["frozen"] == [False, False]
    assert call(d, "learning_resume", group="maze").detail == (
        "group 'maze': learning was not frozen"
    )
    assert d.snapshots == 5
    maze = d.find_group("maze")
    assert maze is not None
    counts = maze.agents.learning.learner.pA
    assert np.array_equal(counts.counts[0], counts.prior[0])


def test_refusals_say_why() -> None:
    d = daemon("maze")
    cases = [
        (call(d, "learning_reset", group="doors"), ResultCode.BAD_ARGS,
         "group 'doors' does not learn (it has no [groups.learning] table)"),
        (call(d, "learning_reset", group="hall"), ResultCode.BAD_ARGS,
         "no group 'hall' (groups: doors, maze)"),
        (call(daemon(), "learning_freeze"), ResultCode.BAD_ARGS, "no group on this node learns"),
    ]
    d.ab_switch.watching = "maze"
    cases += [
        (call(d, "learning_reset"), ResultCode.BUSY,
         "group 'maze' is being watched after a deployment"),
        (call(d, "learning_reset", group="maze"), ResultCode.BUSY,
         "group 'maze' is being watched after a deployment"),
    ]
    d.ab_switch.watching, d.ab_switch.shadowing = None, "maze"
    cases.append((call(d, "learning_reset", group="maze"), ResultCode.BUSY,
                  "group 'maze' runs a deployment's shadow"))
    for outcome, code, detail in cases:
        assert (outcome.code, outcome.detail) == (code, detail)
    assert d.snapshots == 0
