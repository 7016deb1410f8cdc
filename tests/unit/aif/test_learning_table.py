"""``[groups.learning]``: the table, its problems at their lines from
check-config's admission, the learning group the aif kind builds, and the budget's exact plan."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.learning_table import LearningTable
from edge_agent.cli import main as device_main
from edge_agent.config.daemon import read_config
from edge_agent.config.profiles import FirmwareProfile, load_profiles
from edge_agent.core.budget import format_bytes
from edge_agent.daemon.admission import admit, load_group_model, resolve_models
from edge_agent.daemon.group_runtime import plan_requests
from edge_agent.errors import ConfigError
from edge_agent.kinds.aif import learning_of
from edge_agent.sim.endpoints import WorldSource
from edge_agent.sim.registry import builtin_model
from edge_agent_host.cli import main as host_main
from edge_agent_host.keys import generate_keypair
from tests.unit.daemon.test_admission import NEURAL, PERCEIVING, bundles, config  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]

GROUP = """
[[groups]]
name = "{name}"
model = {{ type = "builtin", name = "{world}" }}
count = {count}
precision = "{precision}"
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""


def daemon(tmp_path: Path, body: str, profile: str = "x86-dev") -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(
        f'[daemon]\nprofile = "{profile}"\nstate_dir = "{tmp_path / "state"}"\n' + body
    )
    return path


def group(name: str = "maze", world: str = "tmaze-reversal", count: int = 40,
          precision: str = "int8", learning: str = "A = [1]\nlr_pA = 0.01\n") -> str:
    return GROUP.format(name=name, world=world, count=count, precision=precision) + (
        f"\n[groups.learning]\n{learning}" if learning else ""
    )


@pytest.fixture(scope="module")
def profiles() -> dict[str, FirmwareProfile]:
    return load_profiles(ROOT / "firmware_profiles")


def test_the_table_builds_a_learning_group_that_learns(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    learning = "A = [1]\nD = 'all'\nlr_pA = 0.5\nforgetting = 0.02\nprior_scale = 2.0\n" \
               "refresh_every = 3\n"
    source = read_config(daemon(tmp_path, group(learning=learning)), profiles=profiles)
    _, budget, groups = admit(source)
    (g,) = groups
    agents = g.agents
    assert agents.learning is not None
    assert agents.learning.trial_ends_at_reset
    model = builtin_model("tmaze-reversal")
    assert agents.learning.learner.pA is not None
    assert agents.learning.learner.pD is not None
    assert agents.learning.learner.pA.tables == (1,)
    assert agents.learning.learner.pD.tables == (0, 1)
    assert np.allclose(agents.learning.learner.pA.prior[0], 2.0 * model.A[1])  # prior_scale * A
    spec = agents.learning.spec
    assert (spec.settings.lr_pA, spec.settings.forgetting, spec.refresh_every) == (0.5, 0.02, 3)
    # The world's episode starts end the agents' trials: pD learns there, A every tick.
    world = WorldSource("tmaze-reversal", 40, seed=2, reverse_every=3)
    g.source, g.sink = world, world.sink
    before = agents.learning.learner.pA.counts[0].sum()
    for tick in range(12):
        assert g.tick(float(tick))
    assert agents.learning.learner.pA.version == 12
    assert agents.learning.learner.pA.counts[0].sum() > before
    assert agents.learning.learner.pD.version >= 1  # tmaze trials are 3 ticks long
    assert agents.learning.refreshes >= 4
    agents.release()
    assert budget.used == budget.base


def test_shared_counts_learn_under_a_planning_policy(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    body = group(learning="A = [1]\nB = [0]\nrefresh_every = 2\n") + (
        "\n[groups.planning]\nevery = 4\nmax_agents = 10\n"
    )
    _, budget, groups = admit(read_config(daemon(tmp_path, body), profiles=profiles))
    (g,) = groups
    agents = g.agents
    assert agents.learning is not None
    assert agents.planning.every == 4
    world = WorldSource("tmaze-reversal", 40, seed=2, reverse_every=3)
    g.source, g.sink = world, world.sink
    for tick in range(12):
        assert g.tick(float(tick))
    assert agents.learning.learner.pA is not None
    assert agents.learning.learner.pA.version == 12
    assert agents.planning_stats()["planned"] <= 10
    assert agents.learning.refreshes >= 6
    agents.release()
    assert budget.used == budget.base


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        (group(learning="A = [1]\nlr_pa = 1.0\n"), 15, "groups[0].learning.lr_pa: unknown key"),
        (group(learning="A = [1]\nforgetting = 1.0\n"), 15,
         "groups[0].learning.forgetting: must be < 1"),
        (group(learning="A = [1]\nrefresh_every = 0\n"), 15,
         "groups[0].learning.refresh_every: must be >= 1"),
        (group(learning="A = [3]\n"), 14,
         "groups[0].learning.A: group 'maze': [groups.learning] A: learning asked for modality "
         "3, the model has 3"),
        (group(learning="B = [0, 0]\n"), 14, "groups[0].learning.B: an index is named twice"),
        (group(learning="A = []\nB = []\nD = []\n"), 14,
         "groups[0].learning.A: A, B and D are all []: the group would learn nothing"),
        (group(learning="lr_pA = 0.1\n"), 13,
         "groups[0].learning: group 'maze': [groups.learning] A: names no table to learn and "
         "the model carries no counts"),
        (group(learning="A = [1]\nscope = 'per_agent'\n"), 15,
         "groups[0].learning.scope: per-agent counts run float64 tables"),
        (group(learning="A = [1]\nscope = 'per_agent'\nparam_info_gain = true\n",
               precision="float64"), 16,
         "groups[0].learning.param_info_gain: per-agent counts do not take"),
        (group(learning="A = [1]\nscope = 'per_agent'\n").replace(
            'precision = "int8"', 'precision = "float64"\nworkers = 2'), 10,
         "groups[0].workers: a group with per-agent counts steps on one process"),
        (group(learning="A = [1]\nscope = 'per_agent'\n", precision="float64")
         + "\n[groups.planning]\nevery = 4\n", 15,
         "groups[0].learning.scope: per-agent counts plan every agent every tick"),
        (group(learning="A = [1]\nreport_every_s = 0.5\n"), 15,
         "groups[0].learning.report_every_s: 0.5 s: a learning report is a durable write, at "
         "most one every 1 s (0: never)"),
        (group(learning="A = [1]\nreport_every_s = -1\n"), 15,
         "groups[0].learning.report_every_s: must be >= 0"),
        (group(learning="A = [1]\nreport_every_s = 60\n"), 15,
         "groups[0].learning.report_every_s: needs [mqtt] enabled = true"),
    ],
)
def test_problems_are_reported_at_their_line(
    tmp_path: Path, profiles: dict[str, FirmwareProfile], body: str, line: int, problem: str
) -> None:
    path = daemon(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        admit(read_config(path, profiles=profiles))
    assert f"{path}:{line}: {problem}" in str(err.value)


def test_learning_in_a_neural_or_perception_group_is_refused_at_the_table(
    bundles: Path, profiles: dict[str, FirmwareProfile]  # noqa: F811
) -> None:
    for body, line, name, kind in (
        (NEURAL.format(name="x", count=5) + "\n[groups.learning]\nA = [0]\n", 14, "x", "neural"),
        (PERCEIVING + "\n[groups.learning]\nA = [0]\n", 15, "namers", "perception"),
    ):
        path = config(bundles, body, "learning.toml")
        with pytest.raises(ConfigError) as err:
            admit(read_config(path, profiles=profiles))
        assert (
            f"{path}:{line}: groups[0].learning: group {name!r}: [groups.learning] is for Active "
            f"Inference agents that observe outcome indices; a {kind} group does not learn"
        ) in str(err.value)


def test_a_prior_that_is_zero_where_the_table_is_not_is_refused() -> None:
    model = builtin_model("tmaze-reversal")
    counts = {"A": {1: model.A[1] * 2.0}}
    counts["A"][1][0, 0, 0] = 0.0 if model.A[1][0, 0, 0] > 0 else counts["A"][1][0, 0, 0]
    where = tuple(int(i) for i in np.argwhere(model.A[1] > 0)[0])
    counts["A"][1][where] = 0.0
    with pytest.raises(ConfigError, match=r"^\[groups.learning\] A: pA1 is 0 at .* where A1 "
                                          r"is .*: a zero count can never be learned"):
        LearningTable().spec(model.A, model.B, model.D, counts)
    # With no key named, the carried counts are what is learned.
    spec = LearningTable().spec(model.A, model.B, model.D, {"A": {1: model.A[1] * 3.0}})
    assert list(spec.pA) == [1]
    assert not spec.pB
    assert not spec.pD


@pytest.mark.parametrize(
    ("world", "precision", "learning"),
    [
        ("tmaze-reversal", "int8", "A = [1]\nD = 'all'\n"),
        ("grid-slippery", "int8", "B = 'all'\nrefresh_every = 10\n"),
        ("tmaze-reversal", "float64", "A = 'all'\nB = [0]\nscope = 'per_agent'\n"),
        ("grid-slippery", "float64", "A = [0]\nscope = 'per_agent'\ncounts_dtype = 'float32'\n"),
    ],
)
def test_the_budget_plans_the_learning_state_exactly(
    tmp_path: Path, profiles: dict[str, FirmwareProfile], world: str, precision: str,
    learning: str,
) -> None:
    source = read_config(
        daemon(tmp_path, group(world=world, count=25, precision=precision, learning=learning)),
        profiles=profiles,
    )
    profile = profiles["x86-dev"]
    (g,) = source.config.groups
    loaded = resolve_models(source.config)[g.name][1]
    planned = {owner: nbytes for owner, _, nbytes, _ in
               plan_requests(loaded, g, g.history_capacity_for(profile), 1)}
    _, budget, groups = admit(source)
    agents = groups[0].agents
    assert agents.learning is not None
    if "per_agent" in learning:
        assert agents.learning.scope.name == "per_agent"
        assert agents.history_capacity == 0
    owners = budget.by_owner()
    assert planned["maze:learning"] == owners["maze:learning"] == agents.learning.nbytes
    assert planned["maze"] == owners["maze"]
    assert agents.learning.nbytes > 0
    agents.release()
    assert learning_of(load_group_model(g, source.config, None)) is not None


def test_per_agent_counts_over_the_budget_name_the_group_and_the_bytes(
    tmp_path: Path, profiles: dict[str, FirmwareProfile], capsys: pytest.CaptureFixture[str]
) -> None:
    # 1,200 agents: their counts alone are over the budget (each agent's own A0 is kept on its
    # prior's support, a few hundred bytes, so 1,000 agents' counts and state fit in 96 MB)
    body = group(world="grid-slippery", count=1200, precision="float64",
                 learning="A = [0]\nscope = 'per_agent'\n")
    path = daemon(tmp_path, body, profile="pi-zero-2w")
    assert device_main(["check-config", str(path)]) != 0
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if f"{path}:" in line]
    assert len(problems) == 1, err
    # 1,200 copies of grid10's 100 x 100 pA0 in float64, and the prior, mask and experience.
    learning = (1200 + 2) * 100 * 100 * 8 + 100 * 100 + 100
    assert f"{path}:8: groups[0].count: learning {format_bytes(learning)} brings the total " \
        in problems[0]
    assert "To fit: learn fewer tables in group 'maze', or lower its count, or use float32 " \
        "counts (counts_dtype)" in err


def test_check_config_shows_the_table_and_its_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = daemon(tmp_path, group(learning="A = [1]\nlr_pA = 0.01\nforgetting = 0.02\n"
                                           "refresh_every = 3\n"))
    assert device_main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "learning A [1], shared, lr_pA 0.01, forgetting 0.02, refresh every 3 ticks" in out
    assert "group maze: 40 agents x" in out
    # pA1 (3 x 4 x 2 float64) x 2 + mask + experience + codes + the update's gain scratch
    assert ", learning 888 B" in out


def test_the_table_of_docs_learning_loads(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    doc = (ROOT / "docs" / "learning.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    source = read_config(daemon(tmp_path, block), profiles=profiles)
    _, _, groups = admit(source)
    agents = groups[0].agents
    assert agents.learning is not None
    assert agents.learning.learner.pA is not None
    assert agents.learning.learner.pA.tables == (1,)
    assert agents.learning.nbytes == 888  # what the doc says check-config prints
    agents.release()


def test_a_bundle_that_carries_counts_is_learned_from_them(
    tmp_path: Path, profiles: dict[str, FirmwareProfile], capsys: pytest.CaptureFixture[str]
) -> None:
    """The host tool's bundle of the shipped learning model (``pA1``): a table that names no
    key learns what the bundle carries, from its counts; one that names a table it does not
    carry starts that one from ``prior_scale`` times the table."""
    key = generate_keypair(tmp_path / "keys", "ci").private_path
    tar = tmp_path / "tmaze.tar"
    assert host_main(["convert", "aif", str(ROOT / "examples" / "tmaze-learning.npz"), "--out",
                      str(tar), "--rollouts", "20", "--steps", "4", "--sign", str(key)]) == 0
    capsys.readouterr()
    carried = np.load(ROOT / "examples" / "tmaze-learning.npz")["pA1"]
    for learning, tables in (("lr_pA = 0.5\n", (1,)), ("A = [0, 1]\nprior_scale = 3.0\n", (0, 1))):
        builtin, world = '{ type = "builtin", name = "tmaze-reversal" }', 'world = "tmaze-reversal"'
        bundled = group(learning=learning).replace(
            builtin, f'{{ type = "bundle", path = "{tar}" }}'
        ).replace('source = { type = "sim" }', f"source = {{ type = \"sim\", {world} }}")
        body = f'trusted_keys_dir = "{tmp_path / "keys"}"\n{bundled}'
        _, _, groups = admit(read_config(daemon(tmp_path, body), profiles=profiles))
        agents = groups[0].agents
        assert agents.learning is not None
        pA = agents.learning.learner.pA
        assert pA is not None
        assert pA.tables == tables
        assert np.array_equal(pA.prior[tables.index(1)], carried)  # the bundle's own counts
        if 0 in tables:
            table = agents.learning.model.A[0]
            assert np.allclose(pA.prior[0], 3.0 * table)
        agents.release()
