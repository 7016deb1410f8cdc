"""Staged rollouts: wave plans, node selection and the rollout tables on a real SQLite file (the
runner is tested end to end in tests/integration/hub/test_rollouts.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import CommandResult, GroupHealth, Health, MeasureSummary
from edge_agent.fleet.topics import Topics
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.hub.cli.rollout import describe
from edge_agent_host.hub.gates.health import parse_criterion
from edge_agent_host.hub.gates.shadow import parse_shadow_criterion
from edge_agent_host.hub.rollouts.plan import (
    Criteria,
    NodeState,
    RolloutPlan,
    RolloutState,
    plan_waves,
    select_nodes,
    wave_of,
)
from edge_agent_host.hub.rollouts.runner import RolloutRunner
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.hub.traffic.publisher import HubPublisher
from edge_agent_host.hub.traffic.queue import HeldMessages
from tests.unit.host.hub.storage.test_database import health_birth, heard

SHA = "ab" * 32


@pytest.mark.parametrize(
    ("n", "waves", "expected"),
    [
        (100, None, [1, 10, 50, 100]),
        (4, None, [1, 2, 4]),  # 10 % of 4 rounds up to 1, the canary's count: dropped
        (1, None, [1]),
        (10, ["3", "50%"], [3, 5, 10]),  # a last wave of every node is added
        (10, ["20", "100%"], [10]),
        (7, ["33.3%", "100%"], [3, 7]),
    ],
)
def test_waves_are_cumulative_and_end_with_every_node(
    n: int, waves: list[str] | None, expected: list[int]
) -> None:
    assert plan_waves(n, waves) == expected


def test_exponential_waves() -> None:
    assert plan_waves(1000, exponential=2.0) == [1, 3, 7, 15, 31, 63, 127, 255, 511, 1000]
    assert plan_waves(10, exponential=3.0) == [1, 4, 10]
    sizes = plan_waves(1000, exponential=10.0)
    assert sizes == [1, 11, 111, 1000]


@pytest.mark.parametrize("bad", ["0", "-1", "0%", "101%", "x", "%"])
def test_bad_waves_are_refused(bad: str) -> None:
    with pytest.raises(FleetError, match="wave"):
        plan_waves(10, [bad])
    with pytest.raises(FleetError, match="> 1"):
        plan_waves(10, exponential=1.0)
    with pytest.raises(FleetError, match="at least one node"):
        plan_waves(0)


def test_wave_of_follows_the_cumulative_counts() -> None:
    waves = [1, 3, 6]
    assert [wave_of(i, waves) for i in range(6)] == [0, 1, 1, 2, 2, 2]
    with pytest.raises(FleetError):
        wave_of(6, waves)


def _row(node: str, online: bool, groups: list[str], **labels: str) -> dict[str, Any]:
    return {
        "node": node,
        "online": online,
        "birth": {"groups": {g: {"agents": 1} for g in groups}, "labels": labels},
    }


def test_selection_by_group_name_pattern_and_labels() -> None:
    fleet = [
        _row("pi-2", True, ["grid"], site="a", ring="canary"),
        _row("pi-1", True, ["grid"], site="a"),
        _row("pi-3", False, ["grid"], site="a"),
        _row("pi-4", True, ["other"], site="a"),
        _row("cam-1", True, ["grid"], site="b"),
        {"node": "new", "online": True, "birth": None},  # no birth yet: unknown groups
    ]
    assert select_nodes(fleet, "grid") == (["cam-1", "pi-1", "pi-2"], ["pi-3"])
    assert select_nodes(fleet, "grid", names=["pi-*"]) == (["pi-1", "pi-2"], ["pi-3"])
    assert select_nodes(fleet, "grid", labels={"site": "a", "ring": "canary"}) == (["pi-2"], [])
    assert select_nodes(fleet, "grid", labels={"site": "a"}, include_offline=True) == (
        ["pi-1", "pi-2", "pi-3"],
        [],
    )


def test_a_silent_node_is_left_out_as_an_offline_one_is() -> None:
    """A revoked node's retained state still says online; nothing live came from it for longer
    than ``silent_after_s``: a wave that waited for it would fail, so it is not selected."""
    now = 10_000.0
    heard = {**_row("pi-1", True, ["grid"]), "last_seen": now - 5.0}
    revoked = {**_row("pi-2", True, ["grid"]), "last_seen": now - 300.0}
    assert select_nodes([heard, revoked], "grid", silent_after_s=60.0, now=now) == (
        ["pi-1"],
        ["pi-2"],
    )
    assert select_nodes([heard, revoked], "grid", silent_after_s=600.0, now=now) == (
        ["pi-1", "pi-2"],
        [],
    )
    assert select_nodes(
        [heard, revoked], "grid", include_offline=True, silent_after_s=60.0, now=now
    ) == (["pi-1", "pi-2"], [])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDatabase]:
    db = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    db.open()
    yield db
    db.close()


def plan(**extra: Any) -> RolloutPlan:
    return RolloutPlan(group="grid", bundle_sha256=SHA, waves=[1, 3], **extra)


def check_a_rollout_is_stored_with_its_nodes_in_waves(db: HubDatabase) -> None:
    store = RolloutStore(db)
    store.put_bundle(b"tar bytes", SHA, "grid10", "1.0")
    store.put_bundle(b"other bytes", SHA, "grid10", "1.0")  # the same identity: kept once
    assert store.bundle(SHA) == b"tar bytes"
    with pytest.raises(FleetError, match="not in the hub's database"):
        store.bundle("cd" * 32)
    rid = store.create(plan(), ["pi-1", "pi-2", "pi-3"])
    r = store.get(rid)
    assert r.state is RolloutState.PENDING
    assert {n: row["wave"] for n, row in r.nodes.items()} == {"pi-1": 0, "pi-2": 1, "pi-3": 1}
    assert r.wave_nodes(1) == ["pi-2", "pi-3"]
    store.set_nodes(rid, {"pi-1": (NodeState.OK, "switched")}, baseline={"pi-1": 2.5})
    r = store.get(rid)
    assert r.deployed() == ["pi-1"]
    assert r.nodes["pi-1"]["baseline_p99_ms"] == 2.5
    summary = r.summary()
    assert (summary["nodes_total"], summary["nodes_done"], summary["nodes_failed"]) == (3, 1, 0)
    assert summary["wave_table"][1]["states"] == {"pending": 2}
    text = describe(summary)
    assert f"rollout {rid}: pending" in text
    assert "wave 2: 2 node(s) (up to 3): pending 2" in text
    with pytest.raises(FleetError, match="2 nodes for waves ending at 3"):
        store.create(plan(), ["pi-1", "pi-2"])


def check_requests_are_checked_against_the_state(db: HubDatabase) -> None:
    store = RolloutStore(db)
    rid = store.create(plan(), ["a", "b", "c"])
    with pytest.raises(FleetError, match="cannot resume"):
        store.request(rid, "resume")
    with pytest.raises(FleetError, match="unknown request"):
        store.request(rid, "explode")
    assert store.request(rid, "pause").request == "pause"
    store.update(rid, state=RolloutState.DONE, request=None)
    with pytest.raises(FleetError, match="is done: cannot abort"):
        store.request(rid, "abort")
    with pytest.raises(FleetError, match="no rollout"):
        store.get("r-missing")


def check_one_replica_holds_a_rollout_until_its_lease_runs_out(db: HubDatabase) -> None:
    store = RolloutStore(db)
    first = store.create(plan(), ["a", "b", "c"])
    second = store.create(plan(), ["a", "b", "c"])
    assert store.claim("hub-1", 30.0, now=1000.0) == first
    assert store.claim("hub-2", 30.0, now=1001.0) == second  # the other one is held
    assert store.claim("hub-3", 30.0, now=1002.0) is None
    assert store.renew(first, "hub-1", 30.0, now=1010.0)
    assert not store.renew(first, "hub-2", 30.0, now=1020.0)
    assert store.renew(first, "hub-2", 30.0, now=1041.0)  # hub-1 stopped renewing
    store.release(first, "hub-2")
    assert store.claim("hub-3", 30.0, now=1042.0) == first
    store.update(second, state=RolloutState.DONE)
    assert store.ids(active_only=True) == [first]
    assert set(store.ids()) == {first, second}


#: Run here on SQLite and on PostgreSQL by tests/integration/hub/test_hubd.py (via test_hubd_store).
def check_the_runner_reads_the_results_the_service_stored(db: HubDatabase) -> None:
    """What the rollout runner reads instead of hearing the broker: the results of its
    commands, in order, with a deploy answer's chunk bitmap as bytes again."""
    mine, other = b"m" * 16, b"o" * 16
    answers = [
        (mine, ResultCode.ACCEPTED, {"phase": "receiving", "have": b"\x05\x00"}),
        (other, ResultCode.OK, {}),
        (mine, ResultCode.OK, {"switched": True}),
    ]
    outcome = db.write(
        [
            heard("pi-1", CommandResult(nonce=n, name="deploy", code=c, data=d), seq=i, ts=10.0 + i)
            for i, (n, c, d) in enumerate(answers)
        ]
    )
    assert outcome.written == 3
    store = RolloutStore(db)
    got = store.results([mine])
    assert [r.code for _, r in got] == [ResultCode.ACCEPTED, ResultCode.OK]
    assert got[0][1].data == {"phase": "receiving", "have": b"\x05\x00"}
    assert got[0][1].nonce == mine
    assert got[0][0] < got[1][0]  # row ids: what the runner already took is skipped
    assert store.results([]) == []
    many = [i.to_bytes(16, "big") for i in range(1200)]  # more than one IN list
    assert [r.nonce for _, r in store.results([*many, other, other])] == [other]


def grid_health(excess: float) -> Health:
    return Health(
        window_s=10.0,
        groups={
            "grid": GroupHealth(
                model="grid10@1",
                agent_steps=100,
                measures={"excess_surprise": MeasureSummary(mean=excess, p95=excess, n=100)},
            )
        },
    )


def _soaking_rollout(db: HubDatabase, criteria: list[str], wave_excess: float) -> RolloutStore:
    """A rollout of 6 nodes in waves of 2 and 4, soaking wave 1 since t0 = 1000 (for 60 s):
    its two nodes report an excess surprise around ``wave_excess``, the four untouched ones
    around 0, one window each 10 s (a window begun before t0 is not a sample)."""
    store = RolloutStore(db)
    health = [parse_criterion(c) for c in criteria]
    nodes = [f"h{i}" for i in range(6)]
    rollout_id = store.create(
        RolloutPlan(
            group="grid",
            bundle_sha256=SHA,
            waves=[2, 6],
            soak_s=60.0,
            criteria=Criteria(health=health),
        ),
        nodes,
    )
    store.update(rollout_id, state=RolloutState.RUNNING, phase="soaking", phase_started=1000.0)
    store.set_nodes(rollout_id, dict.fromkeys(nodes[:2], (NodeState.OK, "switched")))
    rng = np.random.default_rng(7)
    rows = [health_birth(node=node) for node in nodes]  # the births declare the group
    for i, node in enumerate(nodes):
        level = wave_excess if i < 2 else 0.0
        for k in range(8):  # windows ending t0 - 10 .. t0 + 60: 6 inside the soak
            excess = float(level + rng.normal(0, 0.05))
            rows.append(heard(node, grid_health(excess), seq=k, ts=990.0 + 10 * k))
    assert db.write(rows).written == len(rows)
    return store


def _runner(db: HubDatabase) -> RolloutRunner:
    """A runner on its own connection to ``db``'s database, publishing on an in-memory broker
    (no deployment happens in these steps)."""

    def open_db() -> HubDatabase:
        own = HubDatabase(db.engine)
        own.open()
        return own

    publisher = HubPublisher(
        MemoryTransport(MemoryBroker(), "hub-t"), Topics("f"), "hub-t", HeldMessages(10, 10_000)
    )
    return RolloutRunner(
        open_db, publisher, Ed25519PrivateKey.generate(), owner="hub-t", lease_s=600.0
    )


def check_the_health_gate_halts_pauses_passes_and_dry_runs(db: HubDatabase) -> None:
    """At the end of the soak, each health criterion judges the wave against the untouched
    nodes: a worse wave halts, too few samples pauses, equal health goes on, a dry run records
    its fail and goes on; every verdict is stored with the rollout and as a hub event."""
    cases = [
        (["excess_surprise:max_increase=0.1:min_samples=10"], 0.6, RolloutState.HALTING, "fail"),
        (["excess_surprise:max_increase=0.1:min_samples=20"], 0.6, RolloutState.PAUSED,
         "inconclusive"),
        (["excess_surprise:max_increase=0.1:min_samples=10"], 0.0, RolloutState.RUNNING, "pass"),
        (["excess_surprise:max_increase=0.1:min_samples=10:dry_run"], 0.6, RolloutState.RUNNING,
         "fail"),
    ]  # fmt: skip
    for criteria, excess, state, outcome in cases:
        store = _soaking_rollout(db, criteria, excess)
        rollout_id = store.ids(limit=1)[0]
        runner = _runner(db)
        try:
            assert runner.step(now=1030.0) is False  # still soaking: nothing judged
            assert store.get(rollout_id).verdicts == []
            runner.step(now=1061.0)
        finally:
            runner.stop()
        r = store.get(rollout_id)
        assert r.state is state, (criteria, excess, r.detail)
        (verdict,) = r.verdicts
        assert (verdict["wave"], verdict["outcome"]) == (1, outcome), verdict
        assert (verdict["wave_samples"], verdict["control_samples"]) == (12, 24)
        assert verdict["criterion"] == parse_criterion(criteria[0]).text()
        if state is RolloutState.RUNNING:
            assert (r.wave, r.phase) == (1, "deploying")
        else:
            assert f"wave 1: {verdict['criterion']}: {outcome}" in r.detail
        if state is RolloutState.PAUSED:
            assert "'rollout resume' judges again" in r.detail
        events = [e for e in db.events(node="hub-t") if e["data"]["rollout"] == rollout_id]
        assert [e["kind"] for e in events] == ["rollout"]
        assert events[0]["data"]["outcome"] == outcome
        severity = {"fail": "error", "inconclusive": "warning", "pass": "info"}[outcome]
        assert events[0]["severity"] == ("warning" if verdict["dry_run"] else severity)
        text = describe(r.summary())
        assert f"    wave 1 {verdict['criterion']} {outcome}" in text
        # The next case: its own rollout (this one over) and its own windows.
        store.update(rollout_id, state=RolloutState.HALTED)
        db.execute("DELETE FROM health")


def check_the_shadow_gate_judges_the_canaries_as_soon_as_they_are_deployed(
    db: HubDatabase,
) -> None:
    """With a shadow criterion, the canaries' final deploy results (their paired differences)
    are judged as the wave goes on to its soak: a worse candidate halts, too few pairs pause
    (``rollout resume`` goes on to the soak), an equal one soaks on; the verdict is stored."""
    cases = [
        ([0.8, 0.6, 0.9, 0.7] * 8, RolloutState.HALTING, "fail"),
        ([0.8, 0.6], RolloutState.PAUSED, "inconclusive"),
        ([0.0] * 32, RolloutState.RUNNING, "pass"),
    ]
    for diffs, state, outcome in cases:
        store = RolloutStore(db)
        nodes = ["c0", "c1", "c2"]
        rollout_id = store.create(
            RolloutPlan(
                group="grid",
                bundle_sha256=SHA,
                waves=[1, 3],
                shadow_s=30.0,
                criteria=Criteria(
                    shadow=[parse_shadow_criterion("shadow:excess_surprise:max_increase=0.1")]
                ),
            ),
            nodes,
        )
        store.update(rollout_id, state=RolloutState.RUNNING, phase="soaking", phase_started=1.0)
        store.set_nodes(rollout_id, {"c0": (NodeState.OK, "switched")})
        results = {
            "c0": CommandResult(
                nonce=b"n" * 16, name="deploy", code=ResultCode.OK,
                data={"shadow_pairs": len(diffs), "shadow_diffs": diffs},
            )
        }  # fmt: skip
        runner = _runner(db)
        try:
            runner._shadow_gate(store, store.get(rollout_id), results, 2.0)
        finally:
            runner.stop()
        r = store.get(rollout_id)
        assert r.state is state, r.detail
        (verdict,) = r.verdicts
        assert (verdict["wave"], verdict["outcome"], verdict["kind"]) == (1, outcome, "shadow")
        assert verdict["wave_samples"] == len(diffs)
        if state is RolloutState.PAUSED:
            assert "'rollout resume' goes on to the soak" in r.detail
        assert f"    wave 1 {verdict['criterion']} {outcome}" in describe(r.summary())
        store.update(rollout_id, state=RolloutState.HALTED)


ROLLOUT_SCENARIOS = [
    check_a_rollout_is_stored_with_its_nodes_in_waves,
    check_requests_are_checked_against_the_state,
    check_one_replica_holds_a_rollout_until_its_lease_runs_out,
    check_the_runner_reads_the_results_the_service_stored,
    check_the_health_gate_halts_pauses_passes_and_dry_runs,
    check_the_shadow_gate_judges_the_canaries_as_soon_as_they_are_deployed,
]


@pytest.mark.parametrize("scenario", ROLLOUT_SCENARIOS, ids=lambda f: f.__name__[len("check_") :])
def test_the_rollout_tables_on_sqlite(db: HubDatabase, scenario: Any) -> None:
    scenario(db)
