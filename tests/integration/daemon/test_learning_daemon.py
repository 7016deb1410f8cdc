"""A daemon whose Active Inference groups learn (``[groups.learning]``, docs/learning.md "In the
daemon"): real ``edge-agent run`` processes, their snapshots, and the counts in them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.learning_storage import saved_counts
from edge_agent.cli.status import format_status
from edge_agent.daemon.snapshots.format import read_snapshot
from edge_agent.sim.registry import builtin_model
from tests.integration.daemon.test_daemon import PROFILES, REPO, Daemon, NotifySocket, wait_status

pytestmark = pytest.mark.integration

CONFIG = """
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state}/status.json"
prometheus_textfile = "{state}/node.prom"
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
count = 8
precision = "float64"
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[groups.learning]
B = [0]
scope = "per_agent"
lr_pB = 0.1
prior_scale = 10.0
prior_floor = 0.05
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


def learned(arrays: dict[str, np.ndarray], key: str, prior: np.ndarray) -> np.ndarray:
    """The counts ``key`` of a snapshot: what moved from ``prior``, restored (as the daemon
    restores them)."""
    counts = saved_counts(arrays, key, prior, where="test")
    assert counts is not None, f"{key} not in the snapshot"
    return counts


def test_a_daemon_with_the_table_learns_its_model(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "daemon.toml"
    config.write_text(CONFIG.format(state=state))
    done = run(config)
    assert done.returncode == 0, done.stderr[-3000:]
    arrays = newest(state)
    tmaze, grid = builtin_model("tmaze-reversal"), builtin_model("grid-slippery")
    # Shared counts of the reward modality: one table, grown from 2 * A1 by every tick.
    pA1 = learned(arrays, "group.maze.learn.pA1", 2.0 * tmaze.A[1])
    assert pA1.shape == tmaze.A[1].shape
    ticks = int(arrays["group.maze.learn.version.A"])
    assert ticks >= 5
    assert pA1.sum() > 2.0 * tmaze.A[1].sum() + 1.0
    assert int(arrays["group.maze.learn.version.D"]) >= 1  # trials ended at episode starts
    assert learned(arrays, "group.maze.learn.pD0", 2.0 * tmaze.D[0]).sum() > tmaze.D[0].sum()
    # Per-agent counts of the location transitions: one table per agent, each its own.
    pB0 = learned(arrays, "group.slippery.learn.pB0", 10.0 * grid.B[0] + 0.05)
    assert pB0.shape == (8, *grid.B[0].shape)
    grown = pB0.sum(axis=(1, 2, 3)) - (10.0 * grid.B[0] + 0.05).sum()
    assert (grown > 0).all()
    assert not np.allclose(pB0[0], pB0[1])
    # Status: per group what is learned and how far from the prior; the node's totals.
    status = json.loads((state / "status.json").read_text())
    maze, grid = learning(status, "maze"), learning(status, "slippery")
    assert maze["tables"] == ["pA1", "pD0", "pD1"]
    assert grid["tables"] == ["pB0"]
    assert (maze["scope"], grid["scope"]) == ("shared", "per_agent")
    assert maze["updates"] == ticks + int(arrays["group.maze.learn.version.D"])
    assert maze["divergence"] > 0
    assert grid["divergence"] > 0  # the floor lets the slips be learned
    assert 0 < maze["surprise"] < 10
    text = format_status(status)  # what edge-agent status prints
    assert (
        f"learning pA1, pD0, pD1 (shared, counts from priors): {maze['updates']} updates, "
        f"divergence {maze['divergence']:.4g} nats, surprise {maze['surprise']:.3f} nats/tick"
    ) in text
    assert "learning pB0 (per_agent, counts from priors)" in text
    counters = status["counters"]
    assert counters["learning.groups"] == 2
    assert counters["learning.agents"] == 68
    assert counters["learning.updates"] == maze["updates"] + grid["updates"]
    mean = (60 * maze["divergence"] + 8 * grid["divergence"]) / 68
    assert counters["learning.divergence"] == pytest.approx(mean, rel=1e-6, abs=1e-9)
    prom = (state / "node.prom").read_text()
    for name in (
        'edge_agent_group_learning_updates_total{group="maze"}',
        'edge_agent_group_learning_divergence{group="slippery"}',
        'edge_agent_group_learning_surprise{group="maze"}',
        "edge_agent_learning_updates_total ",
        "edge_agent_learning_divergence ",
        "edge_agent_learning_surprise ",
        "# TYPE edge_agent_learning_surprise gauge",
    ):
        assert name in prom, name


def fast_snapshots(tmp_path: Path) -> Path:
    """A profile directory whose x86 profile snapshots every second."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = (PROFILES / "x86-dev.toml").read_text()
    text = text.replace('name = "x86-dev"', 'name = "fast-snap"')
    text = text.replace("snapshot_interval_s = 60", "snapshot_interval_s = 1")
    text = text.replace("max_snapshot_writes_per_hour = 120", "max_snapshot_writes_per_hour = 3600")
    (profiles / "fast-snap.toml").write_text(text)
    return profiles


def learning(status: dict, name: str) -> dict:  # type: ignore[type-arg]
    group = next(g for g in status["groups"] if g["name"] == name)
    return group["learning"]  # type: ignore[no-any-return]


def test_counts_come_back_after_sigkill_and_stay_across_a_reload(tmp_path: Path) -> None:
    profiles = fast_snapshots(tmp_path)
    state = tmp_path / "state"
    config = tmp_path / "daemon.toml"
    text = CONFIG.format(state=state).replace('profile = "x86-dev"', 'profile = "fast-snap"')
    config.write_text(text)
    status_path = state / "status.json"
    extra = {"EDGE_AGENT_PROFILES_DIR": str(profiles)}
    notify = NotifySocket(tmp_path / "n.sock")
    daemon = Daemon(config, notify, extra)
    try:
        notify.wait_for("READY=1", 60)
        wait_status(status_path, lambda s: learning(s, "maze")["updates"] >= 20)
        snaps = state / "snapshots"
        end = time.monotonic() + 60
        while time.monotonic() < end and not list(snaps.glob("snapshot-*.eas")):
            time.sleep(0.05)
        daemon.proc.kill()  # SIGKILL: no final snapshot
        daemon.kill()
    finally:
        notify.close()
    saved = newest(state)
    versions = int(saved["group.maze.learn.version.A"]), int(saved["group.maze.learn.version.D"])
    assert versions[0] >= 1
    notify = NotifySocket(tmp_path / "n2.sock")
    daemon = Daemon(config, notify, extra)
    try:
        notify.wait_for("READY=1", 60)
        status = wait_status(
            status_path, lambda s: s["pid"] == daemon.proc.pid and s["tick"]["ticks"] >= 1
        )
        maze, grid = learning(status, "maze"), learning(status, "slippery")
        assert maze["counts_from"] == "snapshot"
        assert grid["counts_from"] == "snapshot"
        assert maze["updates"] >= sum(versions)  # went on from the snapshot's counts
        assert maze["divergence"] > 0
        log = config.with_suffix(".log").read_text()
        assert f"group 'maze': learned counts restored (pA after {versions[0]} updates" in log

        # SIGHUP with the model unchanged: the counts are carried over.
        before = learning(status, "maze")["updates"]
        daemon.signal(signal.SIGHUP)
        status = wait_status(status_path, lambda s: s["reloads"]["ok"] == 1)
        assert learning(status, "maze")["counts_from"] == "snapshot"
        assert learning(status, "maze")["updates"] >= before
        # Another prior: the beliefs are carried, the counts start from the new priors.
        config.write_text(text.replace("prior_scale = 2.0", "prior_scale = 4.0"))
        daemon.signal(signal.SIGHUP)
        status = wait_status(status_path, lambda s: s["reloads"]["ok"] == 2)
        assert learning(status, "maze")["counts_from"] == "priors"
        # Another model (int8 -> float64): the group starts afresh, from the priors.
        config.write_text(text.replace('count = 60\n', 'count = 60\nprecision = "float64"\n'))
        daemon.signal(signal.SIGHUP)
        status = wait_status(status_path, lambda s: s["reloads"]["ok"] == 3)
        assert learning(status, "maze")["counts_from"] == "priors"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
        notify.close()
    log = config.with_suffix(".log").read_text()
    assert "group 'maze': beliefs restored; the state holds no counts learned from this group's " \
        "priors (another table, prior or scope), learning starts from the priors" in log
    assert "group maze: its model or size changed: learning starts from the new model's priors" \
        in log
    assert log.count("group 'maze': learned counts restored") == 2  # the restart, the 1st reload


def test_run_refuses_a_bad_table_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "daemon.toml"
    config.write_text(CONFIG.format(state=state).replace("A = [1]", "A = [3]"))
    done = run(config)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    line = CONFIG.format(state=state).splitlines().index("A = [3]".replace("3", "1")) + 1
    assert (
        f"{config}:{line}: groups[0].learning.A: group 'maze': [groups.learning] A: learning "
        "asked for modality 3, the model has 3 (modality indices 0..2)"
    ) in done.stderr
    assert "READY" not in done.stderr


PLANNED = """
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state}/status.json"
tick_hz = 20.0

[[groups]]
name = "maze"
model = {{ type = "builtin", name = "tmaze-reversal" }}
count = 200
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[groups.planning]
every = 4
max_agents = 50

[groups.learning]
A = [1]
B = [0]
D = "all"
lr_pA = 0.05
lr_pB = 0.05
refresh_every = 2
"""


def test_a_daemon_learns_under_a_planning_policy(tmp_path: Path) -> None:
    """Shared counts with ``[groups.planning]``: check-config accepts the group, and the
    daemon's agents learn every tick while at most 50 of 200 plan a tick."""
    state = tmp_path / "state"
    config = tmp_path / "daemon.toml"
    config.write_text(PLANNED.format(state=state))
    check = subprocess.run(
        [sys.executable, "-m", "edge_agent", "check-config", str(config)], capture_output=True,
        text=True, cwd=REPO, timeout=120, env=environment(tmp_path), check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    done = run(config)
    assert done.returncode == 0, done.stderr[-3000:]
    arrays = newest(state)
    tmaze = builtin_model("tmaze-reversal")
    ticks = int(arrays["group.maze.learn.version.A"])
    assert ticks >= 5
    assert learned(arrays, "group.maze.learn.pA1", tmaze.A[1]).sum() > tmaze.A[1].sum() + 1.0
    # every tick on which some agent had acted (not a trial's first: T-maze trials are 3 ticks)
    assert int(arrays["group.maze.learn.version.B"]) >= ticks // 2
    assert "group.maze.plan_age" in arrays  # the committed plans are in the snapshot
    status = json.loads((state / "status.json").read_text())
    group = next(g for g in status["groups"] if g["name"] == "maze")
    assert group["planning"]["planned"] <= 50
    assert group["planning"]["duty_cycle"] <= 0.25
    assert group["learning"]["updates"] >= ticks


def test_a_daemon_learns_on_two_workers(tmp_path: Path) -> None:
    """Shared counts with ``workers = 2``: the caller and a forked worker step the blocks, the
    counts are summed from every agent's posteriors, the worker is forked again at every
    refresh; status says two processes step the group, and it learned."""
    state = tmp_path / "state"
    config = tmp_path / "daemon.toml"
    text = PLANNED.format(state=state)
    text = text.replace("count = 200\n", "count = 5000\nworkers = 2\n")
    text = text.replace("[groups.planning]\nevery = 4\nmax_agents = 50\n", "")
    text = text.replace("refresh_every = 2", "refresh_every = 5")
    config.write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "edge_agent", "check-config", str(config)], capture_output=True,
        text=True, cwd=REPO, timeout=120, env=environment(tmp_path), check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    done = run(config, duration=3.0)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "steps every block" not in done.stderr  # no worker failed
    status = json.loads((state / "status.json").read_text())
    group = next(g for g in status["groups"] if g["name"] == "maze")
    assert group["workers"] == 2
    assert group["learning"]["refreshes"] >= 1
    arrays = newest(state)
    ticks = int(arrays["group.maze.learn.version.A"])
    assert ticks >= 5
    A1 = builtin_model("tmaze-reversal").A[1]
    assert learned(arrays, "group.maze.learn.pA1", A1).sum() > A1.sum() + 100
