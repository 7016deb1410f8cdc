"""The daemon's Prometheus text file passes ``promtool check metrics`` (Debian ``prometheus``),
with and without the fleet link and coordination, and names its numbers in base units."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.daemon.test_daemon import NotifySocket
from tests.integration.fleet.test_fleet_daemon import Node, wait_until
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration

COORDINATED = """
[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 20
source = { type = "sim" }
sink = { type = "sim" }
[groups.coordination]
capabilities = ["grid"]
"""


def promtool_check(path: Path) -> None:
    """``promtool check metrics`` of the file: no lint problem, exit 0."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not found: apt-get install prometheus"
    with path.open("rb") as fh:
        done = subprocess.run(  # noqa: PLW1510 - asserted below
            [promtool, "check", "metrics"], stdin=fh, capture_output=True, text=True, timeout=60
        )
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), path.read_text()


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_the_textfile_of_a_fleet_node_with_coordination_passes_promtool(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    prom = tmp_path / "textfile" / "edge_agent.prom"
    prom.parent.mkdir()
    node = Node(tmp_path, mosquitto, "prom-1", groups=COORDINATED)
    text = node.config.read_text().replace(
        'log_level = "info"',
        f'log_level = "info"\nprometheus_textfile = "{prom}"\nprometheus_interval_s = 1',
    )
    node.config.write_text(text)
    node.start()
    try:
        wait_until(
            lambda: (
                prom.exists()
                and "edge_agent_coord_" in prom.read_text()
                and "edge_agent_fleet_events_published_total" in prom.read_text()
            ),
            "the text file with the fleet's and coordination's numbers",
        )
        promtool_check(prom)
        numbers = samples(prom.read_text())
        node_label = '{node="prom-1"}'
        assert (
            numbers[
                f'edge_agent_build_info{{node="prom-1",version="{_version()}",'
                + f'python="{_python()}"}}'
            ]
            == 1
        )
        assert numbers['edge_agent_profile_info{node="prom-1",profile="x86-dev"}'] == 1
        assert numbers[f"edge_agent_tick_duration_seconds_count{node_label}"] >= 1
        assert 0 < numbers['edge_agent_tick_duration_seconds{node="prom-1",quantile="0.99"}'] < 5
        assert f"edge_agent_start_time_seconds{node_label}" in numbers
        assert 'edge_agent_state_moved_aside_total{node="prom-1",part="outbox"}' in numbers
        assert not [n for n in numbers if n.split("{")[0].endswith(("_ms", "_s", "_at"))]
    finally:
        assert node.stop() == 0
        node.close()


def test_the_textfile_of_a_standalone_daemon_passes_promtool(tmp_path: Path) -> None:
    from tests.integration.daemon.test_daemon import Daemon, write_config

    prom = tmp_path / "edge_agent.prom"
    config = tmp_path / "daemon.toml"
    write_config(config, tmp_path / "state", grid=10, tmaze=10)
    config.write_text(
        config.read_text().replace(
            'log_level = "info"',
            f'log_level = "info"\nprometheus_textfile = "{prom}"\nprometheus_interval_s = 1',
        )
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Daemon(config, notify)
    try:
        notify.wait_for("READY=1", 60)
        wait_until(prom.exists, "the text file")
        promtool_check(prom)
    finally:
        daemon.kill()
        notify.close()


def _version() -> str:
    from edge_agent import __version__

    return __version__


def _python() -> str:
    import sys

    return ".".join(str(n) for n in sys.version_info[:3])


def test_a_group_with_a_planning_policy_shows_its_planning(tmp_path: Path) -> None:
    """docs/planning.md: the status file's group entry and the Prometheus text file carry the
    last tick's duty cycle, deferred agents and plan age of a group with a planning policy."""
    import json

    from tests.integration.daemon.test_daemon import Daemon, write_config

    prom = tmp_path / "edge_agent.prom"
    config = tmp_path / "daemon.toml"
    write_config(config, tmp_path / "state", grid=40, tmaze=10)
    text = config.read_text().replace(
        'log_level = "info"',
        f'log_level = "info"\nprometheus_textfile = "{prom}"\nprometheus_interval_s = 1',
    )
    planning = "\n[groups.planning]\nevery = 4\nbelief_change = 0.1\nmax_agents = 5\n"
    config.write_text(text + planning)
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Daemon(config, notify)
    status = tmp_path / "state" / "status.json"
    try:
        notify.wait_for("READY=1", 60)
        wait_until(
            lambda: prom.exists() and "edge_agent_group_planning_duty_cycle" in prom.read_text(),
            "the planning numbers in the text file",
        )
        promtool_check(prom)
        numbers = samples(prom.read_text())
        duty = numbers['edge_agent_group_planning_duty_cycle{group="tmaze"}']
        assert 0.0 <= duty <= 0.5  # at most 5 of its 10 agents a tick
        assert 'edge_agent_group_plan_age_mean{group="tmaze"}' in numbers
        assert 'edge_agent_group_planning_deferred{group="tmaze"}' in numbers
        assert not any(k.startswith("edge_agent_group_planning") and 'group="grid"' in k
                       for k in numbers)  # every-tick groups show nothing new
        wait_until(status.exists, "the status file")
        groups = {g["name"]: g for g in json.loads(status.read_text())["groups"]}
        assert set(groups["tmaze"]["planning"]) == {
            "planned", "deferred", "duty_cycle", "plan_age_mean", "plan_age_max",
            "ticks_cut", "passed_over",  # a budget's
        }
        assert groups["tmaze"]["planning"]["planned"] <= 5
        assert "planning" not in groups["grid"]
        # The node's totals over its planning groups: in Prometheus, and in the counters the
        # status file and telemetry carry (telemetry leaves per-group numbers out).
        assert 0.0 <= numbers["edge_agent_planning_duty_cycle"] <= 0.5
        assert numbers["edge_agent_planning_agents"] == 10
        counters = json.loads(status.read_text())["counters"]
        assert counters["planning.agents"] == 10
        assert 0 <= counters["planning.planned"] <= 5
        assert {"planning.deferred", "planning.duty_cycle", "planning.plan_age_mean"} <= set(
            counters
        )
        assert not any(k.startswith("group.") for k in counters)
    finally:
        daemon.kill()
        notify.close()
