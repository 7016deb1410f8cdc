"""docs/learning.md's Python and command blocks, as written, on the shipped examples, in the
README's venv (the page says so; :mod:`tests.support.readme_venv`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.doc_blocks import ROOT, doc_block
from tests.support.readme_venv import ReadmeVenv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

DOC = "docs/learning.md"


def run(venv: ReadmeVenv, cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``cmd`` in ``cwd`` with the README's venv activated (``python`` is its python)."""
    return subprocess.run(cmd, cwd=cwd, env=venv.env(), capture_output=True, text=True,
                          timeout=600, check=False, stdin=subprocess.DEVNULL)  # fmt: skip


def python_blocks() -> list[str]:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", (ROOT / DOC).read_text(), flags=re.S)
    return blocks


def test_the_python_block_runs_and_learns(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    code = python_blocks()[0]
    result = run(readme_venv, ["python", "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    version, refreshes = (int(x) for x in result.stdout.split())
    assert version == 60  # one pA update per tick
    assert refreshes == 20  # every 3 ticks


def test_the_replay_block_learns_the_reversal(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    block = doc_block("docs/learning.md", 0)
    result = run(readme_venv, ["bash", "-euo", "pipefail", "-c", block], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "learned pA1" in result.stdout
    with np.load(tmp_path / "learned.npz") as out, np.load(
        tmp_path / "examples" / "tmaze-learning.npz"
    ) as model:
        before, after = float(model["pA1"][2, 1, 0]), float(out["pA1"][2, 1, 0])
    assert before == pytest.approx(0.54)  # what the doc says
    assert 3.5 < after < 4.5  # "about 4": a loss in the cued arm, learned after the reversal


def test_the_bundle_block_hands_the_counts_to_a_group(
    tmp_path: Path, readme_venv: ReadmeVenv
) -> None:
    """The doc's command that makes ``tmaze.tar`` (the host tool's bundle of the shipped learning
    model), then the Python block as written, then a few ticks of the group it made."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    block = doc_block("docs/learning.md", 1)
    converted = run(readme_venv, ["bash", "-euo", "pipefail", "-c", block], tmp_path)
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert (tmp_path / "tmaze.tar").is_file()
    code = python_blocks()[1] + (
        "import numpy as np\n"
        "for _ in range(5):\n"
        "    group.step(np.zeros((100, 3), dtype=np.int64))\n"
        "print(sorted(counts), sorted(counts['A']), group.learning.learner.pA.version)\n"
    )
    result = run(readme_venv, ["python", "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["['A']", "[1]", "5"]
