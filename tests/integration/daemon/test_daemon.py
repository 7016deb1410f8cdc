"""edge-agentd as a real process: sd_notify datagrams, signals, reload, snapshots, status."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
PROFILES = REPO / "firmware_profiles"


def write_config(
    path: Path,
    state_dir: Path,
    *,
    grid: int = 200,
    tmaze: int = 200,
    tick_hz: float = 20.0,
    profile: str = "x86-dev",
) -> None:
    path.write_text(
        f"""
[daemon]
profile = "{profile}"
state_dir = "{state_dir}"
status_file = "{state_dir / "status.json"}"
tick_hz = {tick_hz}
log_level = "info"

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {grid}
priority = 5
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[[groups]]
name = "tmaze"
model = {{ type = "builtin", name = "tmaze" }}
count = {tmaze}
priority = 1
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""
    )


class NotifySocket:
    """A test-owned NOTIFY_SOCKET that, like systemd, reads every datagram as it arrives (a
    thread drains it: an unread socket fills after a few messages and the daemon's sends block)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data)

    def wait_for(self, needle: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        seen = 0
        while True:
            with self._lock:
                new = self.messages[seen:]
            seen += len(new)
            for msg in new:
                if needle in msg:
                    return msg
            if time.monotonic() >= end:
                break
            time.sleep(0.05)
        with self._lock:
            last = self.messages[-5:]
        raise AssertionError(f"no {needle!r} within {timeout} s; got {last}")

    def close(self) -> None:
        self._closed.set()
        self._reader.join(2)
        self.sock.close()


class Daemon:
    def __init__(self, config: Path, notify: NotifySocket, extra_env: dict[str, str] | None = None):
        env = dict(os.environ)
        env.update(
            NOTIFY_SOCKET=str(notify.path),
            WATCHDOG_USEC="2000000",
            EDGE_AGENT_PROFILES_DIR=str(PROFILES),
            EDGE_AGENT_RUNTIME_DIR=str(config.parent / "run"),  # where status finds daemons
            PYTHONUNBUFFERED="1",
        )
        env.pop("WATCHDOG_PID", None)
        env.update(extra_env or {})
        self.log = config.with_suffix(".log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def read_status(path: Path) -> dict:
    out = subprocess.run(  # noqa: PLW1510 - exit codes are asserted
        [sys.executable, "-m", "edge_agent", "status", "--json", "--status-file", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.stdout, out.stderr
    return json.loads(out.stdout)


def wait_status(path: Path, predicate, timeout: float = 120) -> dict:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < end:
        if path.exists():
            try:
                last = json.loads(path.read_text())
            except ValueError:
                last = {}
            if last and predicate(last):
                return last
        time.sleep(0.1)
    raise AssertionError(f"status never satisfied the condition; last: {json.dumps(last)[:800]}")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Path, Path, NotifySocket]]:
    state = tmp_path / "state"
    config = tmp_path / "edge-agent.toml"
    write_config(config, state)
    notify = NotifySocket(tmp_path / "notify.sock")
    yield config, state, notify
    notify.close()


def test_ready_watchdog_status_and_clean_stop(env: tuple[Path, Path, NotifySocket]) -> None:
    config, state, notify = env
    daemon = Daemon(config, notify)
    try:
        ready = notify.wait_for("READY=1", 60)
        assert "STATUS=running" in ready
        notify.wait_for("WATCHDOG=1", 10)
        status = wait_status(state / "status.json", lambda s: s["tick"]["ticks"] >= 10)
        assert status["state"] == "running"
        assert status["profile"] == "x86-dev"
        assert status["agents"] == 400
        assert [g["name"] for g in status["groups"]] == ["grid", "tmaze"]
        assert status["budget"]["used_bytes"] > 0
        assert (
            status["budget"]["used_bytes"] + status["budget"]["available_bytes"]
            == status["budget"]["total_bytes"]
        )
        assert status["rss_bytes"] > 10_000_000
        # The config was validated in a child process: pydantic is not even mapped here. Without
        # MQTT there is no database (no SQLite) and the digests are Python's own (no OpenSSL).
        maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
        assert "pydantic" not in maps
        assert "libsqlite3" not in maps
        assert "libcrypto" not in maps
        assert "numpy" in maps  # the check reads the right process
        # The CLI's view of the same file
        view = read_status(state / "status.json")
        assert view["stale"] is False
        human = subprocess.run(  # noqa: PLW1510 - exit codes are asserted
            [
                sys.executable,
                "-m",
                "edge_agent",
                "status",
                "--status-file",
                str(state / "status.json"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert human.returncode == 0, human.stderr
        assert "profile    x86-dev" in human.stdout
        assert "grid" in human.stdout
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        notify.wait_for("STOPPING=1", 5)
    finally:
        daemon.kill()
    final = json.loads((state / "status.json").read_text())
    assert final["state"] == "stopped"
    assert final["snapshots"]["last"] is not None
    assert list((state / "snapshots").glob("snapshot-*.eas"))


def test_sighup_with_broken_config_keeps_old_then_good_config_applies(
    env: tuple[Path, Path, NotifySocket],
) -> None:
    config, state, notify = env
    daemon = Daemon(config, notify)
    status_path = state / "status.json"
    try:
        notify.wait_for("READY=1", 60)
        before = wait_status(status_path, lambda s: s["tick"]["ticks"] >= 3)
        good_text = config.read_text()
        config.write_text(good_text.replace("count = 200", "count = -5", 1))
        daemon.signal(signal.SIGHUP)
        refused = wait_status(status_path, lambda s: s["reloads"]["refused"] == 1)
        assert "groups[0].count" in refused["reloads"]["last_error"]
        assert refused["config_digest"] == before["config_digest"]
        ticks = refused["tick"]["ticks"]
        wait_status(status_path, lambda s: s["tick"]["ticks"] > ticks + 5)  # still ticking
        assert daemon.proc.poll() is None
        config.write_text(good_text.replace("count = 200", "count = 300", 1))
        daemon.signal(signal.SIGHUP)
        applied = wait_status(status_path, lambda s: s["reloads"]["ok"] == 1)
        assert applied["agents"] == 500
        assert applied["config_digest"] != before["config_digest"]
        notify.wait_for("RELOADING=1", 5)
        daemon.signal(signal.SIGINT)
        assert daemon.wait() == 0
    finally:
        daemon.kill()


def test_over_budget_config_is_refused_with_the_numbers(tmp_path: Path) -> None:
    config = tmp_path / "big.toml"
    # 3,000 T-maze agents with 8,192-step histories do not fit pi-zero-2w's 96 MiB.
    text = (REPO / "tests" / "data" / "configs" / "over_budget.toml").read_text()
    config.write_text(text.replace('profile = "pi-zero-2w"',
                                   f'profile = "pi-zero-2w"\nstate_dir = "{tmp_path / "state"}"'))
    out = subprocess.run(  # noqa: PLW1510 - exit codes are asserted
        [sys.executable, "-m", "edge_agent", "check-config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "EDGE_AGENT_PROFILES_DIR": str(PROFILES)},
    )
    assert out.returncode == 2
    assert "groups[1].count: agents" in out.stderr
    assert "group 'tmaze' count" in out.stderr
    assert "MiB" in out.stderr
    assert "pi-zero-2w" in out.stderr
    run = subprocess.run(  # noqa: PLW1510 - exit codes are asserted
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config), "--duration", "5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "EDGE_AGENT_PROFILES_DIR": str(PROFILES)},
    )
    assert run.returncode == 2
    assert "READY" not in run.stderr
    assert not (tmp_path / "state" / "status.json").exists()


def test_sigkill_during_snapshot_restores_previous_good_snapshot(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = (PROFILES / "x86-dev.toml").read_text()
    text = text.replace('name = "x86-dev"', 'name = "fast-snap"')
    text = text.replace("snapshot_interval_s = 60", "snapshot_interval_s = 1")
    text = text.replace("max_snapshot_writes_per_hour = 120", "max_snapshot_writes_per_hour = 3600")
    (profiles / "fast-snap.toml").write_text(text)
    state = tmp_path / "state"
    config = tmp_path / "cfg.toml"
    write_config(config, state, grid=4000, tmaze=10, profile="fast-snap", tick_hz=5)
    notify = NotifySocket(tmp_path / "n.sock")
    snaps = state / "snapshots"
    try:
        daemon = Daemon(config, notify, {"EDGE_AGENT_PROFILES_DIR": str(profiles)})
        notify.wait_for("READY=1", 60)
        # Wait for one complete snapshot, then for the next write to be in flight, and kill.
        end = time.monotonic() + 30
        while time.monotonic() < end and not list(snaps.glob("snapshot-*.eas")):
            time.sleep(0.01)
        good = sorted(snaps.glob("snapshot-*.eas"))
        assert good, "no snapshot written"
        killed_mid_write = False
        while time.monotonic() < end:
            if list(snaps.glob(".snapshot-*.tmp")):
                daemon.proc.kill()
                killed_mid_write = True
                break
            time.sleep(0.001)
        daemon.kill()
        assert killed_mid_write, "never caught a snapshot in flight"
        assert list(snaps.glob(".snapshot-*.tmp")), "the interrupted write left its temp file"
        newest_good = sorted(snaps.glob("snapshot-*.eas"))[-1]

        notify2 = NotifySocket(tmp_path / "n2.sock")
        daemon2 = Daemon(config, notify2, {"EDGE_AGENT_PROFILES_DIR": str(profiles)})
        try:
            notify2.wait_for("READY=1", 60)
            status = wait_status(
                state / "status.json",
                lambda s: s["pid"] == daemon2.proc.pid and s["tick"]["ticks"] >= 1,
            )
            assert status["snapshots"]["restored_from"] == str(newest_good)
            assert status["snapshots"]["temp_files_removed"] >= 1
            assert not any(e["kind"] == "snapshot_corrupt" for e in status["events"])
            daemon2.signal(signal.SIGTERM)
            assert daemon2.wait(60) == 0
        finally:
            daemon2.kill()
            notify2.close()
    finally:
        notify.close()


def test_corrupt_snapshot_is_set_aside_and_reported(env: tuple[Path, Path, NotifySocket]) -> None:
    config, state, notify = env
    first = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 60)
        wait_status(state / "status.json", lambda s: s["tick"]["ticks"] >= 3)
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
    finally:
        first.kill()
    snap = sorted((state / "snapshots").glob("snapshot-*.eas"))[-1]
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    second = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 60)
        status = wait_status(
            state / "status.json", lambda s: s["pid"] == second.proc.pid and s["tick"]["ticks"] >= 1
        )
        kinds = [e["kind"] for e in status["events"]]
        assert "snapshot_corrupt" in kinds
        assert status["snapshots"]["restored_from"] != str(snap)
        assert list((state / "snapshots" / "corrupt").iterdir())
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
    finally:
        second.kill()


def test_restore_says_what_it_restored_and_from_where(tmp_path: Path) -> None:
    """A fresh clone once restored another checkout's demo snapshot without a word: the log now
    names the snapshot, its age, the config that wrote it, and how to start fresh."""
    config = tmp_path / "daemon.toml"
    state = tmp_path / "state"
    write_config(config, state, grid=30, tmaze=20)
    cmd = [sys.executable, "-m", "edge_agent", "run", "--config", str(config), "--duration", "2"]
    envs = {**os.environ, "EDGE_AGENT_PROFILES_DIR": str(PROFILES)}
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, env=envs,
                           check=True)
    assert f"fresh start: no snapshot to restore in {state / 'snapshots'}" in first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, env=envs,
                            check=True)
    line = next(x for x in second.stderr.splitlines() if "restored grid" in x)
    assert f"restored grid (30 agents), tmaze (20 agents) from snapshot {state / 'snapshots'}/" \
        in line
    assert f"by config {config})" in line
    assert "ago" in line
    assert "another state_dir" in line


def test_status_without_arguments_finds_the_running_daemon(tmp_path: Path) -> None:
    """``edge-agent status`` showed a stale demo status while a daemon with another config ran:
    daemons announce their status file; one is shown, several are listed, none is explained."""
    run_dir = tmp_path / "run"
    envs = {**os.environ, "EDGE_AGENT_RUNTIME_DIR": str(run_dir),
            "EDGE_AGENT_PROFILES_DIR": str(PROFILES)}

    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: PLW1510 - exit codes are asserted
            [sys.executable, "-m", "edge_agent", "status", "--json"], capture_output=True,
            text=True, cwd=REPO, timeout=60, env=envs,
        )

    daemons = []
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            config = folder / "daemon.toml"
            write_config(config, folder / "state", grid=10 if name == "a" else 20, tmaze=5)
            notify = NotifySocket(folder / "notify.sock")
            daemon = Daemon(config, notify, extra_env={"EDGE_AGENT_RUNTIME_DIR": str(run_dir)})
            daemons.append((daemon, notify, folder))
            notify.wait_for("READY=1", 60)
            wait_status(folder / "state" / "status.json", lambda s: s["tick"]["ticks"] >= 1)
            if name == "a":
                one = status()
                assert one.returncode == 0, one.stderr
                shown = json.loads(one.stdout)
                assert shown["agents"] == 15
                assert shown["status_file"] == str(folder / "state" / "status.json")
        both = status()
        assert both.returncode == 3
        assert "2 daemons are running; choose one:" in both.stderr
        for d, _, folder in daemons:
            assert f"pid {d.proc.pid}: --config {folder / 'daemon.toml'}" in both.stderr
        for d, _, _ in daemons:
            d.signal(signal.SIGTERM)
            assert d.wait() == 0
        none = status()
        assert none.returncode == 3
        assert f"no running daemon announced in {run_dir}" in none.stderr
        assert "edge-agent status --config FILE" in none.stderr
    finally:
        for d, notify, _ in daemons:
            d.kill()
            notify.close()


def test_under_journald_every_line_carries_its_syslog_priority(tmp_path: Path) -> None:
    """With JOURNAL_STREAM set (systemd's stdout/stderr to journald), lines start with <N> so
    that ``journalctl -p warning`` works as docs/deployment.md says."""
    envs = {**os.environ, "JOURNAL_STREAM": "8:12345", "EDGE_AGENT_PROFILES_DIR": str(PROFILES),
            "EDGE_AGENT_RUNTIME_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--demo", "--duration", "4",
         "--state-dir", str(tmp_path / "state")],
        stderr=subprocess.PIPE, text=True, cwd=REPO, env=envs,
    )
    head: list[str] = []
    try:
        assert proc.stderr is not None
        # SIGHUP once the handlers are installed (READY), not after a guessed time: on a busy
        # machine the default action would end the process. The daemon stops by itself (4 s).
        for line in proc.stderr:
            head.append(line)
            if "READY" in line:
                break
        proc.send_signal(signal.SIGHUP)  # the demo has no file to reload: a warning
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(head)
    lines = [line for line in "".join(head).splitlines() + err.splitlines() if line]
    assert lines
    assert all(line[:3] in {"<2>", "<3>", "<4>", "<6>", "<7>"} for line in lines), lines[:5]
    assert any(line.startswith("<6>INFO ") and "READY" in line for line in lines)
    assert any(line.startswith("<4>WARNING ") and "SIGHUP ignored" in line for line in lines)


def test_status_finds_a_daemon_in_systemds_runtime_directory(tmp_path: Path) -> None:
    """Under the unit (User=edge-agent, no XDG_RUNTIME_DIR, PrivateTmp=yes) the daemon announced
    itself in its private /tmp, out of sight of ``edge-agent status``: it now announces in
    ``$RUNTIME_DIRECTORY/daemons`` (/run/edge-agent/daemons, where status looks), removes the
    entries of daemons killed before it, and status names the file it read."""
    runtime = tmp_path / "run-edge-agent"  # stands for /run/edge-agent
    announced = runtime / "daemons"
    announced.mkdir(parents=True)
    corpse = subprocess.Popen([sys.executable, "-c", "pass"])
    corpse.wait(30)
    stale = announced / f"{corpse.pid}.json"
    stale.write_text(json.dumps({"pid": corpse.pid, "status_file": "/gone", "config": "old"}))
    config = tmp_path / "daemon.toml"
    write_config(config, tmp_path / "state", grid=10, tmaze=5)
    lines = config.read_text().splitlines()
    config.write_text("\n".join(x for x in lines if not x.startswith("status_file")) + "\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Daemon(config, notify, extra_env={
        "EDGE_AGENT_RUNTIME_DIR": "", "RUNTIME_DIRECTORY": str(runtime),
        "XDG_RUNTIME_DIR": str(tmp_path / "xdg"),
    })
    try:
        notify.wait_for("READY=1", 60)
        wait_status(runtime / "status.json", lambda s: s["tick"]["ticks"] >= 1)
        shown = subprocess.run(  # noqa: PLW1510 - exit codes are asserted
            [sys.executable, "-m", "edge_agent", "status"], capture_output=True, text=True,
            cwd=REPO, timeout=60, env={**os.environ, "EDGE_AGENT_RUNTIME_DIR": str(announced)},
        )
        assert shown.returncode == 0, shown.stderr
        assert f"pid {daemon.proc.pid}  running" in shown.stdout
        assert f"  config     {config}\n" in shown.stdout
        assert f"  status     {runtime / 'status.json'}\n" in shown.stdout
        assert not stale.exists()
        assert [p.name for p in announced.iterdir()] == [f"{daemon.proc.pid}.json"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        assert list(announced.iterdir()) == []
    finally:
        daemon.kill()
        notify.close()


def test_demo_says_its_state_dir_is_shared_by_every_checkout(tmp_path: Path) -> None:
    """The demo keeps its state per user, not per checkout: a fresh clone restored another
    one's snapshot without a word. Both the fresh start and the restore now say so, and how to
    get a separate state dir; with --state-dir the note goes."""
    shared = tmp_path / "xdg-state" / "edge-agent"
    envs = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
            "EDGE_AGENT_PROFILES_DIR": str(PROFILES), "EDGE_AGENT_RUNTIME_DIR": str(tmp_path)}
    demo = [sys.executable, "-m", "edge_agent", "run", "--demo", "--duration", "1.5"]

    def run(*extra: str) -> str:
        done = subprocess.run([*demo, *extra], capture_output=True, text=True, cwd=REPO,
                              timeout=120, env=envs, check=True)
        return done.stderr

    note = ("; the demo's state_dir is shared by every checkout and run of this user "
            "(--state-dir DIR for a separate one)")
    first = run()
    assert f"fresh start: no snapshot to restore in {shared / 'snapshots'}{note}\n" in first
    second = run()
    line = next(x for x in second.splitlines() if "restored grid" in x)
    assert f"from snapshot {shared / 'snapshots'}/" in line
    assert "by config <embedded demo config>)" in line
    assert line.endswith(f"run with another state_dir{note}")
    separate = run("--state-dir", str(tmp_path / "mine"))
    assert f"fresh start: no snapshot to restore in {tmp_path / 'mine' / 'snapshots'}\n" \
        in separate
    assert "shared by every checkout" not in separate
