"""Neural, perception and frozen Active Inference groups through the daemon's one admission path:
the memory plan (``check-config``'s and ``run``'s the same), the checks at their lines, and a
group's step, snapshot and preflight."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from edge_agent.aif.kernels.native import binding
from edge_agent.bundle.writer import pack_tar, sign_bundle, write_bundle
from edge_agent.cli import main as device_main
from edge_agent.config.daemon import read_config
from edge_agent.config.profiles import FirmwareProfile, load_profiles
from edge_agent.core import agents as aif_agents
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import format_bytes
from edge_agent.core.native_pass import NATIVE_ENV, compiled_nbytes
from edge_agent.core.path_choice import MEASURE_AGENTS, TickCosts
from edge_agent.daemon.admission import admit, load_group_model, resolve_models, trusted_keys
from edge_agent.daemon.group_runtime import (
    GroupRuntime,
    make_agents,
    plan_requests,
    preflight_steps,
)
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.kinds.base import LoadedModel
from edge_agent.neural.agents import MODEL_BYTES_FACTOR, NeuralAgentGroup
from edge_agent.neural.perception import PerceptionAifGroup
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.converter.builders import mlp_onnx, random_mlp, sensor_policy
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.unit.neural.test_neural import spec_for

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def profiles() -> dict[str, FirmwareProfile]:
    return load_profiles(ROOT / "firmware_profiles")


def signed(model: onnx.ModelProto, window: int, out: Path, key: Path, kind: str) -> Path:
    folder = out.with_suffix("")
    write_bundle(
        folder,
        name=out.stem,
        version="1.0.0",
        kind="neural",
        files={"model.onnx": model.SerializeToString()},
        neural=spec_for(model, window, kind),
    )
    pack_tar(folder, out)
    sign_bundle(out, load_signing_key(key))
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """keys/, policy.tar (window 8) and perception.tar (window 1) for the sensor world."""
    root = tmp_path_factory.mktemp("bundles")
    key = generate_keypair(root / "keys", "ci").private_path
    world = SensorWorld(1)
    policy = mlp_onnx(sensor_policy(world.prototypes, world.noise, 8), 8, 8)
    perception = mlp_onnx(sensor_policy(world.prototypes, world.noise, 1), 1, 8)
    signed(policy, 8, root / "policy.tar", key, "discrete")
    signed(perception, 1, root / "perception.tar", key, "observation")
    three = mlp_onnx(random_mlp((8, 8, 3), seed=1), 1, 8)  # three classes: not the model's four
    signed(three, 1, root / "three.tar", key, "observation")
    return root


def config(root: Path, groups: str, name: str = "cfg.toml") -> Path:
    path = root / name
    path.write_text(
        f"""[daemon]
profile = "x86-dev"
state_dir = "{root / "state"}"
trusted_keys_dir = "keys"
{groups}"""
    )
    return path


NEURAL = """
[[groups]]
name = "{name}"
model = {{ type = "bundle", path = "policy.tar" }}
count = {count}
history_capacity = 16
source = {{ type = "sim", world = "sensors" }}
sink = {{ type = "sim" }}
"""
PERCEIVING = """
[[groups]]
name = "namers"
model = { type = "builtin", name = "sensors" }
perception = { type = "bundle", path = "perception.tar" }
count = 50
history_capacity = 8
source = { type = "sim", world = "sensors" }
sink = { type = "sim" }
"""


def test_the_plan_counts_each_model_once_and_every_agent_exactly(
    bundles: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    groups = NEURAL.format(name="a", count=100) + NEURAL.format(name="b", count=30) + PERCEIVING
    _profile, budget, built = admit(read_config(config(bundles, groups), profiles=profiles))
    a, b, namers = built
    assert isinstance(a.agents, NeuralAgentGroup)
    assert isinstance(b.agents, NeuralAgentGroup)
    assert isinstance(namers.agents, PerceptionAifGroup)
    # The daemon's sources drop non-finite values, so its groups do not scan them again.
    assert not a.agents.check_finite
    assert not namers.agents.perception.check_finite
    model_file = (bundles / "policy" / "model.onnx").stat().st_size
    assert a.agents.shared_nbytes == MODEL_BYTES_FACTOR * model_file
    report = budget.report()
    owners = report["by_owner"]
    # Every agent's bytes and the group's sliding input's room (a window of 8 steps).
    assert owners["a"] == a.agents.bytes_for(100) > 100 * a.agents.per_agent_nbytes()
    assert owners["b"] == b.agents.bytes_for(30) > 30 * b.agents.per_agent_nbytes()
    aif = namers.agents.aif  # its states and history, the group's timestamps, kernel scratch
    assert owners["namers"] == aif.bytes_for(50, aif.history_capacity)
    perception = namers.agents.perception
    assert owners["namers.perception"] == 50 * perception.per_agent_nbytes()
    # One policy (held by a and b, counted once), one perception model, one Active Inference
    # model; with the base, that is every byte used.
    shared = report["shared"]
    assert len(shared) == 3
    assert shared[f"nn:{a.agents.key}"]["nbytes"] == a.agents.shared_nbytes
    assert len(shared[f"nn:{a.agents.key}"]["holders"]) == 2
    assert budget.used == sum(owners.values())
    assert budget.used == report["base_bytes"] + sum(
        owners[g] for g in ("a", "b", "namers", "namers.perception")
    ) + sum(e["nbytes"] for e in shared.values())
    for g in built:
        g.agents.release()
    assert budget.used == report["base_bytes"]


GRID10 = """
[[groups]]
name = "{name}"
model = {{ type = "builtin", name = "grid10" }}
count = {count}
precision = "int8"
history_capacity = 8
source = {{ type = "sim", world = "grid10" }}
sink = {{ type = "sim" }}
"""


def test_frozen_groups_of_one_model_on_either_path_reserve_it_once_and_their_compiled_ticks_each(
    bundles: Path, profiles: dict[str, FirmwareProfile], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two frozen grid10 groups (10 and 1,000 agents) under pi-zero-2w's budget, the small one in
    the compiled tick and the large one on numpy's local planner (the measured choice as it goes
    on grid10; the costs here are the test's own, not the machine's): the model's tables are
    reserved once under its shared key, the same bytes for both groups and for check-config's
    probes; each group's compiled tick (its own NativeTick) is counted once, with its agents,
    whichever path it keeps (the large one steps the local planner unmeasured, above
    ``LOCAL_MEASURED``); check-config's plan is what run reserves."""
    def costs(*args: object, n_agents: int, **kwargs: object) -> TickCosts:
        return TickCosts(native_s=1e-3 if n_agents <= 32 else 5e-3, numpy_s=2e-3,
                         agents=min(n_agents, MEASURE_AGENTS))

    monkeypatch.setattr(aif_agents, "measure_costs", costs)
    monkeypatch.delenv(NATIVE_ENV, raising=False)
    path = config(bundles, GRID10.format(name="few", count=10)
                  + GRID10.format(name="many", count=1000), name="grid10.toml")
    path.write_text(path.read_text().replace('"x86-dev"', '"pi-zero-2w"'))
    source = read_config(path, profiles=profiles)
    profile = profiles["pi-zero-2w"]
    models = resolve_models(source.config)
    planned = [
        request
        for g in source.config.groups
        for request in plan_requests(models[g.name][1], g, g.history_capacity_for(profile), 1)
    ]
    _profile, budget, built = admit(source)
    few, many = (g.agents for g in built)
    assert isinstance(few, AifAgentGroup)
    assert isinstance(many, AifAgentGroup)
    assert few.stepping == "native"
    assert many.stepping.startswith("numpy: the local one-step planner")  # unmeasured
    compiled = few.memory.compiled_nbytes
    assert compiled > 0
    assert many.memory.compiled_nbytes == compiled  # built to be measured, reserved either way
    assert few.key == many.key
    assert few.shared_nbytes == many.shared_nbytes == few.cm.nbytes + few.quantized.nbytes
    report = budget.report()
    owners, shared = report["by_owner"], report["shared"]
    assert shared == {few.key: {"kind": "model", "nbytes": few.shared_nbytes,
                                "holders": [f"model:{few.key}"] * 2}}
    for group in (few, many):
        own = owners[group.name]
        assert own == group.bytes_for(group.n_agents, 8)
        assert own - compiled == (group.n_agents * group.per_agent_nbytes() + 8 * 8
                                  + group.scratch_nbytes(group.n_agents)
                                  + group.memory.health_nbytes(group.n_agents)
                                  + group.memory.boundary_nbytes(group.n_agents))
    assert budget.used == report["base_bytes"] + owners["few"] + owners["many"] + few.shared_nbytes
    # check-config's plan (probes of one agent, sized only: no compiled tick built or measured)
    # is what run reserved, line by line
    assert planned == [(f"model:{few.key}", "model", few.shared_nbytes, few.key),
                       ("few", "agents", owners["few"], None),
                       (f"model:{few.key}", "model", few.shared_nbytes, few.key),
                       ("many", "agents", owners["many"], None)]
    used = budget.used
    for g in built:
        g.agents.release()
    assert device_main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"budget: {format_bytes(used)} of " in out, out


def test_a_plan_and_a_group_stepping_numpy_build_no_compiled_tick_and_measure_nothing(
    bundles: Path, profiles: dict[str, FirmwareProfile], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """check-config's plan of a frozen grid10 group of 1,000 agents (its probe of one agent) and
    the group ``run`` admits (above ``LOCAL_MEASURED``: numpy's local planner, unmeasured)
    neither build the compiled tick nor measure it: its bytes come from the model
    (``compiled_nbytes``), the same in the plan and the reservation. A group of 10 agents, which
    measures, builds one (of the bytes planned), so the counting here can fail."""
    built: list[int] = []
    measured: list[int] = []
    real = binding.NativeTick

    def counted(*args: Any, **kwargs: Any) -> binding.NativeTick:
        kernel = real(*args, **kwargs)
        built.append(kernel.nbytes)
        return kernel

    def costs(*args: object, n_agents: int, **kwargs: object) -> TickCosts:
        measured.append(n_agents)
        return TickCosts(native_s=1e-3, numpy_s=2e-3, agents=min(n_agents, MEASURE_AGENTS))

    monkeypatch.setattr(binding, "NativeTick", counted)
    monkeypatch.setattr(aif_agents, "measure_costs", costs)
    monkeypatch.delenv(NATIVE_ENV, raising=False)
    path = config(bundles, GRID10.format(name="many", count=1000), name="many.toml")
    source = read_config(path, profiles=profiles)
    models = resolve_models(source.config)
    (cfg,) = source.config.groups
    planned = plan_requests(models[cfg.name][1], cfg, 8, 1)
    assert (built, measured) == ([], [])
    _profile, budget, (group,) = admit(source)
    many = group.agents
    assert isinstance(many, AifAgentGroup)
    assert (built, measured) == ([], [])
    assert many.stepping.startswith("numpy: the local one-step planner")
    planned_bytes = compiled_nbytes(many.cm, many.settings)
    assert many.memory.compiled_nbytes == planned_bytes > 0
    assert planned[1] == ("many", "agents", budget.report()["by_owner"]["many"], None)
    many.release()
    few = AifAgentGroup(many.quantized, 10, settings=many.settings, precision="int8")
    assert (built, measured) == ([planned_bytes], [10])
    assert few.stepping == "native"


@pytest.mark.parametrize(
    ("groups", "line", "problem"),
    [
        (
            NEURAL.format(name="x", count=5).replace('world = "sensors"', 'world = "grid10"'),
            8,
            "groups[0].model.path: group 'x': world 'grid10' produces outcome indices, a neural "
            "group takes feature vectors",
        ),
        (
            PERCEIVING.replace(
                'type = "builtin", name = "sensors"', 'type = "bundle", path = "policy.tar"'
            ),
            8,
            "groups[0].model.path: group 'namers': perception feeds an Active Inference model",
        ),
        (
            PERCEIVING.replace("perception.tar", "three.tar"),
            9,
            "groups[0].perception.path: group 'namers': perception",
        ),
        (
            NEURAL.format(name="x", count=5)
            + "\n[groups.coordination]\ncapabilities = ['pick']\n\n[mqtt]\nenabled = true\n",
            14,
            "coordination shares Active Inference beliefs",
        ),
        (
            NEURAL.format(name="x", count=5) + "\n[groups.planning]\nevery = 4\n",
            14,
            "groups[0].planning: group 'x': [groups.planning] is for Active Inference agents; "
            "a neural group steps every agent every tick",
        ),
        (
            PERCEIVING.replace('perception = { type = "bundle", path = "perception.tar" }\n', ""),
            8,
            "needs a perception bundle in front of it",
        ),
    ],
)
def test_kind_mismatches_are_config_errors_at_their_line(
    bundles: Path, profiles: dict[str, FirmwareProfile], groups: str, line: int, problem: str
) -> None:
    path = config(bundles, groups, "bad.toml")
    with pytest.raises(ConfigError) as err:
        admit(read_config(path, profiles=profiles))
    assert f"bad.toml:{line}:" in str(err.value)
    assert problem.split(": ", 1)[-1][:40] in str(err.value)


def test_groups_step_snapshot_and_pass_a_health_check(
    bundles: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    groups = NEURAL.format(name="a", count=20) + PERCEIVING
    _profile, _budget, built = admit(read_config(config(bundles, groups), profiles=profiles))
    for g in built:
        assert isinstance(g, GroupRuntime)
        g.warm_up()
        for _ in range(12):
            assert g.tick(time.monotonic())
        assert g.agents_finite()
        state = {k: v.copy() for k, v in g.agents.state_dict().items()}
        loaded = _loaded_of(g, bundles, profiles)
        n, hist = g.agents.n_agents, g.agents.history_capacity
        clone = make_agents(loaded, g.config, n, history_capacity=hist)
        clone.load_state_dict(state)
        for key, value in clone.state_dict().items():
            np.testing.assert_array_equal(value, state[key], err_msg=key)
        preflight_steps(clone, 5, deadline=time.monotonic() + 60, timeout_s=60, seed=1)
        clone.release()
        with pytest.raises(EdgeAgentError, match="within"):
            preflight_steps(g.agents, 3, deadline=time.monotonic() - 1, timeout_s=0.5, seed=1)


def _loaded_of(g: GroupRuntime, root: Path, profiles: dict[str, FirmwareProfile]) -> LoadedModel:
    source = read_config(root / "cfg.toml", profiles=profiles)
    cfg = source.config.group(g.name)
    return load_group_model(cfg, source.config, trusted_keys(source.config))
