"""A daemon whose Active Inference groups learn (``[groups.learning]``, docs/learning.md "In the
daemon"): real ``edge-agent run`` processes, their snapshots, and the counts in them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.daemon.snapshots import read_snapshot
from edge_agent.sim.registry import builtin_model
from tests.integration.test_daemon import PROFILES, REPO

pytestmark = pytest.mark.integration

CONFIG = """
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state}/status.json"
tick_hz = 20.0

[[groups]]
name = "maze"
model = {{ type = "builtin", name = "tmaze-reversal" }}
count = 60
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[groups.learning]
A = [1]
D = "all"
lr_pA = 0.05
forgetting = 0.01
prior_scale = 2.0
refresh_every = 3

[[groups]]
name = "slippery"
model = {{ type = "builtin", name = "grid-slippery" }}
count = 30
precision = "float64"
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[groups.learning]
B = [0]
scope = "per_agent"
lr_pB = 0.1
prior_scale = 10.0
"""


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EDGE_AGENT_PROFILES_DIR": str(PROFILES),
        "EDGE_AGENT_RUNTIME_DIR": str(tmp_path / "run"),
    }


def run(config: Path, duration: float = 2.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge_agent", "run", "--config", str(config), "--duration",
           str(duration)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=environment(config.parent), check=False)


def newest(state: Path) -> dict[str, np.ndarray]:
    path = sorted((state / "snapshots").glob("snapshot-*.eas"))[-1]
    return dict(read_snapshot(path).arrays)


def test_a_daemon_with_the_table_learns_its_model(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "daemon.toml"
    config.write_text(CONFIG.format(state=state))
    done = run(config)
    assert done.returncode == 0, done.stderr[-3000:]
    arrays = newest(state)
    tmaze, grid = builtin_model("tmaze-reversal"), builtin_model("grid-slippery")
    # Shared counts of the reward modality: one table, grown from 2 * A1 by every tick.
    pA1 = arrays["group.maze.learn.pA1"]
    assert pA1.shape == tmaze.A[1].shape
    ticks = int(arrays["group.maze.learn.version.A"])
    assert ticks >= 5
    assert pA1.sum() > 2.0 * tmaze.A[1].sum() + 1.0
    assert int(arrays["group.maze.learn.version.D"]) >= 1  # trials ended at episode starts
    assert arrays["group.maze.learn.pD0"].sum() > tmaze.D[0].sum()
    # Per-agent counts of the location transitions: one table per agent, each its own.
    pB0 = arrays["group.slippery.learn.pB0"]
    assert pB0.shape == (30, *grid.B[0].shape)
    grown = pB0.sum(axis=(1, 2, 3)) - 10.0 * grid.B[0].sum()
    assert (grown > 0).all()
    assert not np.allclose(pB0[0], pB0[1])
