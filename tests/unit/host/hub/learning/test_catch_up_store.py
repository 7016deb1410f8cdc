"""The hub brings a node that joined late or was reset to its line's current version
(tools/edge_agent_host/hub/learning/catch_up_store.py, docs/fleet-learning.md "A node that joins
late or was reset"), on SQLite (the same scenario runs on PostgreSQL in
tests/integration/hub/test_hubd.py): a real round built from the nodes' deltas and published,
births heard as the service hears them, and what the rollout runner would record (a rollout's
end) written through the rollout store."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.fleet.comms.memory import MemoryBroker
from edge_agent.fleet.protocol import Birth, GroupInfo, NodeState
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.cli import main
from edge_agent_host.hub.cli.rollout import store_rollout
from edge_agent_host.hub.config.hub_toml import LearningSection
from edge_agent_host.hub.config.rollout_options import parse_start_options
from edge_agent_host.hub.learning.catch_up import CatchUp, behind
from edge_agent_host.hub.learning.catch_up_store import CATCH_UP_LEASE, CatchUpStore, catch_up
from edge_agent_host.hub.learning.policy import LearningPolicy
from edge_agent_host.hub.learning.round import build_round
from edge_agent_host.hub.learning.store import LearningStore
from edge_agent_host.hub.rollouts.plan import ACTIVE, WENT_OFFLINE, RolloutState
from edge_agent_host.hub.rollouts.runner import RolloutRunner
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from tests.unit.host.hub.learning.test_store import (
    GATE,
    LINE,
    delta,
    deploy,
    increments,
    learning_db,
)
from tests.unit.host.hub.service.test_loop import make_service
from tests.unit.host.hub.storage.test_database import heard, write_all

SILENT_AFTER_S = 3600.0


def line_birth(sha: str, group: str = "grid") -> Birth:
    """A birth whose group runs version ``sha`` of the T-maze line."""
    return Birth(
        software_version="0.1.0",
        profile="x86-dev",
        budget_bytes=2**30,
        groups={group: GroupInfo(agents=4, bundle=LINE, bundle_sha256=sha)},
    )


class Fleet:
    """Nodes as the hub hears them: each connect a new ``bdseq``, its state and retained
    birth."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self.seq = 0
        self.session: dict[str, int] = {}

    def connect(self, node: str, sha: str, *, online: bool = True) -> None:
        bdseq = self.session.get(node, 0) + 1
        self.session[node] = bdseq
        self.born(node, sha, online=online)

    def born(self, node: str, sha: str, *, online: bool = True) -> None:
        """A birth in the node's session of now (a rebirth keeps the session's bdseq)."""
        now = time.time()
        bdseq = self.session[node]
        self.seq += 2
        write_all(
            self.db,
            heard(node, NodeState(online=online), seq=self.seq, bdseq=bdseq, ts=now,
                  retained=True),
            heard(node, line_birth(sha), seq=self.seq + 1, bdseq=bdseq, ts=now, retained=True),
        )  # fmt: skip


def published_round(db: HubDatabase, fleet: Fleet, key: Ed25519PrivateKey) -> tuple[str, str]:
    """The line's bundle (version 1.0.0) on ``n1`` and ``n2``, their deltas merged into a
    round, published to both: (the old sha256, the round's rollout id)."""
    store = learning_db(db)
    old = deploy(db)
    for i, node in enumerate(("n1", "n2")):
        fleet.connect(node, old)
        write_all(db, heard(node, delta(old, 1, increments(i)), seq=100 + i, ts=time.time()))
    built = build_round(store, LINE, key, settings=GATE)
    assert built["state"] == "built", built
    args = parse_start_options(["--group", "grid", "--waves", "1,100%", "--health-steps", "7"])
    started = store_rollout(
        db, args, _plan(db, built["bundle_sha256"]), silent_after_s=SILENT_AFTER_S,
        on_stored=lambda db, rollout_id: store.set_rollout(built["round"], rollout_id),
    )  # fmt: skip
    return old, str(started["id"])


def _plan(db: HubDatabase, sha: str) -> DeployPlan:
    """The deploy plan of the round's bundle ``sha``."""
    data = db.query("SELECT bundle FROM learning_rounds WHERE bundle_sha256 = :s", {"s": sha})
    return DeployPlan.from_bytes(bytes(data[0][0]), 64 * 1024)


def look(db: HubDatabase) -> dict[str, Any]:
    return catch_up(db, silent_after_s=SILENT_AFTER_S)


def started(out: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["node"], s["group"]) for s in out["started"]]


def opener(path: Path) -> Callable[[], HubDatabase]:
    """What a policy opens its own connections with: the SQLite hub database at ``path``."""

    def open_db() -> HubDatabase:
        db = HubDatabase(SqliteEngine(path))
        db.open()
        return db

    return open_db


def end(db: HubDatabase, rollout_id: str, state: RolloutState) -> None:
    """What the runner records when a rollout ends."""
    RolloutStore(db).update(rollout_id, state=state, phase="")


# ---------------------------------------------------------------------------------- scenario
def check_a_late_or_reset_node_is_brought_to_the_fleet_version(db: HubDatabase) -> None:
    fleet = Fleet(db)
    key = Ed25519PrivateKey.generate()
    old, round_rollout = published_round(db, fleet, key)
    new = RolloutStore(db).get(round_rollout).plan.bundle_sha256
    fleet.connect("n3", old)  # joined while the round's rollout runs: not its node
    assert look(db)["started"] == []  # no round done: no fleet version yet
    end(db, round_rollout, RolloutState.DONE)
    for node in ("n1", "n2"):
        fleet.born(node, new)  # the rollout switched them
    fleet.connect("n4", old)
    manual = store_rollout(
        db, parse_start_options(["--group", "grid", "--node", "n4"]), _plan(db, new),
        silent_after_s=SILENT_AFTER_S,
    )["id"]  # fmt: skip
    fleet.connect("n5", old, online=False)

    # n3 is behind: one one-node deployment of the fleet's version with the round's health
    # check; n4 is left to the rollout that selected it, n5 is offline.
    out = look(db)
    assert started(out) == [("n3", "grid")]
    (c,) = out["started"]
    assert (c["line"], c["running"], c["target"]) == (LINE, old, new)
    r = RolloutStore(db).get(c["rollout"])
    assert (r.plan.group, r.plan.bundle_sha256, r.plan.waves, list(r.nodes)) == (
        "grid", new, [1], ["n3"],
    )  # fmt: skip
    assert (r.plan.health_steps, r.plan.soak_s, r.state) == (7, 0.0, RolloutState.PENDING)
    assert look(db)["started"] == []  # pending: not started twice
    assert CatchUpStore(db).counts() == {"pending": 1, "ok": 0, "failed": 0, "offline": 0}

    # The deployment failed (the node rolled back): not tried again for that version.
    end(db, c["rollout"], RolloutState.HALTED)
    out = look(db)
    assert (out.get("failed"), out["started"]) == (1, [])
    assert look(db)["started"] == []

    # n4's rollout ended without switching it: now it is caught up.
    end(db, manual, RolloutState.HALTED)
    out = look(db)
    assert started(out) == [("n4", "grid")]
    end(db, out["started"][0]["rollout"], RolloutState.DONE)
    # Done, and its birth in that session still says the old version: not deployed again.
    assert look(db) == {"ok": 1, "started": [], "not_started": []}
    # n4 comes back reset (a new session, the old bundle): brought up once more.
    fleet.connect("n4", old)
    assert started(look(db)) == [("n4", "grid")]
    assert CatchUpStore(db).counts() == {"pending": 1, "ok": 1, "failed": 1, "offline": 0}
    assert [(a["node"], a["result"]) for a in CatchUpStore(db).recent()] == [
        ("n4", "pending"), ("n4", "ok"), ("n3", "failed"),
    ]  # fmt: skip


LEASE_S = 60.0


def a_late_node(db: HubDatabase) -> tuple[Fleet, str]:
    """A round done on ``n1`` and ``n2``; ``n3`` joined late (runs the old version)."""
    fleet = Fleet(db)
    old, round_rollout = published_round(db, fleet, Ed25519PrivateKey.generate())
    end(db, round_rollout, RolloutState.DONE)
    for node in ("n1", "n2"):
        fleet.born(node, RolloutStore(db).get(round_rollout).plan.bundle_sha256)
    fleet.connect("n3", old)
    return fleet, old


def replica_look(db: HubDatabase, owner: str, now: float) -> dict[str, Any]:
    """``owner``'s look on a connection of its own."""
    other = HubDatabase(db.engine)
    other.open()
    try:
        return catch_up(other, silent_after_s=SILENT_AFTER_S, now=now, owner=owner,
                        lease_s=LEASE_S)  # fmt: skip
    finally:
        other.close()


def check_one_replica_looks_for_late_nodes_at_a_time(db: HubDatabase) -> None:
    a_late_node(db)
    leases = LearningStore(db)
    now = time.time()
    # hub-b is looking: hub-a's look is skipped, deploys nothing
    assert leases.take_lease(CATCH_UP_LEASE, "hub-b", now=now, lease_s=LEASE_S)
    skipped = {"skipped": True, "started": [], "not_started": []}
    assert replica_look(db, "hub-a", now) == skipped
    assert CatchUpStore(db).counts()["pending"] == 0
    leases.release_lease(CATCH_UP_LEASE, "hub-b")
    # both look at once: the late node is deployed to once, by either, and the lease given up
    outs: list[dict[str, Any]] = []
    looks = [threading.Thread(target=lambda o=o: outs.append(replica_look(db, o, now)))
             for o in ("hub-a", "hub-b")]  # fmt: skip
    for t in looks:
        t.start()
    for t in looks:
        t.join(60.0)
    assert sorted(len(o["started"]) for o in outs) == [0, 1]
    assert CatchUpStore(db).counts()["pending"] == 1
    assert leases.lease(CATCH_UP_LEASE) is None
    # a holder that crashed in its look: its lease runs out, then another replica looks
    assert leases.take_lease(CATCH_UP_LEASE, "hub-b", now=now, lease_s=LEASE_S)
    assert replica_look(db, "hub-a", now + LEASE_S - 1.0) == skipped
    assert replica_look(db, "hub-a", now + LEASE_S + 1.0) == {"started": [], "not_started": []}


CATCH_UP_SCENARIOS = [
    check_a_late_or_reset_node_is_brought_to_the_fleet_version,
    check_one_replica_looks_for_late_nodes_at_a_time,
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDatabase]:
    d = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    d.open()
    try:
        yield d
    finally:
        d.close()


@pytest.mark.parametrize("scenario", CATCH_UP_SCENARIOS, ids=lambda f: f.__name__[len("check_") :])
def test_catch_up_on_sqlite(db: HubDatabase, scenario: Any) -> None:
    scenario(db)


def test_a_look_taken_over_while_it_stalled_deploys_nothing(
    db: HubDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look renews its lease before each deployment: one that stalled past it while
    another replica took the look over stops there (the other deploys)."""
    a_late_node(db)
    now = time.time()

    def stalled(*args: Any, **kwargs: Any) -> list[CatchUp]:
        # hub-a stalls here past its lease; hub-b takes the look over
        assert LearningStore(db).take_lease(CATCH_UP_LEASE, "hub-b", now=now + LEASE_S,
                                            lease_s=LEASE_S)  # fmt: skip
        return behind(*args, **kwargs)

    monkeypatch.setattr("edge_agent_host.hub.learning.catch_up_store.behind", stalled)
    out = catch_up(db, silent_after_s=SILENT_AFTER_S, now=now, owner="hub-a", lease_s=LEASE_S)
    assert (out.get("lease_lost"), out["started"]) == (True, [])
    assert CatchUpStore(db).counts()["pending"] == 0
    assert LearningStore(db).lease(CATCH_UP_LEASE) == ("hub-b", now + 2 * LEASE_S)


def a_round_due_and_a_node_behind(
    path: Path, key: Ed25519PrivateKey, *, ended: bool
) -> tuple[str, str]:
    """The hub database at ``path``: a round published to ``n1`` and ``n2`` (its rollout
    ``done`` if ``ended``), both born on it, what ``n1`` learned on it (the next round is due),
    and ``n3`` on the line's old version. Returns the round's rollout id and bundle sha256."""
    db = HubDatabase(SqliteEngine(path))
    db.open()
    try:
        fleet = Fleet(db)
        old, round_rollout = published_round(db, fleet, key)
        plan = RolloutStore(db).get(round_rollout).plan
        if ended:
            end(db, round_rollout, RolloutState.DONE)
        for node in ("n1", "n2"):
            fleet.born(node, plan.bundle_sha256)
        learned = delta(plan.bundle_sha256, 2, increments(5),
                        model=f"{LINE}@{plan.bundle_version}")  # fmt: skip
        write_all(db, heard("n1", learned, seq=200, ts=time.time()))
        fleet.connect("n3", old)
    finally:
        db.close()
    return round_rollout, plan.bundle_sha256


#: A policy that builds a round at every look with experience and publishes it.
PUBLISHING = LearningSection(min_experience=1, gate_rollouts=GATE.rollouts, gate_steps=GATE.steps,
                             publish=True, rollout=["--group", "grid", "--waves", "100%"])


def look_once(policy: LearningPolicy) -> None:
    """One look of ``policy`` on its thread, which must fail nowhere."""
    assert policy.step()
    policy.join(60.0)
    assert (policy.counts["errors"], policy.counts["catch_up_errors"]) == (0, 0), policy.counts


def pending_plans(open_db: Callable[[], HubDatabase]) -> list[dict[str, Any]]:
    """The plans of the rollouts not started yet, oldest first (the runner's order)."""
    db = open_db()
    try:
        rows = db.query(
            "SELECT plan FROM rollouts WHERE state = :pending ORDER BY created",
            {"pending": RolloutState.PENDING.value},
        )
    finally:
        db.close()
    return [json.loads(plan) for (plan,) in rows]


def catch_up_then_round(plans: list[dict[str, Any]], new: str) -> list[tuple[bool, bool]]:
    """Per plan: whether it is a catch-up, and whether it deploys ``new``."""
    return [("catch_up" in p["selector"], p["bundle_sha256"] == new) for p in plans]


def test_a_look_catches_up_before_it_starts_a_rounds_rollout(tmp_path: Path) -> None:
    """The runner carries out rollouts one at a time, oldest first: in a look where a node is
    behind and a round is due, the node's deployment of the fleet's version is started before
    the round's staged rollout (after it, it would wait for all of that rollout, then deploy a
    version no longer the newest)."""
    path = tmp_path / "hub.sqlite3"
    key = Ed25519PrivateKey.generate()
    _, new = a_round_due_and_a_node_behind(path, key, ended=True)
    open_db = opener(path)
    look_once(LearningPolicy(PUBLISHING, open_db, key, signer="t", owner="t",
                             silent_after_s=SILENT_AFTER_S))  # fmt: skip
    plans = pending_plans(open_db)
    assert catch_up_then_round(plans, new) == [
        (True, True),  # n3 to the fleet's version, first
        (False, False),  # the new round's rollout
    ], plans


class RolloutEndsDuringTheCatchUp(LearningPolicy):
    """A policy whose look sees the round's rollout end right after its catch-up took the lines'
    current versions (the runner records the end on a connection of its own meanwhile)."""

    def __init__(self, *args: Any, rollout_id: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rollout_id: str | None = rollout_id

    def catch_up(self, db: HubDatabase) -> dict[str, Any]:
        out = super().catch_up(db)
        if self.rollout_id is not None:
            end(db, self.rollout_id, RolloutState.DONE)
            self.rollout_id = None
        return out


def test_a_rollout_that_ends_during_the_catch_up_leaves_its_next_round_to_the_next_look(
    tmp_path: Path,
) -> None:
    """The round due once a rollout ended is built in a look whose catch-up saw that rollout
    done: one that ends while the catch-up runs leaves the round to the next look, which deploys
    the version to the node behind first (a round built in the same look would start its staged
    rollout before that deployment, which then waits for all of it)."""
    path = tmp_path / "hub.sqlite3"
    key = Ed25519PrivateKey.generate()
    round_rollout, new = a_round_due_and_a_node_behind(path, key, ended=False)
    open_db = opener(path)
    policy = RolloutEndsDuringTheCatchUp(PUBLISHING, open_db, key, signer="t", owner="t",
                                         silent_after_s=SILENT_AFTER_S,
                                         rollout_id=round_rollout)  # fmt: skip
    look_once(policy)
    assert (policy.counts["built"], pending_plans(open_db)) == (0, [])  # the next look's
    look_once(policy)
    assert policy.counts["built"] == 1
    plans = pending_plans(open_db)
    assert catch_up_then_round(plans, new) == [
        (True, True),  # n3 to the fleet's version, first
        (False, False),  # the new round's rollout
    ], plans


@pytest.mark.parametrize("switch", [True, False])
def test_the_learning_policy_catches_up_unless_switched_off(
    tmp_path: Path, switch: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each look of the policy (its thread, its own connection) starts the deployments, and
    ``learn status`` shows the fleet version and them; ``catch_up = false``: nothing."""
    path = tmp_path / "hub.sqlite3"
    db = HubDatabase(SqliteEngine(path))
    db.open()
    key = Ed25519PrivateKey.generate()
    try:
        fleet = Fleet(db)
        old, round_rollout = published_round(db, fleet, key)
        new = RolloutStore(db).get(round_rollout).plan.bundle_sha256
        end(db, round_rollout, RolloutState.DONE)
        for node in ("n1", "n2"):
            fleet.born(node, new)
        fleet.connect("n3", old)
    finally:
        db.close()

    open_db = opener(path)
    section = LearningSection(min_experience=10**9, catch_up=switch)
    policy = LearningPolicy(section, open_db, key, signer="t", owner="t",
                            silent_after_s=SILENT_AFTER_S)
    assert policy.step()
    policy.join(60.0)
    assert policy.counts["catch_up_errors"] == 0
    db = open_db()
    try:
        attempts = [(a["node"], a["result"]) for a in CatchUpStore(db).recent()]
        assert attempts == ([("n3", "pending")] if switch else [])
        assert len(RolloutStore(db).ids(active_only=True)) == int(switch)
    finally:
        db.close()
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\nstate_dir = "{tmp_path}"\n[database]\ntype = "sqlite"\n')
    assert main(["learn", "status", "--config", str(config), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["catch_ups"] == {"pending": int(switch), "ok": 0, "failed": 0, "offline": 0}
    assert row["fleet_version"] == {"sha256": new, "round": 1, "rollout": round_rollout}
    assert main(["learn", "status", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"  fleet version {new[:12]} (round 1, rollout {round_rollout} done); catch-up "
        f"deployments: {int(switch)} pending, 0 ok, 0 failed, 0 offline"
    )


def test_a_catch_up_whose_node_goes_offline_does_not_hold_the_next_rollout(
    tmp_path: Path,
) -> None:
    """The runner carries one rollout at a time: a catch-up to a node that stops answering would
    hold the next round's rollout (and the other catch-ups) until its deploy timeout. A
    catch-up's plan waits ``catch_up_timeout_s`` at most (120 s, not the round's 600) and ends
    as soon as its node's state says offline: failed ``went offline while deploying``, the
    attempt ``offline``, tried again when the node comes back (a new session); the rollout
    behind it is taken at once. Carried by the real runner (stepped here) through the hub
    service, whose database the look and the runner share."""
    broker = MemoryBroker()
    service, _ = make_service(tmp_path, broker)
    service.start()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            service.step(wait_s=0.02)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    db = HubDatabase(service.db.engine)
    db.open()
    runner = RolloutRunner(
        opener(tmp_path / "state" / "hub.sqlite3"), service.publisher,
        Ed25519PrivateKey.generate(), owner="hub-unit", lease_s=600.0,
    )  # fmt: skip
    try:
        fleet, old = a_late_node(db)  # n3 joined late, on the old version
        out = catch_up(db, silent_after_s=SILENT_AFTER_S, timeout_s=120.0)
        (c,) = out["started"]
        rollouts = RolloutStore(db)
        plan = rollouts.get(c["rollout"]).plan
        assert (plan.deploy_timeout_s, plan.stop_if_offline) == (120.0, True)
        behind = rollouts.create(plan.model_copy(update={"stop_if_offline": False}), ["n1"])
        fleet.born("n3", old, online=False)  # its will: offline, in the same session
        while runner.current != c["rollout"] or rollouts.get(c["rollout"]).state in ACTIVE:
            runner.step()
        r = rollouts.get(c["rollout"])
        assert r.state is RolloutState.HALTED
        assert r.nodes["n3"] == {**r.nodes["n3"], "state": "failed", "detail": WENT_OFFLINE}
        for _ in range(3):  # the next rollout, at once
            runner.step()
            if runner.current == behind:
                break
        assert runner.current == behind
        assert look(db)["offline"] == 1  # settled
        assert CatchUpStore(db).counts()["offline"] == 1
        assert look(db)["started"] == []  # not again in this session (it is offline anyway)
        fleet.connect("n3", old)  # back: a new session
        assert started(look(db)) == [("n3", "grid")]
    finally:
        runner.stop()
        db.close()
        stop.set()
        thread.join(10)
        service.shutdown()
