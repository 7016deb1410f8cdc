"""PyPI's ``edge-agent`` (another project, whose wheel also writes ``edge_agent``) in the same
environment as ours: the commands say so in one line; with ours alone they say nothing.

A real venv with our wheel installed by pip; the other distribution is its metadata directory as
pip would leave it (``edge_agent-0.4.0.dist-info``), which importlib.metadata in that venv sees too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from edge_agent import __version__
from tests.integration.packaging.test_bootstrap import fresh_copy

# A wheel build and a venv: minutes of CPU on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[3]
NOTICE = "warning: the distribution 'edge-agent' 0.4.0"


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    # The wheel here is for the commands' names: its tick built once, without the profile run
    # (setup.py; the wheel test builds the profile-guided one).
    env["EDGE_AGENT_TICK_PROFILE"] = "0"
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_the_commands_name_a_foreign_edge_agent_distribution(tmp_path: Path) -> None:
    src = fresh_copy(tmp_path / "src")
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                 "-w", str(tmp_path / "dist"), str(src)], tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("edge_agent_runtime-*.whl")

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    installed = run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                     str(wheel)], tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    tmp_path).stdout.strip())
    # Our dependencies (numpy, pydantic, ...) from this test's venv, after the venv's own
    # site-packages: the edge_agent package and its metadata are the wheel's.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = run([str(python), "-c", "import edge_agent; print(edge_agent.__file__)"], tmp_path)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr

    config = src / "docs" / "examples" / "minimal.toml"
    commands = {
        "edge-agent --version": [str(bin_dir / "edge-agent"), "--version"],
        "edge-agentd --version": [str(bin_dir / "edge-agentd"), "--version"],
        "edge-agent check-config": [str(bin_dir / "edge-agent"), "check-config", str(config)],
        "edge-agent-host --version": [str(bin_dir / "edge-agent-host"), "--version"],
        "edge-agent-host keygen": [str(bin_dir / "edge-agent-host"), "keygen", "--out",
                                   str(tmp_path / "keys")],
        "edge-agent-hub --version": [str(bin_dir / "edge-agent-hub"), "--version"],
    }

    # Ours alone: not a word.
    for name, cmd in commands.items():
        done = run(cmd, tmp_path)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        assert "edge-agent'" not in done.stderr, f"{name}: {done.stderr}"
        shutil.rmtree(tmp_path / "keys", ignore_errors=True)

    # The other project's metadata, as pip installs it.
    foreign = site / "edge_agent-0.4.0.dist-info"
    foreign.mkdir()
    (foreign / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: edge-agent\nVersion: 0.4.0\n"
        "Summary: A stdlib-only agent framework\n\nSomeone else's project.\n"
    )
    (foreign / "INSTALLER").write_text("pip\n")
    (foreign / "RECORD").write_text(
        "edge_agent/__init__.py,,\nedge_agent-0.4.0.dist-info/METADATA,,\n"
    )
    seen = run([str(python), "-c", "import importlib.metadata as m; print(m.version('edge-agent'), "
                "m.version('edge-agent-runtime'))"], tmp_path)
    assert seen.stdout.split() == ["0.4.0", __version__], seen.stderr  # what pip and importlib see

    for name, cmd in commands.items():
        done = run(cmd, tmp_path)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        lines = [line for line in done.stderr.splitlines() if NOTICE in line]
        assert len(lines) == 1, f"{name}: {done.stderr}"
        prog = name.removesuffix(" --version").removesuffix(" keygen")
        assert lines[0].startswith(f"{prog}: {NOTICE} ({foreign})"), lines[0]
        assert "run 'pip uninstall edge-agent', then reinstall edge-agent-runtime" in lines[0]
        shutil.rmtree(tmp_path / "keys", ignore_errors=True)
    # The notice goes to stderr: --version's stdout is still just the version.
    assert run(commands["edge-agent --version"], tmp_path).stdout == f"edge-agent {__version__}\n"
