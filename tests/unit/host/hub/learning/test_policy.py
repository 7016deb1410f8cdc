"""Rounds the hub service runs by itself (``[learning]``, hub/learning/policy.py) on the in-memory
broker and SQLite: deltas heard -> a round due by experience -> built, signed and published as a
staged rollout with ``[learning] rollout``'s options; and ``[learning]``'s config problems, each
``file:line: field: problem``.

The ``check_*`` scenarios (two replicas' policies and a line's lease) take an open
:class:`HubDatabase` of any engine: the same ones run against a real PostgreSQL in
``tests/integration/hub/test_hubd.py``."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bundle.signing import key_id
from edge_agent.errors import ConfigError
from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent.fleet.protocol import Birth, GroupInfo, NodeState
from edge_agent_host.hub.cli.learn import status_lines
from edge_agent_host.hub.config.hub_toml import LearningSection, parse_hub_config
from edge_agent_host.hub.learning.policy import LearningPolicy
from edge_agent_host.hub.learning.round import build_round
from edge_agent_host.hub.learning.store import LearningStore, LeaseHeldError, LeaseLostError
from edge_agent_host.hub.rollouts.plan import RolloutState
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.service.loop import HubService, learning_policy
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.keys import generate_keypair
from tests.unit.host.hub.learning.test_store import (
    GATE,
    LINE,
    delta,
    deploy,
    increments,
    learning_db,
    line_bundle,
)
from tests.unit.host.hub.service.test_loop import FLEET, TOPICS, Node, run_until
from tests.unit.host.hub.storage.test_database import birth, heard, write_all

NODES = ("n1", "n2", "n3")


def test_a_round_due_by_experience_is_built_and_published_by_the_service(tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "hub-keys", "hub")
    learning_key = generate_keypair(tmp_path / "keys", "learning")
    text = f"""
[hub]
id = "hub-unit"
state_dir = "{tmp_path / "state"}"
status_interval_s = 0.1

[mqtt]
fleet = "{FLEET}"

[database]
type = "sqlite"

[rollouts]
key_file = "{keys.private_path}"

[learning]
key_file = "{learning_key.private_path}"
min_experience = 100
check_interval_s = 0.05
gate_rollouts = 20
gate_steps = 4
publish = true
rollout = ["--group", "grid", "--waves", "1,100%", "--soak", "1"]
"""
    source = parse_hub_config(text, "hub.toml")
    path = source.config.sqlite_path
    assert path is not None
    path.parent.mkdir(parents=True)
    db = HubDatabase(SqliteEngine(path))
    db.open()
    sha = deploy(db)  # the hub holds the line's bundle, as rollout start stores it
    db.close()
    policy = learning_policy(source)
    assert policy is not None
    broker = MemoryBroker()
    service = HubService(
        source.config,
        engine=SqliteEngine(path),
        transport=MemoryTransport(broker, "hub-unit"),
        learning=policy,
    )
    service.start()
    try:
        for i, name in enumerate(NODES):  # 40 agent-ticks each: due at the third
            node = Node(broker, name)
            node.send(TOPICS.node_state(name), NodeState(online=True), retain=True)
            node.send(TOPICS.birth(name), birth(sha=sha), retain=True)
            node.send(TOPICS.learning(name), delta(sha, 1, increments(i)))

        def published() -> bool:
            return policy.counts["published"] + policy.counts["errors"] > 0

        run_until(service, published, "a round published", timeout=60.0)
    finally:
        service.request_stop()
        service.shutdown()
    assert policy.counts == {
        "built": 1, "refused": 0, "published": 1, "skipped": 0, "lease_lost": 0, "errors": 0,
        "catch_up_errors": 0, "catch_up_skipped": 0, "untrusted": 0,
    }  # fmt: skip
    assert service.status()["learning_rounds"]["published"] == 1
    db = HubDatabase(SqliteEngine(path))
    db.open()
    try:
        store = LearningStore(db)
        built = store.latest_round(LINE)
        assert built is not None
        assert built["provenance"]["experience"] == 120
        assert sorted(built["provenance"]["nodes"]) == list(NODES)
        rollouts = RolloutStore(db)
        rollout = rollouts.get(built["rollout"]).summary()
        assert rollout["bundle_sha256"] == built["bundle_sha256"]
        assert (rollout["group"], rollout["waves"], rollout["soak_s"]) == ("grid", 2, 1.0)
        # A halt rolls the nodes it reached back to the version the round was built on.
        assert rollout["rollback_sha256"] == built["parent_sha256"] == sha
        assert store.current_sha256(LINE) == built["bundle_sha256"]  # the line's new version
        assert policy.due(store, time.time()) == {}  # nothing waits
        # Experience against the new version waits while the round's rollout runs (only its
        # canaries run that version yet), and makes a round due once the rollout has ended.
        new = built["bundle_sha256"]
        learning_db(db)  # the service's writer of learning deltas
        write_all(db, heard("n1", birth(sha=new), ts=2.0),
                  heard("n1", delta(new, 2, increments(5, 200), experience=200,
                                    model=f"{LINE}@{built['version']}"), ts=3.0))  # fmt: skip
        assert policy.due(store, time.time()) == {}
        rollouts.update(built["rollout"], state=RolloutState.DONE)
        assert policy.due(store, time.time()) == {LINE: 200}
    finally:
        db.close()


@pytest.mark.parametrize(
    ("learning", "where"),
    [
        (
            "every_s = 3600",
            "hub.toml:4: learning.every_s: rounds are signed with a bundle key of their own: set "
            "[learning] key_file (make one with 'edge-agent-host keygen --out DIR --name "
            "learning' and put learning.pub in the nodes' [daemon] trusted_keys_dir;",
        ),
        (
            'key_file = "learning.key"\nmin_experience = 1',
            "hub.toml:5: learning.min_experience: the policy catches late nodes up with "
            "rollouts signed by the hub's command key: set [rollouts] key_file",
        ),
        (
            'rollout = ["--group", "grid", "--waves"]',
            "hub.toml:4: learning.rollout: argument --waves: expected one argument",
        ),
        (
            'rollout = ["--group", "g", "--criterion", "surprize:max_increase=1"]',
            "hub.toml:4: learning.rollout: --criterion 'surprize:max_increase=1': unknown health",
        ),
        (
            'rollout = ["--group", "g", "--rollback-bundle", "old.tar"]',
            "hub.toml:4: learning.rollout: unrecognized arguments: --rollback-bundle old.tar",
        ),
        (
            'rollout = ["--group", "g", "--criterion", "shadow:excess_surprise:max_increase=0.1"]',
            "hub.toml:4: learning.rollout: --criterion 'shadow:excess_surprise:max_increase=0.1",
        ),
        ("max_share = 0", "hub.toml:4: learning.max_share: must be > 0"),
        ('catch_up = "yes"', "hub.toml:4: learning.catch_up: "),
    ],
)
def test_learning_config_problems_are_one_line_each(learning: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_hub_config(f"[hub]\nid = 'a'\n[learning]\n{learning}\n", "hub.toml")
    assert str(err.value).startswith(where), str(err.value)


def test_the_docs_learning_example_is_a_valid_config() -> None:
    """docs/fleet-learning.md's ``[learning]`` example, beside a key file, as written."""
    text = (Path(__file__).resolve().parents[5] / "docs" / "fleet-learning.md").read_text()
    (block,) = re.findall(r"```toml\n(\[learning\].*?)```", text, flags=re.S)
    learning = parse_hub_config(f'[rollouts]\nkey_file = "hub.key"\n{block}', "h").config.learning
    assert (learning.enabled, learning.publish, learning.rollout[:2]) == (
        True, True, ["--group", "grid"],
    )  # fmt: skip
    assert learning.key_file is not None
    assert learning.key_file.name == "learning.key"


# ------------------------------------------------------- nodes that could not verify a round
def trusting_birth(sha: str, keys: list[str] | None) -> Birth:
    """A birth of a daemon that runs the line's bundle ``sha`` in group ``grid`` and says it
    trusts ``keys`` for bundles (None: a daemon of an earlier version, which does not say)."""
    group = GroupInfo(agents=10, bundle=f"{LINE}@1.0.0", bundle_sha256=sha)
    return Birth(software_version="0.1.0", profile="x86-dev", budget_bytes=2**30,
                 groups={"grid": group}, bundle_keys=keys, tick_hz=10.0)  # fmt: skip


def test_a_line_whose_nodes_do_not_trust_the_learning_key_gets_no_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nodes whose births say they do not trust the learning key would refuse its rounds: the
    line's round is not built, one error line names the key (and its file) and the nodes'
    directory, once; ``learn status`` says it too. Once they trust it (the .pub copied into
    their trusted_keys_dir, a reload: a new birth), the round is built."""
    db = HubDatabase(SqliteEngine(tmp_path / "hub.db"))
    db.open()
    try:
        store = learning_db(db)
        sha = deploy(db)
        _, key = line_bundle()
        kid = key_id(key.public_key())
        ci = "fd38d8c32cd84092"
        now = time.time()
        for i, keys in enumerate(([ci], [ci], [ci], None)):  # n3: of an earlier version
            write_all(db, heard(f"n{i}", NodeState(online=True), seq=1, ts=now, retained=True),
                      heard(f"n{i}", trusting_birth(sha, keys), seq=2, ts=now, retained=True),
                      heard(f"n{i}", delta(sha, 1, increments(i)), seq=3, ts=now))  # fmt: skip
        section = LearningSection(min_experience=1, gate_rollouts=20, gate_steps=4,
                                  catch_up=False,
                                  key_file=Path("/etc/hub/learning.key"))  # fmt: skip
        policy = LearningPolicy(section, lambda: db, key, signer="t", owner="hub-t",
                                silent_after_s=3600.0)  # fmt: skip
        with caplog.at_level("ERROR", logger="edge_agent_host.hub.learning"):
            assert policy.run_due(db) == []
            assert policy.run_due(db) == []
        assert policy.counts["untrusted"] == 2
        assert store.rounds(LINE) == 0
        (record,) = caplog.records
        assert record.getMessage() == (
            f"learning rounds of {LINE} not built: 3 node(s) (n0, n1, n2) do not trust the "
            f"learning key {kid} ([learning] key_file = /etc/hub/learning.key): put its .pub in "
            f"their [daemon] trusted_keys_dir (their births say they trust {ci}; key {kid})"
        )
        refusing = store.not_trusting(LINE, kid, silent_after_s=3600.0)
        assert refusing == {"n0": [ci], "n1": [ci], "n2": [ci]}
        (row,) = store.status()
        text = status_lines([{**row, "learning_key": kid, "not_trusting": refusing}])
        assert (
            f"  rounds not built: 3 node(s) (n0, n1, n2) do not trust the learning key {kid} "
            "([learning] key_file): put its .pub in their [daemon] trusted_keys_dir"
            in "\n".join(text)
        )
        for i in range(3):  # learning.pub copied, each daemon reloaded: a new birth
            write_all(db, heard(f"n{i}", trusting_birth(sha, [ci, kid]), seq=4, ts=now + 1,
                                retained=True))  # fmt: skip
        (built,) = policy.run_due(db)
        assert built["state"] == "built"
    finally:
        db.close()


# ------------------------------------------------------------- replicas: a lease per model line
LEASE_S = 60.0


class Replicas:
    """Two replicas' policies (``hub-a``, ``hub-b``) on connections of their own to ``db``'s
    database, on one clock the test moves."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self.now = 1000.0
        section = LearningSection(min_experience=1, lease_s=LEASE_S, gate_rollouts=20,
                                  gate_steps=4, catch_up=False)  # fmt: skip
        _, key = line_bundle()
        self.key = key
        self.a, self.b = (
            LearningPolicy(
                section, self.connect, key, signer=name, owner=name, silent_after_s=60.0,
                clock=lambda: self.now,
            )
            for name in ("hub-a", "hub-b")
        )

    def connect(self) -> HubDatabase:
        other = HubDatabase(self.db.engine)
        other.open()
        return other

    def run_due(self, policy: LearningPolicy) -> list[dict[str, object]]:
        db = self.connect()
        try:
            return policy.run_due(db)
        finally:
            db.close()


def send_experience(db: HubDatabase, sha: str, seq: int) -> None:
    """Three nodes' deltas (``seq``) against bundle ``sha``."""
    write_all(db, *[heard(f"n{i}", delta(sha, seq, increments(10 * seq + i)), seq=seq, ts=seq)
                    for i in range(3)])  # fmt: skip


def learning_fleet(db: HubDatabase) -> tuple[LearningStore, str]:
    store = learning_db(db)
    sha = deploy(db)
    write_all(db, *[heard(f"n{i}", birth(sha=sha), ts=0.5) for i in range(3)])
    return store, sha


def check_one_replica_builds_a_line_at_a_time(db: HubDatabase) -> None:
    store, sha = learning_fleet(db)
    send_experience(db, sha, 1)
    replicas = Replicas(db)
    # hub-a holds the line (in its round): hub-b skips it, builds nothing
    assert store.take_lease(LINE, "hub-a", now=replicas.now, lease_s=LEASE_S)
    assert replicas.run_due(replicas.b) == []
    assert (replicas.b.counts["skipped"], store.rounds(LINE)) == (1, 0)
    (built,) = replicas.run_due(replicas.a)  # its own lease: it builds, then gives it up
    assert built["state"] == "built"
    assert store.lease(LINE) is None
    # both replicas look at once: the line's round is built once, by either
    send_experience(db, sha, 2)
    done: list[list[dict[str, object]]] = []
    looks = [threading.Thread(target=lambda p=p: done.append(replicas.run_due(p)))
             for p in (replicas.a, replicas.b)]  # fmt: skip
    for t in looks:
        t.start()
    for t in looks:
        t.join(120.0)
    assert sorted(len(d) for d in done) == [0, 1]
    assert store.rounds(LINE) == 2
    assert replicas.a.counts["built"] + replicas.b.counts["built"] == 2
    assert store.status()[0]["waiting"] == {"deltas": 0, "experience": 0}


def check_a_crashed_holders_lease_is_taken_over(db: HubDatabase) -> None:
    store, sha = learning_fleet(db)
    send_experience(db, sha, 1)
    replicas = Replicas(db)
    # hub-b took the line and crashed in its round: it never gives the lease up
    assert store.take_lease(LINE, "hub-b", now=replicas.now, lease_s=LEASE_S)
    replicas.now += LEASE_S - 1.0
    assert replicas.run_due(replicas.a) == []
    assert replicas.a.counts["skipped"] == 1
    replicas.now += 2.0  # the lease expired: hub-a takes the line over
    (built,) = replicas.run_due(replicas.a)
    assert built["state"] == "built"
    assert store.rounds(LINE) == 1
    # a replica that stalled past its lease, taken over meanwhile, stores nothing
    send_experience(db, sha, 2)
    assert store.take_lease(LINE, "hub-b", now=replicas.now, lease_s=LEASE_S)
    assert store.take_lease(LINE, "hub-a", now=replicas.now + LEASE_S, lease_s=LEASE_S)
    with pytest.raises(LeaseLostError, match="no longer holds its lease"):
        build_round(store, LINE, replicas.key, settings=GATE, owner="hub-b")
    assert store.rounds(LINE) == 1
    assert store.status()[0]["waiting"]["deltas"] == 3  # still waiting for a round


def check_a_build_by_hand_and_the_replicas_take_turns_on_a_line(db: HubDatabase) -> None:
    """``learn build`` by hand holds the line's lease (``LearningStore.leased``) as a replica's
    policy does: neither builds the line while the other holds it."""
    store, sha = learning_fleet(db)
    send_experience(db, sha, 1)
    replicas = Replicas(db)
    by_hand = "hub-a learn build 7"
    with store.leased(LINE, by_hand, now=replicas.now, lease_s=LEASE_S):
        assert replicas.run_due(replicas.a) == []  # the same replica's policy waits too
        assert (replicas.a.counts["skipped"], store.rounds(LINE)) == (1, 0)
        with (
            pytest.raises(LeaseHeldError, match=f"'{LINE}': '{by_hand}' holds its lease until"),
            store.leased(LINE, "hub-b learn build 8", now=replicas.now, lease_s=LEASE_S),
        ):
            pass
        built = build_round(store, LINE, replicas.key, settings=GATE, owner=by_hand)
        assert built["state"] == "built"
    assert store.lease(LINE) is None  # given up after the build
    send_experience(db, sha, 2)
    assert store.take_lease(LINE, "hub-b", now=replicas.now, lease_s=LEASE_S)  # a round runs
    with (
        pytest.raises(LeaseHeldError, match=f"'{LINE}': 'hub-b' holds its lease until"),
        store.leased(LINE, by_hand, now=replicas.now, lease_s=LEASE_S),
    ):
        pass
    assert (store.rounds(LINE), store.lease(LINE)) == (1, ("hub-b", replicas.now + LEASE_S))


POLICY_SCENARIOS = [
    check_one_replica_builds_a_line_at_a_time,
    check_a_crashed_holders_lease_is_taken_over,
    check_a_build_by_hand_and_the_replicas_take_turns_on_a_line,
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDatabase]:
    database = HubDatabase(SqliteEngine(tmp_path / "hub.db"))
    database.open()
    yield database
    database.close()


@pytest.mark.parametrize("scenario", POLICY_SCENARIOS, ids=lambda f: f.__name__[len("check_") :])
def test_replicas_scenario_on_sqlite(db: HubDatabase, scenario: Any) -> None:
    scenario(db)
