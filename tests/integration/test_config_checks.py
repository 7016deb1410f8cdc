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

from tests.integration.test_daemon import (
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
        for refused, name in enumerate(sorted(BAD), start=1):
            expected = edge_agent("check-config", str(config))  # the good one: OK
            assert expected.returncode == 0, expected.stderr
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
