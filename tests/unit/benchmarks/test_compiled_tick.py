"""The compiled learning tick (edge_agent/aif/kernels/native/tick.c, driven on its own by
benchmarks/prototypes/compiled_tick.py) does the numpy group's work: the same posteriors,
expected free energies, policy posteriors, counts, learned tables and summed experience as
``AifAgentGroup`` learning per agent, or with shared counts refreshed every tick (float64;
pymdp 0.0.7.1's maths), up to rounding, tick after tick, episode starts included; its actions
optimal under the group's posterior. Its rate in ``bench_learning_peers.py`` is only worth
quoting while this holds.

The group it is checked against steps with numpy (``EDGE_AGENT_NATIVE_TICK=0``: a per-agent
group would otherwise step with this kernel). The baseline build needs a C compiler (``cc``;
``apt-get install gcc``): scripts/test installs one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_learning_peers import write_workload  # noqa: E402
from peers.learning import GAMMA, NUM_ITER, EdgeAgent, load  # noqa: E402
from peers.world import ClosedLoopWorld, load_workload  # noqa: E402
from prototypes.compiled_tick import CompiledTick  # noqa: E402

from edge_agent.aif.learning import LearningSettings, LearningSpec  # noqa: E402
from edge_agent.aif.model import GenerativeModel  # noqa: E402
from edge_agent.core.agents import AifAgentGroup  # noqa: E402

TOL = 1e-9


def _marginals(q_pi: np.ndarray, policies_first: np.ndarray, controls: int) -> np.ndarray:
    return q_pi @ np.eye(controls)[policies_first]


def _group(w: dict[str, Any], n: int, scope: str) -> EdgeAgent:
    """The bench's edge-agent side learning ``scope``, float64 whatever the scope (the bench's
    shared rows are int8; the prototype's arithmetic is float64)."""
    side = EdgeAgent(w, n, 1, "per_agent")
    if scope == "shared":
        spec = LearningSpec(pA={w["m"]: w["p"]}, refresh_every=1,
                            settings=LearningSettings(lr_pA=1.0, scope="shared"))
        side.group = AifAgentGroup(GenerativeModel.from_arrays(w["A"], w["B"], w["C"], w["D"]),
                                   n, settings=side.group.settings, precision="float64",
                                   learning=spec)
    return side


# The kernel steps agents in blocks of 8: 40 fills five, 13 leaves a partial one, 1 only that;
# its baseline version too, which an x86-64 CPU with AVX2 would not otherwise run.
@pytest.mark.parametrize("case", [
    ("tmaze", 1, 40, False, "per_agent"), ("tmaze", 2, 40, False, "per_agent"),
    ("grid10", 0, 40, False, "per_agent"), ("tmaze", 1, 13, False, "per_agent"),
    ("tmaze", 2, 1, False, "per_agent"), ("grid10", 0, 13, False, "per_agent"),
    ("tmaze", 1, 13, True, "per_agent"), ("grid10", 0, 13, True, "per_agent"),
    ("tmaze", 1, 40, False, "shared"), ("tmaze", 2, 13, False, "shared"),
    ("grid10", 0, 13, False, "shared"), ("tmaze", 1, 1, True, "shared")],
    ids=lambda c: f"{c[0]}-A{c[1]}-n{c[2]}-{c[4]}{'-baseline' if c[3] else ''}")
def test_the_compiled_tick_is_the_group_up_to_rounding(
    case: tuple[str, int, int, bool, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, index, n, baseline_only, scope = case
    monkeypatch.setenv("EDGE_AGENT_NATIVE_TICK", "0")
    ticks = 60
    path = tmp_path / f"{world}.npz"
    write_workload(world, "A", index, n, path)
    w = load(str(path))
    group_side = _group(w, n, scope)
    group = group_side.group
    proto = CompiledTick(w["A"], w["B"], w["C"], w["D"], {w["m"]: w["p"]}, n=n,
                         gamma=GAMMA, num_iter=NUM_ITER, baseline_only=baseline_only,
                         scope=scope)
    counts = group.learning.learner.counts[0]  # type: ignore[union-attr]
    # The world is stepped by the group's actions, episode starts included (the prototype's
    # actions are checked, then replaced by the group's: a tie may be broken either way).
    env = ClosedLoopWorld(load_workload(str(path)), n, seed=1)
    obs, start = env.reset()
    starts = 0
    for _ in range(ticks):
        starts += int(start.sum())
        actions = group_side.act(obs, start).copy()
        proto.act(obs, start)
        for mine, theirs in zip(proto.qs, group.state.qs, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOL)
        np.testing.assert_allclose(proto.G, group.state.G, rtol=0, atol=TOL)
        np.testing.assert_allclose(proto.q_pi, group.state.q_pi, rtol=0, atol=TOL)
        learned = proto.pA[0]
        np.testing.assert_allclose(learned, counts.counts[0].reshape(learned.shape), rtol=0,
                                   atol=TOL)
        table = group.path.likelihood(np.arange(n))[w["m"]]
        if scope == "shared":
            table = np.asarray(table)[None]
        np.testing.assert_allclose(proto.A[0], table.reshape(proto.A[0].shape), rtol=0, atol=TOL)
        seen = proto.experience[0]
        np.testing.assert_allclose(seen, counts.experience[0].reshape(seen.shape), rtol=0,
                                   atol=TOL * n)
        for f, u in enumerate(proto.kernel.num_controls):
            marginal = _marginals(group.state.q_pi, proto.kernel.policies_first[:, f], int(u))
            chosen = marginal[np.arange(n), proto.action[:, f]]
            assert np.all(chosen >= marginal.max(axis=1) - TOL)
        proto.action[...] = actions
        obs, start = env.step(actions)
    assert starts > n  # the episodes' starts were stepped through, not only the first


def test_the_compiled_tick_refuses_a_model_above_its_limits() -> None:
    states = 200  # a joint state above the kernel's stack arrays
    A = [np.full((2, states), 0.5)]
    with pytest.raises(ValueError, match="joint 200 above the compiled tick's 128"):
        CompiledTick(A, [np.eye(states)[:, :, None]], [np.zeros(2)],
                     [np.full(states, 1.0 / states)], {0: A[0] * 2}, n=2)
