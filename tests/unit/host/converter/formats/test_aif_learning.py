"""Learning models through the host tool: counts carried from ``.npz`` and pymdp agents into a
bundle, handed over by the bundle loader, learned by an :class:`AifAgentGroup` that learns."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.model import GenerativeModel, load_npz
from edge_agent.aif.quant import QuantizedModel
from edge_agent.bundle.loader import load_bundle
from edge_agent.cli import main as device_main
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import ModelError
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model
from edge_agent_host.cli import main
from edge_agent_host.converter.aif.options import AifOptions
from edge_agent_host.converter.aif.source import counts_from_pymdp
from edge_agent_host.converter.common import ConvertOptions
from edge_agent_host.converter.formats.aif import convert_pymdp

EXAMPLE = Path(__file__).resolve().parents[5] / "examples" / "tmaze-learning.npz"


def learning_npz(path: Path, **extra: np.ndarray) -> GenerativeModel:
    """The reversal T-maze with weak counts for the reward modality and confident ones for
    the location factor's transitions (``extra`` adds or replaces counts)."""
    model = tmaze_reversal_model()
    arrays = model.to_npz_dict()
    arrays["pA1"] = model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)
    arrays["pB0"] = model.B[0] * 10.0 + 0.5 * (model.B[0] > 0)
    arrays.update(extra)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return model


def run_learning(model: GenerativeModel | QuantizedModel, counts: dict[str, dict[int, np.ndarray]],
                 ticks: int = 24) -> AifAgentGroup:
    spec = LearningSpec(pA=counts.get("A", {}), pB=counts.get("B", {}), pD=counts.get("D", {}),
                        settings=LearningSettings(lr_pA=0.5, lr_pB=0.2, forgetting=0.02),
                        refresh_every=4)
    group = AifAgentGroup(model, 64, learning=spec, precision="int8")
    env = ReversalTMazeEnv(64, seed=3, reverse_every=4)
    obs = env.reset()
    for tick in range(ticks):
        if tick and env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))
    return group


def test_npz_counts_go_through_the_bundle_into_a_learning_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "tmaze.npz"
    learning_npz(source)
    out = tmp_path / "tmaze.tar"
    assert main(["convert", "aif", str(source), "--out", str(out), "--rollouts", "20",
                 "--steps", "4"]) == 0
    assert "pA1, pB0" in capsys.readouterr().out
    bundle = load_bundle(out, trusted_keys=None, require_signature=False)
    assert bundle.manifest.quantization is not None
    assert bundle.manifest.quantization["learning"] == {"counts": ["pA1", "pB0"]}
    carried = bundle.aif_counts()
    given: dict[str, dict[int, np.ndarray]] = {}
    float_model = load_npz(source, counts=given)
    assert sorted(carried) == ["A", "B"]
    assert list(carried["A"]) == [1]
    assert list(carried["B"]) == [0]
    for kind in ("A", "B"):  # carried exactly, in float64
        for index, counts in given[kind].items():
            assert carried[kind][index].dtype == np.float64
            assert np.array_equal(carried[kind][index], counts)
    # The device's model is the bundle's int8 tables; it learns exactly as a group made from
    # the same float model on the host (both quantize it with the same scheme).
    from_bundle = run_learning(QuantizedModel.from_arrays(bundle.aif_arrays()), carried)
    from_npz = run_learning(float_model, given)
    assert from_bundle.learning.learner.pA is not None
    assert from_bundle.learning.learner.pB is not None
    assert from_bundle.learning.learner.pA.version == 24
    assert from_bundle.learning.refreshes == 6
    assert not np.allclose(from_bundle.learning.learner.pA.counts[0], carried["A"][1])  # it learned
    mine_counts = from_bundle.learning.learner.counts
    their_counts = from_npz.learning.learner.counts
    for mine, theirs in zip(mine_counts, their_counts, strict=True):
        for a, b in zip(mine.counts, theirs.counts, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_a_bundle_with_counts_learns_in_replay(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert main(["convert", "aif", str(EXAMPLE), "--out", str(out), "--rollouts", "20",
                 "--steps", "4"]) == 0
    recording = EXAMPLE.parent / "tmaze-reversal-episode.npz"
    learned = tmp_path / "learned.npz"
    assert device_main(["replay", str(out), "--recording", str(recording), "--out",
                        str(learned), "--lr-pA", "1", "--forgetting", "0.05"]) == 0
    with np.load(learned) as data, np.load(EXAMPLE) as model:
        assert data["pA1"].shape == model["pA1"].shape
        # The cued arm now loses: the count of a loss there grew from its prior (0.54).
        assert model["pA1"][2, 1, 0] < 1.0 < data["pA1"][2, 1, 0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pA1": -np.ones((3, 4, 2))}, r"pA1 has negative counts"),
        ({"pA1": np.full((3, 4, 2), np.nan)}, r"pA1 has NaN or infinite counts"),
        ({"pA1": np.ones((3, 4))}, r"pA1 has shape \(3, 4\), expected \(3, 4, 2\)"),
        ({"pB0": np.zeros((4, 4, 4))}, r"pB0 is 0 at .* can never be learned"),
        ({"pA7": np.ones((3, 4, 2))}, r"pA7: counts for modality 7, the model has 3"),
        ({"pD4": np.ones(2)}, r"pD4: counts for factor 4, the model has 2"),
    ],
)
def test_bad_counts_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: dict[str, np.ndarray],
    message: str,
) -> None:
    source = tmp_path / "bad.npz"
    learning_npz(source, **extra)
    out = tmp_path / "bad.tar"
    assert main(["convert", "aif", str(source), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(source) in err
    assert re.search(message, err), err
    assert not out.exists()


def obj_array(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def pymdp_007_agent(model: GenerativeModel, **extra: object) -> SimpleNamespace:
    """A stand-in with pymdp 0.0.7.1's attribute layout (pymdp is not installed here)."""
    return SimpleNamespace(
        A=obj_array(list(model.A)), B=obj_array(list(model.B)), C=obj_array(list(model.C)),
        D=obj_array(list(model.D)), policy_len=1, gamma=16.0, alpha=16.0, use_utility=True,
        use_states_info_gain=True, action_selection="deterministic", sampling_mode="marginal",
        control_fac_idx=[0], **extra,
    )


def test_pymdp_agents_carry_the_counts_they_learn(tmp_path: Path) -> None:
    model = tmaze_reversal_model()
    pA = [a * 4.0 + 0.25 * (a > 0) for a in model.A]
    pD = [d * 2.0 + 1.0 for d in model.D]
    agent = pymdp_007_agent(model, pA=obj_array(pA), modalities_to_learn=[1], pB=None,
                            pD=obj_array(pD))
    counts = counts_from_pymdp(agent, model)
    assert sorted(counts) == ["A", "D"]
    assert list(counts["A"]) == [1]
    assert list(counts["D"]) == [0, 1]
    report = convert_pymdp(
        agent,
        ConvertOptions(out=tmp_path / "b", name="tmaze"),
        AifOptions(rollouts=10, steps=3),
    )
    assert report.bundle is not None
    carried = load_bundle(tmp_path / "b", trusted_keys=None, require_signature=False).aif_counts()
    assert np.array_equal(carried["A"][1], pA[1])
    assert np.array_equal(carried["D"][1], pD[1])
    # pymdp 1.x: a batch of equal counts, pA over the factors of A_dependencies only.
    batch = 2
    deps = [[0], [0, 1], [0, 1]]
    pA_1x = [np.broadcast_to(p, (batch, *p.shape)).copy() for p in pA]
    pA_1x[0] = pA_1x[0][:, :, :, 0]
    jax_like = SimpleNamespace(pA=pA_1x, batch_size=batch, A_dependencies=deps)
    read = counts_from_pymdp(jax_like, model)
    assert list(read["A"]) == [0, 1, 2]
    assert np.array_equal(read["A"][0], pA[0])
    assert np.array_equal(read["A"][2], pA[2])
    with pytest.raises(ModelError, match=r"\.pA has 1 tables, the model has 3 A"):
        counts_from_pymdp(pymdp_007_agent(model, pA=obj_array(pA[:1])), model)
