"""The learning tables (hub/learning/store.py) and a round (hub/learning/round.py) on SQLite:
deltas checked against the line's bundle and stored once per (node, group, seq), each refusal
counted by its reason; a round that merges them into a signed bundle with its provenance.

The ``check_*`` scenarios take an open :class:`HubDatabase` of any engine: the same ones run
against a real PostgreSQL in ``tests/integration/hub/test_hubd.py``.
"""

from __future__ import annotations

import functools
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.aif.quant import QuantizedModel
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.fleet.comms.memory import MemoryBroker
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import (
    Birth,
    CountsDelta,
    GroupInfo,
    LearningDelta,
    NodeState,
)
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model
from edge_agent_host.converter.aif.options import AifOptions
from edge_agent_host.converter.common import ConvertOptions
from edge_agent_host.converter.formats.aif import convert_aif
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.cli.learn import status_lines
from edge_agent_host.hub.config.hub_toml import LearningSection
from edge_agent_host.hub.config.rollout_options import parse_start_options
from edge_agent_host.hub.gates.health import parse_criterion
from edge_agent_host.hub.learning.checks import Refusal
from edge_agent_host.hub.learning.merge import MergeSettings
from edge_agent_host.hub.learning.model import line_model
from edge_agent_host.hub.learning.policy import LearningPolicy
from edge_agent_host.hub.learning.round import LearnInputError, RoundSettings, build_round
from edge_agent_host.hub.learning.store import LearningStore
from edge_agent_host.hub.rollouts.plan import Criteria, RolloutPlan, RolloutState
from edge_agent_host.hub.rollouts.runner import RolloutRunner
from edge_agent_host.hub.rollouts.start import store_rollout
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from tests.unit.host.hub.rollouts.test_client import DeployingNode
from tests.unit.host.hub.rollouts.test_runner import grid_health
from tests.unit.host.hub.service.test_loop import make_service
from tests.unit.host.hub.storage.test_database import birth, heard, write_all

LINE = "tmaze"
LR = 0.5
GATE = RoundSettings(rollouts=20, steps=4)  # the converter's gate, small


@functools.cache
def line_bundle() -> tuple[bytes, Ed25519PrivateKey]:
    """A signed bundle of the reversal T-maze that learns ``A1`` and ``B0`` (its file's bytes),
    and the key that signed it."""
    model = tmaze_reversal_model()
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tmaze.tar"
        report = convert_aif(
            ConvertOptions(out=out, name=LINE, version="1.0.0", sign_key=key, signer="test"),
            AifOptions(
                model=model,
                counts={
                    "A": {1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)},
                    "B": {0: model.B[0] * 10.0 + 0.5 * (model.B[0] > 0)},
                },
                rollouts=20,
                steps=4,
            ),
        )
        assert report.bundle is not None
        return out.read_bytes(), key


def deploy(db: HubDatabase) -> str:
    """The hub holds the line's bundle (as ``rollout start`` stores it); its sha256."""
    data, _ = line_bundle()
    model = line_model(data)
    RolloutStore(db).put_bundle(data, model.sha256, model.name, model.version)
    return model.sha256


def counts_delta(table: str, dense: np.ndarray, experience: int, lr: float = LR) -> CountsDelta:
    """A table's increments (its own shape) as the wire carries them: the columns that moved."""
    flat = dense.reshape(dense.shape[0], -1)
    columns = np.flatnonzero(flat.sum(axis=0) != 0).astype("<u4")
    return CountsDelta(
        table=table,
        shape=dense.shape,
        columns=columns.tobytes(),
        values=np.ascontiguousarray(flat[:, columns].T, dtype="<f4").tobytes(),
        experience=experience,
        lr=lr,
    )


def increments(seed: int, experience: int = 40) -> dict[str, np.ndarray]:
    """What a group learned in ``experience`` agent-ticks: ``lr`` of mass per tick and table,
    on entries the model allows (``B0``: the location factor's transitions, ``A1``: reward)."""
    rng = np.random.default_rng(seed)
    model = tmaze_reversal_model()
    out = {}
    for name, table in (("A1", model.A[1]), ("B0", model.B[0])):
        flat = table.reshape(table.shape[0], -1)
        dense = np.zeros_like(flat)
        for _ in range(experience):
            col = rng.integers(flat.shape[1])
            dense[rng.choice(flat.shape[0], p=flat[:, col]), col] += LR
        out[name] = dense.reshape(table.shape)
    return out


def delta(
    sha: str,
    seq: int,
    tables: dict[str, np.ndarray],
    *,
    group: str = "grid",
    experience: int = 40,
    model: str = f"{LINE}@1.0.0",
) -> LearningDelta:
    return LearningDelta(
        group=group,
        model=model,
        model_sha256=sha,
        seq=seq,
        tables=[counts_delta(t, a, experience) for t, a in sorted(tables.items())],
    )


def learning_db(db: HubDatabase) -> LearningStore:
    store = LearningStore(db)
    db.add_writer(LearningDelta.TYPE, store.ingest)
    return store


def statuses(db: HubDatabase) -> dict[tuple[str, int], str]:
    rows = db.query("SELECT node, seq, status FROM learning_deltas")
    return {(str(r[0]), int(r[1])): str(r[2]) for r in rows}


# ---------------------------------------------------------------------------------- scenarios
def check_deltas_are_checked_and_stored_once(db: HubDatabase) -> None:
    store = learning_db(db)
    sha = deploy(db)
    write_all(db, heard("n1", birth(sha=sha), ts=1.0))
    good = increments(1)
    negative = increments(2)
    negative["B0"][0, 0, 0] = -LR
    nan = increments(3)
    nan["A1"][0, 0, 0] = np.nan
    heavy = increments(4)
    heavy["B0"] *= 1.01  # one percent more mass than 40 agent-ticks at lr 0.5 allow
    wrong = {"B0": np.zeros((4, 4, 3))}
    wrong["B0"][0, 0, 0] = LR
    unlearned = {"D0": np.full(4, LR / 4)}
    write_all(
        db,
        heard("n1", delta(sha, 1, good), ts=2.0),
        heard("n1", delta(sha, 1, good), ts=2.0),  # a re-send
        heard("n1", delta(sha, 1, good), ts=3.0, received=9.0),  # a second replica's
        heard("n1", delta(sha, 2, good, group="nope"), ts=4.0),
        heard("n1", delta("ef" * 32, 3, good), ts=5.0),
        heard("n1", delta(sha, 4, good, model=f"{LINE}@9"), ts=5.5),
        heard("n1", delta(sha, 5, negative), ts=6.0),
        heard("n1", delta(sha, 6, nan), ts=7.0),
        heard("n1", delta(sha, 7, heavy), ts=8.0),
        heard("n1", delta(sha, 8, wrong), ts=9.0),
        heard("n1", delta(sha, 9, unlearned), ts=10.0),
        heard("n1", delta(sha, 10, increments(5)), ts=11.0),
    )
    assert statuses(db) == {
        ("n1", 1): "accepted",
        ("n1", 2): Refusal.UNKNOWN_GROUP,
        ("n1", 3): Refusal.UNKNOWN_MODEL,
        ("n1", 4): Refusal.UNKNOWN_MODEL,
        ("n1", 5): Refusal.NEGATIVE,
        ("n1", 6): Refusal.NON_FINITE,
        ("n1", 7): Refusal.MASS,
        ("n1", 8): Refusal.SHAPE,
        ("n1", 9): Refusal.SHAPE,
        ("n1", 10): "accepted",
    }
    # A newer bundle of the line: what was learned against the old one is stale from now on.
    RolloutStore(db).put_bundle(b"newer", "cd" * 32, LINE, "1.0.1")
    write_all(db, heard("n1", delta(sha, 11, good), ts=12.0))
    assert statuses(db)[("n1", 11)] == Refusal.STALE_VERSION
    counts = store.counts_by_reason()
    assert counts["accepted"] == 2
    assert counts[Refusal.SHAPE] == 2
    assert counts[Refusal.OUTLIER] == 0
    (line,) = store.status()
    assert line["line"] == LINE
    assert (line["accepted"], line["nodes"], line["experience"]) == (2, 1, 80)
    assert line["refused"] == {
        "mass": 1,
        "negative": 1,
        "non_finite": 1,
        "shape": 2,
        "stale_version": 1,
        "unknown_group": 1,
        "unknown_model": 2,
    }
    # The two accepted were learned against 1.0.0, which 1.0.1 replaced: no round merges them.
    assert line["waiting"] == {"deltas": 0, "experience": 0}
    assert line["last_round"] is None


def check_a_round_merges_the_deltas_into_a_signed_bundle(db: HubDatabase) -> None:
    store = learning_db(db)
    sha = deploy(db)
    data, key = line_bundle()
    prior = line_model(data).counts
    learned = {n: increments(10 + i) for i, n in enumerate(("n1", "n2", "n3", "n4"))}
    for n in learned:
        write_all(db, heard(n, birth(sha=sha), ts=1.0))
    write_all(
        db,
        *[heard(n, delta(sha, 1, learned[n]), ts=2.0) for n in learned],
        heard("n1", delta(sha, 2, learned["n1"]), ts=3.0),  # n1 learned as much again
    )
    with pytest.raises(LearnInputError, match="no bundle of that name"):
        build_round(store, "other", key, settings=GATE)
    summary = build_round(store, LINE, key, signer="hub", settings=GATE)
    assert summary["state"] == "built", summary["gate"]
    assert summary["version"] == "1.0.0+learn1"
    assert summary["deltas"] == 5
    assert summary["experience"] == 200
    assert sorted(summary["nodes"]) == ["n1", "n2", "n3", "n4"]
    assert summary["nodes"]["n1"]["experience"] == 80
    assert summary["outliers"] == []
    built = store.latest_round(LINE)
    assert built is not None
    assert built["bundle"] is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "new.tar"
        path.write_bytes(built["bundle"])
        bundle = load_bundle(path, trusted_keys=TrustedKeys([key.public_key()]))
    assert bundle.sha256 == summary["bundle_sha256"]
    assert bundle.manifest.version == "1.0.0+learn1"
    new = line_model(built["bundle"]).counts
    total = {t: sum(learned[n][t] for n in learned) + learned["n1"][t] for t in prior}
    capped = set(summary["capped"])
    for t in prior:  # the sum, less what the cap took from the capped nodes
        assert np.all(new[t] <= prior[t] + total[t] + 1e-9)
        if not capped:
            np.testing.assert_allclose(new[t], prior[t] + total[t], rtol=1e-9)
    # the model's table is the merged counts normalised (up to the int8 tables' rounding)
    b0 = (
        QuantizedModel.from_arrays(
            {k: v for k, v in bundle.aif_arrays().items() if not k.startswith("p")}
        )
        .dequantize()
        .B[0]
    )
    np.testing.assert_allclose(b0, new["B0"] / new["B0"].sum(axis=0), atol=0.02)
    with pytest.raises(LearnInputError, match="no accepted experience"):
        build_round(store, LINE, key, settings=GATE)
    (line,) = store.status()
    assert line["waiting"] == {"deltas": 0, "experience": 0}
    assert line["last_round"]["version"] == "1.0.0+learn1"
    assert line["last_round"]["nodes"] == 4
    # the round's bundle deployed: new deltas against it chain on the round's counts
    RolloutStore(db).put_bundle(built["bundle"], bundle.sha256, LINE, bundle.manifest.version)
    more = increments(20)
    write_all(
        db,
        heard("n2", birth(sha=bundle.sha256), ts=5.0),
        heard("n2", delta(bundle.sha256, 2, more, model=f"{LINE}@1.0.0+learn1"), ts=6.0),
    )
    second = build_round(
        store,
        LINE,
        key,
        settings=RoundSettings(merge=MergeSettings(forgetting=0.5), rollouts=20, steps=4),
    )
    assert second["state"] == "built"
    assert second["version"] == "1.0.0+learn2"
    again = store.latest_round(LINE)
    assert again is not None
    assert again["bundle"] is not None
    for t in prior:
        np.testing.assert_allclose(
            line_model(again["bundle"]).counts[t],
            prior[t] + 0.5 * (new[t] - prior[t]) + more[t],
            rtol=1e-9,
        )


def check_a_line_that_does_not_learn_is_refused(db: HubDatabase) -> None:
    store = learning_db(db)
    _, key = line_bundle()
    frozen = tmaze_reversal_model()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "frozen.tar"
        report = convert_aif(
            ConvertOptions(out=out, name="frozen", version="1", sign_key=key),
            AifOptions(model=frozen, rollouts=10, steps=2),
        )
        assert report.bundle is not None
        RolloutStore(db).put_bundle(out.read_bytes(), report.bundle["sha256"], "frozen", "1")
    with pytest.raises(LearnInputError, match="has no learning"):
        build_round(store, "frozen", key, settings=GATE)


def check_a_rolled_back_round_is_not_the_line_version(db: HubDatabase) -> None:
    store = learning_db(db)
    sha = deploy(db)
    _, key = line_bundle()
    prior = line_model(line_bundle()[0]).counts
    now = time.time()
    for i, n in enumerate(("n1", "n2", "n3")):
        write_all(db, heard(n, NodeState(online=True), seq=1, ts=now, retained=True),
                  heard(n, birth(sha=sha), seq=2, ts=now, retained=True),
                  heard(n, delta(sha, 1, increments(i)), seq=3, ts=now))  # fmt: skip
    first = build_round(store, LINE, key, settings=GATE)
    built = store.latest_round(LINE)
    assert built is not None
    assert built["bundle"] is not None
    started = store_rollout(
        db, parse_start_options(["--group", "grid"]), DeployPlan.from_bytes(built["bundle"]),
        silent_after_s=3600.0, on_stored=lambda db, r: store.set_rollout(first["round"], r),
    )  # fmt: skip
    assert store.current_sha256(LINE) == first["bundle_sha256"]  # published: the new version
    canary = delta(first["bundle_sha256"], 2, increments(7), model=f"{LINE}@{first['version']}")
    write_all(db, heard("n2", canary, seq=4, ts=now))  # what the canary learned on round 1
    assert statuses(db)[("n2", 2)] == "accepted"
    (line,) = store.status()
    assert line["waiting"] == {"deltas": 1, "experience": 40}
    RolloutStore(db).update(started["id"], state=RolloutState.ROLLED_BACK, phase="")
    # Rolled back: the nodes run 1.0.0 again, which is the line's version again; what they
    # learn on it is accepted, and the next round starts from 1.0.0's counts, not round 1's.
    # The canary's delta on round 1 is never merged: it does not wait for the next round.
    assert store.current_sha256(LINE) == sha
    (line,) = store.status()
    assert (line["current_sha256"], line["waiting"]) == (sha, {"deltas": 0, "experience": 0})
    more = increments(30)
    write_all(db, heard("n1", delta(sha, 2, more), seq=4, ts=now))
    assert statuses(db)[("n1", 2)] == "accepted"
    second = build_round(store, LINE, key, settings=GATE)
    assert (second["state"], second["version"], second["deltas"]) == ("built", "1.0.0+learn2", 1)
    again = store.latest_round(LINE)
    assert again is not None
    assert again["bundle"] is not None
    for t in prior:  # one node: neither capped nor scored
        np.testing.assert_allclose(line_model(again["bundle"]).counts[t], prior[t] + more[t],
                                   rtol=1e-9)  # fmt: skip


def check_a_bundle_stored_after_the_first_delta_is_learned_from_at_once(db: HubDatabase) -> None:
    """Nodes that learn before the hub holds their bundle: refused ``unknown_model`` (with the
    bundle's name, version and the command that stores it), and accepted as soon as ``rollout
    start`` stored it, by the same store (no restart)."""
    store = learning_db(db)
    data, _ = line_bundle()
    model = line_model(data)
    write_all(db, heard("n1", birth(sha=model.sha256), ts=1.0))
    write_all(db, *[heard("n1", delta(model.sha256, s, increments(s)), seq=s, ts=1.0 + s)
                    for s in (1, 2)])  # fmt: skip
    assert statuses(db) == {("n1", 1): Refusal.UNKNOWN_MODEL, ("n1", 2): Refusal.UNKNOWN_MODEL}
    (line,) = store.status()
    (unknown,) = line["unknown_models"]
    assert unknown == {
        "model": f"{LINE}@1.0.0", "sha256": model.sha256, "group": "grid", "deltas": 2,
        "last": unknown["last"], "held": False,
        "fix": "the hub holds no such bundle; 'edge-agent-hub rollout start FILE --group grid' "
        "stores it (FILE: that bundle; a node that runs it already answers ok at once), and "
        "deltas on it are accepted from then on",
    }  # fmt: skip
    text = status_lines([line])
    assert (
        f"  unknown_model: 2 deltas of group grid against {LINE}@1.0.0 ({model.sha256[:12]}): "
        "the hub holds no such bundle; 'edge-agent-hub rollout start FILE --group grid' stores "
        "it" in "\n".join(text)
    ), text
    RolloutStore(db).put_bundle(data, model.sha256, model.name, model.version)  # rollout start
    write_all(db, heard("n1", delta(model.sha256, 3, increments(3)), seq=3, ts=5.0))
    assert statuses(db)[("n1", 3)] == "accepted"
    (line,) = store.status()
    assert line["unknown_models"][0]["held"] is True
    assert line["waiting"] == {"deltas": 1, "experience": 40}


def rated_birth(sha: str, *, agents: int = 10, tick_hz: float | None = 20.0) -> Birth:
    """A birth running the line's bundle ``sha`` in group ``grid`` that says its tick rate."""
    group = GroupInfo(agents=agents, bundle="b", bundle_sha256=sha)
    return Birth(software_version="0.1.0", profile="x86-dev", budget_bytes=2**30,
                 groups={"grid": group}, tick_hz=tick_hz)  # fmt: skip


def check_experience_is_bounded_by_what_the_birth_could_have_lived(db: HubDatabase) -> None:
    """Bounds from the hub, not the node (STYLE 32): 10 agents at 20 Hz, twice over, since the
    group's last delta (a first delta: a day's worth); a claim beyond is refused ``experience``,
    counted, and spends nothing; 2**63 - 1 agent-ticks are one refused delta, never a failed
    ``learn status`` or policy look. Sums of what is stored cannot overflow either."""
    store = learning_db(db)
    sha = deploy(db)
    rate = 10 * 20.0 * 2.0
    big = 2**63 - 1
    write_all(db, heard("n1", rated_birth(sha), ts=1.0))
    day = int(rate * 86400)
    inc = increments(1)
    write_all(
        db,
        heard("n1", delta(sha, 1, inc, experience=day - 100), seq=1, ts=1000.0, received=1000.0),
        heard("n1", delta(sha, 2, inc, experience=big), seq=2, ts=1001.0, received=1001.0),
        heard("n1", delta(sha, 3, inc, experience=big), seq=3, ts=1002.0, received=1002.0),
        # 10 s later: 100 left + 4,000 grown, so 4,100 is taken, 4,101 would not be
        heard("n1", delta(sha, 4, inc, experience=4101), seq=4, ts=1010.0, received=1010.0),
        heard("n1", delta(sha, 5, inc, experience=4100), seq=5, ts=1010.0, received=1010.0),
        heard("n1", delta(sha, 6, inc, experience=40), seq=6, ts=1010.0, received=1010.0),
    )
    got = statuses(db)
    assert [got[("n1", s)] for s in range(1, 7)] == [
        "accepted", "experience", "experience", "experience", "accepted", "experience",
    ]  # fmt: skip
    assert store.counts_by_reason()[Refusal.EXPERIENCE] == 4
    (line,) = store.status()
    assert line["refused"]["experience"] == 4
    assert line["waiting"]["experience"] == day - 100 + 4100
    # Rows stored with the largest experience a node can send (a hub of before took them, or
    # a damaged row): the sums stay numbers, the look and the status go on.
    with db.transaction():
        db.execute_many(
            "INSERT INTO learning_deltas (node, grp, seq, received, line, version, model_sha256,"
            " experience, status, tables) VALUES (:node, 'grid', :seq, 1.0, :line, '1.0.0', "
            ":sha, :exp, 'accepted', :tables)",
            [{"node": "old", "seq": s, "line": LINE, "sha": sha, "exp": big,
              "tables": b"\xc1 not msgpack"} for s in (1, 2, 3)],
        )  # fmt: skip
    (line,) = store.status()
    assert line["waiting"]["experience"] == pytest.approx(3 * big + day - 100 + 4100, rel=1e-12)
    policy = LearningPolicy(LearningSection(min_experience=1), lambda: db, line_bundle()[1],
                            signer="t", owner="o", silent_after_s=3600.0)  # fmt: skip
    assert LINE in policy.due(store, 2000.0)
    # The damaged rows are refused at the round (unreadable, counted); the good ones merge.
    summary = build_round(store, LINE, line_bundle()[1], settings=GATE)
    assert (summary["state"], summary["deltas"]) == ("built", 2)
    assert store.counts_by_reason()[Refusal.UNREADABLE] == 3


LEARNING_SCENARIOS = [
    check_a_bundle_stored_after_the_first_delta_is_learned_from_at_once,
    check_experience_is_bounded_by_what_the_birth_could_have_lived,
    check_deltas_are_checked_and_stored_once,
    check_a_round_merges_the_deltas_into_a_signed_bundle,
    check_a_line_that_does_not_learn_is_refused,
    check_a_rolled_back_round_is_not_the_line_version,
]


# --------------------------------------------------------------- a round that halts, each way
UNTRUSTED = "verify: bundle signed by untrusted key f8422245126d6ab4 (trusted: fd38d8c32cd84092)"


class HaltingRound:
    """A line with a round built on its first bundle (from three nodes' deltas) and a staged
    rollout of it whose rollback bundle is that first bundle, carried by a real
    :class:`RolloutRunner` stepped by the test (``step(now)``) while the hub service, on a
    thread of its own, stores the nodes' answers."""

    def __init__(self, tmp: Path, nodes: dict[str, tuple[ResultCode, str]], waves: list[int],
                 criteria: Criteria | None = None) -> None:  # fmt: skip
        self.broker = MemoryBroker()
        self.answering = {n: DeployingNode(self.broker, n, c, d) for n, (c, d) in nodes.items()}
        self.service, _ = make_service(tmp, self.broker)
        self.service.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.db = HubDatabase(self.service.db.engine)
        self.db.open()
        self.store = learning_db(self.db)
        self.parent = deploy(self.db)
        _, self.key = line_bundle()
        now = time.time()
        for i, n in enumerate(nodes):
            write_all(self.db, heard(n, NodeState(online=True), seq=1, ts=now, retained=True),
                      heard(n, birth(sha=self.parent), seq=2, ts=now, retained=True),
                      heard(n, delta(self.parent, 1, increments(i)), seq=3, ts=now))  # fmt: skip
        self.round = build_round(self.store, LINE, self.key, settings=GATE)
        built = self.store.latest_round(LINE)
        assert built is not None
        assert built["bundle"] is not None
        plan = DeployPlan.from_bytes(built["bundle"])
        rollouts = RolloutStore(self.db)
        rollouts.put_bundle(plan.data, plan.sha256, plan.name, plan.version)
        self.rollout = rollouts.create(
            RolloutPlan(group="grid", bundle_sha256=plan.sha256, bundle_name=plan.name,
                        bundle_version=plan.version, waves=waves, soak_s=60.0, watch_ticks=1,
                        health_steps=1, deploy_timeout_s=30.0, rollback_sha256=self.parent,
                        criteria=criteria or Criteria()),
            list(nodes),
        )  # fmt: skip
        self.store.set_rollout(self.round["round"], self.rollout)
        self.runner = RolloutRunner(
            self._open, self.service.publisher, Ed25519PrivateKey.generate(), owner="hub-unit",
            lease_s=600.0,
        )  # fmt: skip

    def _open(self) -> HubDatabase:
        own = HubDatabase(self.service.db.engine)
        own.open()
        return own

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.service.step(wait_s=0.02)

    def state(self) -> RolloutState:
        return RolloutStore(self.db).get(self.rollout).state

    def step_until(self, states: set[RolloutState], now: float | None = None) -> None:
        for _ in range(20):
            if self.state() in states:
                return
            self.runner.step(now=now)
        pytest.fail(f"the rollout is {self.state()}, not one of {states}")

    def close(self) -> None:
        self.runner.stop()
        self._stop.set()
        self._thread.join(10)
        self.service.shutdown()
        self.db.close()


@pytest.fixture
def halting(tmp_path: Path) -> Iterator[Any]:
    made: list[HaltingRound] = []

    def make(*args: Any, **kwargs: Any) -> HaltingRound:
        made.append(HaltingRound(tmp_path, *args, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


def assert_the_line_went_back(
    h: HaltingRound, state: RolloutState, why: str, meanwhile: dict[str, np.ndarray] | None = None
) -> None:
    """After a halt: the line's version is the first bundle again (what the nodes run), its
    deltas are accepted and waiting (with ``meanwhile``: what ``n2`` sent on it while the round
    rolled out), ``learn status`` shows the round's rollout and why, the policy finds the next
    round due, and it is built from the deltas on the first bundle with the first bundle's
    counts as its prior (not the halted round's)."""
    store = h.store
    assert h.state() is state
    assert store.current_sha256(LINE) == h.parent
    assert store.accepted_versions(LINE) == (h.parent,)
    now = time.time()
    more = increments(30)
    write_all(h.db, heard("n1", delta(h.parent, 2, more), seq=10, ts=now))
    assert statuses(h.db)[("n1", 2)] == "accepted"
    (line,) = store.status()
    assert (line["current_sha256"], line["version"]) == (h.parent, f"{LINE}@1.0.0")
    waiting = 1 + (meanwhile is not None)
    assert line["waiting"] == {"deltas": waiting, "experience": 40 * waiting}
    last = line["last_round"]
    assert (last["id"], last["state"]) == (h.round["round"], "built")
    assert (last["rollout"]["id"], last["rollout"]["state"]) == (h.rollout, state.value)
    assert why in last["rollout"]["why"], last["rollout"]
    text = "\n".join(status_lines([line]))
    assert f"; rollout {h.rollout} {state.value}: " in text, text
    assert f"the line stays on {LINE}@1.0.0" in text, text
    policy = LearningPolicy(LearningSection(min_experience=40), h._open, h.key, signer="t",
                            owner="hub-unit", silent_after_s=3600.0)  # fmt: skip
    assert policy.due(store, now) == {LINE: 40 * waiting}
    second = build_round(store, LINE, h.key, settings=GATE)
    assert (second["state"], second["version"]) == ("built", "1.0.0+learn2")
    assert second["deltas"] == waiting
    assert second["parent"] == f"{LINE}@1.0.0"
    again = store.latest_round(LINE)
    assert again is not None
    assert again["bundle"] is not None
    prior = line_model(line_bundle()[0]).counts
    halted = line_model(h.store.latest_round(LINE, round_id=h.round["round"])["bundle"]).counts
    for t in prior:  # the first bundle's counts and what the deltas on it sent (less any cap)
        new = line_model(again["bundle"]).counts[t]
        extra = 0.0 if meanwhile is None else meanwhile[t]
        if meanwhile is None:  # one node: neither capped nor scored
            np.testing.assert_allclose(new, prior[t] + more[t], rtol=1e-9)
        assert np.all(new >= prior[t] - 1e-9)
        assert np.all(new <= prior[t] + more[t] + extra + 1e-9)
        assert np.any(new < halted[t] - 1e-6)  # not on top of the halted round's counts


def test_a_round_its_canary_cannot_verify_leaves_the_line_on_the_version_before(
    halting: Any,
) -> None:
    h = halting({"n1": (ResultCode.FAILED, UNTRUSTED), "n2": (ResultCode.OK, "bundle runs"),
                 "n3": (ResultCode.OK, "bundle runs")}, [1, 3])  # fmt: skip
    store = h.store
    # Published: the round is the line's version; the nodes not reached yet still learn on the
    # version before, and what they send on it is accepted meanwhile.
    assert store.current_sha256(LINE) == h.round["bundle_sha256"]
    assert store.accepted_versions(LINE) == (h.round["bundle_sha256"], h.parent)
    meanwhile = increments(8)
    write_all(h.db, heard("n2", delta(h.parent, 2, meanwhile), seq=4, ts=time.time()))
    assert statuses(h.db)[("n2", 2)] == "accepted"
    h.step_until({RolloutState.HALTED})
    r = RolloutStore(h.db).get(h.rollout)
    assert r.deployed() == []  # nothing deployed: nothing to roll back
    assert r.nodes["n1"]["state"] == "failed"
    assert {r.nodes[n]["state"] for n in ("n2", "n3")} == {"pending"}
    assert_the_line_went_back(h, RolloutState.HALTED, f"n1: failed: {UNTRUSTED}", meanwhile)


def test_a_round_whose_deployment_fails_in_a_later_wave_is_rolled_back(halting: Any) -> None:
    h = halting({"n1": (ResultCode.OK, "bundle runs"),
                 "n2": (ResultCode.FAILED, "health check: 3 of 3 steps failed"),
                 "n3": (ResultCode.OK, "bundle runs")}, [1, 3])  # fmt: skip
    h.step_until({RolloutState.RUNNING})
    h.step_until({RolloutState.HALTING}, now=time.time() + 61.0)  # the canary soaked: wave 2
    h.answering["n2"].code = ResultCode.OK  # the rollback is taken where it was deployed
    h.step_until({RolloutState.ROLLED_BACK})
    r = RolloutStore(h.db).get(h.rollout)
    assert {n: r.nodes[n]["state"] for n in ("n1", "n2")} == {"n1": "reverted", "n2": "failed"}
    assert_the_line_went_back(
        h, RolloutState.ROLLED_BACK, "n2: failed: health check: 3 of 3 steps failed"
    )


def gated(h: HaltingRound, wave_excess: float) -> None:
    """Deploy the canaries (``c*``, wave 1) and give every node windows of excess surprise
    inside their soak: around ``wave_excess`` for the canaries, 0 for the untouched nodes."""
    h.step_until({RolloutState.RUNNING})
    h.runner.step()  # wave 1 deployed: soaking from now
    r = RolloutStore(h.db).get(h.rollout)
    assert r.phase == "soaking"
    assert r.phase_started is not None
    since = r.phase_started
    rng = np.random.default_rng(7)
    level = {n: wave_excess if n.startswith("c") else 0.0 for n in r.nodes}
    rows = [
        heard(n, grid_health(float(level[n] + rng.normal(0, 0.05))), seq=100 + k,
              ts=since + 10.0 * (k + 1))
        for n in r.nodes for k in range(6)
    ]  # fmt: skip
    assert h.db.write(rows).written == len(rows)
    h.runner.step(now=since + 61.0)


GATED = dict.fromkeys(("c1", "c2", "n1", "n2", "n3", "n4"), (ResultCode.OK, "bundle runs"))


def test_a_round_its_behaviour_gate_fails_is_rolled_back(halting: Any) -> None:
    gate = [parse_criterion("excess_surprise:max_increase=0.1:min_samples=10")]
    h = halting(GATED, [2, 6], Criteria(health=gate))
    gated(h, 0.6)
    h.step_until({RolloutState.ROLLED_BACK})
    assert_the_line_went_back(h, RolloutState.ROLLED_BACK, "excess_surprise")


def test_a_round_an_operator_aborts_after_an_inconclusive_gate_leaves_the_line(
    halting: Any,
) -> None:
    gate = [parse_criterion("excess_surprise:max_increase=0.1:min_samples=20")]  # 12 windows
    h = halting(GATED, [2, 6], Criteria(health=gate))
    gated(h, 0.6)
    assert h.state() is RolloutState.PAUSED
    assert h.store.current_sha256(LINE) == h.round["bundle_sha256"]  # paused: still the round
    RolloutStore(h.db).request(h.rollout, "abort")
    h.step_until({RolloutState.ROLLED_BACK})
    assert_the_line_went_back(h, RolloutState.ROLLED_BACK, "aborted by the operator")


def test_a_failed_catch_up_does_not_make_the_version_not_the_line_s(tmp_path: Path) -> None:
    """A one-node catch-up of the line's version that halts (the node refused it) is not a
    staged rollout of that version: the version stays the line's."""
    database = HubDatabase(SqliteEngine(tmp_path / "hub.db"))
    database.open()
    try:
        store = learning_db(database)
        sha = deploy(database)
        rollouts = RolloutStore(database)
        staged = rollouts.create(RolloutPlan(group="grid", bundle_sha256=sha, waves=[1]), ["n1"])
        rollouts.update(staged, state=RolloutState.DONE)
        one = rollouts.create(RolloutPlan(group="grid", bundle_sha256=sha, waves=[1]), ["n2"])
        with database.transaction():
            database.execute(
                "INSERT INTO catch_up_attempts (node, grp, line, sha256, running, bdseq, rollout,"
                " result, created, updated) VALUES ('n2', 'grid', :line, :sha, NULL, 1, :r, "
                "'failed', 1, 1)",
                {"line": LINE, "sha": sha, "r": one},
            )
        rollouts.update(one, state=RolloutState.HALTED)
        assert store.current_sha256(LINE) == sha
        rollouts.update(staged, state=RolloutState.HALTED)  # the staged one: not the line's
        assert store.current_sha256(LINE) is None
    finally:
        database.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDatabase]:
    database = HubDatabase(SqliteEngine(tmp_path / "hub.db"))
    database.open()
    yield database
    database.close()


@pytest.mark.parametrize("scenario", LEARNING_SCENARIOS, ids=lambda f: f.__name__[len("check_") :])
def test_learning_scenario_on_sqlite(db: HubDatabase, scenario: Any) -> None:
    scenario(db)


def test_an_unknown_bundle_is_logged_once_with_what_fixes_it(
    db: HubDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    learning_db(db)
    sha = line_model(line_bundle()[0]).sha256
    write_all(db, heard("n1", birth(sha=sha), ts=1.0))
    with caplog.at_level("WARNING", logger="edge_agent_host.hub.learning"):
        write_all(db, *[heard("n1", delta(sha, s, increments(s)), seq=s, ts=1.0 + s)
                        for s in range(1, 6)])  # fmt: skip
    (record,) = [r for r in caplog.records if "unknown_model" in r.getMessage()]
    assert record.getMessage().startswith(
        f"learning deltas against {LINE}@1.0.0 ({sha[:12]}) refused as unknown_model: the hub "
        "holds no such bundle; 'edge-agent-hub rollout start FILE --group grid' stores it"
    ), record.getMessage()
