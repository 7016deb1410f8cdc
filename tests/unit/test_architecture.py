"""The architecture, checked: the import contracts and the memory rules, in one place.

The contracts (``[tool.importlinter]`` in ``pyproject.toml``, ``docs/architecture.md``): the floors
of the house, the device never importing the host, the shared service parts and the hub, the hub
service and the operator's client apart, the hub's parts, the kernels' internal order.
``lint-imports`` checks them here and in ``scripts/test``.

The memory rules: what a daemon must not import unless it uses it (pydantic, the inference
runtimes, the coordination engine, the modules :data:`KEPT_OUT`), each checked in a fresh
interpreter, since what they check is which modules a process imports.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.daemon.test_daemon import REPO
from tests.support.broker import free_port
from tests.unit.daemon.test_footprint import run_fresh


def test_the_import_contracts_hold() -> None:
    """``lint-imports`` keeps every contract; a contract broken names the import that breaks it."""
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    assert os.path.exists(lint), (
        "lint-imports is missing: pip install -e '.[dev]' (or source scripts/bootstrap.sh)"
    )
    out = subprocess.run(
        [lint, "--no-cache"], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout


# -- memory rules: what a daemon does not import ---------------------------------------------------


def test_the_daemons_config_path_imports_no_pydantic() -> None:
    code = (
        "import sys\n"
        "import edge_agent.cli, edge_agent.daemon.service\n"
        "from edge_agent.config.isolated import read_config_isolated\n"
        "source = read_config_isolated(None)\n"
        "assert source.config.groups, source\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        "loaded = sorted(top & {'pydantic', 'pydantic_core'})\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_daemons_fleet_path_imports_no_pydantic() -> None:
    """The wire models are msgspec Structs: a daemon with ``[mqtt] enabled`` (uplink, link,
    MQTT transport, commands, deployments, coordination) builds, encodes and decodes messages
    without pydantic, which its memory budget cannot afford (benchmarks/notes/memory.md)."""
    code = (
        "import sys\n"
        "import edge_agent.cli, edge_agent.daemon.service, edge_agent.daemon.uplink\n"
        "import edge_agent.daemon.handlers, edge_agent.fleet.comms.mqtt\n"
        "import edge_agent.fleet.link, edge_agent.fleet.commands, edge_agent.fleet.deploy\n"
        "import edge_agent.fleet.agent_io, edge_agent.coordination.messages\n"
        "import edge_agent.coordination.engine, edge_agent.coordination.runtime\n"
        "from edge_agent.fleet import protocol as p\n"
        "from edge_agent.fleet.commands import parse_args\n"
        "cmd = p.Command(target='n', nonce=bytes(8), expires=1, key_id='k', name='resize_group',\n"
        "                args={'group': 'g', 'agents': 3})\n"
        "env = p.Envelope(type='command', node='hub', seq=0, bdseq=0, ts=0, clock_synced=False,\n"
        "                 body=cmd)\n"
        "assert p.decode(p.encode(env)) == env\n"
        "parse_args(cmd.name, cmd.args)\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(top & {'pydantic', 'pydantic_core'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_daemon_that_does_not_coordinate_never_imports_the_engine() -> None:
    code = """
import sys, types
from edge_agent.config.daemon import parse_config
from edge_agent.daemon.service import Daemon
import edge_agent.daemon.uplink
text = (
    '[daemon]\\nprofile = "x86-dev"\\n[mqtt]\\nenabled = true\\n[[groups]]\\nname = "g"\\n'
    'model = { type = "builtin", name = "grid10" }\\ncount = 2\\n'
    'source = { type = "sim" }\\nsink = { type = "sim" }\\n'
)
config = parse_config(text, "c.toml")
daemon = types.SimpleNamespace(groups=[], coordination=None)
Daemon._open_coordination(daemon, config, link=None, hub_keys=None)
assert daemon.coordination is None
print(sorted(m for m in sys.modules if m.startswith("edge_agent.coordination")))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    loaded = ast.literal_eval(out.stdout.strip())
    assert "edge_agent.coordination.runtime" not in loaded
    assert "edge_agent.coordination.engine" not in loaded


def test_importing_the_device_side_imports_no_runtime() -> None:
    code = (
        "import sys, edge_agent.neural.backends, edge_agent.neural.agents, "
        "edge_agent.neural.perception, "
        "edge_agent.sim.sensors; "
        "print([m for m in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'tensorflow', "
        "'edge_agent_host') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_device_package_does_not_import_the_host_package() -> None:
    code = (
        "import sys, edge_agent.bundle.loader, edge_agent.bundle.signing; "
        "print(sorted(m for m in sys.modules if m.startswith('edge_agent_host')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


#: Modules a daemon without MQTT never needs, and what keeps each out (docs/memory.md, "Memory
#: tricks": the tricks and the rules, each with what it saves).
KEPT_OUT = (
    "numpy.random",  # the worlds' SplitMix64; a group's generator made on first stochastic use
    "numpy.ma",  # edge_agent.arrays: distinct() and percentiles() (np.unique asks numpy.ma)
    "importlib.metadata",  # distribution: the clash check lists sys.path's directories itself
    # daemon.snapshots.format: the header of format v3 is JSON; msgspec (1.2 MB with the decimal
    # module it imports) only to read a snapshot of format v2 or v1, and for the fleet's wire
    "msgspec",
    "msgpack",
    "edge_agent.neural",  # kinds: imported only by a group of kind neural or perception
    "edge_agent.kinds.neural",
    "edge_agent.kinds.perception",
    "edge_agent.sim.sensors",  # sim.registry: a world's module when the world is used
    "edge_agent.sim.explorer",
    # the float oracle: the kernels take pymdp's constants from aif.constants
    "edge_agent.aif.reference",
    # a planning policy's tick, only for a group with [groups.planning] (agents.py)
    "edge_agent.core.planning_pass",
    # kinds.aif: the learning maths and groups only for a group with [groups.learning]
    "edge_agent.aif.learning",
    "edge_agent.aif.learning_counts",
    "edge_agent.aif.learning_kernels",
    "edge_agent.aif.learning_refresh",
    "edge_agent.aif.learning_storage",
    "edge_agent.aif.learning_table",
    "edge_agent.aif.reference_learning",
    "edge_agent.core.learning",
    "edge_agent.core.learning_scope",
    "edge_agent.core.learning_ticks",
    "edge_agent.core.per_agent_learning",
    "edge_agent.core.shared_learning",
    "edge_agent.core.surprise",
    # docs/memory.md: the fleet stack only with [mqtt] enabled; never the host tool. SQLite only
    # to migrate the outbox and the nonce store of earlier versions (fleet/outbox.py, commands.py).
    "sqlite3",
    "paho",  # fleet.comms.mqtt, when fleet.node builds a stack
    # daemon.ab_switch: the deployment manager when a deployment needs it (a node nothing was
    # deployed to, as the demo's fresh state directory, never builds it)
    "edge_agent.fleet.deploy",
    "edge_agent.daemon.uplink",
    "edge_agent.fleet.node",
    "edge_agent.fleet.link",
    "edge_agent.fleet.comms",
    "edge_agent_host",
)


def test_a_running_daemon_keeps_unused_modules_out(tmp_path: Path) -> None:
    """The demo daemon (grid10 and T-maze groups on their built-in worlds, deterministic action
    selection, tick statistics, snapshots) for a second, outside systemd: none of
    :data:`KEPT_OUT` is imported."""
    out = run_fresh(
        f"""
        import os, sys
        os.environ.pop("NOTIFY_SOCKET", None)
        os.environ["EDGE_AGENT_RUNTIME_DIR"] = {str(tmp_path / "run")!r}
        from edge_agent.cli import main
        assert main(["run", "--demo", "--duration", "1", "--state-dir", {str(tmp_path)!r}]) == 0
        kept_out = {KEPT_OUT!r}
        below = tuple(name + "." for name in kept_out)
        print(sorted(m for m in sys.modules if m in kept_out or m.startswith(below)))
        """
    )
    assert out.strip().splitlines()[-1] == "[]"


#: A plain daemon's config: grid10 agents on the built-in world, no MQTT, no planning policy,
#: learning or coordination (benchmarks/bench_memory.py's daemon, smaller).
PLAIN_GROUP = (
    'name = "grid"\nmodel = { type = "builtin", name = "grid10" }\ncount = 50\n'
    'source = { type = "sim" }\nsink = { type = "sim" }\n'
)


def daemon_config(tmp_path: Path, name: str, groups: str) -> Path:
    """``tmp_path/name.toml``: a daemon on ``x86-dev`` at 20 Hz, its state in ``tmp_path/name``,
    with ``groups`` (the TOML after ``[[groups]]``)."""
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[daemon]\nprofile = "x86-dev"\nstate_dir = "{tmp_path / name}"\ntick_hz = 20\n\n'
        f"[[groups]]\n{groups}"
    )
    return config


def daemon_imports(tmp_path: Path, name: str, tail: str = "", *, entry: str = "main") -> set[str]:
    """The ``edge_agent`` modules a daemon imports running half a second on the plain group and
    ``tail`` (more TOML), started as ``edge-agentd`` (``entry="daemon_main"``) or
    ``edge-agent run`` (``"main"``)."""
    config = daemon_config(tmp_path, name, PLAIN_GROUP + tail)
    argv = ["--config", str(config), "--duration", "0.5"]
    out = run_fresh(
        f"""
        import os, sys
        os.environ.pop("NOTIFY_SOCKET", None)
        os.environ["EDGE_AGENT_RUNTIME_DIR"] = {str(tmp_path / name / "run")!r}
        from edge_agent.cli import {entry}
        assert {entry}({(argv if entry == "daemon_main" else ["run", *argv])!r}) == 0
        print(sorted(m for m in sys.modules if m.startswith("edge_agent")))
        """
    )
    return set(ast.literal_eval(out.strip().splitlines()[-1]))


def daemon_holds_the_compiled_tick(tmp_path: Path, name: str, count: int) -> tuple[bool, bool]:
    """Whether a daemon running half a second on the plain group of ``count`` agents, started as
    ``edge-agent run``, has the compiled tick's library mapped (``/proc/self/maps``) and its
    binding module (``edge_agent.aif.kernels.native.binding``: the ctypes structs,
    ``NativeTick``) imported."""
    config = daemon_config(tmp_path, name, PLAIN_GROUP.replace("count = 50", f"count = {count}"))
    out = run_fresh(
        f"""
        import os, sys
        os.environ.pop("NOTIFY_SOCKET", None)
        os.environ.pop("EDGE_AGENT_NATIVE_TICK", None)
        os.environ["EDGE_AGENT_RUNTIME_DIR"] = {str(tmp_path / name / "run")!r}
        from edge_agent.aif.kernels import native
        from edge_agent.cli import main
        assert main(["run", "--config", {str(config)!r}, "--duration", "0.5"]) == 0
        library = native.library_path()
        assert library is not None, "the package was installed without its compiled tick"
        with open("/proc/self/maps") as maps:
            mapped = str(library.resolve()) in maps.read()
        print(mapped, "edge_agent.aif.kernels.native.binding" in sys.modules)
        """
    )
    mapped, imported = out.strip().splitlines()[-1].split()
    return mapped == "True", imported == "True"


def test_a_daemon_whose_groups_step_numpy_never_loads_the_compiled_tick(tmp_path: Path) -> None:
    """A daemon whose only group steps numpy (grid10 agents above ``LOCAL_MEASURED``: the local
    planner, unmeasured) maps nothing of the compiled tick's library and imports none of its
    binding: its group plans the compiled tick's bytes from the model (``native/__init__.py``,
    no ctypes), and admission's probe only sizes one (docs/memory.md, "Memory tricks"). A group
    of 10 agents, which measures the compiled tick, maps it and imports its binding (so this
    rule cannot pass because neither is ever loaded at all)."""
    assert daemon_holds_the_compiled_tick(tmp_path, "numpy", 1000) == (False, False)
    assert daemon_holds_the_compiled_tick(tmp_path, "measured", 10) == (True, True)


def test_edge_agentd_imports_no_other_commands_code(tmp_path: Path) -> None:
    """``edge-agentd`` (what the unit runs) and ``edge-agent run`` import the ``run`` command's
    module alone; building ``edge-agent``'s whole parser imports every command's module."""
    for entry in ("daemon_main", "main"):
        loaded = daemon_imports(tmp_path, f"plain-{entry}", entry=entry)
        assert sorted(m for m in loaded if m.startswith("edge_agent.cli")) == [
            "edge_agent.cli",
            "edge_agent.cli.run",
        ]
    out = run_fresh(
        """
        import sys
        from edge_agent.cli import COMMANDS, build_parser
        build_parser()
        modules = {"edge_agent.cli." + where.partition(":")[0] for where in COMMANDS.values()}
        print(sorted(modules - set(sys.modules)), len(modules))
        """
    )
    assert out.strip() == "[] 7"


def test_a_daemon_imports_what_it_keeps_out_once_its_config_uses_it(tmp_path: Path) -> None:
    """What :data:`KEPT_OUT` keeps out of a daemon because its config does not use it is
    imported once it does (so that rule cannot pass because a module is never imported at all):
    a planning policy loads ``core.planning_pass``, a group that learns the learning maths;
    the kernels' constants come from ``aif.constants``, never the float oracle."""
    learning = {"edge_agent.aif.learning", "edge_agent.core.learning"}
    plain = daemon_imports(tmp_path, "plain")
    assert "edge_agent.aif.constants" in plain
    assert not plain & {"edge_agent.aif.reference", "edge_agent.core.planning_pass", *learning}
    timed = daemon_imports(tmp_path, "timed", "[groups.planning]\nevery = 4\ndeadline_ms = 20\n")
    assert "edge_agent.core.planning_pass" in timed
    assert "edge_agent.aif.reference" not in timed
    learns = daemon_imports(tmp_path, "learns", "[groups.learning]\nA = [0]\nlr_pA = 0.5\n")
    assert learns >= learning
    assert "edge_agent.aif.reference" not in learns


#: The learning maths a daemon imports only once one of its groups learns.
LEARNING = (
    "edge_agent.aif.learning",
    "edge_agent.aif.learning_counts",
    "edge_agent.aif.learning_kernels",
    "edge_agent.aif.learning_table",
    "edge_agent.core.learning",
)


def test_a_daemon_with_mqtt_whose_groups_do_not_learn_never_imports_the_learning_maths(
    tmp_path: Path,
) -> None:
    """The fleet path reports what learning groups learned (daemon.learning_reports): a daemon
    with ``[mqtt] enabled`` builds its reporter whether or not a group learns, and the reporter
    reads the learning table by its key, so that only a group that learns brings the maths in
    (a broker nobody listens on: the daemon runs, reconnecting, as it would through an
    outage)."""
    mqtt = (
        f'\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {free_port()}\n'
        'node_id = "n1"\n'
    )
    plain = daemon_imports(tmp_path, "mqtt-plain", mqtt)
    assert "edge_agent.daemon.learning_reports" in plain
    assert not plain & set(LEARNING), sorted(plain & set(LEARNING))
    learns = daemon_imports(tmp_path, "mqtt-learns", "[groups.learning]\nA = [0]\n" + mqtt)
    assert learns >= set(LEARNING)


#: The planners' modules a model has no use for: the joint small-block path (several factors)
#: and the deep planner (one factor, policies of two or more steps, deterministic moves).
PLANNERS = (
    "edge_agent.aif.kernels.joint_plan",
    "edge_agent.aif.kernels.joint_scratch",
    "edge_agent.aif.kernels.joint_small",
    "edge_agent.aif.kernels.deep_plan",
    "edge_agent.aif.kernels.deep",
)


def test_a_daemon_imports_only_the_planners_its_models_use(tmp_path: Path) -> None:
    """A daemon of grid10 agents with one-step policies (one factor: no joint path; one step: no
    deep planner) never imports those planners' modules (aif/kernels/__init__.py's ``_BY_NEED``,
    ``compile_model``); a small T-maze group (two factors, one small block) loads the joint
    path's alone, and grid10 with two-step policies the deep planner's alone."""

    def planners_of(name: str, group: str, tail: str = "") -> list[str]:
        config = daemon_config(
            tmp_path, name, f'{group}source = {{ type = "sim" }}\nsink = {{ type = "sim" }}\n{tail}'
        )
        out = run_fresh(
            f"""
            import os, sys
            os.environ.pop("NOTIFY_SOCKET", None)
            os.environ["EDGE_AGENT_RUNTIME_DIR"] = {str(tmp_path / name / "run")!r}
            from edge_agent.cli import main
            assert main(["run", "--config", {str(config)!r}, "--duration", "0.5"]) == 0
            print(sorted(m for m in sys.modules if m in {PLANNERS!r}))
            """
        )
        return list(ast.literal_eval(out.strip().splitlines()[-1]))

    grid = 'name = "grid"\nmodel = { type = "builtin", name = "grid10" }\ncount = 50\n'
    assert planners_of("grid", grid) == []
    tmaze = 'name = "tmaze"\nmodel = { type = "builtin", name = "tmaze" }\ncount = 5\n'
    assert planners_of("tmaze", tmaze) == sorted(PLANNERS[:3])
    two_steps = "[groups.settings]\npolicy_len = 2\n"
    assert planners_of("deep", grid, two_steps) == sorted(PLANNERS[3:])


def test_a_daemon_builds_the_deployment_manager_when_a_deployment_needs_it(
    tmp_path: Path,
) -> None:
    """A node nothing was deployed to never imports the deployment manager, with ``[mqtt]``
    enabled too (it would be built for the first ``deploy`` command: tests/unit/daemon/
    test_ab_switch.py); a state directory that holds a deployment's directory has it built at
    start, to recover what a deployment left there."""
    mqtt = (
        f'\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {free_port()}\n'
        'node_id = "n1"\n'
    )
    assert "edge_agent.fleet.deploy" not in daemon_imports(tmp_path, "never", mqtt)
    (tmp_path / "deployed" / "bundles").mkdir(parents=True)
    assert "edge_agent.fleet.deploy" in daemon_imports(tmp_path, "deployed")
