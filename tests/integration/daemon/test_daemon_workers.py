"""A large group stepped on several processes by the real daemon.

The daemon forks its workers itself; this test sees them as the daemon's child processes, kills
one (the daemon keeps ticking, stepping their blocks itself), reloads (a new group, new workers),
stops the daemon (no worker left behind) and SIGKILLs it (the workers notice and exit).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.daemon.test_daemon import Daemon, NotifySocket, wait_status

pytestmark = pytest.mark.integration


def write_config(path: Path, state: Path, count: int) -> None:
    path.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = 20
log_level = "info"

[[groups]]
name = "big"
model = {{ type = "builtin", name = "grid10" }}
count = {count}
workers = 2
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[[groups]]
name = "small"
model = {{ type = "builtin", name = "tmaze" }}
count = 100
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""
    )


def group(status: dict, name: str) -> dict:
    return next(g for g in status["groups"] if g["name"] == name)


def workers_of(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children()


def wait_gone(pids: list[int], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:  # bounded
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {alive} still running after {timeout} s")


def test_workers_step_a_large_group_come_back_after_a_killed_worker_and_leave_with_the_daemon(
    tmp_path: Path,
) -> None:
    state, config = tmp_path / "state", tmp_path / "edge-agent.toml"
    write_config(config, state, 2100)
    notify = NotifySocket(tmp_path / "notify.sock")
    status_path = state / "status.json"
    daemon = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 60)
        status = wait_status(status_path, lambda s: s["tick"]["ticks"] >= 5)
        assert group(status, "big")["workers"] == 2
        assert group(status, "small")["workers"] == 1  # one block: one process
        children = workers_of(daemon.proc.pid)
        assert len(children) == 1, children
        status = wait_status(status_path, lambda s: group(s, "big")["workers_rss_bytes"] > 0)
        # A worker killed: the daemon steps its blocks itself, says so, and a second later forks
        # the workers again.
        children[0].kill()
        steps = group(status, "big")["steps"]
        status = wait_status(
            status_path,
            lambda s: group(s, "big")["workers_restarts"] == 1
            and group(s, "big")["workers"] == 2
            and group(s, "big")["steps"] > steps + 10,
        )
        assert status["state"] == "running"
        log = config.with_suffix(".log").read_text()
        assert "group 'big': worker" in log
        assert "steps every block for 1 s, then forks the workers again" in log
        assert "forking its workers again (restart 1)" in log
        again = workers_of(daemon.proc.pid)
        assert len(again) == 1
        assert again[0].pid != children[0].pid
        # A reload builds the group anew, with new workers.
        write_config(config, state, 2600)
        daemon.signal(signal.SIGHUP)
        status = wait_status(status_path, lambda s: s["reloads"]["ok"] == 1)
        assert group(status, "big")["agents"] == 2600
        assert group(status, "big")["workers"] == 2
        children = workers_of(daemon.proc.pid)
        assert len(children) == 1
        # A clean stop takes the workers with it.
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        wait_gone([c.pid for c in children])
    finally:
        daemon.kill()
        notify.close()
    final = json.loads(status_path.read_text())
    assert final["state"] == "stopped"


def test_workers_exit_when_the_daemon_is_killed(tmp_path: Path) -> None:
    state, config = tmp_path / "state", tmp_path / "edge-agent.toml"
    write_config(config, state, 2100)
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 60)
        wait_status(state / "status.json", lambda s: s["tick"]["ticks"] >= 3)
        children = [c.pid for c in workers_of(daemon.proc.pid)]
        assert len(children) == 1
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(10)
        wait_gone(children)  # their pipe closed: they exit by themselves
    finally:
        daemon.kill()
        notify.close()
