"""``edge-agent export-model``: what exporting a learned model costs; its size.

For each case a learning group is built as the daemon builds it (its config's ``[groups.learning]``
table, through the ``aif`` kind), learns for ``--ticks`` ticks on its world, and is saved as the
daemon saves it (``SnapshotStore.save`` of its ``state_dict()``: the baseline, timed in the same
process). Then :func:`edge_agent.daemon.model_export.export_model` runs end to end as the command
does (read the config, load the model, check the snapshot's key on a one-agent probe, read the
newest snapshot, write the ``.npz``). One JSON object per line:

* ``export_s``: the median of ``--repeats`` exports; ``snapshot_save_s``: the median of as many
  saves of the same group; ``ratio``: export / save;
* ``npz_bytes``: the file written; ``snapshot_bytes``: the snapshot it read (it holds every
  agent's beliefs and history, the export one model).

The cases: ``tmaze`` (the reversal T-maze, ``A = [1]``) and ``grid10`` (``A = [0]``,
``B = [0]``), int8, shared counts, ``--agents`` agents.

    python benchmarks/bench_export_model.py [--smoke] [--agents 1000] [--ticks 50] [--repeats 5]

``--smoke`` runs the code path at tiny sizes, for CI (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: (case, world, learning table)
CASES = (
    ("tmaze", "tmaze-reversal", "A = [1]\nlr_pA = 0.5\nprior_scale = 2.0\nrefresh_every = 10"),
    ("grid10", "grid10", "A = [0]\nB = [0]\nlr_pA = 0.5\nlr_pB = 0.2\nrefresh_every = 10"),
)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def config_text(state: Path, world: str, learning: str, agents: int) -> str:
    return f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"

[[groups]]
name = "g"
model = {{ type = "builtin", name = "{world}" }}
count = {agents}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[groups.learning]
{learning}
"""


def run_case(tmp: Path, case: str, world: str, learning: str, args: argparse.Namespace) -> None:
    from edge_agent.config.daemon import read_config
    from edge_agent.daemon.admission import load_group_model
    from edge_agent.daemon.model_export import export_model
    from edge_agent.daemon.snapshots.store import SnapshotStore
    from edge_agent.kinds import get_kind
    from edge_agent.sim.registry import make_env

    state = tmp / case / "state"
    state.mkdir(parents=True)
    config = tmp / case / "edge.toml"
    config.write_text(config_text(state, world, learning, args.agents))
    cfg = read_config(config).config.groups[0]
    loaded = load_group_model(cfg, read_config(config).config, None)
    agents = get_kind(loaded.kind).build(
        loaded, cfg, args.agents, budget=None, history_capacity=cfg.history_capacity or 0,
        threads=1, workers=1,
    )
    env = make_env(world, args.agents, seed=1)
    obs = env.reset()
    for _ in range(args.ticks):
        if env.episode_start.any():
            agents.reset(env.episode_start)
        obs = env.step(agents.step(obs))
    store = SnapshotStore(state / "snapshots", max_writes_per_hour=10_000, keep=1)
    saves = []
    for _ in range(args.repeats):
        arrays = {f"group.g.{k}": v for k, v in agents.state_dict().items()}
        meta = {"groups": {"g": {"key": agents.key, "agents": agents.n_agents}}}
        start = time.perf_counter()
        info = store.save(arrays, meta, force=True)
        saves.append(time.perf_counter() - start)
        assert info is not None
    exports = []
    for i in range(args.repeats):
        start = time.perf_counter()
        report = export_model(config, "g", tmp / case / f"out{i}.npz")
        exports.append(time.perf_counter() - start)
    agents.release()
    export_s, save_s = statistics.median(exports), statistics.median(saves)
    emit({
        "bench": "export-model", "case": case, "agents": args.agents, "ticks": args.ticks,
        "export_s": round(export_s, 4), "snapshot_save_s": round(save_s, 4),
        "ratio": round(export_s / save_s, 2), "npz_bytes": report.nbytes,
        "snapshot_bytes": info.nbytes, "versions": report.versions,
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the code path only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.agents, args.ticks, args.repeats = 8, 3, 1
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        for case, world, learning in CASES:
            run_case(Path(tmp), case, world, learning, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
