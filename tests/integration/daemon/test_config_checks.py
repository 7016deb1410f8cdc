"""``check-config``, ``run`` and a SIGHUP reload refuse a bad config with the same lines.

One code path (``read_config`` -> ``resolve_profile`` -> ``build_groups``) serves all three, so
each problem is reported at the line of the key it is about, whoever asks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon.test_daemon import (
    PROFILES,
    REPO,
    Daemon,
    NotifySocket,
    wait_status,
    write_config,
)

pytestmark = pytest.mark.integration

CONFIGS = REPO / "tests" / "data" / "configs"

#: config file -> the start of the first line every command must print for it.
BAD = {
    "slow_tick": ":3: daemon.tick_hz: 0.01 Hz is too slow for the 30 s watchdog of profile "
    "'pi-zero-2w'",
    "unknown_profile": ":2: daemon.profile: unknown firmware profile 'pi9-64gb'; known: auto,",
    "unknown_model": ":12: groups[0].model.name: unknown built-in model 'grid11'; known:",
    "unknown_world": ":12: groups[0].source.world: unknown built-in world 'maze'; known:",
    "too_many_agents": ":14: groups[1].count: brings the total to 6000 agents, over max_agents "
    "4000 of profile 'pi-zero-2w'",
    "over_budget": ":14: groups[1].count: agents ",
    "no_trusted_keys_dir": ":3: daemon.trusted_keys_dir: ",
    "no_password_file": ":14: mqtt.password_file: ",
    "no_tls_files": ":18: mqtt.tls.ca_file: ",
}


def edge_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - exit codes are asserted
        [sys.executable, "-m", "edge_agent", *args], capture_output=True, text=True, cwd=REPO,
        timeout=120, env={**os.environ, "EDGE_AGENT_PROFILES_DIR": str(PROFILES)},
    )


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_config_and_run_refuse_with_the_same_file_line(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.toml"
    shutil.copy(CONFIGS / f"{name}.toml", path)
    check = edge_agent("check-config", str(path))
    assert check.returncode == 2, check.stdout
    assert check.stderr.startswith(f"{path}{BAD[name]}"), check.stderr
    assert "Traceback" not in check.stderr
    run = edge_agent("run", "--config", str(path), "--duration", "3",
                     "--state-dir", str(tmp_path / "state"))
    assert run.returncode == 2
    assert run.stderr.strip() == check.stderr.strip()


def test_sighup_reload_refuses_each_bad_config_with_the_same_lines(tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    state = tmp_path / "state"
    write_config(config, state, grid=20, tmaze=20)
    good = config.read_text()
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Daemon(config, notify)
    status = state / "status.json"
    try:
        notify.wait_for("READY=1", 60)
        expected = edge_agent("check-config", str(config))  # the good one: OK
        assert expected.returncode == 0, expected.stderr
        for refused, name in enumerate(sorted(BAD), start=1):
            shutil.copy(CONFIGS / f"{name}.toml", config)
            expected = edge_agent("check-config", str(config))
            daemon.signal(signal.SIGHUP)
            s = wait_status(status, lambda s, n=refused: s["reloads"]["refused"] == n, timeout=60)
            assert s["reloads"]["last_error"].strip() == expected.stderr.strip(), name
            assert s["state"] == "running"
            config.write_text(good)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.kill()
        notify.close()


def test_missing_tls_files_are_each_named_at_their_line(tmp_path: Path) -> None:
    """Each TLS file that cannot be read is named at its key, by check-config and run alike
    (run used to print a traceback at every reconnect without naming the file)."""
    path = tmp_path / "tls.toml"
    shutil.copy(CONFIGS / "no_tls_files.toml", path)
    check = edge_agent("check-config", str(path))
    assert check.returncode == 2
    assert check.stderr.splitlines() == [
        f"{path}:18: mqtt.tls.ca_file: {tmp_path / 'no-such-ca.pem'}: cannot read: "
        "No such file or directory",
        f"{path}:19: mqtt.tls.cert_file: {tmp_path / 'no-such-node.crt'}: cannot read: "
        "No such file or directory",
        f"{path}:20: mqtt.tls.key_file: {tmp_path / 'no-such-node.key'}: cannot read: "
        "No such file or directory",
    ]
    # Files that exist but are not what TLS needs: refused at the key too, before any connect.
    (tmp_path / "no-such-ca.pem").write_text("not a certificate\n")
    (tmp_path / "no-such-node.crt").write_text("not a certificate\n")
    (tmp_path / "no-such-node.key").write_text("not a key\n")
    check = edge_agent("check-config", str(path))
    assert check.returncode == 2
    assert check.stderr.startswith(f"{path}:18: mqtt.tls.ca_file: {tmp_path / 'no-such-ca.pem'}: "
                                   "not a PEM CA bundle: "), check.stderr
    assert len(check.stderr.splitlines()) == 1
    run = edge_agent("run", "--config", str(path), "--duration", "3",
                     "--state-dir", str(tmp_path / "state"))
    assert run.returncode == 2
    assert run.stderr.strip() == check.stderr.strip()


def _without_dac_override(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``edge-agent ARGS`` as root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so that file
    permissions bind as they do for the service user (root owns the interpreter's files under
    /root, which another user could not run)."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "needs setpriv (apt-get install util-linux)"
    assert os.geteuid() == 0, "this test drops root's capabilities: run it as root"
    return subprocess.run(  # noqa: PLW1510 - exit codes are asserted
        [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
         sys.executable, "-m", "edge_agent", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "HOME": str(home), "XDG_STATE_HOME": "",
             "EDGE_AGENT_PROFILES_DIR": str(PROFILES)},
    )


def test_a_state_dir_the_user_cannot_create_is_one_line_in_check_config_and_run(
    tmp_path: Path,
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chown(locked, 65534, 65534)  # nobody's: root without DAC override cannot write in it
    locked.chmod(0o755)
    config = tmp_path / "daemon.toml"
    write_config(config, locked / "state", grid=10, tmaze=10)
    check = _without_dac_override("check-config", str(config), home=tmp_path)
    assert check.returncode == 2, check.stdout
    expected = (
        f"{config}:4: daemon.state_dir: {locked / 'state'}: cannot create it: {locked} is not "
        "writable (as user root); create it for the daemon's user or choose a state_dir it can "
        "write"
    )
    assert check.stderr.splitlines() == [expected]
    run = _without_dac_override("run", "--config", str(config), "--duration", "3", home=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [expected]
    # The demo for a user whose home it cannot write in: one line, not a traceback.
    demo = _without_dac_override("run", "--demo", "--duration", "3", home=locked / "home")
    assert demo.returncode == 2
    assert demo.stderr.splitlines() == [
        f"<embedded default_config.toml>:8: daemon.state_dir: "
        f"{locked / 'home' / '.local' / 'state' / 'edge-agent'}: cannot create it: {locked} "
        "is not writable (as user root); give the demo a directory it can write: --state-dir DIR"
    ]
    flag = _without_dac_override("run", "--demo", "--duration", "3", "--state-dir",
                                 str(locked / "st"), home=tmp_path)
    assert flag.returncode == 2
    assert flag.stderr.splitlines() == [
        f"--state-dir {locked / 'st'}: cannot create it: {locked} is not writable (as user root)"
    ]


def test_a_second_daemon_on_the_same_state_dir_refuses_naming_the_first(tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    state = tmp_path / "state"
    write_config(config, state, grid=10, tmaze=10)
    notify = NotifySocket(tmp_path / "notify.sock")
    first = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 60)
        check = edge_agent("check-config", str(config))  # beside it: OK, and says who runs
        assert check.returncode == 0, check.stderr
        assert f"  state_dir in use by the running daemon, pid {first.proc.pid} (" in check.stdout
        second = edge_agent("run", "--config", str(config), "--duration", "30")
        assert second.returncode == 2
        assert second.stderr.splitlines() == [
            f"edge-agent run: state_dir {state} is in use by another daemon, pid "
            f"{first.proc.pid} ({sys.executable} -m edge_agent run --config {config}): two "
            "daemons on one state directory overwrite each other's snapshots; stop that one or "
            "give this one another state_dir (--state-dir DIR)"
        ]
        # The first one was not disturbed: it stops cleanly, and then the state is free.
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
        again = edge_agent("run", "--config", str(config), "--duration", "1")
        assert again.returncode == 0, again.stderr
    finally:
        first.kill()
        notify.close()


def _in_memory_cgroup(limit_bytes: int, name: str) -> Path:
    """A real memory cgroup with ``limit_bytes`` (cgroup v2 ``memory.max`` where this machine
    has the memory controller there, else v1 ``memory.limit_in_bytes``)."""
    v2 = Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        group = v2 / name
        group.mkdir()
        (group / "memory.max").write_text(str(limit_bytes))
        return group
    v1 = v2 / "memory"
    assert v1.is_dir(), "needs a writable cgroup memory controller (run as root on Linux)"
    group = v1 / name
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
    return group


def test_a_budget_above_the_cgroups_memory_limit_is_refused_in_a_real_cgroup(
    tmp_path: Path,
) -> None:
    """check-config and run, moved into a real memory cgroup whose limit is below the x86-dev
    budget (1152 MiB), refuse at the profile's line; with room to spare they pass."""
    config = tmp_path / "daemon.toml"
    write_config(config, tmp_path / "state", grid=10, tmaze=10)
    group = _in_memory_cgroup(600 * 2**20, f"edge-agent-test-{os.getpid()}")
    limit_file = group / ("memory.max" if (group / "memory.max").exists()
                          else "memory.limit_in_bytes")
    try:
        def in_group(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(  # noqa: PLW1510 - exit codes are asserted
                ["/bin/sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh",
                 sys.executable, "-m", "edge_agent", *args],
                capture_output=True, text=True, cwd=REPO, timeout=120,
                env={**os.environ, "EDGE_AGENT_PROFILES_DIR": str(PROFILES), **env},
            )

        expected = (
            f"{config}:3: daemon.profile: profile 'x86-dev' budgets 1.1 GiB (memory_budget_mb "
            f"1024 + base_mb 128), above this process's cgroup memory limit of 600.0 MiB "
            f"({limit_file}): raise the cgroup's memory limit (a container's --memory, a unit's "
            "MemoryMax=), or choose a profile with a smaller budget"
        )
        check = in_group("check-config", str(config))
        assert check.returncode == 2
        assert check.stderr.splitlines() == [expected]
        run = in_group("run", "--config", str(config), "--duration", "3")
        assert run.returncode == 2
        assert run.stderr.splitlines() == [expected]
        # Under systemd (INVOCATION_ID) the fix is the drop-in with the profile's limits.
        unit = in_group("check-config", str(config), INVOCATION_ID="0123")
        assert unit.returncode == 2
        assert "edge-agent systemd-dropin --profile x86-dev | sudo tee /etc/systemd/system/" \
            "edge-agent.service.d/profile.conf && sudo systemctl daemon-reload" in unit.stderr
        limit_file.write_text(str(1536 * 2**20))  # the profile's own MemoryMax: passes quietly
        check = in_group("check-config", str(config))
        assert check.returncode == 0, check.stderr
        assert check.stderr == ""
        limit_file.write_text(str(1200 * 2**20))  # within 10 %: a warning, then OK
        check = in_group("check-config", str(config))
        assert check.returncode == 0, check.stderr
        assert "within 10 % of the cgroup's memory limit of 1.2 GiB" in check.stderr
    finally:
        group.rmdir()
