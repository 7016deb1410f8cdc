"""A node's group health, end to end with real parts (docs/health.md): one edge-agentd on a
real mosquitto with a group whose model is its world (the T-maze) and one whose model is not
(the slippery grid, whose walls and slips its agents' model does not know). The ``Health``
message arrives on the node's health topic and decodes; the misfit group raises the ``drift``
event; the status file, ``edge-agent status`` and the Prometheus text file (promtool-clean)
show the same windows."""

from __future__ import annotations

import itertools
import json
import re
import time
from importlib import resources
from pathlib import Path

import pytest

from edge_agent.fleet.health_measures import MEASURES
from edge_agent.fleet.protocol import Event, Health
from tests.integration.daemon.test_prometheus_textfile import promtool_check, samples
from tests.integration.fleet.test_fleet_daemon import (
    TOPICS,
    Listener,
    Node,
    status_view,
    wait_until,
)
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration

GROUPS = """
[[groups]]
name = "fits"
model = { type = "builtin", name = "tmaze" }
count = 32
source = { type = "sim" }
sink = { type = "sim" }

[[groups]]
name = "misfit"
model = { type = "builtin", name = "grid-slippery" }
count = 32
source = { type = "sim" }
sink = { type = "sim" }
[groups.health]
drift_threshold = 10
"""


def drift_log(node: Node, group: str) -> list[tuple[str, str, str]]:
    """The daemon's log lines of ``group``'s drift alarm, in order: (level, event, detail),
    ``("WARNING", "drift", "group maze: the model stopped fitting ...")`` when it was raised,
    ``("INFO", "drift_cleared", ...)`` when it cleared."""
    path = node.config.with_suffix(".log")
    text = path.read_text(errors="replace") if path.exists() else ""
    line = (
        r"^\S+ \S+ (WARNING|INFO) +edge_agent\.daemon\.service: (drift|drift_cleared): "
        rf"(group {re.escape(group)}: .*)$"
    )
    found: list[tuple[str, str, str]] = re.findall(line, text, flags=re.M)
    return found


def assert_the_device_dashboard_queries(textfile: str) -> None:
    """The devices' Grafana dashboard is valid JSON, and every metric it queries is in a real
    daemon's text file (the measures it names are of the closed vocabulary)."""
    raw = resources.files("edge_agent_host.hub").joinpath("grafana/edge-agent-devices.json")
    dashboard = json.loads(raw.read_text())
    exported = {line.split("{")[0].split(" ")[0] for line in textfile.splitlines()
                if line and not line.startswith("#")}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) >= 15
    for expr in exprs:
        names = set(re.findall(r"\bedge_agent_[a-z0-9_]+", expr))
        assert names, expr
        assert names <= exported, f"{expr}: {names - exported} not in the text file"
        assert set(re.findall(r'measure="([a-z_]+)"', expr)) <= set(MEASURES), expr


def test_health_reaches_the_fleet_status_and_textfile(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    prom = tmp_path / "textfile" / "edge_agent.prom"
    prom.parent.mkdir()
    sniff = Listener(mosquitto)
    node = Node(tmp_path, mosquitto, "health-1", groups=GROUPS, telemetry_s=0.5, tick_hz=40)
    node.config.write_text(
        node.config.read_text().replace(
            'log_level = "info"',
            f'log_level = "info"\nprometheus_textfile = "{prom}"\nprometheus_interval_s = 1',
        )
    )
    node.start()
    try:

        def health() -> list[Health]:
            return [
                e.body
                for e in sniff.on_topic(TOPICS.health("health-1"))
                if isinstance(e.body, Health)
            ]

        def drift_events() -> list[Event]:
            return [e for e in sniff.events("health-1") if e.data.get("name") == "drift"]

        def misfit_alarms() -> bool:
            return any(
                (d := h.groups["misfit"].drift) is not None and d.alarm
                for h in health()
                if "misfit" in h.groups
            )

        wait_until(lambda: len(health()) >= 2 and drift_events() and misfit_alarms(),
                   "health messages, a drift event and the misfit's alarm in one")
        last = health()[-1]
        assert 0.2 < last.window_s < 5
        fits, misfit = last.groups["fits"], last.groups["misfit"]
        assert (fits.model, misfit.model) == ("tmaze", "grid-slippery")
        assert fits.agent_steps > 0
        assert fits.measures["score"].n == 32  # the world's: rewards less losses per agent
        assert "score" in misfit.measures  # the grid's: goals reached per agent
        assert {"surprise", "excess_surprise", "free_energy", "policy_entropy"} <= set(
            fits.measures
        )
        assert fits.drift is not None
        assert not fits.drift.alarm
        assert misfit.measures["excess_surprise"].mean > 0.1
        alarmed = next(
            d for h in health() if (d := h.groups["misfit"].drift) is not None and d.alarm
        )
        assert alarmed.statistic > alarmed.threshold
        assert alarmed.since is not None
        assert abs(alarmed.since - time.time()) < 600  # wall clock
        event = drift_events()[0]  # one event each time the alarm fires (it clears by itself)
        assert event.group == "misfit"
        assert event.kind == "alarm"
        assert event.data["threshold"] == alarmed.threshold
        # ... and one line of the daemon's log, at WARNING, before the event went out (a
        # clear is one at INFO: the raises and clears alternate, each transition one line).
        logged = drift_log(node, "misfit")
        assert logged[0] == ("WARNING", "drift", event.detail), logged
        assert all(a[1] != b[1] for a, b in itertools.pairwise(logged)), logged
        assert {(level, kind) for level, kind, _ in logged} <= {
            ("WARNING", "drift"), ("INFO", "drift_cleared")
        }
        assert drift_log(node, "fits") == []

        status = node.wait_status(
            lambda s: all(g.get("health") for g in s["groups"]), "health in the status"
        )
        by_name = {g["name"]: g["health"] for g in status["groups"]}
        assert by_name["fits"]["model"] == "tmaze"
        assert by_name["fits"]["measures"]["surprise"]["n"] > 0
        assert by_name["misfit"]["drift"]["threshold"] == alarmed.threshold == 10  # its table
        assert any(e["kind"] == "drift" for e in status["events"])
        text = status_view(node.state)
        assert "health of tmaze over the last window" in text
        assert "health of grid-slippery over the last window" in text
        assert "drift ok: statistic" in text  # the T-maze's (threshold 12: the default)

        wait_until(lambda: prom.exists() and "group_drift_alarm" in prom.read_text(),
                   "the health in the text file")
        promtool_check(prom)
        numbers = samples(prom.read_text())
        assert numbers['edge_agent_group_drift_alarm{node="health-1",group="misfit"}'] in (0, 1)
        assert numbers['edge_agent_group_drift_alarm{node="health-1",group="fits"}'] == 0
        assert numbers['edge_agent_group_drift_threshold{node="health-1",group="fits"}'] == 12
        key = 'edge_agent_group_health_mean{node="health-1",group="fits",measure="surprise"}'
        assert numbers[key] > 0
        assert_the_device_dashboard_queries(prom.read_text())
        assert node.stop() == 0
    finally:
        node.close()
        sniff.close()
