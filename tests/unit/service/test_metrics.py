"""The metrics registry: one set of numbers for the status file, telemetry and Prometheus."""

from __future__ import annotations

import math
import re
import stat
from pathlib import Path

import pytest

from edge_agent.config.daemon import parse_config
from edge_agent.daemon import metric_help
from edge_agent.daemon.service import Daemon
from edge_agent.errors import ConfigError
from edge_agent.service.metrics import Export, Metrics, metric_name

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
            assert kind in ("counter", "gauge", "summary"), line
            assert name not in declared, f"{name} declared twice"
            declared[name] = kind
            out[name] = (kind, [])
            continue
        m = SAMPLE.match(line)
        assert m is not None, f"not a sample line: {line!r}"
        name = m["name"]
        for suffix in ("_sum", "_count"):  # a summary's own samples
            family = name.removesuffix(suffix)
            if family != name and declared.get(family) == "summary":
                out[name] = ("summary", [])
        assert name in declared or name in out, f"{name} sampled before its TYPE line"
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


def test_group_keys_added_later_are_gauges_or_counters_with_their_help() -> None:
    """A kind of group that comes with a reload brings its own per-group keys."""
    metrics = Metrics()
    with pytest.raises(ValueError, match="before register_groups"):
        metrics.add_group_keys(("x",), {})
    metrics.register_groups(
        lambda: {"g": {"agents": 3, "age_mean": 1.5, "updates": 4}},
        gauges=("agents",),
        help="group",
    )
    metrics.add_group_keys(("age_mean",), {"age_mean": "Mean age.", "updates": "Updates."})
    text = metrics.prometheus()
    parsed = parse_exposition(text)
    assert parsed["edge_agent_group_age_mean"][0] == "gauge"
    assert parsed["edge_agent_group_updates_total"][0] == "counter"
    assert parsed["edge_agent_group_agents"][0] == "gauge"
    assert "# HELP edge_agent_group_age_mean Mean age." in text


def test_base_units_renames_parts_infos_and_summaries() -> None:
    metrics = Metrics()
    metrics.register_info("build", lambda: {"version": "1.2.3"}, help="The version.")
    metrics.register_summary(
        "tick_duration_seconds", lambda: ({0.5: 0.002, 0.99: 0.004}, 1.5, 600), help="Ticks."
    )
    metrics.register(
        "tick",
        lambda: {"p50_ms": 2.0, "uptime_s": 9.5, "temp_c": 51.5, "hz": 10.0, "ticks": 600},
        gauges=("p50_ms", "uptime_s", "temp_c", "hz"),
        help="tick loop",
        describe={
            "p50_ms": Export(None),
            "ticks": "Ticks completed.\nEvery one.",
            "hz": Export("tick_rate_hertz", "The rate."),
        },
    )
    metrics.register(
        "state",
        lambda: {"moved_aside.outbox": 1, "moved_aside.status": 2, "moved_aside": 3},
        describe={"moved_aside": "Moved aside, by part."},
        parts={"moved_aside": "part"},
    )
    text = metrics.prometheus({"node": "n1"})
    assert text.splitlines() == [
        "# HELP edge_agent_build_info The version.",
        "# TYPE edge_agent_build_info gauge",
        'edge_agent_build_info{node="n1",version="1.2.3"} 1',
        "# HELP edge_agent_tick_duration_seconds Ticks.",
        "# TYPE edge_agent_tick_duration_seconds summary",
        'edge_agent_tick_duration_seconds{node="n1",quantile="0.5"} 0.002',
        'edge_agent_tick_duration_seconds{node="n1",quantile="0.99"} 0.004',
        'edge_agent_tick_duration_seconds_sum{node="n1"} 1.5',
        'edge_agent_tick_duration_seconds_count{node="n1"} 600',
        "# HELP edge_agent_tick_uptime_seconds edge-agent tick loop: uptime_s",
        "# TYPE edge_agent_tick_uptime_seconds gauge",
        'edge_agent_tick_uptime_seconds{node="n1"} 9.5',
        "# HELP edge_agent_tick_temp_celsius edge-agent tick loop: temp_c",
        "# TYPE edge_agent_tick_temp_celsius gauge",
        'edge_agent_tick_temp_celsius{node="n1"} 51.5',
        "# HELP edge_agent_tick_rate_hertz The rate.",
        "# TYPE edge_agent_tick_rate_hertz gauge",
        'edge_agent_tick_rate_hertz{node="n1"} 10.0',
        "# HELP edge_agent_tick_ticks_total Ticks completed.\\nEvery one.",
        "# TYPE edge_agent_tick_ticks_total counter",
        'edge_agent_tick_ticks_total{node="n1"} 600',
        "# HELP edge_agent_state_moved_aside_total Moved aside, by part.",
        "# TYPE edge_agent_state_moved_aside_total counter",
        'edge_agent_state_moved_aside_total{node="n1",part="outbox"} 1',
        'edge_agent_state_moved_aside_total{node="n1",part="status"} 2',
    ]
    # The status file and telemetry keep every key as it was.
    assert metrics.values()["tick.p50_ms"] == 2.0
    assert metrics.values()["state.moved_aside"] == 3
    assert metric_name("tick.p99_ms", counter=False) == "edge_agent_tick_p99_seconds"
    milli = Metrics()
    milli.register("x", lambda: {"wait_ms": 250}, gauges=("wait_ms",))
    assert "edge_agent_x_wait_seconds 0.25\n" in milli.prometheus()


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
    # The status file reports the same registry: every counter under its key, or labelled by
    # part beside a sum that is left to PromQL.
    counters = d.status()["counters"]
    for key, value in counters.items():
        if key.startswith(("tick.", "daemon.", "snapshots.", "systemd.")):
            continue  # these move on between the two reads
        prefix, _, local = key.partition(".")
        head, _, part = local.rpartition(".")
        if prefix == "state" and local in metric_help.STATE_PARTS:
            family = parsed[metric_name(key, counter=True)][1]
            assert sum(v for _, v in family) == pytest.approx(value), key
            continue
        if prefix == "state" and head in metric_help.STATE_PARTS:
            family = parsed[metric_name(f"state.{head}", counter=True)][1]
            assert (f'part="{part}"', pytest.approx(value)) in family, key
            continue
        name = metric_name(key, counter=True)
        gauge = metric_name(key, counter=False)
        sampled = parsed.get(name) or parsed.get(gauge)
        assert sampled is not None, key
        assert sampled[1][0][1] == pytest.approx(value), key
    kind, quantiles = parsed["edge_agent_tick_duration_seconds"]
    assert kind == "summary"
    assert [label for label, _ in quantiles] == ['quantile="0.5"', 'quantile="0.99"']
    assert 1 <= parsed["edge_agent_tick_duration_seconds_count"][1][0][1] <= d.stats.ticks
    assert not list(prom.parent.glob("*.tmp"))


def test_a_textfile_that_node_exporter_would_not_read_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config(tmp_path, 'prometheus_textfile = "/tmp/edge_agent.txt"'), "x.toml")
    assert "x.toml:5: daemon.prometheus_textfile:" in str(err.value)
    assert "ending in .prom" in str(err.value)
