"""``edge-agent-host variant`` (``tools/edge_agent_host/converter/aif/variant.py``): a model with
two outcomes or two actions swapped, its counts with it, written where ``convert aif`` reads it;
each mistake one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.model import Counts, load_npz, save_npz
from edge_agent.errors import ModelError
from edge_agent.sim.gridworld import gridworld_model
from edge_agent.sim.tmaze import tmaze_model
from edge_agent_host.cli import main
from edge_agent_host.converter.aif.variant import Swap, make_variant, parse_swap, write_variant


def test_the_t_maze_with_its_reward_outcomes_swapped_is_the_model_with_its_arms_swapped() -> None:
    """``--swap-outcomes 1:1,2`` on the T-maze is the model docs/health.md measures as the
    worse candidate (reward_probs reversed: the cued arm loses with probability 0.98); its
    preferences and every other table are the model's."""
    model = tmaze_model()
    variant, counts = make_variant(model, {}, [parse_swap("1:1,2", "A")])
    swapped = tmaze_model(reward_probs=(0.02, 0.98))
    for mine, theirs in zip(variant.A, swapped.A, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    for mine, theirs in zip(variant.B, model.B, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    for mine, theirs in zip(variant.C, model.C, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert counts == {}
    assert not np.array_equal(variant.A[1], model.A[1])


def test_swapped_actions_and_their_counts() -> None:
    model = gridworld_model(4, 4)
    pB = {0: model.B[0] * 5.0 + 0.25}
    variant, counts = make_variant(model, {"B": pB}, [Swap("B", 0, 1, 3)])
    np.testing.assert_array_equal(variant.B[0][:, :, 1], model.B[0][:, :, 3])
    np.testing.assert_array_equal(variant.B[0][:, :, 3], model.B[0][:, :, 1])
    np.testing.assert_array_equal(variant.B[0][:, :, 0], model.B[0][:, :, 0])
    np.testing.assert_array_equal(counts["B"][0][:, :, 1], pB[0][:, :, 3])
    np.testing.assert_array_equal(pB[0], model.B[0] * 5.0 + 0.25)  # the input is not changed
    # The same swap twice is the model again.
    again, _ = make_variant(variant, {}, [Swap("B", 0, 1, 3)])
    np.testing.assert_array_equal(again.B[0], model.B[0])


@pytest.mark.parametrize(
    ("swap", "problem"),
    [
        (Swap("A", 3, 1, 2), "--swap-outcomes 3:1,2: the model has 3 modalities (0-2)"),
        (Swap("A", 1, 1, 3), "--swap-outcomes 1:1,3: modality 1 has 3 outcomes (0-2)"),
        (Swap("B", 2, 0, 1), "--swap-actions 2:0,1: the model has 2 factors (0-1)"),
        (Swap("B", 1, 0, 1), "--swap-actions 1:0,1: factor 1 has 1 actions (0-0)"),
    ],
)
def test_an_index_the_model_has_not_is_one_line(swap: Swap, problem: str) -> None:
    with pytest.raises(ModelError) as err:
        make_variant(tmaze_model(), {}, [swap])
    assert str(err.value) == problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [("1", "write M:I,J"), ("1:2", "write M:I,J"), ("a:1,2", "write M:I,J"),
     ("1:2,2", "swap two different outcomes")],
)  # fmt: skip
def test_a_malformed_swap_says_its_form(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_swap(text, "A")


def test_the_command_writes_what_convert_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "tmaze.npz"
    save_npz(tmaze_model(), source)
    out = tmp_path / "tmaze-swapped.npz"
    assert main(["variant", str(source), "--swap-outcomes", "1:1,2", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said == (
        f"wrote {out}: {source} with A[1] outcomes 1 and 2 swapped (convert aif makes its "
        "bundle)\n"
    )
    back = load_npz(out)
    np.testing.assert_array_equal(back.A[1], tmaze_model(reward_probs=(0.02, 0.98)).A[1])
    with np.load(out) as data:
        assert str(data["meta_variant"]) == "A[1] outcomes 1 and 2 swapped"
        assert str(data["meta_source"]) == str(source)
    # Counts go with their tables; a suffix other than .npz and nothing to change are refused.
    counts: Counts = {"A": {1: tmaze_model().A[1] * 4 + 1}}
    write_variant(tmp_path / "c.npz", tmaze_model(), counts, source="x", swaps=[])
    assert main(["variant", str(tmp_path / "c.npz"), "--swap-outcomes", "1:0,2",
                 "--out", str(tmp_path / "d.npz")]) == 0  # fmt: skip
    read: Counts = {}
    load_npz(tmp_path / "d.npz", counts=read)
    np.testing.assert_array_equal(read["A"][1][0], counts["A"][1][2])
    capsys.readouterr()
    assert main(["variant", str(source), "--swap-outcomes", "1:1,2", "--out", "x.json"]) == 1
    assert "x.json: a variant is written as .npz" in capsys.readouterr().err
    assert main(["variant", str(source), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "error: nothing to change: give --swap-outcomes or --swap-actions\n"
    )
