"""The README's order on a fresh copy: ``scripts/demo`` first, then the test bootstrap.

The demo installs edge-agent without extras; the test script's bootstrap must then add the extras
it needs (the stamp lists what a venv holds), and no console script may die with a traceback in
the venv the demo made. Real venvs, real pip installs (from the pip cache when warm), real
processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

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


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> (
    subprocess.CompletedProcess[str]
):
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


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
    stamp = venv / ".edge-agent-installed"

    # 1. The demo: the daemon on its embedded config, from a venv without extras.
    demo = run(["scripts/demo", "--duration", "3", "--state-dir", str(tmp_path / "state")],
               clone, env)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert stamp.read_text().split() == []
    bin_dir = venv / "bin"

    # 2. Without extras every console script answers --help, and a command that needs an
    #    absent extra says which one in one line.
    for cmd in (["edge-agent", "--help"], ["edge-agentd", "--help"], ["edge-agent-host", "--help"],
                ["edge-agent-host", "convert", "onnx", "--help"], ["edge-agent-host", "--version"]):
        r = run([str(bin_dir / cmd[0]), *cmd[1:]], clone, env)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
        assert "Traceback" not in r.stderr, f"{cmd}: {r.stderr}"
    (tmp_path / "m.onnx").write_bytes(b"not read")
    r = run([str(bin_dir / "edge-agent-host"), "convert", "onnx", str(tmp_path / "m.onnx"),
             "--out", str(tmp_path / "b")], clone, env)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "pip install 'edge-agent[" in r.stderr

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
