"""How ``edge-agent status`` finds running daemons: announced entries on real files and pids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.daemon import discovery


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


def entry(folder: Path, pid: int, status_file: Path, config: str = "c.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    path.write_text(json.dumps({"pid": pid, "status_file": str(status_file), "config": config}))
    return path


def test_runtime_dir_under_systemd_is_its_runtime_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under the unit (User=edge-agent, no XDG_RUNTIME_DIR, PrivateTmp=yes) the daemon once
    announced itself in its private /tmp, where no ``edge-agent status`` could see it."""
    monkeypatch.delenv("EDGE_AGENT_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", f"{tmp_path / 'run'}:{tmp_path / 'other'}")
    assert discovery.runtime_dir() == tmp_path / "run" / "daemons"
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    assert discovery.runtime_dir() == tmp_path / "xdg" / "edge-agent" / "daemons"
    # status looks in its own user's directory and in the service's
    assert discovery.search_dirs() == [
        tmp_path / "xdg" / "edge-agent" / "daemons", discovery.SYSTEM_DIR,
    ]
    monkeypatch.setenv("EDGE_AGENT_RUNTIME_DIR", str(tmp_path / "mine"))
    assert discovery.search_dirs() == [tmp_path / "mine"]


def test_running_daemons_skips_dead_pids_and_reports_unreadable_entries(tmp_path: Path) -> None:
    first, second = tmp_path / "user", tmp_path / "system"
    me = entry(first, os.getpid(), tmp_path / "a.json", "a.toml")
    entry(second, os.getpid(), tmp_path / "duplicate.json")  # the same pid twice: first wins
    entry(first, dead_pid(), tmp_path / "dead.json")
    (first / "notes.json").write_text("{}")  # not named after a pid: not an entry
    unreadable = second / f"{os.getppid()}.json"
    unreadable.mkdir()  # unreadable even for root, like another user's 0600 entry
    found = discovery.running_daemons([first, second, tmp_path / "missing"])
    assert [d.pid for d in found] == sorted([os.getpid(), os.getppid()])
    by_pid = {d.pid: d for d in found}
    assert by_pid[os.getpid()] == discovery.RunningDaemon(
        os.getpid(), me, tmp_path / "a.json", "a.toml"
    )
    other = by_pid[os.getppid()]
    assert other.status_file is None
    assert other.problem.startswith(f"cannot read {unreadable}: ")


def test_announce_removes_entries_of_dead_daemons_and_withdraw_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "daemons"
    stale = entry(folder, dead_pid(), tmp_path / "old.json")
    alive = entry(folder, os.getppid(), tmp_path / "parent.json")
    mine = discovery.announce(tmp_path / "status.json", "my.toml", folder)
    assert mine == folder / f"{os.getpid()}.json"
    assert not stale.exists()
    assert alive.exists()
    record = json.loads(mine.read_text())
    assert record == {"pid": os.getpid(), "status_file": str(tmp_path / "status.json"),
                      "config": "my.toml"}
    discovery.withdraw(mine)
    assert sorted(folder.iterdir()) == [alive]


def test_status_says_when_the_one_running_daemon_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGE_AGENT_RUNTIME_DIR", str(tmp_path))
    (tmp_path / f"{os.getpid()}.json").mkdir()
    assert main(["status"]) == 3
    err = capsys.readouterr().err
    assert "a daemon is running, but its entry cannot be read:" in err
    assert f"pid {os.getpid()}: cannot read {tmp_path / f'{os.getpid()}.json'}" in err
    assert "try sudo" in err
    assert "edge-agent status --config FILE (or --status-file PATH)" in err

