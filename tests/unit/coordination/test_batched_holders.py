"""A message's holder ids made in one batch, a table's new rows' seqs in one call (issue 55,
the twelfth pass): the ledger a merge leaves is, to the bit, the one the one-agent-at-a-time
holders left (``tests/support/
old_merge.py``, main's code before the batch), on random instances of many seeds -- cost ties,
duplicate and stale messages, a peer's bids replaced, consumed agents, dead sessions, a full
board -- and on a formation of real engines on the in-memory broker. And a message's tasks
merged and admitted as arrays, its new rows hashed with it (the fourteenth pass): the ledger
and the admission main's add_bids and admit_bids left (``main_merge``), to the bit. And a table's
hash kept through its rows' replacements and drops, the team award's rows made as arrays (the
fifteenth pass): the ledger, award, teams and digest main's after the fourteenth pass left
(``main14_merge``), to the bit. And every task's bids in one set of columns, each row's digest
hash and tie-break made when it comes (the sixteenth pass): the ledger, award, teams, digest
and holds main's before it left (``tests/support/main15``, a bid table a task), to the bit;
the older oracles above are patches of that copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import numpy as np
import pytest

from edge_agent.coordination.ledger import Bid, TaskBoard
from edge_agent.coordination.messages import Release, ReleaseStatus, Role, TaskBids, TaskSpec
from edge_agent.coordination.relay_admission import RelayAdmission
from edge_agent.coordination.signing import PeerKeys
from tests.support.main15 import bid_table
from tests.support.main15.ledger import TaskBoard as MainBoard
from tests.support.old_merge import main14_merge, main15_merge, main_merge, old_merge
from tests.unit.coordination.test_board_state import scratch_total

T = TypeVar("T")

TASKS = ["T", "U", "V", "s", "r"]
"""T, U, V team tasks, s and r one-agent tasks."""


PROBES = [Bid(t, 0, n, g, a, 1.0, 1, 3, r, False)
          for t in TASKS for n in ("n0", "n1", "x") for g in ("g", "h")
          for a in (0, 2, 11, 1 << 63, -1) for r in (0, 1)]  # fmt: skip
"""Bids :meth:`TaskBoard.knows` is asked about (agents of every holder map, and none)."""


BY_ALL = [["n0"], ["n1", "n0"], ["n1", "n2", "n3"], ["n0", "n1", "n2", "n3"]]
"""The nodes :meth:`TaskBoard.bid_by_all` is asked about."""


def specs() -> list[TaskSpec]:
    def spec(task: str, team: int | None, roles: list[Role] | None = None) -> TaskSpec:
        return TaskSpec(
            task=task, epoch=0, capability="grid", goal_state=1, announced_by="hub",
            team=team if team is not None else msgspec.UNSET,
            roles=roles if roles is not None else msgspec.UNSET,
        )  # fmt: skip

    return [
        spec("T", 3, [Role(capability="grid", count=1, goal_state=4)]),
        spec("U", 2),
        spec("V", 4, [Role(capability="grid", count=2, goal_state=7)]),
        spec("s", None),
        spec("r", None),
    ]


def state(board: TaskBoard | MainBoard) -> dict[str, object]:
    """Everything the ledger keeps of its holders and bids, and what it computes from them."""
    n = board._n_holders
    columns = (board._holder_node, board._holder_group, board._holder_agent,
               board._holder_consumed, board._holder_hash)  # fmt: skip
    return {
        "holders": n,
        "columns": [c.data[:n].tolist() for c in columns],
        "tables": tables(board),
        "counts": (board.n_bids, board.overflow, board.stale_bids, board.version),
        "floor": (dict(board.floor), dict(board._fact_floor), dict(board.closed)),
        "award": board.award(),
        "teams": board.teams(),
        "digest": board.digest(),
        "refills": board.refills,
        "knows": [board.knows(b) for b in PROBES],
        "by_all": [board.bid_by_all(t, peers) for t in TASKS for peers in BY_ALL],
    }


def tables(board: TaskBoard | MainBoard) -> dict[str, list[list[object]]]:
    """Every task's rows (slot key order), of a task with a slot in the columns or a table."""
    if isinstance(board, MainBoard):
        return {t: [a.tolist() for a in per.arrays()] for t, per in sorted(board.bids.items())}
    return {t: [a.tolist() for a in board.bid_arrays(t)] for t in sorted(board.rows.slot_of)}


def random_ops(seed: int) -> tuple[list[tuple[object, ...]], dict[str, int]]:
    """A random history of one ledger's facts, and the board's bounds."""
    rng = np.random.default_rng(seed)
    nodes = [f"n{i}" for i in range(int(rng.integers(1, 5)))]
    groups = ["g", "h"][: int(rng.integers(1, 3))]
    most_agent = int(rng.choice([3, 12, 60]))
    ops: list[tuple[object, ...]] = []
    sent: list[tuple[object, ...]] = []
    for _ in range(int(rng.integers(5, 40))):
        kind = rng.random()
        if kind < 0.6 or not sent:
            node, group = str(rng.choice(nodes)), str(rng.choice(groups))
            tasks = sorted({str(t) for t in rng.choice(TASKS, int(rng.integers(1, 4)))})
            rows = int(rng.integers(0, 40))
            msg = (
                "bids", node, group, int(rng.integers(0, 3)), int(rng.integers(0, 6)), tasks,
                [int(rng.integers(0, 2)) for _ in tasks],
                rng.integers(0, len(tasks), rows).tolist(),
                rng.integers(0, most_agent, rows).tolist(),  # agents repeat: duplicate slots
                rng.choice([0.0, 0.5, 1.0, 2.0], rows).tolist(),  # ties
                rng.integers(0, 3, rows).tolist(),
                (rng.random(rows) < 0.3).tolist(),
            )  # fmt: skip
            ops.append(msg)
            sent.append(msg)
        elif kind < 0.75:
            ops.append(sent[int(rng.integers(0, len(sent)))])  # a duplicate, maybe stale now
        elif kind < 0.85:
            ops.append(("consumed", str(rng.choice(nodes)), str(rng.choice(groups)),
                        int(rng.integers(0, most_agent)), int(rng.integers(0, 3)),
                        int(rng.integers(0, 8))))  # fmt: skip
        elif kind < 0.92:
            ops.append(("dead", str(rng.choice(nodes)), int(rng.integers(0, 2))))
        else:
            ops.append(("release", str(rng.choice(["T", "U", "V"])), str(rng.choice(nodes)),
                        str(rng.choice(groups)), int(rng.integers(0, most_agent)),
                        int(rng.integers(0, 3)), int(rng.integers(0, 8)),
                        int(rng.integers(0, 2))))  # fmt: skip
    full = rng.random() < 0.3
    bounds = {"max_bids": int(rng.integers(4, 40)), "max_consumed": int(rng.integers(1, 8))}
    return ops, bounds if full else {}


def apply(board: TaskBoard | MainBoard, op: tuple[object, ...]) -> object:
    kind = op[0]
    if kind == "bids":
        _, node, group, bdseq, bseq, tasks, epochs, index, agents, costs, roles, holds = op
        return board.add_bids(
            node, group, bdseq, bseq, tasks, epochs=epochs, task_index=index,  # type: ignore[arg-type]
            agents=agents, costs=costs, roles=roles, holds=holds,  # type: ignore[arg-type]
        )  # fmt: skip
    if kind == "consumed":
        return board.add_consumed(*op[1:])  # type: ignore[arg-type]
    if kind == "dead":
        return board.add_dead(*op[1:])  # type: ignore[arg-type]
    _, task, node, group, agent, bdseq, bseq, role = op
    rel = Release(task=task, epoch=0, node=node, group=group, agent=agent, bdseq=bdseq,
                  bseq=bseq, status=ReleaseStatus.ABANDONED, role=role)  # type: ignore[arg-type]  # fmt: skip
    return board.add_release(rel)


def on_old(f: Callable[[], T]) -> T:
    """``f()`` with the merge as before the pass (boards made in it are only used in it)."""
    with old_merge():
        return f()


@pytest.mark.parametrize("seed", range(400))
def test_a_batched_merge_leaves_the_ledger_one_agent_at_a_time_left(seed: int) -> None:
    ops, bounds = random_ops(seed)
    new, old = TaskBoard(**bounds), on_old(lambda: MainBoard(**bounds))
    for spec in specs():
        assert new.add_spec(spec) == on_old(lambda spec=spec: old.add_spec(spec))
    for i, op in enumerate(ops):
        assert apply(new, op) == on_old(lambda op=op: apply(old, op))
        if i % 7 == 6:  # the awards cached between merges, as an engine's ticks do
            assert state(new) == on_old(lambda: state(old))
    assert state(new) == on_old(lambda: state(old))


def test_a_full_board_makes_the_holders_there_is_room_for() -> None:
    """The bound on holders: the first agents of a message get ids, the rest are counted."""
    board = TaskBoard(max_bids=3, max_consumed=2)  # room for 5 holders
    board.add_spec(specs()[1])
    board.add_bids("n0", "g", 0, 1, ["U"], epochs=[0], task_index=[0] * 8,
                   agents=[7, 1, 9, 3, 5, 2, 8, 4], costs=[1.0] * 8)  # fmt: skip
    n = board._n_holders
    assert n == 5
    assert board._holder_agent.data[:n].tolist() == [7, 1, 9, 3, 5]
    assert board._holder_id(0, 0, 9) == 2
    assert board._holder_id(0, 0, 2) is None
    assert board.overflow >= 3


def test_a_formation_s_ledgers_are_the_one_agent_at_a_time_ones(tmp_path: Path) -> None:
    """Five engines of 100 agents form ten teams and five one-agent tasks on the in-memory
    broker, once with the batched holders and once with the old: every node's ledger the same
    after every tick."""
    from tests.support.coordination_harness import GroupSpec, SimFleet
    from tests.unit.coordination.test_engine import GRID, grid_tasks, settings

    team_specs = [msgspec.structs.replace(s, team=int(2 + i % 4)) for i, s in
                  enumerate(grid_tasks(10, seed=3, prefix="team"))]  # fmt: skip
    one = grid_tasks(5, seed=4, prefix="one")

    def run(sub: Path) -> list[list[dict[str, object]]]:
        fleet = SimFleet(sub, 5, {"grid": GroupSpec(GRID, 100, capabilities=("grid",))},
                         settings())  # fmt: skip
        try:
            fleet.tick(3)
            fleet.nodes[0].engine.announce(team_specs + one)
            seen = []
            for _ in range(12):
                fleet.tick()
                seen.append([state(n.engine.board) for n in fleet.nodes])
            return seen
        finally:
            fleet.close()

    new = run(tmp_path / "new")
    with old_merge():
        old = run(tmp_path / "old")
    assert new == old
    formed = new[-1][0]["teams"]
    assert isinstance(formed, dict)
    assert len(formed) == 10


def on_main(f: Callable[[], T]) -> T:
    """``f()`` with main's merge and admission before the fourteenth pass."""
    with main_merge():
        return f()


@pytest.mark.parametrize("seed", range(400))
def test_a_message_merged_as_arrays_leaves_main_s_ledger(seed: int) -> None:
    """The same random histories, the ledgers compared after every fact (the digest asked
    after each: a table's hash kept up as new rows come is compared every time)."""
    ops, bounds = random_ops(seed)
    new, old = TaskBoard(**bounds), on_main(lambda: MainBoard(**bounds))
    for spec in specs():
        assert new.add_spec(spec) == on_main(lambda spec=spec: old.add_spec(spec))
    for op in ops:
        assert apply(new, op) == on_main(lambda op=op: apply(old, op))
        assert state(new) == on_main(lambda: state(old))


def admitted(adm: RelayAdmission, node: str, body: TaskBids) -> list[object]:
    got, refused = adm.admit_bids(node, 1, body)
    return [got.tasks, got.epochs, *(None if a is None else a.tolist() for a in got[2:]), refused]


@pytest.mark.parametrize("seed", range(100))
def test_a_message_admitted_as_arrays_is_main_s_admission(seed: int) -> None:
    """Random bid messages (known and unknown tasks, epochs within and beyond the limit, roles
    beyond a task's, holds of one-agent tasks, costs below the floor) admitted between random
    changes of the specs (a later epoch, a team become one-agent, a task evicted when closed),
    the same message asked again after a change: what is admitted and refused is main's."""
    rng = np.random.default_rng(seed)
    board = TaskBoard(max_tombstones=int(rng.integers(1, 4)))
    adm = RelayAdmission(board, PeerKeys(4), "fleet", 4)
    adm.born_in("n1", 1)
    names = ["T", "U", "V", "s", "r", "x"]
    epoch = dict.fromkeys(names, 0)
    bodies: list[TaskBids] = []
    for _ in range(40):
        if rng.random() < 0.4:
            task = str(rng.choice(names[:5]))
            epoch[task] += int(rng.integers(0, 30))
            team = int(rng.integers(0, 4))
            spec = TaskSpec(task=task, epoch=epoch[task], capability="grid", goal_state=1,
                            announced_by="hub", team=team if team > 1 else msgspec.UNSET,
                            roles=[Role(capability="grid", count=1, goal_state=2)]
                            if team > 2 else msgspec.UNSET)  # fmt: skip
            board.add_spec(spec)
            if rng.random() < 0.3:
                board.close(task, epoch[task])
            continue
        if not bodies or rng.random() < 0.5:
            tasks = sorted({str(t) for t in rng.choice(names, int(rng.integers(1, 5)))})
            rows = int(rng.integers(0, 30))
            team = rng.random() < 0.7
            bodies.append(TaskBids.from_arrays(
                "g", int(rng.integers(0, 9)), tasks,
                epochs=[int(rng.integers(0, 70)) for _ in tasks],
                task_index=rng.integers(0, len(tasks), rows), agents=rng.integers(0, 50, rows),
                costs=rng.choice([0.0, 1e-9, 0.5, 2.0], rows),
                roles=rng.integers(0, 3, rows) if team else None,
                holds=rng.random(rows) < 0.3 if team else None,
            ))  # fmt: skip
        body = bodies[int(rng.integers(0, len(bodies)))]
        assert admitted(adm, "n1", body) == on_main(lambda body=body: admitted(adm, "n1", body))


def test_new_rows_hashed_after_a_merge_cut_by_the_room_keep_the_digest_main_s() -> None:
    """A message with more rows than the room left merges a task at a time (a task's new slots
    wait for the digest to hash them); the next, with room, adds its rows' hashes to the same
    table before the digest is asked: the digest is main's."""

    def run(board_type: type[TaskBoard | MainBoard] = TaskBoard) -> list[object]:
        board = board_type(max_bids=16)
        for spec in specs():
            board.add_spec(spec)
        seen: list[object] = []
        for node, bseq, index, agents in [
            ("n0", 1, [1] * 6, list(range(6))),  # U: six slots
            ("n1", 1, [0] * 4, list(range(4))),  # T: four; its hash made by the digest
            ("n0", 2, [0] * 3 + [1] * 6, [10, 11, 12, *range(6)]),  # 9 rows, room 6: one by one
            ("n2", 1, [0] * 3, [20, 21, 22]),  # room 3: T's hash kept up as the rows come
        ]:
            board.add_bids(node, "g", 1, bseq, ["T", "U"], epochs=[0, 0], task_index=index,
                           agents=agents, costs=[0.5] * len(agents))  # fmt: skip
            if bseq == 1 and node == "n1":
                board.digest()
            seen.append((board.n_bids, board.overflow, board.stale_bids))
        seen.append(state(board))
        return seen

    assert run() == on_main(lambda: run(MainBoard))


def on_main14(f: Callable[[], T]) -> T:
    """``f()`` with main's bid tables, digest and team rows after the fourteenth pass."""
    with main14_merge():
        return f()


def more_ops(ops: list[tuple[object, ...]], rng: np.random.Generator) -> list[tuple[object, ...]]:
    """``ops`` with some releases made a member's finished part (``done``: the team award's
    done slots) and some facts made a team task's spec changed (a later epoch, another team
    size or roles: the award's roles made again)."""
    out: list[tuple[object, ...]] = []
    for op in ops:
        u = rng.random()
        if op[0] == "release" and u < 0.6:
            out.append(("done", *op[1:]))
        elif u < 0.06:
            task = str(rng.choice(["T", "U", "V"]))
            n_roles = int(rng.integers(0, 3))
            out.append(("spec", task, int(rng.integers(0, 2)), int(rng.integers(1, 4)),
                        [int(rng.integers(1, 3)) for _ in range(n_roles)]))  # fmt: skip
        else:
            out.append(op)
    return out


def apply15(board: TaskBoard | MainBoard, op: tuple[object, ...]) -> object:
    if op[0] == "spec":
        _, task, epoch, team, counts = op
        roles = [Role(capability="grid", count=c, goal_state=2) for c in counts]  # type: ignore[attr-defined]
        return board.add_spec(TaskSpec(task=task, epoch=epoch, capability="grid", goal_state=1,  # type: ignore[arg-type]
                                       announced_by="hub", team=team,  # type: ignore[arg-type]
                                       roles=roles if roles else msgspec.UNSET))  # fmt: skip
    if op[0] == "done":
        _, task, node, group, agent, bdseq, bseq, role = op
        rel = Release(task=task, epoch=0, node=node, group=group, agent=agent, bdseq=bdseq,
                      bseq=bseq, status=ReleaseStatus.DONE, role=role)  # type: ignore[arg-type]  # fmt: skip
        return board.add_release(rel)
    return apply(board, op)


@pytest.mark.parametrize(("max_delta", "small"), [(64, 64), (2, 64), (64, 0)])
@pytest.mark.parametrize("seed", range(300))
def test_a_table_s_hash_kept_through_its_changes_leaves_main_s_ledger(
    seed: int, max_delta: int, small: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The random histories, the state asked after a random number of facts (so a table's hash
    is kept through one change or many, up to the bound and past it): every table's rows, the
    award, the teams and the digest main's; the digest also the one made from every row. With
    ``small`` 0 every merge takes the array path (a message of more than ``SMALL`` rows a task)."""
    monkeypatch.setattr(bid_table, "MAX_DELTA", max_delta)
    monkeypatch.setattr(bid_table, "SMALL", small)
    ops, bounds = random_ops(seed)
    rng = np.random.default_rng(seed + 10_000)
    ask = rng.random(len(ops)) < 0.35
    new, old = TaskBoard(**bounds), on_main14(lambda: MainBoard(**bounds))
    for spec in specs():
        assert new.add_spec(spec) == on_main14(lambda spec=spec: old.add_spec(spec))
    for op, now in zip(more_ops(ops, rng), ask.tolist(), strict=True):
        assert apply15(new, op) == on_main14(lambda op=op: apply15(old, op))
        if now:
            assert state15(new) == on_main14(lambda: state15(old))
    assert state15(new) == on_main14(lambda: state15(old))
    assert scratch_total(new) == new.rows.total


def state15(board: TaskBoard | MainBoard) -> dict[str, object]:
    """:func:`state`, the team award's roles and bid rows as it takes them, and every node's
    holds."""
    _, tasks, roles, rows, holders, costs = board._team_input()
    award_in = [tasks, *(a.tolist() for a in (*roles, *rows, holders, costs))]
    holds = [board.holds_of(n, TASKS) for n in ("n0", "n1", "n2", "n3")]
    return {**state(board), "award_in": award_in, "holds": holds}


def test_a_role_s_done_parts_count_up_to_its_slots() -> None:
    """Two members finish their parts of a role of one slot (the task stays open: the other
    role is not done): the award takes the role as done once, as main did."""

    def run(board_type: type[TaskBoard | MainBoard] = TaskBoard) -> object:
        board = board_type()
        roles = [Role(capability="grid", count=2, goal_state=2)]
        board.add_spec(TaskSpec(task="W", epoch=0, capability="grid", goal_state=1,
                                announced_by="hub", team=1, roles=roles))  # fmt: skip
        for agent in (1, 2):
            rel = Release(task="W", epoch=0, node="n0", group="g", agent=agent, bdseq=1,
                          bseq=1, status=ReleaseStatus.DONE, role=0)  # fmt: skip
            board.add_release(rel)
        return state15(board)["award_in"]

    got = run()
    assert got == on_main14(lambda: run(MainBoard))
    assert got[3] == [1, 0]  # type: ignore[index]  # the roles' done: role 0's one slot


def test_holds_replacing_rows_one_at_a_time_keep_the_digest_main_s() -> None:
    """A formation's holds: a node's bids on a team task, then its holds of two of them, one
    message a row, the digest asked between: the kept sum of the rows' hashes is the one made
    from every row, and every digest and the state equal main's (before and after the
    fourteenth pass)."""

    def run(board_type: type[TaskBoard | MainBoard] = TaskBoard) -> list[object]:
        board = board_type()
        for spec in specs():
            board.add_spec(spec)
        seen: list[object] = []
        board.add_bids("n0", "g", 1, 1, ["V"], epochs=[0], task_index=[0] * 6,
                       agents=[0, 1, 2, 0, 1, 2], costs=[0.5, 1.0, 2.0, 0.25, 0.5, 0.5],
                       roles=[0, 0, 0, 1, 1, 1])  # fmt: skip
        board.add_bids("n1", "g", 1, 1, ["V"], epochs=[0], task_index=[0] * 2,
                       agents=[5, 6], costs=[0.75, 0.75], roles=[0, 1])  # fmt: skip
        seen.append(board.digest())
        for bseq, agent, role in [(2, 0, 0), (3, 1, 1), (4, 2, 1)]:
            board.add_bids("n0", "g", 1, bseq, ["V"], epochs=[0], task_index=[0], agents=[agent],
                           costs=[0.5], roles=[role], holds=[True])  # fmt: skip
            if isinstance(board, TaskBoard):
                assert board.rows.total == scratch_total(board)
            seen.append(board.digest())
        seen.append(state(board))
        return seen

    new = run()
    assert new == on_main14(lambda: run(MainBoard)) == run(MainBoard)


def on_main15(f: Callable[[], T]) -> T:
    """``f()`` with main's ledger before the sixteenth pass made (the nodes' boards too)."""
    with main15_merge():
        return f()


@pytest.mark.parametrize("seed", range(400))
def test_one_set_of_bid_columns_leaves_main_s_ledger(seed: int) -> None:
    """The random histories of the fifteenth pass (finished parts, team specs changed: a task's
    rows dropped and its slot taken again by another round), through this ledger and main's
    before the sixteenth pass (a bid table a task): after every fact the answer, after a random
    third of them and at the end every task's rows, the counters, floors, awards, teams, the
    digest, ``knows()``, ``bid_by_all``, the team award's input (roles, done slots, bid rows
    with their tie-breaks, columns, costs) and every node's holds main's; the kept sum of the
    rows' hashes the one made from every row; and, for a third of the seeds, a board whose
    bound on bids is a few rows (the room given a message's new rows in order)."""
    ops, bounds = random_ops(seed)
    if seed % 3 == 0:
        bounds = {"max_bids": 1 + seed % 11, "max_consumed": 2}
    rng = np.random.default_rng(seed + 20_000)
    ask = rng.random(len(ops)) < 0.35
    new, old = TaskBoard(**bounds), MainBoard(**bounds)
    for spec in specs():
        assert new.add_spec(spec) == old.add_spec(spec)
    for op, now in zip(more_ops(ops, rng), ask.tolist(), strict=True):
        assert apply15(new, op) == apply15(old, op)
        if now:
            assert state15(new) == state15(old)
            assert scratch_total(new) == new.rows.total
    assert state15(new) == state15(old)
    assert scratch_total(new) == new.rows.total
    assert len(new.rows) == new.n_bids <= new.max_bids


def test_a_formation_s_ledgers_are_main_s(tmp_path: Path) -> None:
    """Five engines of 100 agents form ten teams and five one-agent tasks on the in-memory
    broker, once with one set of bid columns a ledger and once with main's bid tables: every
    node's ledger, award, teams, digest and holds the same after every tick."""
    from tests.support.coordination_harness import GroupSpec, SimFleet
    from tests.unit.coordination.test_engine import GRID, grid_tasks, settings

    team_specs = [msgspec.structs.replace(s, team=int(2 + i % 4)) for i, s in
                  enumerate(grid_tasks(10, seed=3, prefix="team"))]  # fmt: skip
    one = grid_tasks(5, seed=4, prefix="one")

    def run(sub: Path) -> list[list[dict[str, object]]]:
        fleet = SimFleet(sub, 5, {"grid": GroupSpec(GRID, 100, capabilities=("grid",))},
                         settings())  # fmt: skip
        try:
            fleet.tick(3)
            fleet.nodes[0].engine.announce(team_specs + one)
            seen = []
            for _ in range(12):
                fleet.tick()
                seen.append([state15(n.engine.board) for n in fleet.nodes])
            return seen
        finally:
            fleet.close()

    new = run(tmp_path / "new")
    old = on_main15(lambda: run(tmp_path / "old"))
    assert new == old
    assert len(new[-1][0]["teams"]) == 10  # type: ignore[arg-type]


def test_a_message_naming_a_task_twice_keeps_one_row_a_slot() -> None:
    """A message whose list names a task twice (no node of this version sends one; the wire
    allows it): its rows of both merge as one task's, one row a slot, the largest (main's bid
    tables took each name's rows as new slots and kept two rows of one slot: the sixteenth
    pass)."""
    board = TaskBoard()
    for spec in specs():
        board.add_spec(spec)
    board.add_bids("n0", "g", 1, 1, ["U", "U"], epochs=[0, 0], task_index=[0, 1, 0, 1],
                   agents=[1, 1, 2, 2], costs=[1.0, 0.5, 1.0, 1.0])  # fmt: skip
    keys, costs, _, _ = board.bid_arrays("U")
    assert keys.tolist() == [0, 16]
    assert costs.tolist() == [0.5, 1.0]
    assert board.n_bids == 2
    assert board.rows.total == scratch_total(board)
