"""The learning tables (hub/learning_store.py) and a round (hub/learning_round.py) on SQLite:
deltas checked against the line's bundle and stored once per (node, group, seq), each refusal
counted by its reason; a round that merges them into a signed bundle with its provenance.

The ``check_*`` scenarios take an open :class:`HubDatabase` of any engine: the same ones run
against a real PostgreSQL in ``tests/integration/hub/test_hubd.py``.
"""

from __future__ import annotations

import functools
import tempfile
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
from edge_agent.fleet.protocol import CountsDelta, LearningDelta, NodeState
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model
from edge_agent_host.converter.aif.options import AifOptions
from edge_agent_host.converter.common import ConvertOptions
from edge_agent_host.converter.formats.aif import convert_aif
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.engines import SqliteEngine
from edge_agent_host.hub.learning_checks import Refusal
from edge_agent_host.hub.learning_merge import MergeSettings
from edge_agent_host.hub.learning_model import line_model
from edge_agent_host.hub.learning_round import LearnInputError, RoundSettings, build_round
from edge_agent_host.hub.learning_store import LearningStore
from edge_agent_host.hub.rollout_options import parse_start_options
from edge_agent_host.hub.rollout_plan import RolloutState
from edge_agent_host.hub.rollout_start import store_rollout
from edge_agent_host.hub.rollout_store import RolloutStore
from edge_agent_host.hub.store import HubDatabase
from tests.unit.host.hub.test_store import birth, heard, write_all

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


LEARNING_SCENARIOS = [
    check_deltas_are_checked_and_stored_once,
    check_a_round_merges_the_deltas_into_a_signed_bundle,
    check_a_line_that_does_not_learn_is_refused,
    check_a_rolled_back_round_is_not_the_line_version,
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDatabase]:
    database = HubDatabase(SqliteEngine(tmp_path / "hub.db"))
    database.open()
    yield database
    database.close()


@pytest.mark.parametrize("scenario", LEARNING_SCENARIOS, ids=lambda f: f.__name__[len("check_") :])
def test_learning_scenario_on_sqlite(db: HubDatabase, scenario: Any) -> None:
    scenario(db)
