"""Team tasks on the wire: left out of one-agent messages, refused whole by a node before teams."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
import pytest
from msgspec import Meta

from edge_agent.coordination.messages import (
    MAX_TASKS_PER_MESSAGE,
    MAX_TEAM,
    Release,
    ReleaseStatus,
    Role,
    Slots,
    TaskAnnounce,
    TaskBids,
    TaskSpec,
    announcement_parts,
)
from edge_agent.fleet.protocol import Body, Envelope, Name, WireModel, encode


class SpecBeforeTeams(WireModel, frozen=True, kw_only=True):
    """``TaskSpec`` as a node of the version before teams (1a54e6b) decodes it."""

    task: Name
    epoch: int
    capability: Name
    goal_factor: int = 0
    goal_state: int
    deadline: float = 0.0
    announced_by: Name


class AnnounceBeforeTeams(Body, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "task_announce_before_teams"
    tasks: Annotated[list[SpecBeforeTeams], Meta(min_length=1)]
    sigs: bytes = b""


ONE = TaskSpec(task="t", epoch=0, capability="grid", goal_state=3, announced_by="hub")
TEAM = TaskSpec(
    task="T",
    epoch=0,
    capability="grid",
    goal_state=3,
    announced_by="hub",
    team=2,
    roles=[Role(capability="lift", count=1, goal_state=9)],
)


def body_bytes(body: TaskAnnounce) -> bytes:
    env = Envelope(
        type=body.TYPE, node="hub", seq=1, bdseq=0, ts=1.0, clock_synced=False, body=body
    )
    raw: msgspec.Raw = msgspec.msgpack.decode(encode(env), type=dict[str, msgspec.Raw])["body"]
    return bytes(raw)


def test_a_node_before_teams_refuses_a_team_task_and_takes_a_one_agent_one() -> None:
    old = msgspec.msgpack.Decoder(AnnounceBeforeTeams)
    taken = old.decode(body_bytes(TaskAnnounce(tasks=[ONE], sigs=b"s" * 64)))
    assert taken.tasks[0].goal_state == 3
    with pytest.raises(msgspec.ValidationError, match="unknown field `team`"):
        old.decode(body_bytes(TaskAnnounce(tasks=[ONE, TEAM], sigs=b"s" * 128)))


def test_one_agent_messages_leave_every_team_field_out() -> None:
    assert b"team" not in encode_any(ONE)
    assert b"roles" not in encode_any(ONE)
    bids = TaskBids.from_arrays("g", 1, ["t"], epochs=[0], task_index=[0], agents=[1], costs=[2])
    assert b"holds" not in encode_any(bids)
    rel = Release(task="t", epoch=0, node="n", group="g", agent=1, bdseq=0, bseq=1,
                  status=ReleaseStatus.DONE)  # fmt: skip
    assert b"role" not in encode_any(rel)


def encode_any(model: WireModel) -> bytes:
    return msgspec.msgpack.encode(model)


def test_a_team_spec_lists_its_roles_own_first() -> None:
    assert not ONE.is_team
    assert ONE.size == 1
    assert TEAM.is_team
    assert TEAM.size == 3
    assert TEAM.slots() == (Slots("grid", 0, 3, 2), Slots("lift", 0, 9, 1))
    with pytest.raises(msgspec.ValidationError, match="at most 64"):
        TaskSpec(task="T", epoch=0, capability="c", goal_state=0, announced_by="h",
                 team=MAX_TEAM, roles=[Role(capability="c", count=1, goal_state=0)])  # fmt: skip
    with pytest.raises(msgspec.ValidationError):
        TaskBids.from_arrays("g", 1, ["t"], epochs=[0], task_index=[0], agents=[1], costs=[2],
                             roles=[16], holds=[0])  # fmt: skip


def test_announcements_keep_team_specs_apart() -> None:
    specs = [ONE] * 3 + [TEAM] * 2 + [ONE]
    assert announcement_parts(specs) == [(0, 3), (3, 5), (5, 6)]
    many = [ONE] * (MAX_TASKS_PER_MESSAGE + 1)
    assert announcement_parts(many) == [
        (0, MAX_TASKS_PER_MESSAGE),
        (MAX_TASKS_PER_MESSAGE, MAX_TASKS_PER_MESSAGE + 1),
    ]
