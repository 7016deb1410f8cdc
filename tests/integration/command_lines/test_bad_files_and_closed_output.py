"""Every subcommand of the four command lines, as a real process, with what a user gets wrong:
a file that does not exist, a file the process may not read (or a place it may not write), and
standard output closed by its reader (``| head -1``).

The subcommands and their path arguments are read from the parsers themselves
(:func:`leaves`), so a new subcommand is covered by construction: a path argument the table
:data:`PATHS` does not know fails :func:`test_every_path_argument_is_known` until it says what the
command does with it. Each subcommand runs as the installed entry point (``edge-agent``,
``edge-agentd``, ``edge-agent-host``, ``edge-agent-hub``) with everything else it needs real and
valid: a daemon config and the state a daemon left (a status file, a learning group's snapshot),
a signed bundle, keys, models, a recording, a broker directory from ``broker init``, a hub config
whose SQLite database ``edge-agent-hub run`` made, and a mosquitto for the commands that connect.

**Unreadable, as root.** The tests run as root, and root reads a ``chmod 000`` file. Each
command therefore runs under ``setpriv --bounding-set=-dac_override,-dac_read_search``: still
root, the same interpreter and code, but without the two capabilities that let root ignore file
modes, so a ``chmod 000`` file (or directory) is unreadable and a ``chmod 555`` directory
unwritable to it, exactly as for any other user. (Dropping to ``nobody`` would not do: the venv's
interpreter lives under ``/root``, which ``nobody`` cannot enter.)

**As a real process, started once.** Most of a run was the interpreter starting and importing
the command line; the commands therefore run as children of a fork server
(:mod:`tests.support.zygote`), started as the commands were (the venv's interpreter, under the
same ``setpriv``, in the same environment), which imports the four command lines once and
forks a child for each command: a process of its own with the case's argv, directory,
environment and standard streams, running the installed entry point's function as the script
does, with its own exit status or the signal it died of. A few cases (:data:`BY_SCRIPT`, one
subcommand of each program) still run the installed script as a fresh interpreter, so that the
console script's own path stays covered.

What is asserted: for a bad input or an output that cannot be written, a non-zero exit, no
``Traceback``, and exactly one line on standard error naming the file and the problem; for a
closed standard output, no ``Traceback`` and no ``Exception ignored``, and exit 141 when the
command prints something (``--help`` always does) or else its usual status.
"""

from __future__ import annotations

import argparse
import enum
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_agent.cli import COMMANDS, build_daemon_parser, build_parser
from edge_agent.service.closed_stdout import CLOSED_STDOUT_EXIT
from edge_agent_host.cli import build_parser as build_host_parser
from edge_agent_host.converter import formats
from edge_agent_host.converter.builders import mlp_onnx, random_mlp
from edge_agent_host.hub.cli import build_parser as build_hub_parser
from edge_agent_host.keys import generate_keypair
from tests.support.broker import MosquittoBroker, MosquittoMissingError
from tests.support.zygote import Zygote
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SETPRIV = shutil.which("setpriv")
#: Without the capabilities that let root ignore file modes (module docstring).
UNPRIVILEGED = "--bounding-set=-dac_override,-dac_read_search"
FLEET = "plant-3"

#: The four command lines and their parsers.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "edge-agent": build_parser,
    "edge-agentd": build_daemon_parser,
    "edge-agent-host": build_host_parser,
    "edge-agent-hub": build_hub_parser,
}


# -------------------------------------------------------------------------- the subcommands
@dataclass(frozen=True)
class Leaf:
    """One subcommand: its program, its words (``hub deploy``), and its actions level by level
    (level 0: the program's options; the options of ``hub`` come before ``deploy``)."""

    prog: str
    words: tuple[str, ...]
    levels: tuple[tuple[argparse.Action, ...], ...] = field(repr=False)

    @property
    def name(self) -> str:
        return " ".join((self.prog, *self.words))

    def actions(self) -> Iterator[tuple[int, argparse.Action]]:
        for level, actions in enumerate(self.levels):
            for action in actions:
                yield level, action

    def path_arguments(self) -> list[str]:
        return [a.dest for _level, a in self.actions() if a.type is Path]


def _leaves(
    prog: str, parser: argparse.ArgumentParser, words: tuple[str, ...],
    levels: tuple[tuple[argparse.Action, ...], ...],
) -> Iterator[Leaf]:  # fmt: skip
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    skip = argparse._SubParsersAction | argparse._HelpAction | argparse._VersionAction
    own = tuple(a for a in parser._actions if not isinstance(a, skip) and a.dest != "version")
    if not subs:
        yield Leaf(prog, words, (*levels, own))
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(prog, sub, (*words, name), (*levels, own))


def leaves() -> list[Leaf]:
    """Every subcommand of the four command lines, from their parsers."""
    return [leaf for prog, build in PARSERS.items() for leaf in _leaves(prog, build(), (), ())]


class Kind(enum.Enum):
    FILE = "a file it reads"
    DIR = "a directory it reads"
    OUT = "a file or directory it writes"


#: What each subcommand does with each of its path arguments: (program, words, dest) -> Kind;
#: ``*`` for every subcommand of the program.
PATHS: dict[tuple[str, str, str], Kind] = {
    ("edge-agent", "*", "config"): Kind.FILE,
    ("edge-agent", "run", "state_dir"): Kind.OUT,
    ("edge-agent", "status", "status_file"): Kind.FILE,
    ("edge-agent", "status", "state_dir"): Kind.DIR,  # where the daemon's status file is
    ("edge-agent", "check-config", "file"): Kind.FILE,
    ("edge-agent", "replay", "model"): Kind.FILE,
    ("edge-agent", "replay", "trusted_keys"): Kind.DIR,
    ("edge-agent", "replay", "recording"): Kind.FILE,
    ("edge-agent", "*", "out"): Kind.OUT,
    ("edge-agent", "export-model", "state_dir"): Kind.DIR,
    ("edge-agentd", "", "config"): Kind.FILE,
    ("edge-agentd", "", "state_dir"): Kind.OUT,
    ("edge-agent-host", "*", "out"): Kind.OUT,
    ("edge-agent-host", "broker issue", "out"): Kind.DIR,  # the broker directory init wrote
    ("edge-agent-host", "broker revoke", "out"): Kind.DIR,
    ("edge-agent-host", "*", "bundle"): Kind.FILE,
    ("edge-agent-host", "*", "key"): Kind.FILE,
    ("edge-agent-host", "*", "trusted"): Kind.DIR,
    ("edge-agent-host", "*", "model"): Kind.FILE,
    ("edge-agent-host", "*", "sign"): Kind.FILE,
    ("edge-agent-host", "*", "calibration"): Kind.FILE,
    ("edge-agent-host", "*", "heldout"): Kind.FILE,
    ("edge-agent-host", "*", "aif"): Kind.FILE,
    ("edge-agent-host", "*", "int8"): Kind.FILE,
    ("edge-agent-host", "*", "password_file"): Kind.FILE,
    ("edge-agent-host", "*", "ca_file"): Kind.FILE,
    ("edge-agent-host", "*", "cert_file"): Kind.FILE,
    ("edge-agent-host", "*", "key_file"): Kind.FILE,
    ("edge-agent-host", "*", "db"): Kind.OUT,
    ("edge-agent-hub", "*", "config"): Kind.FILE,
    ("edge-agent-hub", "check-config", "path"): Kind.FILE,
    ("edge-agent-hub", "*", "bundle"): Kind.FILE,
    ("edge-agent-hub", "*", "rollback_bundle"): Kind.FILE,
    ("edge-agent-hub", "learn build", "out"): Kind.OUT,
}


def kind_of(leaf: Leaf, dest: str) -> Kind | None:
    words = " ".join(leaf.words)
    return PATHS.get((leaf.prog, words, dest)) or PATHS.get((leaf.prog, "*", dest))


# ------------------------------------------------------------------------ the world it needs
@dataclass
class World:
    """The valid files and services every subcommand may need (module docstring)."""

    dir: Path
    broker: MosquittoBroker
    zygote: Zygote
    files: dict[str, Path]

    def env(self) -> dict[str, str]:
        return environment(self.dir)


def environment(top: Path) -> dict[str, str]:
    """The environment of every command in the world at ``top``."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(top / "home"),
        "XDG_STATE_HOME": str(top / "xdg-state"),
        "EDGE_AGENT_RUNTIME_DIR": str(top / "run"),
        "PYTHONUNBUFFERED": "1",
    }


def daemon_config(path: Path, state: Path) -> Path:
    """A daemon on a learning T-maze group (its snapshot is what export-model reads)."""
    path.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = 50
log_level = "info"

[[groups]]
name = "maze"
model = {{ type = "builtin", name = "tmaze-reversal" }}
count = 8
source = {{ type = "sim", world = "tmaze-reversal" }}
sink = {{ type = "sim" }}

[groups.learning]
A = [1]
lr_pA = 0.5
"""
    )
    return path


#: What building the four parsers imports besides the programs' modules, at the start of each
#: run: every ``edge-agent`` command's module and every converter. The zygote imports them too.
PRELOAD = [
    *(f"edge_agent.cli.{where.partition(':')[0]}" for where in COMMANDS.values()),
    *formats.REGISTRY.values(),
]

#: The subcommands whose closed-output cases run the installed script as a fresh interpreter
#: (module docstring): one of each program, each printing something.
BY_SCRIPT = {"edge-agent status", "edge-agentd", "edge-agent-host inspect", "edge-agent-hub fleet"}


def start_zygote(top: Path, env: dict[str, str]) -> Zygote:
    """The fork server the commands run in, started as they were (module docstring)."""
    assert SETPRIV is not None
    scripts = [BIN / prog for prog in PARSERS]
    return Zygote(scripts, prefix=[SETPRIV, UNPRIVILEGED], cwd=top, env=env, preload=PRELOAD)


def run(
    argv: list[str], world: World, *, stdout: int | None = None, script: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``argv`` as a real process in the world's directory, without the capabilities that let
    root ignore file modes: a child of the world's zygote, or with ``script`` the installed
    script as a fresh interpreter (module docstring). Standard output is the file descriptor
    ``stdout``, or else captured, as standard error is."""
    if not script:
        return world.zygote.run(
            argv, cwd=world.dir, env=world.env(), stdout=stdout, timeout=timeout
        )
    assert SETPRIV is not None
    return subprocess.run(
        [SETPRIV, UNPRIVILEGED, *argv], cwd=world.dir, env=world.env(), text=True,
        timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.PIPE,
    )  # fmt: skip


def checked(world: World, prog: str, *args: str) -> str:
    """A setup step: ``prog ARGS``, which must succeed."""
    done = run([str(BIN / prog), *args], world)
    assert done.returncode == 0, f"{prog} {args}: {done.stdout}{done.stderr}"
    return done.stdout


def windows(path: Path, features: int, *, labels: bool = False) -> Path:
    """Calibration (or, with labels, held-out) data: 64 windows of 8 steps x ``features``."""
    rng = np.random.default_rng(features)
    arrays: dict[str, np.ndarray] = {
        "window": rng.normal(size=(64, 8, features)).astype(np.float32)
    }
    if labels:
        arrays["labels"] = rng.integers(0, 3, size=64)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if SETPRIV is None:
        pytest.fail("setpriv not found: apt-get install util-linux")
    top = tmp_path_factory.mktemp("world")
    try:
        broker = MosquittoBroker(top / "mosquitto")
    except MosquittoMissingError as err:
        pytest.fail(str(err))
    zygote = start_zygote(top, environment(top))  # it imports while the world is made
    broker.start()
    world = World(top, broker, zygote, {})
    f = world.files
    data = REPO / "tests" / "data"
    try:
        (top / "home").mkdir()
        keys = generate_keypair(top / "keys", "hub")
        f["key"] = keys.private_path
        f["trusted"] = top / "keys"
        f["bundle"] = bundle_tar(top, keys.private_path, policy_len=1)
        # Models and data of each format: an Active Inference .npz, an ONNX policy taking
        # (n, 8, 4) windows, the .tflite fixtures (float and int8) taking (n, 8, 8).
        f["model.npz"] = f["aif"] = Path(shutil.copy(REPO / "examples" / "tmaze.npz", top))
        f["model.onnx"] = top / "policy.onnx"
        onnx.save(mlp_onnx(random_mlp([8 * 4, 16, 3], seed=1), 8, 4), f["model.onnx"])
        f["calibration"] = windows(top / "cal.npz", 4)
        f["heldout"] = windows(top / "held.npz", 4, labels=True)
        f["model.tflite"] = Path(shutil.copy(data / "sensor_policy_float.tflite", top))
        f["int8"] = Path(shutil.copy(data / "sensor_policy_int8.tflite", top))
        f["calibration-tflite"] = windows(top / "cal-tflite.npz", 8)
        f["heldout-tflite"] = windows(top / "held-tflite.npz", 8, labels=True)
        f["recording"] = top / "rec.npz"  # six steps of the T-maze: 3 modalities, 2 factors
        np.savez(f["recording"], obs=np.zeros((6, 3), np.int64), actions=np.zeros((6, 2), np.int64))
        # A daemon that ran (its status file, its learning group's snapshot).
        state = top / "daemon-state"
        f["config"] = daemon_config(top / "edge.toml", state)
        checked(world, "edge-agent", "run", "--config", str(f["config"]), "--duration", "3")
        f["status_file"], f["state_dir"] = state / "status.json", state
        # A broker directory (init), its hub's TLS files, and a password file.
        f["broker"] = top / "broker"
        checked(world, "edge-agent-host", "broker", "init", "--fleet", FLEET, "--node", "pi-0001",
                "--hub", "hub", "--port", "18883", "--out", str(f["broker"]))  # fmt: skip
        hub_files = f["broker"] / "clients" / "hub"
        f["ca_file"] = hub_files / "ca.crt"
        f["cert_file"] = hub_files / "hub.crt"
        f["key_file"] = hub_files / "hub.key"
        f["password_file"] = top / "password"
        f["password_file"].write_text("secret\n")
        # The hub service's config and the database its run made.
        f["hub.toml"] = top / "hub.toml"
        f["hub.toml"].write_text(
            f'[hub]\nid = "hub-1"\nstate_dir = "{top / "hub-state"}"\n\n'
            f'[mqtt]\nport = {broker.port}\nfleet = "{FLEET}"\n\n[database]\ntype = "sqlite"\n'
        )
        checked(world, "edge-agent-hub", "run", "--config", str(f["hub.toml"]), "--duration", "2")
        yield world
    finally:
        world.zygote.close()
        broker.kill()


# ----------------------------------------------------------------- each subcommand's argv
#: Values for the arguments a subcommand requires that are not paths, by dest.
VALUES: dict[str, list[str]] = {
    "name": ["x86-dev"],
    "group": ["maze"],
    "tasks": ["t1=1"],
    "capability": ["grid"],
    "fleet": [FLEET],
    "node": ["pi-0002"],
    "port": ["18883"],
    "id": ["r-19700101-000000"],
    "line": ["tmaze"],
    "args": [],
}
#: Per subcommand: what else it needs to reach its files and end by itself (the broker to
#: connect to, no waiting for nodes, a duration).
EXTRA: dict[str, list[str]] = {
    "edge-agent run": ["--duration", "1"],
    "edge-agentd": ["--duration", "1"],
    "edge-agent-hub run": ["--duration", "1"],
    "edge-agent-host hub fleet": ["--wait", "0"],
    "edge-agent-host hub watch": ["--duration", "0.5"],
    "edge-agent-host hub command": ["--wait", "0", "--timeout", "1"],
    "edge-agent-host hub deploy": ["--wait", "0", "--timeout", "1"],
    "edge-agent-host tasks announce": ["--wait", "0"],
    "edge-agent-host tasks list": ["--wait", "0"],
    "edge-agent-host broker issue": ["--hub", "hub", "--rotate"],  # again and again
    "edge-agent-host variant": ["--swap-outcomes", "1:1,2"],  # something to change
}


#: The model each conversion takes (edge-agent replay: the .npz).
MODELS = {"convert onnx": "model.onnx", "convert tflite": "model.tflite"}


def valid(world: World, leaf: Leaf, dest: str) -> str:
    """A valid value of path argument ``dest`` of ``leaf`` (an output: a new place)."""
    f = world.files
    kind = kind_of(leaf, dest)
    words = " ".join(leaf.words)
    if kind is Kind.OUT:
        suffix = ""
        if dest == "db":
            suffix = ".sqlite3"
        elif dest == "out" and leaf.prog == "edge-agent":
            suffix = ".npz"  # replay and export-model write OUT.npz
        elif dest == "out" and words.startswith("convert"):
            suffix = ".tar"
        elif dest == "out" and words == "variant":
            suffix = ".npz"  # a model file
        target = world.dir / "outputs" / f"{leaf.name.replace(' ', '-')}-{dest}{suffix}"
        target.parent.mkdir(exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        return str(target)
    if leaf.prog == "edge-agent-hub" and dest in ("config", "path"):
        return str(f["hub.toml"])
    if dest == "file":  # edge-agent check-config
        return str(f["config"])
    if dest == "model":
        return str(f[MODELS.get(words, "model.npz")])
    if dest in ("bundle", "rollback_bundle"):
        return str(f["bundle"])
    if dest in ("sign", "key"):
        return str(f["key"])
    if dest in ("trusted", "trusted_keys"):
        return str(f["trusted"])
    if words in ("broker issue", "broker revoke") and dest == "out":
        return str(f["broker"])
    if words == "convert tflite" and dest in ("calibration", "heldout"):
        return str(f[f"{dest}-tflite"])
    return str(f[dest])


def argv_for(world: World, leaf: Leaf, bad: dict[str, str] | None = None) -> list[str]:
    """The subcommand with its required arguments (and the broker's), ``bad`` in place of the
    valid value of the path arguments it names."""
    bad = bad or {}
    out = [str(BIN / leaf.prog)]
    connects = leaf.prog == "edge-agent-host" and leaf.words[0] in ("hub", "tasks")
    for level, actions in enumerate(leaf.levels):
        if level:
            out.append(leaf.words[level - 1])
        if connects and level == 1:
            out += ["--port", str(world.broker.port), "--fleet", FLEET]
        positionals: list[str] = []
        for action in actions:
            given = action.dest in bad
            if action.type is Path:
                if not (given or action.required or _needed(leaf, action.dest, bad)):
                    continue
                value = [bad[action.dest] if given else valid(world, leaf, action.dest)]
            elif action.required or (not action.option_strings and action.dest in VALUES):
                # a positional with nargs="*" is required under Python 3.11's argparse, not
                # under 3.13's: the command needs its values all the same (announce's ID=GOAL)
                value = VALUES[action.dest]
            else:
                continue
            if action.option_strings:
                out += [action.option_strings[-1], *value]
            else:
                positionals += value
        out += positionals
    return out + EXTRA.get(leaf.name, [])


def _needed(leaf: Leaf, dest: str, bad: dict[str, str]) -> bool:
    """Optional path arguments a case needs valid (the daemon's config for its state dir, both
    halves of a client certificate, a model that is a bundle for --trusted-keys)."""
    words = " ".join(leaf.words)
    if (leaf.prog, words) in (("edge-agent", "run"), ("edge-agentd", "")) and dest == "config":
        return True
    tls = {"ca_file", "cert_file", "key_file"}
    if dest in tls and tls & set(bad):
        return True
    # A conversion calibrates on data; a .tflite comes with its int8 version (no TensorFlow).
    return (words, dest) in (
        ("convert onnx", "calibration"),
        ("convert tflite", "calibration"),
        ("convert tflite", "int8"),
    )


#: What a runtime of ours, not our code, writes to stderr by itself (LiteRT, once per process).
RUNTIME_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


def stderr_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line for line in done.stderr.splitlines() if line.strip() and line not in RUNTIME_NOISE
    ]


# -------------------------------------------------------------------------------- the cases
def path_cases() -> list[tuple[Leaf, str, str]]:
    cases = []
    for leaf in leaves():
        for dest in leaf.path_arguments():
            kind = kind_of(leaf, dest)
            if kind is None:
                continue  # test_every_path_argument_is_known says so
            if kind is not Kind.OUT:
                cases.append((leaf, dest, "missing"))
            cases.append((leaf, dest, "unreadable" if kind is not Kind.OUT else "unwritable"))
    return cases


def test_every_path_argument_is_known() -> None:
    unknown = [
        f"{leaf.name} {dest}"
        for leaf in leaves()
        for dest in leaf.path_arguments()
        if kind_of(leaf, dest) is None
    ]
    assert not unknown, f"say in PATHS what these subcommands do with these paths: {unknown}"


def _id(case: tuple[Leaf, str, str]) -> str:
    leaf, dest, how = case
    return f"{leaf.name}:{dest}:{how}"


@pytest.mark.parametrize("case", path_cases(), ids=_id)
def test_a_bad_path_is_one_line_naming_it(world: World, case: tuple[Leaf, str, str]) -> None:
    leaf, dest, how = case
    kind = kind_of(leaf, dest)
    place = world.dir / "bad" / f"{leaf.name.replace(' ', '-')}-{dest}-{how}"
    place.mkdir(parents=True)
    good = Path(valid(world, leaf, dest))
    # The name a user would give (its suffix too: some commands tell formats by it).
    name = "door-v9.tar" if dest in ("bundle", "rollback_bundle") else f"no-such-{good.name}"
    target = place / name
    if how == "unreadable" and kind is Kind.FILE:
        shutil.copy(good, target)
        target.chmod(0)
    elif how == "unreadable":  # a directory
        shutil.copytree(good, target)
        target.chmod(0)
    elif how == "unwritable":  # an output in a directory it may not write
        ro = place / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / name
    try:
        done = run(argv_for(world, leaf, {dest: str(target)}), world)
    finally:
        for p in (place, *place.rglob("*")):
            if p.exists() and not p.is_symlink():
                p.chmod(0o700)
    lines = stderr_lines(done)
    say = f"{leaf.name} {dest} {how}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, say
    assert done.returncode != 0, say
    assert len(lines) == 1, say
    assert target.name in lines[0], say
    if how != "missing":  # a missing file is said many ways: no such bundle, no snapshots, ...
        assert any(p in lines[0].lower() for p in PROBLEMS[how]), say


#: How a line says that a file cannot be read or a place written.
PROBLEMS = {
    "unreadable": ("permission denied", "cannot read"),
    "unwritable": ("permission denied", "not writable"),
}


@pytest.mark.parametrize("leaf", leaves(), ids=lambda leaf: leaf.name)
def test_help_to_a_closed_output_is_quiet(world: World, leaf: Leaf) -> None:
    argv = [str(BIN / leaf.prog), *leaf.words, "--help"]
    done = closed_output(argv, world, script=leaf.name in BY_SCRIPT)
    assert done.returncode == CLOSED_STDOUT_EXIT, (done.returncode, done.stderr)
    assert done.stderr == "", done.stderr


@pytest.mark.parametrize("leaf", leaves(), ids=lambda leaf: leaf.name)
def test_a_closed_output_is_quiet(world: World, leaf: Leaf) -> None:
    script = leaf.name in BY_SCRIPT
    seen = run(argv_for(world, leaf), world, script=script)
    argv = argv_for(world, leaf)  # its outputs new again
    done = closed_output(argv, world, script=script)
    say = (
        f"{argv}: exit {done.returncode} (with an open output: {seen.returncode}, "
        f"{len(seen.stdout)} characters)\n{done.stderr}"
    )
    assert "Traceback" not in done.stderr, say
    assert "Exception ignored" not in done.stderr, say
    # A command that prints ends 141 when nobody reads; a failure keeps its status.
    expected = seen.returncode
    if seen.returncode == 0 and seen.stdout:
        expected = CLOSED_STDOUT_EXIT
    assert done.returncode == expected, say


def closed_output(
    argv: list[str], world: World, *, script: bool
) -> subprocess.CompletedProcess[str]:
    """``argv`` with standard output a pipe whose reader is already closed."""
    read, write = os.pipe()
    os.close(read)
    try:
        return run(argv, world, stdout=write, script=script)
    finally:
        os.close(write)
