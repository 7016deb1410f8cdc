"""A kind of agent group defined in the tests (``kind_tally.py``) runs in the real daemon.

Nothing under ``edge_agent/daemon`` or ``edge_agent/config`` names it: the config names its
module, the daemon admits, plans, builds, ticks, describes, snapshots and restores it through
the group contract, and its own table, ``[groups.tally]``, is read at its lines and shapes the
group through the table's hooks (check-config's line, the status entry, where a problem is).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.sim.registry import builtin_model
from tests.integration.daemon.test_daemon import REPO, Daemon, NotifySocket, wait_status

pytestmark = pytest.mark.integration

CONFIG = """
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state}/status.json"
tick_hz = 50
log_level = "info"

[[groups]]
name = "tally"
model = {{ type = "kind", module = "tests.support.kind_tally" }}
count = {count}
source = {{ type = "sim", world = "tmaze" }}
sink = {{ type = "sim" }}

[groups.tally]
modality = {modality}

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 10
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""


def _group(status: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(g for g in status["groups"] if g["name"] == name)


def _check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - exit codes are asserted
        [sys.executable, "-m", "edge_agent", "check-config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_a_kind_defined_in_the_tests_runs_snapshots_and_restores(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "edge-agent.toml"
    config.write_text(CONFIG.format(state=state, count=30, modality=1))
    status_file = state / "status.json"

    check = _check_config(config)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "kind tests.support.kind_tally" in check.stdout
    assert "sink sim, tallies modality 1" in check.stdout  # the table's summary_tail

    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 60)
        running = wait_status(status_file, lambda s: _group(s, "tally")["steps"] >= 20)
        tally = _group(running, "tally")
        assert tally["kind"] == "tally"
        assert tally["model"] == "kind tests.support.kind_tally"
        assert tally["agents"] == 30
        assert tally["tally_modality"] == 1  # the table's status
        tmaze = builtin_model("tmaze")
        assert tally["bytes_per_agent"] == 8 * (sum(tmaze.num_obs) + len(tmaze.num_controls) + 1)
        # Every agent tallies one outcome of the table's modality per step.
        assert tally["tallied"] >= 30 * 20
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
    before = _group(wait_status(status_file, lambda s: True), "tally")["tallied"]
    status_file.unlink()  # the next status is the second daemon's

    second = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 60)
        after = wait_status(status_file, lambda s: _group(s, "tally")["steps"] >= 1)
        # The snapshot brought the tallies back: the count goes on from where it stopped.
        assert _group(after, "tally")["tallied"] >= before + 30
        second.signal(signal.SIGTERM)
        assert second.wait(60) == 0
    finally:
        second.kill()
        notify.close()
    log = config.with_suffix(".log").read_text()
    assert "restored tally (30 agents), grid (10 agents) from snapshot" in log, log[-2000:]


def test_the_kind_s_table_is_read_at_its_lines_and_belongs_to_its_groups(tmp_path: Path) -> None:
    config = tmp_path / "edge-agent.toml"
    text = CONFIG.format(state=tmp_path / "state", count=3, modality="MODALITY")
    # The table's own rules, at its line, as any key's.
    config.write_text(text.replace("MODALITY", "-1"))
    out = _check_config(config)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert f"{config}:17: groups[0].tally.modality: must be >= 0, got -1" in out.stderr, out.stderr
    # What the kind finds wrong with it when it loads, at the key the table's hook names.
    config.write_text(text.replace("MODALITY", "3"))
    out = _check_config(config)
    assert out.returncode != 0
    assert (
        f"{config}:17: groups[0].tally.modality: group 'tally': [groups.tally] modality 3: "
        "world 'tmaze' has 3 modalities"
    ) in out.stderr, out.stderr
    # Another kind's group does not have it.
    config.write_text(text.replace("MODALITY", "0") + "\n[groups.tally]\nmodality = 0\n")
    out = _check_config(config)
    assert out.returncode != 0
    assert f"{config}:26: groups[1].tally: unknown key (allowed: " in out.stderr, out.stderr


def test_a_kind_module_that_cannot_be_imported_is_one_line_at_its_model(tmp_path: Path) -> None:
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        CONFIG.format(state=tmp_path / "state", count=3, modality=0)
        .replace("tests.support.kind_tally", "tests.support.no_such_kind")
        .replace("[groups.tally]\nmodality = 0\n", "")
    )
    out = _check_config(config)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert f"{config}:11: groups[0].model.module" in out.stderr + out.stdout, out.stderr
    assert "'tests.support.no_such_kind' cannot be imported" in out.stderr + out.stdout
