"""A group at run time is source -> step -> sink (edge_agent.daemon.group_runtime, with the
sources and sinks of edge_agent.sim.endpoints and edge_agent.fleet.agent_io): real agents, real
worlds, real observation buffers; only the fleet link is a recording port."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.config.daemon import read_config
from edge_agent.config.profiles import FirmwareProfile, load_profiles
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.daemon.admission import admit
from edge_agent.daemon.group_runtime import GroupRuntime, Sinks
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.agent_io import ActionPublisher, InboxSource, ObservationBuffer
from edge_agent.fleet.protocol import ActionBatch, ObservationBatch
from edge_agent.sim.endpoints import WorldSource

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def profiles() -> dict[str, FirmwareProfile]:
    return load_profiles(ROOT / "firmware_profiles")


class Port:
    """The node's fleet link as sources and sinks see it, recording what they ask."""

    def __init__(self) -> None:
        self.routes: dict[str, list[ObservationBuffer]] = {}
        self.sent: list[tuple[str, ActionBatch]] = []
        self.publishers: dict[str, list[ActionPublisher]] = {}

    def send_actions(self, topic: str, body: ActionBatch) -> bool:
        self.sent.append((topic, body))
        return True

    def listen(self, topic: str, inbox: ObservationBuffer) -> None:
        self.routes.setdefault(topic, []).append(inbox)

    def publishes(self, topic: str, publisher: ActionPublisher) -> None:
        self.publishers.setdefault(topic, []).append(publisher)


class Recorder:
    """A sink that keeps a copy of every tick's actions."""

    def __init__(self) -> None:
        self.ticks: list[tuple[int, np.ndarray]] = []
        self.sizes: list[int] = []

    def put(self, tick: int, actions: np.ndarray) -> None:
        self.ticks.append((tick, actions.copy()))

    def resize(self, n_agents: int) -> None:
        self.sizes.append(n_agents)

    def connect(self, port: Any) -> None:
        del port

    def describe(self) -> dict[str, Any]:
        return {"recorded": len(self.ticks)}


def groups(tmp_path: Path, profiles: dict[str, FirmwareProfile], text: str) -> list[GroupRuntime]:
    path = tmp_path / "cfg.toml"
    path.write_text(
        f"""[daemon]
profile = "x86-dev"
state_dir = "{tmp_path / "state"}"
{text}
[mqtt]
enabled = true
host = "127.0.0.1"
port = 1883
fleet = "f"
node_id = "n1"
"""
    )
    _profile, _budget, built = admit(read_config(path, profiles=profiles))
    return built


GROUP = """
[[groups]]
name = "{name}"
model = {{ type = "builtin", name = "grid10" }}
count = {count}
source = {source}
sink = {sink}
"""


def one(
    tmp_path: Path, profiles: dict[str, FirmwareProfile], source: str, sink: str
) -> GroupRuntime:
    text = GROUP.format(name="g", count=4, source=source, sink=sink)
    (g,) = groups(tmp_path, profiles, text)
    return g


def test_a_sim_group_ticks_world_then_step_then_world_and_publisher(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    g = one(tmp_path, profiles, '{ type = "sim" }', '{ type = "mqtt", topic = "act/g" }')
    assert isinstance(g.source, WorldSource)
    port = Port()
    g.connect(port)
    assert port.routes == {}  # a world listens to nothing
    world = g.source.world
    assert not world.episode_steps.any()  # type: ignore[attr-defined]  # a grid: a BatchEnv
    assert g.tick(1.0)
    assert g.steps == 1
    # The world took the actions (its observation moved on) and the publisher sent them.
    ((topic, body),) = port.sent
    assert topic == "act/g"
    assert body.tick == 1
    _ids, values = body.arrays()
    np.testing.assert_array_equal(values, g.agents.action)
    assert world.episode_steps.any()  # type: ignore[attr-defined]  # the world stepped
    out = g.describe()
    assert out["world"]["agents"] == 4
    assert out["actions"] == {
        "batches": 1, "published": 4, "dropped": 0, "refused": 0, "refusal": ""
    }  # fmt: skip
    ((publisher,),) = port.publishers.values()  # the sink said where it publishes
    assert isinstance(publisher, ActionPublisher)
    assert publisher.topic == "act/g"
    assert g.input_counters() == {}
    assert g.rejected_input() is None


def test_a_vet_that_raises_keeps_the_actions_from_every_sink(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    g = one(tmp_path, profiles, '{ type = "sim" }', '{ type = "sim" }')
    assert isinstance(g.source, WorldSource)
    recorder = Recorder()
    g.sink = Sinks(g.sink, recorder)
    obs = g.source.obs.copy()

    def vet() -> None:
        raise RuntimeError("held")

    with pytest.raises(RuntimeError, match="held"):
        g.tick(1.0, vet)
    assert recorder.ticks == []
    np.testing.assert_array_equal(g.source.obs, obs)  # the world did not step
    assert not g.source.world.episode_steps.any()  # type: ignore[attr-defined]
    assert g.tick(2.0)
    assert [t for t, _ in recorder.ticks] == [2]  # the step was counted, its actions held


def test_an_inbox_group_waits_for_every_agent_then_steps_and_reports_rejects_once(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    g = one(tmp_path, profiles, '{ type = "mqtt", topic = "s/+" }', '{ type = "log" }')
    assert isinstance(g.source, InboxSource)
    port = Port()
    g.connect(port)
    (inbox,) = port.routes["s/+"]
    assert inbox is g.source.buffer
    rows = np.array([[0], [1], [2]], dtype=np.uint8)
    inbox.offer(ObservationBatch.from_arrays("g", 0, np.arange(3, dtype=np.uint32), rows))
    assert not g.tick(1.0)  # agent 3 never observed
    assert g.steps == 0
    inbox.offer(ObservationBatch.from_arrays("g", 0, np.array([3], dtype=np.uint32), rows[:1]))
    assert g.tick(2.0)
    assert g.steps == 1
    np.testing.assert_array_equal(g.source.obs[:, 0], [0, 1, 2, 0])
    inbox.offer(ObservationBatch.from_arrays("h", 0, np.array([0], dtype=np.uint32), rows[:1]))
    reason, counts = g.rejected_input() or ("", {})
    assert reason.startswith("group")
    assert counts == {"batches_rejected": 1, "rows_rejected": 1}
    assert g.rejected_input() is None  # reported once
    assert g.input_counters()["obs_rows"] == 4
    assert g.describe()["io"]["rows"] == 4
    assert "4 observations, 1 rejected" in g.report_line()


def test_a_log_sink_logs_the_actions_even_behind_a_world(
    tmp_path: Path, profiles: dict[str, FirmwareProfile], caplog: pytest.LogCaptureFixture
) -> None:
    g = one(tmp_path, profiles, '{ type = "sim" }', '{ type = "log" }')
    assert isinstance(g.sink, Sinks)
    with caplog.at_level(logging.DEBUG, logger="edge_agent.daemon.group_runtime"):
        assert g.tick(1.0)
    assert any(r.getMessage().startswith("group g step 1 actions") for r in caplog.records)


def test_resize_takes_source_and_sink_along(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    g = one(
        tmp_path, profiles, '{ type = "mqtt", topic = "s/+" }', '{ type = "mqtt", topic = "a" }'
    )
    assert isinstance(g.source, InboxSource)
    assert isinstance(g.sink, ActionPublisher)
    g.resize(6)
    assert g.agents.n_agents == g.source.buffer.n_agents == g.sink.n_agents == 6
    w = one(tmp_path, profiles, '{ type = "sim" }', '{ type = "sim" }')
    assert isinstance(w.source, WorldSource)
    w.tick(1.0)
    w.resize(2)
    assert w.source.world.n_agents == 2
    _obs, _outcomes, starts = w.source.take()
    assert starts is not None
    assert starts.all()  # the world is new: every agent starts afresh


def test_a_reload_carries_an_inbox_over_with_its_pending_rows(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    old = one(tmp_path, profiles, '{ type = "mqtt", topic = "s/+" }', '{ type = "log" }')
    new = one(tmp_path, profiles, '{ type = "mqtt", topic = "t/+" }', '{ type = "log" }')
    assert isinstance(old.source, InboxSource)
    assert isinstance(new.source, InboxSource)
    rows = np.array([[3], [3], [3], [3]], dtype=np.uint8)
    old.source.buffer.offer(
        ObservationBatch.from_arrays("g", 0, np.arange(4, dtype=np.uint32), rows)
    )
    assert new.carry_over(old)
    assert new.source.buffer is old.source.buffer
    assert new.source.topic == "t/+"  # the new config's filter
    assert new.tick(1.0)
    np.testing.assert_array_equal(new.source.obs[:, 0], [3, 3, 3, 3])


def test_the_verbs_others_use_instead_of_the_groups_fields(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    """Pause, history, state, metrics: what the daemon's other parts ask of a group."""
    g = one(tmp_path, profiles, '{ type = "sim" }', '{ type = "sim" }')
    assert g.pause("memory")
    assert not g.pause("command")  # paused already: the first reason stays
    assert (g.paused, g.paused_reason) == (True, "memory")
    assert not g.tick(1.0)  # a paused group does not step
    assert g.steps == 0
    assert not g.resume("thermal")
    assert g.resume("memory")
    assert g.tick(2.0)
    numbers = g.metrics()
    assert numbers["agents"] == 4
    assert numbers["steps"] == 1
    assert numbers["paused"] is False
    assert numbers["bytes_per_agent"] == g.footprint().bytes_per_agent > 0
    assert g.footprint().agents == 4
    capacity = g.history_capacity
    assert capacity > 8
    assert g.halve_history(8)
    assert g.history_capacity == max(8, capacity // 2)
    while g.halve_history(8):
        pass
    assert g.history_capacity == 8
    meta, state = g.snapshot_meta(), {k: v.copy() for k, v in g.state().items()}
    other = one(tmp_path, profiles, '{ type = "sim" }', '{ type = "sim" }')
    assert not other.restore({**meta, "agents": 5}, state)  # another size: nothing loaded
    assert not other.restore({**meta, "key": "another model"}, state)
    with pytest.raises(EdgeAgentError):
        other.restore({**meta, "agents": 4}, {})  # the right group, a state that does not fit
    assert other.halve_history(8)
    other.release()


def test_an_aif_group_names_the_families_its_kind_adds_up(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    """Planning and learning totals are the aif kind's (kinds/aif.py), not the daemon's."""
    g = one(tmp_path, profiles, '{ type = "sim" }', '{ type = "sim" }')
    assert [f.name for f in g.metric_families()] == ["planning", "learning"]
    planning, learning = g.metric_families()
    assert planning.total([g.metrics()]) == {}  # it plans every tick: no planning numbers
    groups = [
        {"agents": 10, "planning_duty_cycle": 0.5, "planning_deferred": 2, "plan_age_mean": 1.0},
        {"agents": 30, "planning_duty_cycle": 0.1, "planning_deferred": 0, "plan_age_mean": 3.0},
        {"agents": 7},
    ]
    assert planning.total(groups) == {
        "agents": 40,
        "planned": 8,
        "deferred": 2,
        "duty_cycle": 0.2,
        "plan_age_mean": 2.5,
    }
    learners = [
        {"agents": 1, "learning_updates": 5, "learning_divergence": 0.4, "learning_surprise": 2.0},
        {"agents": 3, "learning_updates": 1, "learning_divergence": 0.0, "learning_surprise": 1.0},
    ]
    assert learning.total(learners) == {
        "groups": 2,
        "agents": 4,
        "updates": 6,
        "divergence": 0.1,
        "surprise": 1.25,
    }
    assert learning.total(groups) == {}


def test_a_sim_group_starts_its_world_s_episodes_in_its_step_as_a_reset_before_it(
    tmp_path: Path, profiles: dict[str, FirmwareProfile], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The T-maze's episodes start every few ticks: their agents go into the group's step
    (``advance(obs, now, outcomes, starts)``), whose compiled pass starts them inside the tick;
    the same actions and beliefs, tick after tick, as the same group reset before a step told
    nobody starts (the daemon's order before)."""
    monkeypatch.setenv(NATIVE_ENV, "1")  # the compiled tick, unmeasured
    text = GROUP.format(name="g", count=40, source='{ type = "sim" }', sink='{ type = "log" }')
    text = text.replace('name = "grid10"', 'name = "tmaze"')
    (tmp_path / "now").mkdir()
    (tmp_path / "before").mkdir()
    (now,) = groups(tmp_path / "now", profiles, text)
    (before,) = groups(tmp_path / "before", profiles, text)
    assert isinstance(now.agents, AifAgentGroup)
    assert now.agents.path.starts_in_tick

    agents = before.agents

    def reset_then_step(obs: np.ndarray, at: float, outcomes: np.ndarray | None,
                        starts: np.ndarray | None) -> np.ndarray:
        if starts is not None:
            agents.reset(starts)
        return agents.advance(obs, at, outcomes)

    monkeypatch.setattr(before, "_step", reset_then_step)
    started = 0
    for t in range(30):
        world = now.source.world
        started += int(np.count_nonzero(world.episode_start))  # type: ignore[attr-defined]
        assert now.tick(float(t))
        assert before.tick(float(t))
        for a, b in zip((*now.agents.state.qs, *now.agents.state.prior, now.agents.action),
                        (*agents.state.qs, *agents.state.prior, agents.action), strict=True):
            np.testing.assert_array_equal(a, b)
    assert started > 40  # the world's episodes started again while the group stepped
