"""docs/learning.md's demo configs: the command blocks as written (a real daemon on each), and
what the doc says they show, stepped a fixed number of ticks in one process (a run for a
duration gets as many ticks as the machine gives it). ``python -m
tests.integration.docs.test_learning_demos`` prints the figures the doc quotes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.daemon import read_config
from edge_agent.config.profiles import load_profiles
from edge_agent.daemon.admission import admit
from edge_agent.sim.endpoints import WorldSource
from tests.support.doc_blocks import ROOT, doc_block
from tests.support.readme_venv import ReadmeVenv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

TMAZE = ROOT / "docs" / "examples" / "learning-tmaze.toml"
GRID = ROOT / "docs" / "examples" / "learning-grid.toml"


def run_block(venv: ReadmeVenv, block: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``block`` from the root of the README's checkout with its venv activated (the page's
    place and venv), its temporary and runtime directories in the test's."""
    env = venv.env(EDGE_AGENT_RUNTIME_DIR=str(tmp_path / "run"), TMPDIR=str(tmp_path))
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=venv.root, env=env, capture_output=True,
        text=True, timeout=300, check=False, stdin=subprocess.DEVNULL,
    )


def stepped(path: Path, ticks: int) -> dict[str, dict[str, Any]]:
    """Each group's world summary and learning numbers after ``ticks`` ticks of the config's
    groups, built as the daemon builds them."""
    _, _, groups = admit(read_config(path, profiles=load_profiles(ROOT / "firmware_profiles")))
    try:
        for tick in range(ticks):
            for g in groups:
                assert g.tick(float(tick))
        out: dict[str, dict[str, Any]] = {}
        for g in groups:
            assert isinstance(g.source, WorldSource)  # a sim source
            out[g.name] = {**g.source.world.summary(), **g.agents.metrics()}
        return out
    finally:
        for g in groups:
            g.agents.release()


def test_the_tmaze_demo_block_runs(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    result = run_block(readme_venv, doc_block("docs/learning.md", 2), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "docs/examples/learning-tmaze.toml: OK" in result.stdout
    assert ("learning A [1], shared, lr_pA 0.01, forgetting 0.02, refresh every 3 ticks"
            in result.stdout)
    reports = [line for line in result.stderr.splitlines() if "losses_per_trial" in line]
    for name in ("frozen", "learning", "forgetting"):
        assert any(f" {name} " in line for line in reports), result.stderr[-3000:]
    # edge-agent status, pointed at the run's --state-dir: a learning line per learning group.
    assert re.search(r"^edge-agentd \S+  pid \d+  running$", result.stdout, flags=re.M)
    learning = re.findall(r"^ +learning pA1 \(shared, counts from priors\): \d+ updates",
                          result.stdout, flags=re.M)  # fmt: skip
    assert len(learning) == 2, result.stdout


def test_the_grid_demo_block_runs(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    result = run_block(readme_venv, doc_block("docs/learning.md", 3), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "docs/examples/learning-grid.toml: OK" in result.stdout
    assert "learning B [0], shared, lr_pB 0.02, refresh every 10 ticks" in result.stdout
    reports = [line for line in result.stderr.splitlines() if "goals_reached" in line]
    for name in ("frozen", "learning"):
        assert any(f" {name} " in line for line in reports), result.stderr[-3000:]


def test_forgetting_stops_the_losses_after_a_reversal() -> None:
    groups = stepped(TMAZE, 600)  # four phases of 50 trials, two reversed
    frozen, learning, forgetting = groups["frozen"], groups["learning"], groups["forgetting"]
    # What the doc says: frozen and learning lose about as often as they win, forgetting not.
    assert frozen["rewards_per_trial"] == pytest.approx(0.50, abs=0.02)
    assert frozen["losses_per_trial"] == pytest.approx(0.50, abs=0.02)
    assert learning["losses_per_trial"] == pytest.approx(0.51, abs=0.02)
    assert forgetting["losses_per_trial"] == pytest.approx(0.20, abs=0.02)
    assert forgetting["rewards_per_trial"] == pytest.approx(0.48, abs=0.02)
    assert forgetting["learning_surprise"] < learning["learning_surprise"] - 0.1
    assert forgetting["learning_updates"] == learning["learning_updates"] == 600


def test_learning_b_reaches_the_goal_more_often_on_the_slippery_grid() -> None:
    groups = stepped(GRID, 300)
    frozen, learning = groups["frozen"], groups["learning"]
    assert learning["goals_reached"] > 1.15 * frozen["goals_reached"]
    assert learning["mean_steps_to_goal"] < frozen["mean_steps_to_goal"] - 2
    assert learning["learning_divergence"] > 0


if __name__ == "__main__":
    for path, ticks in ((TMAZE, 600), (GRID, 300)):
        for name, numbers in stepped(path, ticks).items():
            print(path.name, ticks, name, numbers)
