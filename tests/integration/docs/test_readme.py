"""The README's "Using it" commands, verbatim and in order, on the shipped examples.

Each ``sh`` block runs as one ``bash -e`` script in a directory holding a copy of ``examples/``
and a ``.venv`` (a link to the venv running the tests, the one scripts/test made), as the README
says: ``source .venv/bin/activate`` first, with nothing of ours on PATH before. Then the Python
block runs there with ``.venv/bin/python``. A command that fails fails the test, so the README
cannot drift from what the tools do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.doc_blocks import doc_block

REPO = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def using_it_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block in the README's "Using it" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_the_blocks_are_the_ones_expected() -> None:
    kinds = [kind for kind, _ in using_it_blocks()]
    assert kinds == ["sh", "sh", "python"]
    shell = [code for kind, code in using_it_blocks() if kind == "sh"]
    assert shell == [doc_block("README.md", 1), doc_block("README.md", 2)]


#: What the README's "Using it" says to do first, in the repository root.
ACTIVATE = "source .venv/bin/activate"


def test_the_readme_says_how_the_commands_get_on_the_path() -> None:
    section = (REPO / "README.md").read_text().split("## Using it", 1)[1].split("\n## ", 1)[0]
    assert f"`{ACTIVATE}` first" in section
    assert "`scripts/demo` and `scripts/test` make" in section


def test_readme_using_it_runs_verbatim(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    hint = "run the tests in the venv scripts/test makes (.venv/bin/python -m pytest)"
    assert sys.prefix != sys.base_prefix, hint
    assert (venv / "bin" / "activate").is_file(), hint
    work = tmp_path / "repo"
    shutil.copytree(REPO / "examples", work / "examples")
    (work / ".venv").symlink_to(venv)
    # Nothing of the venv on PATH: the README's own first step puts it there.
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != venv / "bin"
    )
    env = {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "PATH": path,
           "EDGE_AGENT_RUNTIME_DIR": str(tmp_path / "run")}
    outputs = []
    for kind, code in using_it_blocks():
        if kind == "sh":
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", f"{ACTIVATE}\n{code}"], cwd=work, env=env,
                capture_output=True, text=True, timeout=600, check=False,
            )
        else:
            result = subprocess.run(
                [str(work / ".venv" / "bin" / "python"), "-c", code], cwd=work, env=env,
                capture_output=True, text=True, timeout=600, check=False,
            )
        assert result.returncode == 0, f"{kind} block failed:\n{code}\n{result.stderr[-4000:]}"
        outputs.append(result.stdout + result.stderr)
    host, device, _ = outputs
    assert host.count("checks") == 2  # two conversion reports
    assert "FAILED" not in host
    assert "OK:" in host  # verify
    assert "examples/grid-bundle.toml: OK" in device  # check-config
    assert re.search(r"^edge-agentd \S+  pid \d+  running$", device, flags=re.M)  # status
    assert "    group grid: 200 agents" in device
    assert "replayed bundle grid10 1.0.0, int8, signed by" in device
    assert (work / "grid.bundle").is_dir() or (work / "grid.bundle").is_file()
    assert (work / "replay.npz").is_file()
    assert list((work / ".state" / "grid-bundle" / "snapshots").glob("snapshot-*.eas"))
