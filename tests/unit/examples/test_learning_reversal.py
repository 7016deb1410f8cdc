"""The reward-rate figure of docs/learning.md: ``examples/learning_reversal.py`` runs in its short
mode and writes an SVG with the three curves; the figure in docs/ is one it wrote."""

from __future__ import annotations

import importlib.util
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "examples" / "learning_reversal.py"
SVG = "{http://www.w3.org/2000/svg}"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("learning_reversal", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("learning_reversal", module)
    spec.loader.exec_module(module)
    return module


def curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    root = ET.parse(path).getroot()
    out = {}
    for line in root.iter(f"{SVG}polyline"):
        points = [tuple(float(v) for v in p.split(",")) for p in line.attrib["points"].split()]
        out[line.attrib["data-name"]] = points
    return out


def test_the_script_draws_three_curves_in_its_short_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figure.svg"
    assert script().main(["--smoke", "--out", str(out)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["condition"] for r in records] == ["frozen", "learning", "forgetting"]
    for record in records:
        assert record["trials"] == 12
        assert len(record["ticks_to_relearn"]) == 2  # reversals after trials 4 and 8
        assert -0.34 <= record["mean_reward_rate"] <= 0.34
    drawn = curves(out)
    assert sorted(drawn) == ["forgetting", "frozen", "learning"]
    assert all(len(points) == 12 for points in drawn.values())


def test_ticks_to_relearn_counts_ticks_until_half_the_loss_is_won_back() -> None:
    module = script()
    rates = np.array([0.3, 0.3, 0.3, 0.3, -0.3, -0.3, -0.1, 0.2, 0.3, 0.3, 0.3, 0.3])
    # Reversal after trial 4: level (0.3 - 0.3) / 2 - 0.02 = -0.02; -0.1 is below it, 0.2 (the
    # 4th trial of the phase) is the first at or above it: 4 trials of 3 ticks. After trial 8:
    # nothing was lost, the phase's 2nd trial is back (the first is never counted).
    assert module.ticks_to_relearn(rates, 4) == [12, 6]
    assert module.ticks_to_relearn(np.array([0.3, 0.3, -0.3, -0.3]), 2) == [None]


def test_the_docs_figure_is_the_scripts() -> None:
    drawn = curves(REPO / "docs" / "learning-reversal.svg")
    assert sorted(drawn) == ["forgetting", "frozen", "learning"]
    assert all(len(points) == 120 for points in drawn.values())  # the script's defaults
    assert "learning-reversal.svg" in (REPO / "docs" / "learning.md").read_text(encoding="utf-8")
