"""``edge-agent status``: which status file it reads, and the human view's lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.cli.status import format_status

CONFIG = """
[daemon]
state_dir = "{state}"

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 10
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""


def running_status(path: Path) -> None:
    """A status file as a running daemon (this process) writes it, as far as --json needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "updated_at": time.time(), "state": "running"}))


def test_state_dir_finds_the_status_of_a_run_started_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --config C --state-dir D`` writes D/status.json; ``status --config C --state-dir D``
    reads it (the config's own state_dir holds none), and so does ``--state-dir D`` alone (the
    demo config, ``run --demo --state-dir D``)."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(state=tmp_path / "configured"))
    run_dir = tmp_path / "run-state"
    running_status(run_dir / "status.json")
    for argv in (["--config", str(config), "--state-dir", str(run_dir)],
                 ["--state-dir", str(run_dir)]):  # fmt: skip
        assert main(["status", "--json", *argv]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["status_file"] == str(run_dir / "status.json")
    assert main(["status", "--config", str(config)]) == 3  # the config's state_dir: nothing
    assert "no status at " in capsys.readouterr().err
    assert main(["status", "--status-file", str(run_dir / "status.json"), "--state-dir", "x"]) == 2
    assert "not both" in capsys.readouterr().err


def test_the_human_view_shows_a_group_s_planning() -> None:
    """What ``--json`` has of ``[groups.planning]`` (docs/planning.md) is a line of its own."""
    group = {
        "name": "grid", "agents": 4000, "model": "grid10", "precision": "int8", "priority": 5,
        "bytes_per_agent": 1734, "steps": 45, "paused": False, "paused_reason": "",
        "planning": {"planned": 83, "deferred": 3757, "duty_cycle": 0.02075,
                     "plan_age_mean": 31.34, "plan_age_max": 49, "ticks_cut": 12,
                     "passed_over": 0},
    }  # fmt: skip
    status = {
        "version": "0", "pid": 1, "state": "running", "config": "c.toml", "profile": "x86-dev",
        "budget": {"used_bytes": 1, "total_bytes": 2, "available_bytes": 1}, "rss_bytes": 1,
        "rss_peak_bytes": 1, "soft_limit_bytes": 2,
        "tick": {"ticks": 45, "hz": 10.0, "base_hz": 10.0, "p50_ms": 1.0, "p99_ms": 2.0,
                 "overruns": 0},
        "thermal": {"temp_c": None, "throttled": False}, "snapshots": {}, "agents": 4000,
        "groups": [group, {**group, "name": "every", "planning": None}],
        "reloads": {"last_error": ""},
    }  # fmt: skip
    lines = format_status(status).splitlines()
    planning = [line.strip() for line in lines if "planning" in line]
    assert planning == [
        "planning last tick: 83 planned, 3757 deferred (duty cycle 2.1%); plan age mean 31.3, "
        "max 49 ticks; 12 tick(s) cut by the deadline so far"
    ]
