"""docs/planning.md's command blocks, as written, from the repository root in the README's venv
(the page says so): the checkout and venv ``scripts/demo`` made
(:mod:`tests.support.readme_venv`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.doc_blocks import ROOT, doc_block
from tests.support.readme_venv import ReadmeVenv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


def run_block(
    venv: ReadmeVenv, block: str, tmp: Path | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``block`` in ``bash -e`` with the README's venv activated, in its checkout (``cwd``)."""
    env = venv.env()
    if tmp is not None:  # mktemp's, and the daemon's runtime directory, in the test's
        env.update(TMPDIR=str(tmp), EDGE_AGENT_RUNTIME_DIR=str(tmp / "run"))
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=cwd or venv.root, env=env,
        capture_output=True, text=True, timeout=900, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_short_benchmark_run_compares_policies_side_by_side(readme_venv: ReadmeVenv) -> None:
    result = run_block(readme_venv, doc_block("docs/planning.md", 0))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    rows = [r for r in lines if r["bench"] == "planning"]
    assert {(r["world"], r["policy_len"]) for r in rows} == {("grid10", 2), ("tmaze", 1)}
    for world in ("grid10", "tmaze"):
        base = [r for r in rows if r["world"] == world and r["policy"] == "every_tick"]
        assert len(base) == 1
        assert base[0]["duty_cycle"] == 1.0
        assert base[0]["speedup"] == 1.0
        assert base[0]["score"] > 0
        every_4 = next(r for r in rows if r["world"] == world and r["policy"] == "every_4")
        assert every_4["duty_cycle"] < 0.7  # what the doc says the policies do to the work
    # What the doc says the policies cost in behaviour: in the T-maze periodic planning alone
    # loses the reward, a belief-change trigger keeps it.
    tmaze = {r["policy"]: r for r in rows if r["world"] == "tmaze"}
    assert tmaze["every_4"]["score"] == 0.0
    assert tmaze["change_0.1_every_4"]["score_ratio"] >= 0.98
    grid = {r["policy"]: r for r in rows if r["world"] == "grid10"}
    assert grid["every_2"]["score_ratio"] >= 0.98


def test_check_config_and_status_show_the_planning_example(
    tmp_path: Path, readme_venv: ReadmeVenv
) -> None:
    """check-config, then the daemon and ``edge-agent status`` pointed at its --state-dir: a
    planning line per group with a policy."""
    result = run_block(readme_venv, doc_block("docs/planning.md", 1), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = re.findall(
        r"^ +planning last tick: \d+ planned, \d+ deferred \(duty cycle [\d.]+%\); plan age "
        r"mean [\d.]+, max \d+ ticks(; \d+ tick\(s\) cut by the deadline so far)?$",
        result.stdout,
        flags=re.M,
    )
    assert len(lines) == 2, result.stdout
    assert lines[0]  # the grid group's budget cuts ticks; the T-maze group has no deadline
    assert not lines[1]
    assert "docs/examples/planning.toml: OK" in result.stdout
    assert (
        "planning every 8 ticks or belief change >= 0.3 or when a plan runs out, "
        "deadline 40 ms a tick" in result.stdout
    )
    assert "planning every 4 ticks or belief change >= 0.1 or when a plan runs out" in (
        result.stdout
    )


def test_the_replay_block_plans_by_the_policy(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    """The replay block as written, on a copy of the examples: the agent plans at some steps
    and not others, and the output holds the plans per step, consistent with each other."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    result = run_block(readme_venv, doc_block("docs/planning.md", 2), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "replayed.npz") as out:
        planned, age, left = out["planned"], out["plan_age"], out["plan_left"]
        shortfall, policies = out["recorded_shortfall"], out["policies"]
    assert policies.shape[1] == 3
    count = int(planned.sum())
    assert 0 < count < len(planned)
    assert (
        "planning every 4 ticks or belief change >= 0.3 or when a plan runs out: planned at "
        f"{count} of {len(planned)} steps" in result.stdout
    )
    np.testing.assert_array_equal(age == 0, planned)
    assert (age < 4).all()  # a plan 4 steps old is replaced
    assert (left[planned] == 2).all()  # a fresh three-step plan has two steps left after one
    assert set(np.unique(shortfall[~planned])) <= {0.0, 1.0}  # a plan is one action
