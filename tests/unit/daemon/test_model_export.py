"""``edge-agent export-model`` in process: a group built and saved as the daemon
builds and saves it, exported from its state directory; per-agent counts one agent at a time, a
damaged newest snapshot passed over, and the refusals in one line. The real daemons and the
host tool: tests/integration/daemon/test_learning_export.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.cli import main
from edge_agent.config.daemon import read_config
from edge_agent.daemon.admission import load_group_model
from edge_agent.daemon.model_export import export_model
from edge_agent.daemon.snapshots.store import SnapshotStore
from edge_agent.errors import InputError
from edge_agent.kinds import get_kind
from edge_agent.sim.registry import make_env

N = 6


def config(tmp: Path, learning: str, *, model: str = "tmaze-reversal",
           precision: str = "int8") -> Path:
    path = tmp / "edge.toml"
    path.write_text(f"""
[daemon]
profile = "x86-dev"
state_dir = "{tmp / "state"}"

[[groups]]
name = "maze"
model = {{ type = "builtin", name = "{model}" }}
count = {N}
precision = "{precision}"
source = {{ type = "sim", world = "tmaze-reversal" }}
sink = {{ type = "sim" }}

[groups.learning]
{learning}
""")
    return path


def learn_and_save(path: Path, ticks: int = 8) -> Any:
    """The group as the daemon builds it, ``ticks`` ticks on its world, saved as the daemon
    saves it; the group."""
    source = read_config(path)
    cfg = source.config.groups[0]
    loaded = load_group_model(cfg, source.config, None)
    agents = get_kind(loaded.kind).build(loaded, cfg, N, budget=None, history_capacity=0,
                                         threads=1, workers=1)
    env = make_env("tmaze-reversal", N, seed=1)
    obs = env.reset()
    for _ in range(ticks):
        if env.episode_start.any():
            agents.reset(env.episode_start)
        obs = env.step(agents.step(obs))
    store = SnapshotStore(Path(source.config.daemon.state_dir) / "snapshots",
                          max_writes_per_hour=100)
    arrays = {f"group.maze.{k}": v for k, v in agents.state_dict().items()}
    assert store.save(arrays, {"groups": {"maze": {"key": agents.key, "agents": N}}},
                      force=True) is not None
    return agents


def test_per_agent_counts_are_exported_one_agent_at_a_time(tmp_path: Path) -> None:
    path = config(tmp_path, 'A = [1]\nscope = "per_agent"', precision="float64")
    agents = learn_and_save(path)
    with pytest.raises(InputError, match=r"learns per agent \(6 agents\): export one with "
                                         r"--agent I \(0..5\)"):
        export_model(path, "maze", tmp_path / "x.npz")
    report = export_model(path, "maze", tmp_path / "a2.npz", agent=2)
    assert report.versions == {"pA": 8}
    with np.load(tmp_path / "a2.npz") as f:
        np.testing.assert_array_equal(f["pA1"], agents.learning.learner.pA.counts[0][2])
        assert int(f["meta_agent"]) == 2
        assert str(f["meta_scope"]) == "per_agent"


def test_a_damaged_newest_snapshot_is_passed_over(tmp_path: Path) -> None:
    path = config(tmp_path, "A = [1]\nprior_scale = 2.0")
    agents = learn_and_save(path, ticks=4)
    kept = agents.learning.learner.pA.counts[0].copy()
    snapshots = tmp_path / "state" / "snapshots"
    (older,) = snapshots.glob("snapshot-*.eas")
    newest = snapshots / "snapshot-99.eas"
    newest.write_bytes(older.read_bytes()[:100])  # cut short: it does not verify
    report = export_model(path, "maze", tmp_path / "m.npz")
    assert report.snapshot == older
    with np.load(tmp_path / "m.npz") as f:
        np.testing.assert_array_equal(f["pA1"], kept)
    assert newest.exists()  # read only: nothing moved or deleted


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no snapshot", "state/snapshots: no snapshots (has the daemon run with this state_dir?)"),
        ("another model", "group 'maze' was saved by another model than the config's"),
        ("shared --agent", "--agent: group 'maze' learns one set of counts for all its agents"),
        ("another prior", "group 'maze' holds no counts of its [groups.learning] table"),
        ("not .npz", "the learned model is written as .npz"),
    ],
)
def test_refusals_are_one_line(
    tmp_path: Path, case: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, "A = [1]")
    if case != "no snapshot":
        learn_and_save(path, ticks=2)
    if case == "another prior":  # the learning table changed since: the same model
        path.write_text(path.read_text().replace("A = [1]", "A = [1]\nprior_scale = 5.0"))
    if case == "another model":  # the config changed since: another policy length
        path.write_text(path.read_text().replace(
            '[groups.learning]', '[groups.settings]\npolicy_len = 2\n\n[groups.learning]'))
    args = ["export-model", "--config", str(path), "--group", "maze", "--out",
            str(tmp_path / ("m.npy" if case == "not .npz" else "m.npz"))]
    if case == "shared --agent":
        args += ["--agent", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "m.npz").exists()
