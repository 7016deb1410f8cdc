"""A daemon whose group plans when it matters (docs/planning.md): its snapshot carries the
committed plans, a restart restores them, and a restart without the policy still restores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.daemon.snapshots import read_snapshot
from tests.integration.daemon.test_daemon import PROFILES, REPO, write_config

pytestmark = pytest.mark.integration

PLANNING = "\n[groups.planning]\nevery = 5\nbelief_change = 0.3\n"


def run(config: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge_agent", "run", "--config", str(config), "--duration", "2"]
    env = {**os.environ, "EDGE_AGENT_PROFILES_DIR": str(PROFILES)}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, env=env,
                          check=False)


def newest(state: Path) -> Path:
    return sorted((state / "snapshots").glob("snapshot-*.eas"))[-1]


def test_a_restart_keeps_the_committed_plans(tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    state = tmp_path / "state"
    write_config(config, state, grid=30, tmaze=20)
    plain = config.read_text()
    config.write_text(plain + PLANNING)  # the last group, the T-maze, plans by the policy
    first = run(config)
    assert first.returncode == 0, first.stderr[-3000:]
    arrays = read_snapshot(newest(state)).arrays
    for name in ("plan_policy", "plan_left", "plan_age", "deferred"):
        assert arrays[f"group.tmaze.{name}"].shape == (20,)
        assert f"group.grid.{name}" not in arrays  # every-tick groups save what they did
    ages = np.array(arrays["group.tmaze.plan_age"])
    assert (ages >= 0).all()
    assert (ages < 5).all()  # a plan is at most every - 1 ticks old after a tick

    second = run(config)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "restored grid (30 agents), tmaze (20 agents)" in second.stderr
    assert "snapshot lacks" not in second.stderr

    config.write_text(plain)  # the policy dropped: the plans are left out, the beliefs kept
    third = run(config)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "restored grid (30 agents), tmaze (20 agents)" in third.stderr
    assert "group.tmaze.plan_policy" not in read_snapshot(newest(state)).arrays
