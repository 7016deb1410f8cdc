"""The figure of docs/fleet-learning.md: ``examples/fleet_learning.py`` runs in its short mode and
draws four curves; what a round merges is the prior plus what the nodes learned, through the
daemon's messages and the hub's checks and merge; the figure in docs/ is one it wrote."""

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
SCRIPT = REPO / "examples" / "fleet_learning.py"
SVG = "{http://www.w3.org/2000/svg}"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_learning", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fleet_learning", module)
    spec.loader.exec_module(module)
    return module


def curves(path: Path) -> dict[str, list[tuple[float, ...]]]:
    root = ET.parse(path).getroot()
    out = {}
    for line in root.iter(f"{SVG}polyline"):
        points = [tuple(float(v) for v in p.split(",")) for p in line.attrib["points"].split()]
        out[line.attrib["data-name"]] = points
    return out


def test_the_script_draws_four_curves_in_its_short_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figure.svg"
    assert script().main(["--smoke", "--out", str(out)]) == 0
    records = {r["condition"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert list(records) == ["frozen", "alone", "fleet", "poisoned"]
    for record in records.values():
        assert len(record["scores"]) == 3
        assert all(0.0 <= s <= 1.0 for s in record["scores"])
    assert "refused_rounds" not in records["alone"]
    # The fleet merged what its nodes sent (the cap may keep less of it, never more) and its
    # counts grew by exactly what the rounds accepted.
    fleet = records["fleet"]
    assert 0.0 < fleet["accepted_mass"] <= fleet["sent_mass"] * (1 + 1e-9)
    assert fleet["fleet_mass"] == pytest.approx(fleet["accepted_mass"], rel=1e-6)
    assert fleet["refused_at_ingest"] == 0
    # The poisoned node passes the ingestion checks (it claims no more mass than its
    # experience allows) and is refused by its score.
    poisoned = records["poisoned"]
    assert poisoned["refused_at_ingest"] == 0
    assert poisoned["refused_rounds"].get("node-5", 0) >= 1
    assert poisoned["accepted_mass"] < poisoned["sent_mass"]
    drawn = curves(out)
    assert sorted(drawn) == ["alone", "fleet", "frozen", "poisoned"]
    assert all(len(points) == 3 for points in drawn.values())


def test_a_round_of_one_node_adds_exactly_what_its_agents_learned() -> None:
    """Through the wire format, the hub's checks and merge: one node (nothing to cap or
    score) gives the prior plus its accumulator, and the node goes on from those counts."""
    module = script()
    node = module.make_node(0, "alone", 4, 0.05, size=5)
    module.step_round(node, 12)
    pB = node.group.learning.learner.pB
    learned = pB.experience[0].astype(np.float64)
    ticks = int(pB.agent_ticks[0])
    assert 0 < ticks <= 4 * 11  # the first tick of an episode has no transition
    assert learned.sum() > 0
    base = module.prior_counts(node.env.model.B[0])
    counts, info = module.hub_round([node], base, base, base.shape)
    np.testing.assert_allclose(counts, base + learned, rtol=1e-6, atol=1e-6)
    assert info["refused"] == []
    assert info["capped"] == []
    assert info["experience"] == ticks
    module.adopt(node, counts)
    np.testing.assert_allclose(pB.counts[0], counts, rtol=1e-6)
    assert not pB.experience[0].any()  # what was reported is not reported again


def test_a_poisoned_delta_keeps_its_mass_on_the_failed_move() -> None:
    module = script()
    columns = np.array([0, 7, 11], dtype=np.uint32)  # (s, u) = (0, 0), (1, 2), (2, 1)
    values = np.zeros((3, 100), dtype=np.float32)
    values[0, 10], values[1, 2], values[2, [3, 2]] = 0.5, 0.25, (0.2, 0.1)
    out = module.poison(columns, values)
    np.testing.assert_allclose(out.sum(axis=1), values.sum(axis=1))
    assert out[0, 0] == 0.5
    assert out[1, 1] == 0.25
    assert out[2, 2] == pytest.approx(0.3)


def test_ticks_to_target_takes_the_first_full_window_at_the_target() -> None:
    module = script()
    scores = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2])
    # Windows of 5: means 0.1, 0.12, 0.14, 0.16, 0.18, 0.2; 0.155 first reached at round 8.
    assert module.ticks_to_target(scores, 0.155, 50) == 8 * 50
    assert module.ticks_to_target(scores, 0.21, 50) is None
    spike = np.array([0.1, 0.1, 0.1, 0.1, 0.5, 0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.2])
    # Means of full windows: 0.18, 0.16, 0.14, 0.16, 0.18, 0.12, 0.16, 0.2; the spike reaches
    # 0.17 at round 5; the run stays there only from the window that ends at round 12.
    assert module.ticks_to_target(spike, 0.17, 50) == 5 * 50
    assert module.ticks_to_stay(spike, 0.17, 50) == 12 * 50
    assert module.ticks_to_stay(spike, 0.21, 50) is None
    np.testing.assert_allclose(module.trailing_mean(scores)[:2], [0.1, 0.1])


def test_the_docs_figure_is_the_scripts() -> None:
    drawn = curves(REPO / "docs" / "fleet-learning.svg")
    assert sorted(drawn) == ["alone", "fleet", "frozen", "poisoned"]
    assert all(len(points) == 40 for points in drawn.values())  # the script's defaults
    text = (REPO / "docs" / "fleet-learning.md").read_text(encoding="utf-8")
    assert "fleet-learning.svg" in text
