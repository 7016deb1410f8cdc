"""The README's order on a fresh copy: ``scripts/demo`` first, then the test bootstrap.

The demo installs edge-agent without extras; the test script's bootstrap must then add the extras
it needs (the stamp lists what a venv holds), and no console script may die with a traceback in
the venv the demo made. The editable install builds the compiled learning tick in place
(setup.py), and builds it again when a C source changed or the library is gone. Real venvs, real
pip installs (from the pip cache when warm), a real compiler, real processes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent import __version__
from edge_agent.cli import build_daemon_parser, build_parser
from edge_agent_host.cli import build_parser as build_host_parser
from tests.support.doc_blocks import commands as block_commands
from tests.support.doc_blocks import doc_block

ROOT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]


def fresh_copy(dest: Path) -> Path:
    """The files a clone would have (tracked and new, not ignored): no .venv, no caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def command_paths(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[list[str]]:
    """Every command line of ``parser``: the tool itself, then each (sub)command, depth first."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_paths(sub, [*path, name])


def every_command() -> list[list[str]]:
    return [
        *command_paths(build_parser(), ["edge-agent"]),
        *command_paths(build_daemon_parser(), ["edge-agentd"]),
        *command_paths(build_host_parser(), ["edge-agent-host"]),
    ]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> (
    subprocess.CompletedProcess[str]
):
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


def tick_library(clone: Path, python: str, env: dict[str, str]) -> Path:
    """Where the editable install of ``clone`` builds the compiled tick for ``python``, checked
    to be what that interpreter imports and to load with its kernel."""
    found = run([python, "-c", "import ctypes, importlib.util; "
                 "origin = importlib.util.find_spec('edge_agent.aif.kernels.native._tick').origin; "
                 "ctypes.CDLL(origin).edge_tick; print(origin)"], clone, env)
    assert found.returncode == 0, found.stderr
    suffix = run([python, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                 clone, env).stdout.strip()
    library = clone / "edge_agent" / "aif" / "kernels" / "native" / f"_tick{suffix}"
    assert found.stdout.strip() == str(library)
    return library


def test_demo_then_test_bootstrap_adds_the_missing_extras(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is needed to list the checkout's files: apt-get install git")
    clone = fresh_copy(tmp_path / "clone")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_AGENT", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    env["EDGE_AGENT_VENV"] = str(venv)
    # The tick built without its profile run (setup.py; the run and a second compile at each of
    # the installs here took this test to 1,050 s beside a loaded suite): what is tested here is
    # the bootstrap's order and extras. The profile-guided build is test_wheel.py's.
    env["EDGE_AGENT_TICK_PROFILE"] = "0"
    stamp = venv / ".edge-agent-installed"

    # 1. The demo: the daemon on its embedded config, from a venv without extras. The README's
    #    quick start is these two commands (CI runs the second one through .ci/run).
    quick_start = [c.split("#", 1)[0].strip() for c in block_commands(doc_block("README.md", 0))]
    assert quick_start == ["scripts/demo", "scripts/test"]
    demo = run(["scripts/demo", "--duration", "3", "--state-dir", str(tmp_path / "state")],
               clone, env)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert stamp.read_text().split() == []
    bin_dir = venv / "bin"
    library = tick_library(clone, str(bin_dir / "python"), env)  # built in place, and loads

    # 2. Without extras every command and subcommand answers --help (28 of them, walked from
    #    the parsers), the tools print the package's version, and a command that needs an
    #    absent extra says what to install in one line.
    python = str(bin_dir / "python")
    absent = run([python, "-c", "import onnx"], clone, env)
    assert absent.returncode != 0, "the demo's venv should have no extras"
    commands = every_command()
    assert len(commands) >= 25
    for cmd in commands:
        r = run([str(bin_dir / cmd[0]), *cmd[1:], "--help"], clone, env)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
        assert r.stdout.startswith(f"usage: {' '.join(cmd)}"), f"{cmd}: {r.stdout[:200]}"
        assert r.stderr == "", f"{cmd}: {r.stderr}"
    for tool in ("edge-agent", "edge-agentd", "edge-agent-host"):
        r = run([str(bin_dir / tool), "--version"], clone, env)
        assert (r.returncode, r.stdout.strip()) == (0, f"{tool} {__version__}"), r.stderr
    (tmp_path / "m.onnx").write_bytes(b"not read")
    for kind, names in (("onnx", "onnx and onnxruntime"), ("tflite", "ai-edge-litert")):
        r = run([str(bin_dir / "edge-agent-host"), "convert", kind, str(tmp_path / "m.onnx"),
                 "--out", str(tmp_path / "b")], clone, env)
        assert r.returncode == 1, r.stderr
        assert r.stderr == (
            f"error: convert {kind} needs {names}, not installed: "
            "pip install 'edge-agent-runtime[host]'\n"
        )
    # What needs no extra works: a key pair, and an Active Inference conversion (no tqdm, no bar).
    host = str(bin_dir / "edge-agent-host")
    r = run([host, "keygen", "--out", str(tmp_path / "keys")], clone, env)
    assert r.returncode == 0, r.stderr
    key = str(tmp_path / "keys" / "edge-agent.key")
    r = run([host, "convert", "aif", "examples/grid10.npz", "--out", str(tmp_path / "grid.bundle"),
             "--rollouts", "20", "--steps", "5", "--sign", key], clone, env)
    assert r.returncode == 0, r.stderr
    r = run([host, "verify", str(tmp_path / "grid.bundle"), "--trusted", str(tmp_path / "keys")],
            clone, env)
    assert (r.returncode, r.stdout[:3]) == (0, "OK:"), r.stdout + r.stderr

    # 3. The test script's bootstrap (default extras) adds what the demo's venv lacks.
    check = "import onnx, onnxruntime, ai_edge_litert, tqdm, pytest, mypy, hypothesis"
    boot = ["bash", "-c", f"source scripts/bootstrap.sh && python -c '{check}'"]
    added = run(boot, clone, env)
    assert added.returncode == 0, added.stderr[-3000:]
    assert "adding dev,host,onnx,tflite" in added.stderr
    assert stamp.read_text().split() == ["dev", "host", "onnx", "tflite"]

    # 4. Then nothing is left to do, quietly; and the demo keeps the venv's extras.
    again = run(boot, clone, env)
    assert again.returncode == 0
    assert "bootstrap:" not in again.stderr
    demo = run(["scripts/demo", "--duration", "2", "--state-dir", str(tmp_path / "state")],
               clone, env)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert stamp.read_text().split() == ["dev", "host", "onnx", "tflite"]

    # 5. A changed pyproject.toml reinstalls what the venv holds (not less), then is quiet again;
    #    extras may be listed with spaces.
    earlier = (clone / "pyproject.toml").stat().st_mtime - 10
    os.utime(stamp, (earlier, earlier))  # as if pyproject.toml changed after the install
    env_spaced = {**env, "EDGE_AGENT_EXTRAS": "dev, onnx"}
    redone = run(boot, clone, env_spaced)
    assert redone.returncode == 0, redone.stderr[-3000:]
    assert "bootstrap: installing edge-agent-runtime[dev,host,onnx,tflite]" in redone.stderr
    assert stamp.read_text().split() == ["dev", "host", "onnx", "tflite"]
    quiet = run(boot, clone, env_spaced)
    assert quiet.returncode == 0
    assert "bootstrap:" not in quiet.stderr

    # 6. The compiled tick: a C source newer than the install (and nothing else) rebuilds its
    #    library in place; so does the library gone (git clean -X). Quiet again after each.
    native = clone / "edge_agent" / "aif" / "kernels" / "native"
    built_at = library.stat().st_mtime_ns
    inputs = [clone / "pyproject.toml", clone / "setup.py", native / "recipe.py",
              *native.glob("*.[ch]")]
    before = stamp.stat().st_mtime - 100
    for path in inputs:
        os.utime(path, (before, before))
    os.utime(native / "tick_vmath.c")  # now: edited after the install
    for change in ("edited", "removed"):
        if change == "removed":
            library.unlink()
        rebuilt = run(boot, clone, env)
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        assert "the compiled tick's sources changed, or its library is missing" in rebuilt.stderr
        assert tick_library(clone, str(bin_dir / "python"), env) == library
        assert library.stat().st_mtime_ns > built_at
        built_at = library.stat().st_mtime_ns
        assert stamp.read_text().split() == ["dev", "host", "onnx", "tflite"]
        quiet = run(boot, clone, env)
        assert "bootstrap:" not in quiet.stderr, quiet.stderr
