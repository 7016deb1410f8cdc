"""The daemon's coordination config and runtime: real FleetLinks on the in-memory broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config.daemon import check_config, parse_config
from edge_agent.config.toml_lines import TomlDocument, validate_toml
from edge_agent.coordination import (
    BeliefSharer,
    CoordinatedGroup,
    CoordinationEngine,
    CoordinationSettings,
    SharingSettings,
    TaskPreferences,
    TaskSpec,
)
from edge_agent.coordination.config import (
    AuctionConfig,
    CoordinationConfig,
    GroupCoordinationConfig,
    coordinates,
)
from edge_agent.coordination.runtime import (
    TELEMETRY_MAX_KEYS,
    CoordinationRuntime,
    GroupBinding,
    wanted,
)
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget
from edge_agent.errors import BudgetError, ConfigError, InputError
from edge_agent.fleet.comms.memory import MemoryBroker
from edge_agent.fleet.outbox import DEFAULT_POLICIES
from edge_agent.fleet.protocol import Telemetry
from edge_agent.sim import BatchEnv
from edge_agent.sim.gridworld import gridworld_model
from edge_agent_host.fleetctl.tasks import random_team_specs
from tests.support.coordination_harness import (
    FLEET,
    TICK_S,
    Clock,
    SharedTruthWorld,
    memory_link,
    static_world_model,
)

GRID = gridworld_model(10, 10, noise=0.1, preference_scale=0.0)
MiB = 1 << 20


# ------------------------------------------------------------------------------------ config
def parse(model: type, text: str) -> object:
    return validate_toml(model, TomlDocument.parse(text, "c.toml"))


def test_config_reads_toml_strictly_and_maps_to_the_engine_settings() -> None:
    node = parse(
        CoordinationConfig,
        """
max_inbox = 512
[auction]
window_s = 1
complete_at_goal = false
""",
    )
    assert isinstance(node, CoordinationConfig)
    settings = node.settings(0.05)
    assert settings.tick_period_s == 0.05
    assert settings.max_inbox == 512
    assert settings.auction.window_s == 1.0
    assert settings.auction.done_belief is None  # what TOML cannot write
    assert settings.auction.outbox_class == "coordination"
    assert CoordinationConfig().settings(0.1).auction.done_belief == 0.9
    group = parse(
        GroupCoordinationConfig,
        """
capabilities = ["grid", "inspect.v2"]
channel_offset = 100
[sharing]
factors = [0]
trust = 0.25
""",
    )
    assert isinstance(group, GroupCoordinationConfig)
    assert group.capabilities == ("grid", "inspect.v2")
    assert group.sharing == SharingSettings(factors=(0,), trust=0.25)
    assert group.active
    assert not GroupCoordinationConfig().active


@pytest.mark.parametrize(
    ("model", "text", "problem"),
    [
        (CoordinationConfig, "[auction]\nwindow = 1", "c.toml:2: auction.window: unknown key"),
        (CoordinationConfig, '[auction]\noutbox_class = "x"', "unknown outbox class 'x'"),
        (CoordinationConfig, "[auction]\nwindow_s = 0", "auction.window_s: must be > 0"),
        (CoordinationConfig, 'enabled = "yes"', "c.toml:1: enabled:"),
        (GroupCoordinationConfig, 'capabilities = ["a b"]', "capability 'a b' must be"),
        (GroupCoordinationConfig, 'capabilities = ["a", "a"]', "repeat a name"),
        (GroupCoordinationConfig, "[sharing]\ntrust = 0.5", "sharing.factors: required key"),
        (GroupCoordinationConfig, "[sharing]\nfactors = [0]\ntrust = 2", "c.toml:3: sharing.trust"),
    ],
)
def test_bad_config_is_reported_at_its_line(model: type, text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse(model, text)


def test_task_messages_have_an_outbox_class_that_keeps_them_ten_minutes() -> None:
    policy = DEFAULT_POLICIES[AuctionConfig().outbox_class]
    assert not policy.drop_oldest
    assert policy.ttl_s == 600.0


# ------------------------------------------------------------------------------------ memory
@pytest.mark.parametrize(
    ("n", "sharing", "precision"),
    [
        (1, SharingSettings(factors=(0,)), "int8"),
        (37, SharingSettings(factors=(0,), max_peers=3), "float64"),
        (300, None, "int8"),
    ],
)
def test_bytes_are_known_before_anything_is_allocated(
    n: int, sharing: SharingSettings | None, precision: str
) -> None:
    group = AifAgentGroup(GRID, n, precision=precision)  # type: ignore[arg-type]
    specs = {"g": CoordinatedGroup(group=group, sharing=sharing, capabilities=("grid",))}
    settings = CoordinationSettings()
    engine = CoordinationEngine(FakeLink(), specs, settings)
    assert CoordinationEngine.bytes_for(specs, settings) == engine.nbytes
    prefs = engine.groups["g"].prefs
    assert prefs.nbytes == TaskPreferences.bytes_for(
        group.cm, n, use_utility=True, max_held=settings.auction.max_held_per_group
    )
    if sharing is not None:
        sharer = engine.groups["g"].sharer
        assert sharer is not None
        assert sharer.nbytes == BeliefSharer.bytes_for(
            n, group.cm.num_states, sharing, dtype=group.dtype.type
        )


class FakeLink:
    node_id = "solo"
    bdseq = 0

    def __init__(self) -> None:
        from edge_agent.fleet.topics import Topics

        self.topics = Topics(FLEET)

    def publish(self, *_args: object, **_kwargs: object) -> int:
        return 0

    def subscribe(self, pattern: str, qos: int = 1) -> None:
        del pattern, qos

    def send_now(self) -> int:
        return 0


# ------------------------------------------------------------------------------------- nodes
class Node:
    """A daemon's coordination as the daemon drives it: provider of groups, budget, tick.

    Groups without a world of their own (``worlds``) live in a grid world.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        root: Path,
        node_id: str,
        clock: Clock,
        groups: dict[str, tuple[AifAgentGroup, GroupCoordinationConfig]],
        *,
        config: CoordinationConfig,
        budget: MemoryBudget | None = None,
        worlds: dict[str, object] | None = None,
        seed: int = 0,
    ) -> None:
        self.node_id = node_id
        self.link, self.outbox, _ = memory_link(broker, root, node_id, clock)
        self.groups = groups
        self.budget = budget
        self.paused: set[str] = set()
        self.worlds: dict[str, object] = worlds or {
            name: BatchEnv(GRID, agents.n_agents, seed=seed) for name, (agents, _) in groups.items()
        }
        try:
            self.runtime = CoordinationRuntime(
                config,
                self.link,
                self.bindings,
                tick_period_s=TICK_S,
                budget=lambda: self.budget,
                monotonic=clock,
            )
        except Exception:
            self.outbox.close()  # a refused runtime (its budget): the node is not made
            raise
        self.runtime.start()
        self.link.start()
        self.link.pump()

    def bindings(self) -> dict[str, GroupBinding]:
        return {name: GroupBinding(a, cfg) for name, (a, cfg) in self.groups.items()}

    def tick(self) -> None:
        self.link.pump()
        for msg in self.link.receive():
            self.runtime.handle(msg)
        self.runtime.before_tick()
        for name, (agents, _) in self.groups.items():
            if name in self.paused:
                continue
            world = self.worlds[name]
            actions = self.runtime.step(name, agents, world.obs)  # type: ignore[attr-defined]
            world.step(actions)  # type: ignore[attr-defined]
        self.runtime.after_tick()
        self.link.pump()
        self.link.flush()

    def close(self) -> None:
        self.runtime.close()
        self.outbox.close()


def grid_group(n: int, seed: int = 0) -> AifAgentGroup:
    return AifAgentGroup(GRID, n, seed=seed)


def grid_tasks(n: int, by: str = "node0", seed: int = 0) -> list[TaskSpec]:
    goals = np.random.default_rng(seed).integers(0, 100, n)
    return [
        TaskSpec(task=f"t{i:03d}", epoch=0, capability="grid", goal_state=int(g), announced_by=by)
        for i, g in enumerate(goals)
    ]


TASKS = GroupCoordinationConfig(capabilities=("grid",))
NODE = CoordinationConfig(auction=AuctionConfig(window_s=0.3, complete_at_goal=False))


class Fleet:
    def __init__(self, root: Path, sizes: list[int], budget_mb: float = 64) -> None:
        self.broker = MemoryBroker()
        self.clock = Clock()
        self.nodes = [
            Node(
                self.broker,
                root,
                f"node{i}",
                self.clock,
                {"grid": (grid_group(n, seed=i), TASKS)},
                config=NODE,
                budget=MemoryBudget(int(budget_mb * MiB), profile_name="test"),
                seed=i,
            )
            for i, n in enumerate(sizes)
        ]

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.nodes:
                node.tick()
            self.clock.now += TICK_S

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path, [30, 30])
    f.tick(3)
    yield f
    f.close()


def test_the_engine_s_memory_is_reserved_before_it_is_built(tmp_path: Path) -> None:
    budget = MemoryBudget(64 * MiB, profile_name="test")
    group = grid_group(50)
    shared = GroupCoordinationConfig(capabilities=("grid",), sharing=SharingSettings(factors=(0,)))
    before = budget.used
    node = Node(
        MemoryBroker(),
        tmp_path,
        "n",
        Clock(),
        {"grid": (group, shared)},
        config=NODE,
        budget=budget,
    )
    assert node.runtime.reserved_bytes == node.runtime.engine.nbytes > 0
    assert budget.used - before == node.runtime.engine.nbytes
    assert budget.by_owner()["coordination"] == node.runtime.engine.nbytes
    node.close()
    assert budget.used == before
    tight = MemoryBudget(before + 4096, profile_name="test")
    with pytest.raises(BudgetError, match="coordination"):
        Node(
            MemoryBroker(),
            tmp_path,
            "m",
            Clock(),
            {"grid": (group, shared)},
            config=NODE,
            budget=tight,
        )
    assert tight.used == 0


def test_a_table_that_does_not_suit_the_model_is_refused_and_keeps_no_memory() -> None:
    budget = MemoryBudget(64 * MiB, profile_name="test")
    bad = GroupCoordinationConfig(sharing=SharingSettings(factors=(1,)))  # grid has one factor
    with pytest.raises(InputError, match="shared factor 1 does not exist"):
        CoordinationRuntime(
            NODE,
            FakeLink(),
            lambda: {"grid": GroupBinding(grid_group(5), bad)},
            tick_period_s=TICK_S,
            budget=lambda: budget,
        )
    assert budget.used == 0


def test_nodes_agree_on_the_award_and_the_status_shows_it(fleet: Fleet) -> None:
    a, b = fleet.nodes
    a.runtime.announce(grid_tasks(20))
    fleet.tick(round(0.3 / TICK_S) + 2)
    sa, sb = a.runtime.status(), b.runtime.status()
    assert sa["assignment"] == sb["assignment"]
    assert sa["awarded"] == len(sa["assignment"]) == 20
    assert {t: tuple(h[:3]) for t, h in sa["assignment"].items()} == a.runtime.engine.assignment()
    assert sa["digest"] == sb["digest"]
    held = {t: ("node0", *h[:2]) for t, h in sa["holding"].items()}
    held |= {t: ("node1", *h[:2]) for t, h in sb["holding"].items()}
    assert held == {t: tuple(h[:3]) for t, h in sa["assignment"].items()}
    assert sa["groups"]["grid"]["holding"] == len(sa["holding"])
    changed = sa["award_changed_at"]
    assert changed is not None
    assert sa["rounds_opened_at"] is not None
    assert sa["rounds_opened_at"] <= changed
    fleet.tick(5)  # nothing new: the award did not change
    assert a.runtime.status()["award_changed_at"] == changed
    assert sa["metrics"]["rounds"] == 20
    assert sa["metrics"]["reawards"] == 0


def test_telemetry_counters_are_bounded_and_fit_a_telemetry_message(fleet: Fleet) -> None:
    node = fleet.nodes[0]
    counters = node.runtime.telemetry_counters()
    assert 0 < len(counters) <= TELEMETRY_MAX_KEYS
    assert all(k.startswith("coord.") and len(k) <= 64 for k in counters)
    assert "coord.rounds" in counters
    assert "coord.tasks_held" in counters
    assert len(node.runtime.telemetry_counters(max_keys=5)) == 5
    Telemetry(
        uptime_s=1.0,
        rss_bytes=1,
        budget_used_bytes=1,
        budget_total_bytes=1,
        ticks=1,
        tick_p50_ms=1.0,
        tick_p99_ms=1.0,
        overruns=0,
        groups={"grid": 30},
        counters=counters,
    )


def test_a_resized_group_gives_its_tasks_up_and_they_are_re_auctioned(fleet: Fleet) -> None:
    a, b = fleet.nodes
    a.runtime.announce(grid_tasks(20))
    fleet.tick(round(0.3 / TICK_S) + 2)
    before = a.runtime.engine.assignment()
    mine = {t for t, h in before.items() if h[0] == "node1"}
    assert mine
    reserved = b.runtime.reserved_bytes
    agents, _ = b.groups["grid"]
    agents.resize(10)  # what a resize_group command does between ticks
    b.worlds["grid"] = BatchEnv(GRID, 10, seed=9)
    fleet.tick(round(0.3 / TICK_S) + 4)
    assert b.runtime.rebinds == 1
    assert b.runtime.engine.groups["grid"].prefs.n_agents == 10
    assert b.runtime.reserved_bytes < reserved
    assert b.runtime.reserved_bytes == b.runtime.engine.nbytes
    after_a, after_b = a.runtime.engine.assignment(), b.runtime.engine.assignment()
    assert after_a == after_b
    assert len(after_a) == 20
    assert all(h[0] == "node0" or h[2] < 10 for h in after_a.values())
    assert b.runtime.engine.counters["tasks_abandoned"] >= 1
    epochs = a.runtime.engine.board.open_epochs()
    assert all(epochs[t] >= 1 for t in mine if before[t][2] >= 10)


def test_a_rebuilt_group_with_the_same_agents_keeps_its_tasks(fleet: Fleet) -> None:
    a, b = fleet.nodes
    a.runtime.announce(grid_tasks(20))
    fleet.tick(round(0.3 / TICK_S) + 2)
    held = dict(b.runtime.engine.groups["grid"].prefs.held)
    assert held
    old, cfg = b.groups["grid"]
    new = grid_group(30, seed=1)  # a reload builds new groups and copies their state
    new.load_state_dict(old.state_dict())
    b.groups["grid"] = (new, cfg)
    fleet.tick(3)
    assert b.runtime.rebinds == 1
    assert b.runtime.coordinates("grid", new)
    assert not b.runtime.coordinates("grid", old)
    assert b.runtime.engine.groups["grid"].prefs.held == held
    assert b.runtime.engine.counters["tasks_abandoned"] == 0
    assert a.runtime.engine.assignment() == b.runtime.engine.assignment()


def test_a_group_that_grows_past_the_budget_runs_uncoordinated(fleet: Fleet) -> None:
    b = fleet.nodes[1]
    assert b.budget is not None
    b.budget = MemoryBudget(b.budget.used + 1024, profile_name="small")
    agents, _ = b.groups["grid"]
    agents.resize(60)
    b.worlds["grid"] = BatchEnv(GRID, 60, seed=3)
    fleet.tick(2)
    assert "grid" not in b.runtime.engine.groups
    assert "not coordinated" in b.runtime.status()["problems"]["grid"]
    assert agents.ticks >= 2  # it still steps, plainly


def test_a_group_that_does_not_step_neither_accumulates_nor_publishes(tmp_path: Path) -> None:
    S, n = 6, 40
    model = static_world_model(S, 0.4)
    truth = np.random.default_rng(0).integers(0, S, n)
    share = GroupCoordinationConfig(
        sharing=SharingSettings(factors=(0,), min_evidence_nats=0.0, bytes_per_agent_s=1e5)
    )
    broker, clock = MemoryBroker(), Clock()
    nodes = [
        Node(
            broker,
            tmp_path,
            f"n{i}",
            clock,
            {"w": (AifAgentGroup(model, n, seed=i), share)},
            config=CoordinationConfig(),
            worlds={"w": SharedTruthWorld(model, truth, seed=i)},
        )
        for i in range(2)
    ]
    try:
        for _ in range(5):
            for node in nodes:
                node.tick()
            clock.now += TICK_S
        quiet = nodes[1]
        quiet.paused.add("w")
        sent = quiet.runtime.engine.counters["belief_msgs_sent"]
        sharer = quiet.runtime.engine.groups["w"].sharer
        assert sharer is not None
        unsent = sharer.evidence.copy()
        prior_before = quiet.groups["w"][0].prior[0].copy()
        for _ in range(5):
            for node in nodes:
                node.tick()
            clock.now += TICK_S
        assert quiet.runtime.engine.counters["belief_msgs_sent"] == sent
        # Peers' evidence was fused into the prior; none of it was taken for its own.
        np.testing.assert_array_equal(sharer.evidence, unsent)
        assert not np.allclose(quiet.groups["w"][0].prior[0], prior_before)
        quiet.paused.clear()
        quiet.tick()
        assert quiet.runtime.engine.counters["belief_msgs_sent"] == sent + 1
    finally:
        for node in nodes:
            node.close()


def test_uncoordinated_groups_step_plainly(tmp_path: Path) -> None:
    plain, twin = grid_group(5, seed=4), grid_group(5, seed=4)
    node = Node(
        MemoryBroker(),
        tmp_path,
        "n",
        Clock(),
        {"grid": (plain, GroupCoordinationConfig())},
        config=NODE,
    )
    try:
        assert not node.runtime.engine.groups
        obs = np.zeros((5, 1), dtype=np.int64)
        np.testing.assert_array_equal(node.runtime.step("grid", plain, obs), twin.step(obs))
        mask = np.array([True, False, False, False, True])
        node.runtime.reset("grid", plain, mask)
        twin.reset(mask)
        np.testing.assert_array_equal(plain.prior[0], twin.prior[0])
    finally:
        node.close()


def test_coordination_is_wanted_only_with_mqtt_and_an_active_group() -> None:
    active = {"g": GroupBinding(grid_group(2), TASKS)}
    idle = {"g": GroupBinding(grid_group(2), GroupCoordinationConfig())}
    assert wanted(None, active, mqtt_enabled=True)
    assert wanted(CoordinationConfig(), active, mqtt_enabled=True)
    assert not wanted(CoordinationConfig(enabled=False), active, mqtt_enabled=True)
    assert not wanted(None, active, mqtt_enabled=False)
    assert not wanted(None, idle, mqtt_enabled=True)
    assert not wanted(None, {}, mqtt_enabled=True)
    # The same rule on the config alone (what the daemon asks before importing the engine).
    assert coordinates(None, [None, TASKS], mqtt_enabled=True)
    assert not coordinates(None, [None, GroupCoordinationConfig()], mqtt_enabled=True)
    assert not coordinates(CoordinationConfig(enabled=False), [TASKS], mqtt_enabled=True)


# ------------------------------------------------------------------------------ daemon config
DAEMON = """
[daemon]
profile = "x86-dev"
state_dir = "state"

[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 10
source = { type = "sim" }
sink = { type = "sim" }
[groups.coordination]
capabilities = ["grid"]
[groups.coordination.sharing]
factors = [0]
trust = 1

[coordination.auction]
window_s = 0.5
"""
MQTT_ON = '\n[mqtt]\nenabled = true\nnode_id = "pi-01"\n'


def test_the_daemon_config_carries_both_tables() -> None:
    config = parse_config(DAEMON + MQTT_ON, "d.toml")
    group = config.groups[0].coordination
    assert group is not None
    assert group.capabilities == ("grid",)
    assert group.sharing is not None
    assert group.sharing.trust == 1.0
    assert config.coordination is not None
    assert config.coordination.auction.window_s == 0.5
    plain = parse_config(DAEMON.split("[groups.coordination]", maxsplit=1)[0] + MQTT_ON, "p.toml")
    assert plain.coordination is None
    assert plain.groups[0].coordination is None


def test_coordination_without_mqtt_is_reported_at_both_tables() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(DAEMON, "d.toml")
    lines = str(err.value).splitlines()
    assert "d.toml:12: groups[0].coordination: needs [mqtt] enabled = true" in lines
    assert "d.toml:18: coordination: needs [mqtt] enabled = true" in lines


def test_check_config_says_what_the_node_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text(DAEMON + MQTT_ON)
    ok, report = check_config(path)
    assert ok, report
    assert (
        "  coordination: grid (tasks grid; shares factor(s) [0], trust 1); bidding window 0.5 s"
        in report.splitlines()
    )
    path.write_text(DAEMON + MQTT_ON + "[coordination]\nenabled = false\n")
    ok, report = check_config(path)
    assert ok, report
    assert "  coordination: off" in report.splitlines()


def test_the_status_shows_each_team_s_members_roles_and_vacant_slots(fleet: Fleet) -> None:
    a, b = fleet.nodes
    specs = random_team_specs(
        5, 100, sizes=(2, 4), max_roles=2, seed=3, capability="grid", announced_by="node0"
    )
    a.runtime.announce(specs)
    fleet.tick(round(0.3 / TICK_S) + 4)
    sa, sb = a.runtime.status(), b.runtime.status()
    assert sa["teams"] == sb["teams"]
    assert sa["assignment"] == {}  # no one-agent task
    for spec in specs:
        team = sa["teams"][spec.task]
        assert team["slots"] == [s.agents for s in spec.slots()]
        assert team["vacant"] == 0
        assert len(team["members"]) == spec.size
        assert all(held for *_, held in team["members"])  # every member took its slot
    # Each node lists its own members (with their roles): together, every member of every team.
    pursued = sorted(
        [node, *h]
        for node, s in (("node0", sa), ("node1", sb))
        for task, hs in s["team_holding"].items()
        for h in hs
    )
    listed = sorted(
        [m[0], m[1], m[2], team["epoch"], m[3]]
        for team in sa["teams"].values()
        for m in team["members"]
    )
    assert [[p[0], p[1], p[2], p[3], p[4]] for p in pursued] == listed
    m = sa["metrics"]
    assert m["teams_formed"] == 5
    assert m["team_slots_vacant"] == 0
    # The way to agreement, in order on each node: the round seen, bids out, the peer's bids
    # in, the award (computed with them: once, before the holds), holds, every member held.
    for s in (sa, sb):
        f = s["formation"]
        order = ["opened_at", "bids_sent_at", "peer_bids_last_at", "team_award_last_at",
                 "all_held_at"]  # fmt: skip
        assert [f[k] for k in order] == sorted(f[k] for k in order)
        assert f["opened_at"] <= f["team_award_first_at"] <= f["holds_sent_at"]
        assert f["bids_sent_at"] <= f["all_bids_at"] <= f["team_award_first_at"]
        assert f["live_peers"] == 1
        assert "rounds_waited_out" not in f
        assert f["opened_at"] <= s["rounds_opened_at"]  # (the runtime notes it after the tick)
        assert 1 <= f["team_awards"] <= s["metrics"]["team_awards"]


def test_a_resized_group_leaves_its_team_slots_to_be_filled_again(fleet: Fleet) -> None:
    """node1's group is resized: it starts afresh and gives its members' slots up; the teams
    keep node0's members and fill the slots again, in the same round."""
    a, b = fleet.nodes
    specs = random_team_specs(6, 100, sizes=(2, 3), seed=4, capability="grid", announced_by="node0")
    a.runtime.announce(specs)
    fleet.tick(round(0.3 / TICK_S) + 4)
    before = a.runtime.engine.board.teams()
    gone = sum(m.node == "node1" for team in before.values() for m in team.members)
    assert gone
    agents, _ = b.groups["grid"]
    agents.resize(10)
    b.worlds["grid"] = BatchEnv(GRID, 10, seed=9)
    fleet.tick(round(0.3 / TICK_S) + 4)
    after = a.runtime.engine.board.teams()
    assert after == b.runtime.engine.board.teams()
    for task, team in after.items():
        kept = {m.holder for m in before[task].members if m.node == "node0"}
        assert kept <= {m.holder for m in team.members}
        assert team.epoch == 0  # repaired in the round, not re-auctioned
        assert team.vacant == 0
    # (and slots that bids of its agents beyond 10 filled meanwhile, given up as well)
    assert b.runtime.engine.counters["tasks_abandoned"] >= gone
    assert a.runtime.engine.metrics()["team_repairs"] >= gone
