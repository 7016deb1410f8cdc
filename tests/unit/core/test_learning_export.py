"""A learning group's learned model as ``.npz`` (the pure part of
``edge-agent export-model``): the tables the agents infer with, the counts under pymdp's keys and
``meta_*`` keys the model readers skip; one line for every bad state. The daemon's side (the
snapshot, the config) is tests/integration/daemon/test_learning_export.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.model import load_npz
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.learning_export import learned_arrays
from edge_agent.errors import InputError, ModelError
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model

N = 24


def spec(scope: str = "shared") -> LearningSpec:
    model = tmaze_reversal_model()
    return LearningSpec(
        pA={1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)},
        pB={0: model.B[0] * 5.0 + 0.5 * (model.B[0] > 0)},
        settings=LearningSettings(lr_pA=0.5, lr_pB=0.3, scope=scope),  # type: ignore[arg-type]
        refresh_every=1,
    )


def learned(precision: str = "int8", scope: str = "shared", ticks: int = 10) -> AifAgentGroup:
    group = AifAgentGroup(tmaze_reversal_model(), N, learning=spec(scope), precision=precision)
    env = ReversalTMazeEnv(N, seed=2, reverse_every=3)
    obs = env.reset()
    for _ in range(ticks):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))
    return group


def test_the_export_is_the_model_the_agents_infer_with_and_its_counts(tmp_path: Path) -> None:
    group = learned()
    arrays = learned_arrays(tmaze_reversal_model(), group.learning.spec, group.state_dict(),
                            name="maze")
    path = tmp_path / "learned.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    counts: dict[str, dict[int, np.ndarray]] = {}
    model = load_npz(path, counts=counts)  # the meta_* keys are skipped
    now = group.learning.model
    for mine, theirs in zip((*model.A, *model.B, *model.D, *model.C),
                            (*now.A, *now.B, *now.D, *now.C), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)
    assert group.learning.learner.pA is not None
    assert group.learning.learner.pB is not None
    np.testing.assert_array_equal(counts["A"][1], group.learning.learner.pA.counts[0])
    np.testing.assert_array_equal(counts["B"][0], group.learning.learner.pB.counts[0])
    assert sorted(counts) == ["A", "B"]
    assert int(arrays["meta_version_pA"]) == group.learning.learner.pA.version == 10
    assert int(arrays["meta_reset_at_pA"]) == 0
    np.testing.assert_array_equal(arrays["meta_prior_pA1"], group.learning.learner.pA.prior[0])
    assert str(arrays["meta_scope"]) == "shared"


def test_after_a_reset_the_export_is_the_loaded_model_with_the_priors() -> None:
    group = learned()
    group.learning.forget()
    arrays = learned_arrays(tmaze_reversal_model(), group.learning.spec, group.state_dict())
    loaded = tmaze_reversal_model()
    np.testing.assert_array_equal(arrays["A1"], loaded.A[1])  # not the normalised prior
    np.testing.assert_array_equal(arrays["pA1"], arrays["meta_prior_pA1"])
    assert int(arrays["meta_version_pA"]) == int(arrays["meta_reset_at_pA"]) == 11


def test_per_agent_counts_export_one_agent() -> None:
    group = learned("float64", "per_agent")
    state = group.state_dict()
    assert group.learning.learner.pA is not None
    arrays = learned_arrays(tmaze_reversal_model(), group.learning.spec, state, agent=3)
    np.testing.assert_array_equal(arrays["pA1"], group.learning.learner.pA.counts[0][3])
    np.testing.assert_allclose(arrays["A1"].reshape(-1), group.learning.learner.pA.normalised(0)[3]
                               .reshape(-1), atol=1e-12)
    assert int(arrays["meta_agent"]) == 3


@pytest.mark.parametrize(
    ("scope", "change", "agent", "message"),
    [
        ("shared", {"learn.pA1.values": None}, None, "group 'g': pA1: not in the saved state"),
        ("shared", {"learn.pA1": np.ones((2, 3))}, None, r"pA1: saved with shape \(2, 3\)"),
        ("shared", {"learn.pA1.values": "nan"}, None,
         "pA1: saved counts are negative or not finite"),
        ("shared", {}, 2, "group 'g' learns one set of counts for all its agents"),
        ("per_agent", {}, None, "group 'g' learns per agent: name the agent"),
        ("per_agent", {}, N, rf"pA1: no agent {N} \(the group has {N}: 0..{N - 1}\)"),
    ],
)
def test_a_bad_state_is_one_line(
    scope: str, change: dict[str, object], agent: int | None, message: str
) -> None:
    group = learned("float64", scope, ticks=3)
    state = dict(group.state_dict())
    for key, value in change.items():
        if value is None:
            del state[key]
        elif isinstance(value, str):
            state[key] = np.full_like(state[key], np.nan)
        else:
            state[key] = value  # type: ignore[assignment]
    with pytest.raises(InputError, match=message) as err:
        learned_arrays(tmaze_reversal_model(), group.learning.spec, state, name="g", agent=agent)
    assert "\n" not in str(err.value)


def test_model_readers_skip_meta_keys_and_still_refuse_others(tmp_path: Path) -> None:
    arrays = tmaze_reversal_model().to_npz_dict()
    path = tmp_path / "m.npz"
    np.savez(path, **arrays, meta_note=np.array("from a node"), F0=np.ones(2))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"unexpected key 'F0' .*meta_\* keys are ignored"):
        load_npz(path)
