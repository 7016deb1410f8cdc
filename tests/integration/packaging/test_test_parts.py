"""``scripts/test``'s parts (EDGE_AGENT_TEST_PARTS): .ci/run runs the checks and the tests' builds
beside the root stages and the tests after them, so each part must run what it names and nothing
else, and no setting may leave a part out of the default.

The script runs as written with a venv of stand-ins (``EDGE_AGENT_VENV``): its ``python``,
``ruff``, ``mypy`` and ``lint-imports`` write what they were asked to a log (``python -c`` runs
the real interpreter: the bootstrap asks it for the library's suffix), and the venv's stamp says
everything is installed, so the bootstrap installs nothing. A test path is given, so
tests/tensorflow is left out as it is for any run with paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.doc_blocks import ROOT

pytestmark = pytest.mark.integration

TEST_PATH = "tests/unit/support/test_native_builds.py"


def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    for name in ("ruff", "mypy", "lint-imports"):
        tool = venv / "bin" / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >>"{log}"\n')
        tool.chmod(0o755)
    python = venv / "bin" / "python"
    python.write_text(
        f'#!/bin/sh\nif [ "$1" = -c ]; then exec "{sys.executable}" "$@"; fi\n'
        f'echo "python $*" >>"{log}"\n'
    )
    python.chmod(0o755)
    stamp = venv / ".edge-agent-installed"
    stamp.write_text("dev\nhost\nonnx\ntflite\n")
    later = time.time() + 3600  # newer than every source the bootstrap compares it with
    os.utime(stamp, (later, later))
    return venv, log


def calls(tmp_path: Path, parts: str | None) -> list[str]:
    venv, log = fake_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_AGENT", "VIRTUAL_ENV"))}
    env["EDGE_AGENT_VENV"] = str(venv)
    if parts is not None:
        env["EDGE_AGENT_TEST_PARTS"] = parts
    done = subprocess.run(
        [str(ROOT / "scripts" / "test"), TEST_PATH], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return log.read_text().splitlines() if log.exists() else []


def kinds(lines: list[str]) -> set[str]:
    found = set()
    for line in lines:
        words = line.split()
        if words[0] != "python":
            found.add(words[0])
        elif words[1:3] == ["-m", "pytest"]:
            assert words[-1] == TEST_PATH, line
            found.add("pytest")
        elif words[1:3] == ["-m", "tests.support.native_builds"]:
            found.add("builds")
    return found


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (None, {"ruff", "mypy", "lint-imports", "pytest"}),
        ("checks,tests", {"ruff", "mypy", "lint-imports", "pytest"}),
        ("checks", {"ruff", "mypy", "lint-imports"}),
        ("builds", {"builds"}),
        ("checks,builds", {"ruff", "mypy", "lint-imports", "builds"}),
        ("tests", {"pytest"}),
    ],
)
def test_each_part_runs_what_it_names_and_nothing_else(
    tmp_path: Path, parts: str | None, expected: set[str]
) -> None:
    assert kinds(calls(tmp_path, parts)) == expected
