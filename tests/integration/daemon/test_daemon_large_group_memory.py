"""A large group in the real daemon: where its bytes go, and no second copy at start
(benchmarks/bench_million.py runs a million agents).

The daemon runs 100,000 grid10 agents on 2 processes with 64-step compact histories and a
planning policy, on the profile that allows a million (``pi5-8gb``). Byte accounting is exact:
the status file's bytes per agent are the sum of the parts docs/memory.md lists, and the budget
reserves what the group says it holds. And the state the workers share is allocated in shared
memory from the start: the daemon's peak resident set (``VmHWM``, kept by the kernel) stays
within a fraction of one copy of the beliefs above its resident set once it runs, where moving
the state into shared memory at start held it twice. A second daemon restoring the first one's
snapshot reads each array straight into the group's, so its peak stays as close.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.aif.planning import PlanningPolicy
from edge_agent.core.agents import AifAgentGroup
from edge_agent.sim.registry import builtin_model
from tests.integration.daemon.test_daemon import Daemon, NotifySocket, wait_status

pytestmark = pytest.mark.integration

N = 100_000
S, P, F, M = 100, 5, 1, 1  # grid10: states, one-step policies, factors, modalities
HISTORY = 64


def per_agent_bytes() -> dict[str, int]:
    """docs/memory.md, "A million agents": the group's bytes per agent by part."""
    return {
        "beliefs": S * 4 + 1,  # qs (float32); the prior is made each tick: whether it is D
        "policy": 2 * P * 4,  # q_pi and G
        "actions": 8 * F + 1,  # int64 per factor, and the flag
        "history": HISTORY * (M + F + F + F),  # obs, action, most probable state, its p (uint8)
        "history_staging": F * 2 + 4 + M + F,  # the row staged for the next append
        # committed plans, flags, the evidence (float32), candidates and indices (int32)
        "planning": 3 * 4 + 4 + 4 + 2 * 4,
    }


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no {key}")


def test_a_large_group_holds_the_bytes_it_accounts_for_and_is_never_held_twice(
    tmp_path: Path,
) -> None:
    state, config = tmp_path / "state", tmp_path / "edge-agent.toml"
    config.write_text(
        f"""
[daemon]
profile = "pi5-8gb"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = 20

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {N}
history_capacity = {HISTORY}
history_beliefs = "map"
workers = 2
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[groups.planning]
every = 4
"""
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 120)
        status = wait_status(state / "status.json", lambda s: s["tick"]["ticks"] >= 3)
        pid = daemon.proc.pid
        peak, now = vm(pid, "VmHWM"), vm(pid, "VmRSS")
        group = status["groups"][0]
        assert group["workers"] == 2
        parts = per_agent_bytes()
        assert group["bytes_per_agent"] == sum(parts.values()) == 742
        probe = AifAgentGroup(
            builtin_model("grid10"), 1, history_capacity=HISTORY, history_beliefs="map",
            planning=PlanningPolicy(every=4), keep_prior=False,
        )
        assert probe.memory.nbytes_by_part(n_agents=N) == parts
        by_owner = status["budget"]["by_owner"]
        assert by_owner["grid"] == probe.bytes_for(N, HISTORY)
        assert by_owner["grid:workers"] == probe.scratch_nbytes(N)
        # One copy of the beliefs (qs) is N * S * 4 = 40 MB: moving the state into shared
        # memory at start held all of it (beliefs, posteriors, plans) twice.
        one_copy = N * S * 4
        assert peak - now < one_copy / 2, (
            f"the daemon's peak RSS {peak / 2**20:.1f} MB is {(peak - now) / 2**20:.1f} MB above "
            f"its RSS now ({now / 2**20:.1f} MB)"
        )
        daemon.signal(15)
        assert daemon.wait(120) == 0
        final = json.loads((state / "status.json").read_text())
        assert final["snapshots"]["last"]["bytes"] > 0
    finally:
        daemon.kill()
        notify.close()


def test_a_large_group_restores_its_snapshot_without_holding_it_inflated(tmp_path: Path) -> None:
    """A daemon that restores a snapshot of 100,000 agents reads each array straight into the
    group's (shared) arrays, chunk by chunk: its peak resident set stays within a fraction of
    one copy of the beliefs above its resident set once it runs. Inflating the whole snapshot
    first held every array of it (about 130 MB here, 1.3 GB for a million) beside the state."""
    state, config = tmp_path / "state", tmp_path / "edge-agent.toml"
    config.write_text(
        f"""
[daemon]
profile = "pi5-8gb"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = 20

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {N}
history_capacity = {HISTORY}
history_beliefs = "map"
workers = 2
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[groups.planning]
every = 4
"""
    )
    # the first run fills the history ring (64 rows) before its final snapshot
    for run, ticks in (("save", HISTORY + 2), ("restore", 3)):
        (state / "status.json").unlink(missing_ok=True)
        notify = NotifySocket(tmp_path / f"notify-{run}.sock")
        daemon = Daemon(config, notify)
        try:
            notify.wait_for("READY=1", 120)
            status = wait_status(
                state / "status.json", lambda s, n=ticks: s["tick"]["ticks"] >= n, timeout=600
            )
            pid = daemon.proc.pid
            peak, now = vm(pid, "VmHWM"), vm(pid, "VmRSS")
            daemon.signal(15)
            assert daemon.wait(120) == 0
        finally:
            daemon.kill()
            notify.close()
    assert status["snapshots"]["restored_from"] is not None, "the second daemon restored nothing"
    assert "restored grid (100000 agents)" in config.with_suffix(".log").read_text()
    one_copy = N * S * 4
    assert peak - now < one_copy / 2, (
        f"restoring, the daemon's peak RSS {peak / 2**20:.1f} MB is "
        f"{(peak - now) / 2**20:.1f} MB above its RSS now ({now / 2**20:.1f} MB)"
    )
