"""Fleet learning on the hub (docs/fleet-learning.md "On the hub"): what a node's learning delta
weighs on the wire, how fast the hub's database takes them, and what a round's merge costs, for
100 / 1,000 / 10,000 nodes' deltas of grid10's transition table ``B0`` (100 states x 100 states x
5 actions: 50,000 counts, 500 columns).

Each node's delta is what one report of a learning group holds: ``--experience`` agent-ticks
(default 100) of agents walking grid10's true transitions, ``lr`` 1 of mass per tick on the
transition taken; only the columns (state, action) visited travel (about 70 of 500 at 100
ticks), in the smaller of the protocol's two encodings as a node sends it
(``sparse_counts_delta``: the values not 0 and their places).

1. ``setup``: the line's bundle (grid10 with ``pB0``, converted and signed by the host
   converter), the columns and bytes of a delta as the protocol encodes it (the envelope
   included);
2. ``ingest``: SQLite (a file in a temporary directory), the hub's own write path
   (``HubDatabase.write`` in batches of 500, the service's default ``batch_max``, each delta
   checked against the line's bundle and stored by ``LearningStore.ingest``): deltas per second,
   against the baseline of one telemetry message per node through the same path (``ratio``:
   deltas / telemetry, per second);
3. ``merge``: a round: reading what waits into what each node sent (``read_s``,
   ``learning.round.per_node``; ``held_mb``: those arrays: the values not 0, float32, their
   rows and their (node, column) pairs), then ``merge_sparse`` (the cap per column, the
   leave-one-out score, the sum) (``merge_s``; ``peak_mb``: its peak of numpy memory beyond
   what it was given, tracemalloc); ``round_bytes``: the nodes' deltas as they cross the
   broker. Up to ``--dense-max`` nodes, the dense reference merge
   (``tests/support/learning_merge_oracle.py``, nodes x counts float64) of the same deltas in
   the same process: its time, what it holds and its peak, ``speedup`` (dense / sparse time),
   ``memory_ratio`` (dense / sparse, held + peak), and the run stops if the two results differ
   (``equal``);
4. ``extrapolated``: the sizes not measured, from the slope between the two largest measured;
5. ``merge`` with ``read`` ``in memory`` (``--in-memory``, 100,000 nodes by default): a round of
   that many nodes' deltas (the same deltas round-robin) built in memory from what they sent,
   not read from the database (too long to ingest on a shared machine: ``read_s`` stays the
   slope's), merged and measured as in 3.

    python benchmarks/bench_learning_merge.py [--ingest-nodes 100,1000,10000]
        [--merge-nodes 100,1000,10000] [--dense-max 1000] [--extrapolate 100000]
        [--in-memory 100000] [--experience 100]

``--smoke``: 5 and 10 nodes: the code path, for CI (tests/integration/benchmarks/test_smoke.py);
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from edge_agent.fleet.protocol import (  # noqa: E402
    Birth,
    CountsDelta,
    Envelope,
    GroupInfo,
    LearningDelta,
    Telemetry,
    encode,
    sparse_counts_delta,
)
from edge_agent.sim.registry import builtin_model  # noqa: E402
from edge_agent_host.converter.aif.options import AifOptions  # noqa: E402
from edge_agent_host.converter.common import ConvertOptions  # noqa: E402
from edge_agent_host.converter.formats.aif import convert_aif  # noqa: E402
from edge_agent_host.hub.learning.merge import MergeSettings, SparseTable, merge_sparse  # noqa: E402
from edge_agent_host.hub.learning.model import line_model  # noqa: E402
from edge_agent_host.hub.learning.round import per_node  # noqa: E402
from edge_agent_host.hub.learning.store import LearningStore  # noqa: E402
from edge_agent_host.hub.rollouts.store import RolloutStore  # noqa: E402
from edge_agent_host.hub.storage.database import HubDatabase  # noqa: E402
from edge_agent_host.hub.storage.engines import SqliteEngine  # noqa: E402
from edge_agent_host.hub.traffic.queue import Heard  # noqa: E402
from tests.support.learning_merge_oracle import merge_round_dense  # noqa: E402

LINE = "grid10"
BATCH = 500  # the service's [queue] batch_max default
LR = 1.0


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def line_bundle(out: Path) -> bytes:
    """grid10 that learns ``B0`` (its prior: the true transitions x 10, plus 0.5 where allowed),
    converted and signed by the host converter (a small gate: the bench is not about it)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    model = builtin_model("grid10")
    b = model.B[0]
    report = convert_aif(
        ConvertOptions(out=out, name=LINE, version="1.0.0", sign_key=Ed25519PrivateKey.generate(),
                       signer="bench"),
        AifOptions(model=model, counts={"B": {0: b * 10.0 + 0.5 * (b > 0)}}, rollouts=20, steps=4),
    )  # fmt: skip
    if report.bundle is None:
        raise SystemExit("the line's bundle did not pass the converter's gate")
    return out.read_bytes()


def node_delta(rng: np.random.Generator, b: np.ndarray, experience: int) -> CountsDelta:
    """``experience`` ticks of a walk on ``b`` (``(next, state, action)``), ``LR`` on each
    transition taken: the columns visited and their increments, as the wire carries them."""
    states, _, actions = b.shape
    dense = np.zeros((states, states * actions))
    s = int(rng.integers(states))
    for _ in range(experience):
        a = int(rng.integers(actions))
        nxt = int(rng.choice(states, p=b[:, s, a]))
        dense[nxt, s * actions + a] += LR
        s = nxt
    columns = np.flatnonzero(dense.sum(axis=0)).astype(np.uint32)
    return sparse_counts_delta("B0", b.shape, columns, dense[:, columns].T.astype(np.float32),
                               experience=experience, lr=LR)  # fmt: skip


def heard(node: str, body: Any, seq: int) -> Heard:
    env = Envelope(type=body.TYPE, node=node, seq=seq, bdseq=1, ts=time.time(),
                   clock_synced=True, body=body)  # fmt: skip
    return Heard(kind=body.TYPE, node=node, envelope=env, received=time.time(), retained=False,
                 size=len(encode(env)))  # fmt: skip


def telemetry() -> Telemetry:
    return Telemetry(uptime_s=1, rss_bytes=1, budget_used_bytes=1, budget_total_bytes=1, ticks=1,
                     tick_p50_ms=1.0, tick_p99_ms=1.0, overruns=0)  # fmt: skip


def write(db: HubDatabase, items: list[Heard]) -> float:
    """Seconds to write ``items`` through the hub's path, in the service's batches."""
    start = time.perf_counter()
    for i in range(0, len(items), BATCH):
        outcome = db.write(items[i : i + BATCH])
        if outcome.rejected or outcome.left:
            raise SystemExit(f"the database refused a batch: {db.last_error}")
    return time.perf_counter() - start


def fleet_db(path: Path, data: bytes, sha: str, nodes: int) -> tuple[HubDatabase, LearningStore]:
    """A hub database holding the line's bundle and ``nodes`` nodes' births."""
    db = HubDatabase(SqliteEngine(path))
    db.open()
    store = LearningStore(db)
    db.add_writer(LearningDelta.TYPE, store.ingest)
    model = line_model(data)
    RolloutStore(db).put_bundle(data, sha, model.name, model.version)
    group = GroupInfo(agents=10, bundle=LINE, bundle_sha256=sha)
    birth = Birth(software_version="0", profile="x86-dev", budget_bytes=2**30,
                  groups={"grid": group})  # fmt: skip
    write(db, [heard(f"n{i:06d}", birth, 0) for i in range(nodes)])
    return db, store


def learning_delta(sha: str, table: CountsDelta) -> LearningDelta:
    return LearningDelta(group="grid", model=f"{LINE}@1.0.0", model_sha256=sha, seq=1,
                         tables=[table])  # fmt: skip


def ingest(
    tmp: Path, data: bytes, sha: str, deltas: list[CountsDelta], nodes: int, *,
    wire: dict[str, Any],
) -> None:
    db, store = fleet_db(tmp / f"ingest-{nodes}.sqlite3", data, sha, nodes)
    try:
        items = [heard(f"n{i:06d}", learning_delta(sha, deltas[i % len(deltas)]), 1)
                 for i in range(nodes)]  # fmt: skip
        delta_s = write(db, items)
        accepted = store.status()[0]["accepted"]
        if accepted != nodes:
            raise SystemExit(f"{accepted} of {nodes} deltas accepted")
        tel_s = write(db, [heard(f"n{i:06d}", telemetry(), 2) for i in range(nodes)])
    finally:
        db.close()
    emit({"bench": "ingest", "nodes": nodes, "deltas_per_s": round(nodes / delta_s),
          "telemetry_per_s": round(nodes / tel_s), "ratio": round(tel_s / delta_s, 3),
          "seconds": round(delta_s, 3), **wire})  # fmt: skip


def densify(table: SparseTable, nodes: int) -> np.ndarray:
    """``(nodes, rows, columns)`` float64: what the dense merge takes."""
    dense = np.zeros((nodes, table.rows, table.columns))
    dense[table.node, :, table.column] = table.dense_values()
    return dense


def traced(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its seconds and its peak of traced (numpy) memory in MiB (a second call)."""
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def merge(
    tmp: Path, data: bytes, sha: str, deltas: list[CountsDelta], nodes: int, *,
    dense_max: int, wire: list[int],
) -> dict[str, Any]:
    db, store = fleet_db(tmp / f"merge-{nodes}.sqlite3", data, sha, nodes)
    try:
        write(db, [heard(f"n{i:06d}", learning_delta(sha, deltas[i % len(deltas)]), 1)
                   for i in range(nodes)])  # fmt: skip
        model = line_model(data)
        start = time.perf_counter()
        names, sparse, _ = per_node(store.pending(LINE, sha), model.shapes)
        read_s = time.perf_counter() - start
    finally:
        db.close()
    (tmp / f"merge-{nodes}.sqlite3").unlink()
    settings = MergeSettings()
    n = len(names)
    result, merge_s, peak = traced(
        lambda: merge_sparse(model.counts, model.counts, sparse, n, settings)
    )
    table = sparse["B0"]
    held = table.nbytes
    record: dict[str, Any] = {
        "bench": "merge", "nodes": n, "read_s": round(read_s, 4), "merge_s": round(merge_s, 4),
        "peak_mb": round(peak, 1), "held_mb": round(held / 2**20, 1),
        "round_bytes": sum(wire[i % len(wire)] for i in range(nodes)),
        "pairs": table.pairs, "values": int(table.values.shape[0]),
        "capped": int(result.capped.sum()), "refused": int(result.refused.sum()),
    }  # fmt: skip
    if n <= dense_max:
        dense = {"B0": densify(table, n).reshape(n, *model.shapes["B0"])}
        want, dense_s, dense_peak = traced(
            lambda: merge_round_dense(model.counts, model.counts, dense, settings)
        )
        dense_held = dense["B0"].nbytes / 2**20
        del dense
        equal = bool(
            np.allclose(result.counts["B0"], want.counts["B0"], rtol=1e-9)
            and np.allclose(result.scores, want.scores, rtol=1e-9, equal_nan=True)
            and (result.capped == want.capped).all() and (result.refused == want.refused).all()
        )
        if not equal:
            raise SystemExit(f"{n} nodes: the sparse merge differs from the dense one")
        record |= {
            "dense_merge_s": round(dense_s, 4), "dense_peak_mb": round(dense_peak, 1),
            "dense_held_mb": round(dense_held, 1), "speedup": round(dense_s / merge_s, 1),
            "memory_ratio": round((dense_peak + dense_held) / (peak + held / 2**20), 1),
            "equal": equal,
        }  # fmt: skip
    emit(record)
    return record


def merge_in_memory(
    data: bytes, deltas: list[CountsDelta], nodes: int, *, wire: list[int]
) -> dict[str, Any]:
    """A round of ``nodes`` nodes' deltas built in memory from what they sent (not read from
    the database: its ``read_s`` is the slope's), merged as :func:`merge` does."""
    model = line_model(data)
    shape = model.shapes["B0"]
    sent = [d.entries() for d in deltas]
    table = SparseTable.of_entries(
        shape[0], int(np.prod(shape[1:])), [(i, *sent[i % len(sent)]) for i in range(nodes)]
    )
    sparse = {"B0": table}
    settings = MergeSettings()
    result, merge_s, peak = traced(
        lambda: merge_sparse(model.counts, model.counts, sparse, nodes, settings)
    )
    record = {
        "bench": "merge", "nodes": nodes, "read": "in memory", "merge_s": round(merge_s, 4),
        "peak_mb": round(peak, 1), "held_mb": round(table.nbytes / 2**20, 1),
        "round_bytes": sum(wire[i % len(wire)] for i in range(nodes)),
        "pairs": table.pairs, "values": int(table.values.shape[0]),
        "capped": int(result.capped.sum()), "refused": int(result.refused.sum()),
    }  # fmt: skip
    emit(record)
    return record


def extrapolate(measured: list[dict[str, Any]], sizes: list[int]) -> None:
    """``merge_s``, ``read_s``, ``peak_mb``, ``held_mb`` and ``round_bytes`` at ``sizes`` from
    the slope between the two largest measured (each linear in the nodes' deltas)."""
    if len(measured) < 2:
        return
    a, b = sorted(measured, key=lambda r: r["nodes"])[-2:]
    for nodes in sizes:
        out: dict[str, Any] = {"bench": "extrapolated", "nodes": nodes, "measured": False,
                               "from_nodes": [a["nodes"], b["nodes"]]}  # fmt: skip
        for key in ("merge_s", "read_s", "peak_mb", "held_mb", "round_bytes"):
            slope = (b[key] - a[key]) / (b["nodes"] - a["nodes"])
            out[key] = round(b[key] + slope * (nodes - b["nodes"]), 2)
        emit(out)


def sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingest-nodes", type=sizes, default=[100, 1000, 10000])
    parser.add_argument("--merge-nodes", type=sizes, default=[100, 1000, 10000])
    parser.add_argument("--dense-max", type=int, default=1000,
                        help="the dense reference merge runs up to this many nodes")
    parser.add_argument("--extrapolate", type=sizes, default=[100000])
    parser.add_argument("--in-memory", type=sizes, default=[100000],
                        help="also merge this many nodes' deltas built in memory (not read from "
                        "the database: the read time from the slope)")  # fmt: skip
    parser.add_argument("--experience", type=int, default=100, help="agent-ticks per delta")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the code path only")
    args = parser.parse_args()
    pool = 200  # distinct deltas, reused round-robin
    if args.smoke:
        args.ingest_nodes, args.merge_nodes, args.extrapolate = [5, 10], [5, 10], [100]
        args.in_memory = [100]
        args.dense_max = 10
        pool = 10
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = line_bundle(tmp / "grid10.tar")
        sha = line_model(data).sha256
        b = builtin_model("grid10").B[0]
        deltas = [node_delta(rng, b, args.experience) for _ in range(pool)]
        wire = [len(encode(heard("n000000", learning_delta(sha, d), 1).envelope)) for d in deltas]
        columns = [len(d.columns) // 4 for d in deltas]
        sizes_of = {"columns_per_delta": round(float(np.mean(columns)), 1),
                    "bytes_per_delta": round(float(np.mean(wire)))}  # fmt: skip
        emit({"bench": "setup", "table": "grid10 B0", "counts": int(b.size),
              "columns": int(b.shape[1] * b.shape[2]), "experience": args.experience,
              "bundle_bytes": len(data), **sizes_of})  # fmt: skip
        for nodes in args.ingest_nodes:
            ingest(tmp, data, sha, deltas, nodes, wire=sizes_of)
        measured = [merge(tmp, data, sha, deltas, nodes, dense_max=args.dense_max, wire=wire)
                    for nodes in args.merge_nodes]  # fmt: skip
        extrapolate(measured, [n for n in args.extrapolate if n not in args.merge_nodes])
        for nodes in args.in_memory:
            merge_in_memory(data, deltas, nodes, wire=wire)


if __name__ == "__main__":
    main()
