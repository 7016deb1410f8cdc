"""``edge-agent-host tasks``: team specs from the command line, and what ``list`` shows of teams."""

from __future__ import annotations

import argparse

import msgspec
import pytest

from edge_agent.coordination.messages import Claim, TaskState, TeamState
from edge_agent.errors import InputError
from edge_agent_host.fleetctl.tasks import (
    RoleArg,
    TaskView,
    configure,
    format_claims,
    make_specs,
    random_team_specs,
    specs_of,
)

HUB = ["--hub-id", "hub"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args([*HUB, *argv])


def test_team_sizes_and_roles_make_team_specs() -> None:
    args = parse(
        "announce", "--key", "k", "--capability", "carry", "--team", "2",
        "--role", "escort:1", "--role", "scout:2:40", "T1=12",
    )  # fmt: skip
    (spec,) = specs_of(args)
    assert spec.is_team
    assert spec.size == 5
    assert [tuple(s) for s in spec.slots()] == [
        ("carry", 0, 12, 2),
        ("escort", 0, 12, 1),  # the task's own goal when the role gives none
        ("scout", 0, 40, 2),
    ]
    (one,) = specs_of(parse("announce", "--key", "k", "--capability", "grid", "t1=3"))
    assert not one.is_team  # no team field at all: the bytes a node before teams takes
    assert b"team" not in msgspec.msgpack.encode(one)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (("--role", "escort"), "CAPABILITY:COUNT"),
        (("--role", "escort:0"), "CAPABILITY:COUNT"),
        (("--role", "es cort:1"), "CAPABILITY:COUNT"),
        (("--team-sizes", "5-2"), "largest size comes last"),
        (("--team-sizes", "0"), "team sizes as N or LO-HI"),
    ],
)
def test_a_bad_role_or_size_is_refused_with_what_to_write(
    argv: tuple[str, ...], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse("announce", "--key", "k", "--capability", "grid", *argv, "t1=3")
    assert error in capsys.readouterr().err


def test_a_team_past_the_size_limit_is_an_input_error() -> None:
    with pytest.raises(InputError, match="a team of 70 agents, at most 64"):
        make_specs({"T": 1}, capability="c", announced_by="hub", team=60,
                   roles=[RoleArg("c", 10)])  # fmt: skip
    with pytest.raises(InputError, match="at least one agent"):
        specs_of(parse("announce", "--key", "k", "--capability", "grid", "--team", "0", "t=1"))


def test_random_teams_have_the_sizes_and_roles_asked_for() -> None:
    specs = random_team_specs(200, 100, sizes=(2, 5), max_roles=3, seed=1, capability="grid",
                              announced_by="hub")  # fmt: skip
    assert {s.size for s in specs} == {2, 3, 4, 5}
    assert {len(s.slots()) for s in specs} == {1, 2, 3}
    assert all(all(r.agents >= 1 for r in s.slots()) for s in specs)
    again = random_team_specs(200, 100, sizes=(2, 5), max_roles=3, seed=1, capability="grid",
                              announced_by="hub")  # fmt: skip
    assert again == specs  # a seed makes the same teams
    args = parse("announce", "--key", "k", "--capability", "grid", "--count", "4",
                 "--goal-states", "9", "--team-sizes", "3", "--prefix", "x-")  # fmt: skip
    assert [s.size for s in specs_of(args)] == [3, 3, 3, 3]


def state(claims: list[Claim], teams: list[TeamState]) -> TaskState:
    return TaskState(digest=b"d" * 16, open_tasks=2, claims=claims, teams=teams or msgspec.UNSET)


def test_list_shows_each_team_s_members_roles_and_vacant_slots() -> None:
    view = TaskView()
    team = TeamState(task="T", epoch=0, slots=3, filled=2)
    view.take("pi-a", state([Claim(task="T", epoch=0, group="g", agent=1, role=0),
                             Claim(task="s", epoch=0, group="g", agent=2)], [team]))  # fmt: skip
    view.take("pi-b", state([Claim(task="T", epoch=0, group="g", agent=7, role=1)], [team]))
    text = format_claims(view)
    assert (
        "T                            0  pi-a                 g                     1  role 0"
        in text
    )
    assert "role 1" in text
    assert "DUPLICATE" not in text  # two agents on a team of three: no duplicate
    assert "T                            0      3      2    0 1" in text  # one slot vacant
    out = view.to_json()
    assert out["teams"]["T"] == {
        "epoch": 0, "slots": 3, "filled": 2, "done": 0, "vacant": 1,
        "members": [["pi-a", "g", 1, 0, 0], ["pi-b", "g", 7, 0, 1]],
    }  # fmt: skip
    # More agents claim it than it has slots (a partition not healed yet): flagged.
    more = [Claim(task="T", epoch=0, group="g", agent=a, role=0) for a in (3, 4)]
    view.take("pi-c", state(more, [team]))
    assert "DUPLICATE" in format_claims(view)
