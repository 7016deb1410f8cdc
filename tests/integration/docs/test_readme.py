"""The README's quick start and "Using it", verbatim and in order, in the venv the README makes.

The ``readme_venv`` fixture (:mod:`tests.support.readme_venv`) ran ``scripts/demo`` in a fresh
copy of the checkout (it made ``.venv`` without extras, then ran the demo) and then "Using it"'s
install block. Here the demo's output has the shape the quick start describes; "Using it"'s other
``sh`` blocks run, each as one ``bash -e`` script after ``source .venv/bin/activate``, in a
directory holding a copy of ``examples/`` and ``.venv`` (that venv), with nothing of ours on
PATH; then the Python block with ``.venv/bin/python``. A command that fails fails the test, so
the README cannot drift from what the tools do, nor from the venv it names.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.doc_blocks import ROOT, doc_block
from tests.support.readme_venv import ACTIVATE, ReadmeVenv

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]


def section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def using_it_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block in the README's "Using it" section."""
    return re.findall(r"```(\w+)\n(.*?)```", section("Using it"), flags=re.S)


def test_the_blocks_are_the_ones_expected() -> None:
    kinds = [kind for kind, _ in using_it_blocks()]
    assert kinds == ["sh", "sh", "sh", "python"]
    shell = [code for kind, code in using_it_blocks() if kind == "sh"]
    assert shell == [doc_block("README.md", 1), doc_block("README.md", 2),
                     doc_block("README.md", 3)]  # fmt: skip
    assert shell[0].splitlines()[0] == ACTIVATE


def test_the_readme_says_how_the_commands_get_on_the_path() -> None:
    text = section("Using it")
    assert f"`{ACTIVATE}` first" in text
    assert "`scripts/demo` and `scripts/test` make" in text


def test_the_demo_prints_what_the_quick_start_describes(readme_venv: ReadmeVenv) -> None:
    """``scripts/demo``'s report: a line of the daemon (the budget as reserved, beside RSS),
    then a line per group, its agent count once, what the agents achieved beside references,
    and no ``nan`` (``n/a`` before a mean has anything)."""
    out = readme_venv.demo
    assert "nan" not in out, out[-3000:]
    assert re.search(r"READY: .* 2000 agents, .* budget \S+ \S+ of \S+ \S+ reserved$", out,
                     flags=re.M), out[-3000:]  # fmt: skip
    daemon = re.findall(
        r"tick \d+ @ [\d.]+ Hz \| p50 [\d.]+ ms p99 [\d.]+ ms \| overruns \d+ \| RSS [\d.]+ \S+ "
        r"\| budget [\d.]+ \S+ reserved of [\d.]+ \S+$",
        out,
        flags=re.M,
    )
    assert len(daemon) >= 2, out[-3000:]  # every two seconds
    grid = re.findall(r"^.* grid +1000 agents int8 \| .*$", out, flags=re.M)
    tmaze = re.findall(r"^.* tmaze +1000 agents int8 \| .*$", out, flags=re.M)
    assert len(grid) == len(tmaze) == len(daemon), out[-3000:]
    for line in grid + tmaze:
        assert line.count("agents") == 1, line  # the count once
    steps = re.compile(
        r"mean_steps_to_goal ([\d.]+|n/a) \(fewest possible 9\.09, random walk 650\), at_goal"
    )
    assert all(steps.search(line) for line in grid), grid
    trials = re.compile(
        r"rewards_per_trial ([\d.]+|n/a) \(cue then its arm 0\.98, an arm at random 0\.5\), "
        r"losses_per_trial ([\d.]+|n/a) \(cue then its arm 0\.02, an arm at random 0\.5\)"
    )
    found = [trials.search(line) for line in tmaze]
    assert all(found), tmaze
    # What the agents achieve, as the quick start says: the T-maze's agents follow the cue.
    last = found[-1]
    assert last is not None
    assert float(last.group(1)) > 0.9
    assert float(last.group(2)) < 0.1


def test_readme_using_it_runs_verbatim(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    # The README's venv, not the suite's: it has the host extra the install block added, and
    # nothing of the suite's (no pytest).
    python = str(readme_venv.bin / "python")
    env = readme_venv.env()
    probe = subprocess.run([python, "-c", "import onnx, onnxruntime; import pytest"], env=env,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert "No module named 'pytest'" in probe.stderr, probe.stderr
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "examples", work / "examples")
    readme_venv.link_into(work)
    # Nothing of the venv on PATH: the README's own first step puts it there.
    env = {**readme_venv.env(EDGE_AGENT_RUNTIME_DIR=str(tmp_path / "run"))}
    env["PATH"] = env["PATH"].split(":", 1)[1]
    env.pop("VIRTUAL_ENV")
    outputs = []
    for kind, code in using_it_blocks()[1:]:  # the install block ran in the fixture
        if kind == "sh":
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", f"{ACTIVATE}\n{code}"], cwd=work, env=env,
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
        else:
            result = subprocess.run(
                [str(work / ".venv" / "bin" / "python"), "-c", code], cwd=work, env=env,
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
        assert result.returncode == 0, f"{kind} block failed:\n{code}\n{result.stderr[-4000:]}"
        outputs.append(result.stdout + result.stderr)
    host, device, _ = outputs
    assert host.count("checks") == 2  # two conversion reports, the ONNX one too
    assert "bundle policy.bundle:" in host
    assert "FAILED" not in host
    assert "OK:" in host  # verify
    assert "examples/grid-bundle.toml: OK" in device  # check-config
    assert re.search(r"^edge-agentd \S+  pid \d+  running$", device, flags=re.M)  # status
    assert "    group grid: 200 agents" in device
    assert "replayed bundle grid10 1.0.0, int8, signed by" in device
    assert (work / "grid.bundle").is_dir() or (work / "grid.bundle").is_file()
    assert (work / "replay.npz").is_file()
    assert list((work / ".state" / "grid-bundle" / "snapshots").glob("snapshot-*.eas"))
