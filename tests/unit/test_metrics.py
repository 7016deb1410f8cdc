"""The metrics registry: one set of numbers for the status file, telemetry and Prometheus."""

from __future__ import annotations

import math
import re
import stat
from pathlib import Path

import pytest

from edge_agent.config.daemon import parse_config
from edge_agent.daemon.metrics import Metrics, metric_name
from edge_agent.daemon.service import Daemon
from edge_agent.errors import ConfigError

# One sample line of the text exposition format 0.0.4: name, optional labels, a number.
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(
    rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{{(?P<labels>{_LABEL}(,{_LABEL})*)\}})? "
    r"(?P<value>-?[0-9.e+-]+|NaN)$"
)


def parse_exposition(text: str) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    """{metric: (type, [(labels, value)])}; fails on any line out of the format."""
    out: dict[str, tuple[str, list[tuple[str, float]]]] = {}
    declared: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge"), line
            assert name not in declared, f"{name} declared twice"
            declared[name] = kind
            out[name] = (kind, [])
            continue
        m = SAMPLE.match(line)
        assert m is not None, f"not a sample line: {line!r}"
        name = m["name"]
        assert name in declared, f"{name} sampled before its TYPE line"
        out[name][1].append((m["labels"] or "", float(m["value"])))
    return out


def test_values_flatten_readers_and_keep_only_finite_numbers() -> None:
    metrics = Metrics()
    metrics.register("fleet", lambda: {"sent": 3, "online": True, "phase": "idle"})
    metrics.register("tick", lambda: {"p99_ms": 0.25, "bad": math.nan}, gauges=("p99_ms",))
    metrics.register("", lambda: {"coord.live_nodes": 2.0}, gauges=("*",))
    assert metrics.values() == {
        "fleet.sent": 3,
        "fleet.online": 1,
        "tick.p99_ms": 0.25,
        "coord.live_nodes": 2.0,
    }
    with pytest.raises(ValueError, match="twice"):
        metrics.register("fleet", dict)


def test_prometheus_text_names_types_and_labels() -> None:
    metrics = Metrics()
    metrics.register("fleet", lambda: {"events_published": 12, "online": True}, gauges=("online",))
    metrics.register_groups(
        lambda: {"grid": {"agents": 100, "steps": 7}, 'odd"name': {"agents": 1, "steps": 0}},
        gauges=("agents",),
        help="group",
    )
    parsed = parse_exposition(metrics.prometheus({"node": "pi-01"}))
    assert parsed["edge_agent_fleet_events_published_total"] == (
        "counter",
        [('node="pi-01"', 12.0)],
    )
    assert parsed["edge_agent_fleet_online"] == ("gauge", [('node="pi-01"', 1.0)])
    kind, samples = parsed["edge_agent_group_agents"]
    assert kind == "gauge"
    assert samples == [
        ('node="pi-01",group="grid"', 100.0),
        ('node="pi-01",group="odd\\"name"', 1.0),
    ]
    assert parsed["edge_agent_group_steps_total"][0] == "counter"
    assert metric_name("coord.group.x-y", counter=False) == "edge_agent_coord_group_x_y"
    assert metric_name("snapshots.bytes_written_total", counter=True) == (
        "edge_agent_snapshots_bytes_written_total"
    )


def _config(tmp_path: Path, extra: str) -> str:
    return f"""
[daemon]
profile = "x86-dev"
state_dir = "{tmp_path / "state"}"
{extra}

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 8
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""


def test_the_daemon_writes_its_metrics_for_node_exporter(tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "edge_agent.prom"
    prom.parent.mkdir()
    config = parse_config(
        _config(tmp_path, f'prometheus_textfile = "{prom}"\nprometheus_interval_s = 1'),
        "unit.toml",
    )
    d = Daemon.from_config(config, None)
    d.run(duration_s=1.5)
    parsed = parse_exposition(prom.read_text())
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644  # node_exporter runs as another user
    ticks = parsed["edge_agent_tick_ticks_total"][1][0][1]
    assert ticks >= 1
    assert parsed["edge_agent_group_agents"][1] == [('group="grid"', 8.0)]
    assert parsed["edge_agent_daemon_budget_total_bytes"][0] == "gauge"
    assert "edge_agent_deploy_rolled_back_total" in parsed
    # The status file reports the same registry: every counter under the same key.
    counters = d.status()["counters"]
    for key, value in counters.items():
        if key.startswith(("tick.", "daemon.", "snapshots.", "systemd.")):
            continue  # these move on between the two reads
        name = metric_name(key, counter=True)
        gauge = metric_name(key, counter=False)
        sampled = parsed.get(name) or parsed.get(gauge)
        assert sampled is not None, key
        assert sampled[1][0][1] == pytest.approx(value), key
    assert not list(prom.parent.glob("*.tmp"))


def test_a_textfile_that_node_exporter_would_not_read_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config(tmp_path, 'prometheus_textfile = "/tmp/edge_agent.txt"'), "x.toml")
    assert "x.toml:5: daemon.prometheus_textfile:" in str(err.value)
    assert "ending in .prom" in str(err.value)
