"""Behaviour of the batched agents: int8 vs the float64 oracle, and what agents actually do."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif import agreement
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import SparseColumns, quantize_model
from edge_agent.aif.reference import ReferenceAgent
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError, ModelError
from edge_agent.sim.gridworld import GridWorldEnv, gridworld_model
from edge_agent.sim.tmaze import CUE_LOCATION, CUE_MODALITY, LOCATION_MODALITY, TMazeEnv


def random_model(
    rng: np.random.Generator,
    num_states: tuple[int, ...],
    num_obs: tuple[int, ...],
    num_controls: tuple[int, ...],
    *,
    sparsity: float = 0.0,
) -> GenerativeModel:
    """Dirichlet tables; with ``sparsity`` > 0 some entries are exact zeros."""

    def dist(shape: tuple[int, ...]) -> np.ndarray:
        p = rng.dirichlet(np.ones(shape[0]) * 0.7, size=shape[1:])
        p = np.moveaxis(p, -1, 0)
        if sparsity:
            p = np.where(rng.random(p.shape) < sparsity, 0.0, p)
            p[0][p.sum(axis=0) == 0] = 1.0
            p = p / p.sum(axis=0, keepdims=True)
        return p

    A = [dist((o, *num_states)) for o in num_obs]
    B = [dist((s, s, u)) for s, u in zip(num_states, num_controls, strict=True)]
    C = [rng.normal(size=o) for o in num_obs]
    D = [rng.dirichlet(np.ones(s)) for s in num_states]
    return GenerativeModel.from_arrays(A, B, C, D)


MODELS = {
    "single": ((8,), (6, 4), (3,)),
    "multi": ((3, 4), (4, 3, 5), (2, 3)),
    "three_factors": ((2, 3, 2), (3, 4), (2, 1, 2)),
}


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-300, None)
    q = np.clip(q, 1e-300, None)
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("precision", ["float64", "int8"])
def test_beliefs_and_policy_posteriors_are_distributions(name: str, precision: str) -> None:
    rng = np.random.default_rng(1)
    model = random_model(rng, *MODELS[name], sparsity=0.3)
    group = AifAgentGroup(model, 64, precision=precision, settings=AifSettings(policy_len=2))  # type: ignore[arg-type]
    for _ in range(6):
        obs = np.stack([rng.integers(0, o, 64) for o in model.num_obs], axis=1)
        group.step(obs)
        for q in group.qs:
            assert np.all(q >= 0)
            np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
        assert np.all(group.q_pi >= 0)
        np.testing.assert_allclose(group.q_pi.sum(axis=1), 1.0, atol=1e-5)
        assert np.all(np.isfinite(group.G))


def test_quantized_tables_respect_their_documented_bound() -> None:
    rng = np.random.default_rng(2)
    model = random_model(rng, (6, 5), (7, 3), (3, 2), sparsity=0.4)
    q = quantize_model(model)
    deq = q.dequantize()
    bounds = q.error_bounds()
    for name, exact, approx in [
        *((f"A{m}", a, b) for m, (a, b) in enumerate(zip(model.A, deq.A, strict=True))),
        *((f"B{f}", a, b) for f, (a, b) in enumerate(zip(model.B, deq.B, strict=True))),
        *((f"D{f}", a, b) for f, (a, b) in enumerate(zip(model.D, deq.D, strict=True))),
    ]:
        zero = exact == 0
        assert np.array_equal(approx == 0, zero), f"{name}: zeros must stay exact zeros"
        err = np.abs(np.log(approx[~zero]) - np.log(exact[~zero])).max()
        assert err <= bounds[name] + 1e-6, f"{name}: {err} > bound {bounds[name]}"
    for m, (c_exact, c_approx) in enumerate(zip(model.C, deq.C, strict=True)):
        assert np.abs(c_exact - c_approx).max() <= bounds[f"C{m}"] + 1e-12


def test_an_all_zero_preference_vector_has_an_error_bound_of_zero() -> None:
    rng = np.random.default_rng(2)
    model = random_model(rng, (6, 5), (7, 3), (3, 2))
    flat = GenerativeModel.from_arrays(
        model.A, model.B, [np.zeros_like(c) for c in model.C], model.D
    )
    q = quantize_model(flat)
    assert all(np.array_equal(c, np.zeros_like(c)) for c in q.dequantize().C)
    assert [q.error_bounds()[f"C{m}"] for m in range(flat.num_modalities)] == [0.0, 0.0]
    assert quantize_model(model).error_bounds()["C0"] > 0.0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_one_step_posterior_within_bound_of_reference(name: str) -> None:
    """Given the same prior, |ln q_int8 - ln q_ref| <= 2 * (eps_A + eps_D) + float32 slack."""
    rng = np.random.default_rng(3)
    model = random_model(rng, *MODELS[name])
    qmodel = quantize_model(model)
    bounds = qmodel.error_bounds()
    eps = sum(bounds[f"A{m}"] for m in range(model.num_modalities))
    eps += max(bounds[f"D{f}"] for f in range(model.num_factors))
    n = 200
    obs = np.stack([rng.integers(0, o, n) for o in model.num_obs], axis=1)
    group = AifAgentGroup(qmodel, n, precision="int8")
    group.infer_states(obs)
    worst = 0.0
    for i in range(n):
        ref = ReferenceAgent(model)
        qs = ref.infer_states(obs[i])
        if model.num_factors == 1:
            worst = max(worst, float(np.abs(np.log(group.qs[0][i]) - np.log(qs[0])).max()))
    if model.num_factors == 1:
        assert worst <= 2 * eps + 1e-4
        return
    # Mean-field fixed-point iteration has no closed-form bound: a perturbed table can stop the
    # iteration at another point (docs/quantization.md). The kernels themselves are exact: they
    # match the float64 oracle run on the dequantized tables; the quantization cost is small for
    # most agents.
    dequantized = qmodel.dequantize()
    for f in range(model.num_factors):
        on_codes = np.stack([ReferenceAgent(dequantized).infer_states(o)[f] for o in obs])
        assert kl(on_codes, group.qs[f].astype(np.float64)).max() < 1e-5
        exact = np.stack([ReferenceAgent(model).infer_states(o)[f] for o in obs])
        assert np.median(kl(exact, group.qs[f].astype(np.float64))) < 1e-3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_rollouts_agree_with_float_reference(name: str) -> None:
    """Closed loop over many steps: small belief KL and near-total action agreement."""
    rng = np.random.default_rng(4)
    model = random_model(rng, *MODELS[name])
    n, steps = 40, 12
    int8 = AifAgentGroup(model, n, precision="int8", settings=AifSettings(policy_len=1))
    refs = [ReferenceAgent(model) for _ in range(n)]
    agree = total = 0
    kls = []
    onehot = int8.cm.tree.first_action_onehot
    for _ in range(steps):
        obs = np.stack([rng.integers(0, o, n) for o in model.num_obs], axis=1)
        int8.infer_states(obs)
        int8.infer_policies()
        ref_actions = []
        for i, ref in enumerate(refs):
            qs = ref.infer_states(obs[i])
            ref.infer_policies()
            ref_actions.append(ref.sample_action())
            kls.append(max(float(kl(qs[f], int8.qs[f][i])) for f in range(model.num_factors)))
        actions = int8.sample_action()
        ref_arr = np.array(ref_actions)
        # Tie-aware: the int8 action is optimal under the reference posterior (to rounding).
        ref_q_pi = np.stack([ref.q_pi for ref in refs])
        agree += int(agreement.actions_agree(ref_q_pi, onehot, actions).sum())
        total += n
        # Keep both on the same trajectory: the int8 agents follow the reference's actions.
        int8.set_action(ref_arr)
    # Medians: multi-factor mean-field can amplify quantization for a few agents (see above).
    assert np.median(kls) < 1e-4
    assert np.percentile(kls, 90) < 1e-2
    assert agree / total >= 0.95


def test_float64_group_equals_reference_with_long_policies() -> None:
    rng = np.random.default_rng(5)
    model = random_model(rng, (5, 3), (4, 3), (3, 2))
    settings = AifSettings(policy_len=3)
    group = AifAgentGroup(model, 3, precision="float64", settings=settings)
    refs = [ReferenceAgent(model, settings) for _ in range(3)]
    np.testing.assert_array_equal(group.cm.tree.policies, refs[0].policies)
    for _ in range(4):
        obs = np.stack([rng.integers(0, o, 3) for o in model.num_obs], axis=1)
        actions = group.step(obs).copy()
        onehot = group.cm.tree.first_action_onehot
        for i, ref in enumerate(refs):
            expected = ref.step(obs[i])
            np.testing.assert_allclose(group.q_pi[i], ref.q_pi, rtol=1e-7, atol=1e-10)
            # Either side's action is optimal under the other's posterior (ties go either way).
            assert agreement.actions_agree(ref.q_pi[None], onehot, actions[i : i + 1], tol=1e-9)
            assert agreement.actions_agree(group.q_pi[i : i + 1], onehot, expected[None], tol=1e-9)
            ref.action = actions[i].copy()


@pytest.mark.parametrize("precision", ["float64", "int8"])
def test_tmaze_agents_visit_the_cue_then_the_rewarded_arm(precision: str) -> None:
    n = 500
    env = TMazeEnv(n, seed=7)
    group = AifAgentGroup(env.model, n, precision=precision)  # type: ignore[arg-type]
    obs = env.reset()
    first = group.step(obs)[:, 0].copy()
    assert np.all(first == CUE_LOCATION), "every agent should go for the cue first"
    obs = env.step(group.action)
    assert np.all(obs[:, LOCATION_MODALITY] == CUE_LOCATION)
    second = group.step(obs)[:, 0].copy()
    # cue 0 -> reward on the right (location 1), cue 1 -> reward on the left (location 2)
    expected_arm = obs[:, CUE_MODALITY] + 1
    np.testing.assert_array_equal(second, expected_arm)
    np.testing.assert_array_equal(expected_arm, env.conditions + 1)


@pytest.mark.parametrize("precision", ["float64", "int8"])
def test_grid_agents_reach_their_goal(precision: str) -> None:
    n = 300
    env = GridWorldEnv(n, height=10, width=10, goal=(9, 9), noise=0.1, seed=3)
    group = AifAgentGroup(env.model, n, precision=precision)  # type: ignore[arg-type]
    obs = env.reset()
    for _ in range(40):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))
    # From any cell the goal is at most 18 moves away; with noisy localisation allow 40 steps.
    assert np.all(env.goals_reached >= 1), f"{int((env.goals_reached == 0).sum())} never arrived"


def test_grid_model_uses_sparse_transitions_and_fits_memory_target() -> None:
    model = gridworld_model(10, 10, goal=(9, 9), noise=0.1)
    q = quantize_model(model)
    assert isinstance(q.B[0], SparseColumns)
    assert q.B[0].values is None
    assert q.B[0].nbytes == 100 * 5 * 2  # one uint16 target per (state, action)
    group = AifAgentGroup(model, 10, precision="int8", history_capacity=64)
    assert group.per_agent_nbytes() <= 8 * 1024


def test_bad_input_is_refused_with_a_clear_error() -> None:
    rng = np.random.default_rng(6)
    model = random_model(rng, (4,), (3,), (2,))
    group = AifAgentGroup(model, 5)
    with pytest.raises(InputError, match=r"obs has shape \(5,\), expected \(5, 1\)"):
        group.step(np.zeros(5, dtype=int))
    with pytest.raises(InputError, match=r"out of range \[0, 3\)"):
        group.step(np.full((5, 1), 3))
    with pytest.raises(InputError, match="integer"):
        group.step(np.zeros((5, 1), dtype=float))
    with pytest.raises(InputError, match=r"actions on factor 0 must be in \[0, 2\)"):
        group.set_action(np.full((5, 1), 2))
    bad_A = model.A[0].copy()
    bad_A[0, 0] = np.nan
    with pytest.raises(ModelError, match="A0 contains 1 NaN"):
        GenerativeModel.from_arrays([bad_A], list(model.B))
    with pytest.raises(ModelError, match="A0 is not normalised"):
        GenerativeModel.from_arrays([model.A[0] * 0.5], list(model.B))
    with pytest.raises(ModelError, match=r"A0 has shape \(3, 5\)"):
        GenerativeModel.from_arrays([np.full((3, 5), 1 / 3)], list(model.B))


def test_step_without_recording_leaves_the_history_alone() -> None:
    env = GridWorldEnv(20, seed=1)
    group = AifAgentGroup(env.model, 20, history_capacity=8)
    obs = env.reset()
    group.step(obs)
    assert group.history is not None
    rows, total = len(group.history), group.history.total_appended
    before = group.history.window("qs").copy()
    group.step(obs, record=False)
    assert (len(group.history), group.history.total_appended) == (rows, total)
    np.testing.assert_array_equal(group.history.window("qs"), before)
    group.step(obs)
    assert group.history.total_appended == total + 1


def test_groups_on_the_same_model_share_one_compiled_copy() -> None:
    model = gridworld_model(5, 5, goal=(4, 4))
    a = AifAgentGroup(model, 3)
    b = AifAgentGroup(model, 7, seed=1)
    assert a.cm is b.cm  # counted once in the budget, and held once in memory
    assert AifAgentGroup(model, 3, precision="float64").cm is not a.cm
    assert AifAgentGroup(model, 3, settings=AifSettings(policy_len=2)).cm is not a.cm


@pytest.mark.parametrize("name", ["grid", "tmaze"])
def test_map_histories_record_each_factors_most_probable_state_in_a_few_bytes(name: str) -> None:
    env = GridWorldEnv(40, seed=3) if name == "grid" else TMazeEnv(40, seed=3)
    full = AifAgentGroup(env.model, 40, history_capacity=16, block_size=16)
    compact = AifAgentGroup(
        env.model, 40, history_capacity=16, block_size=16, history_beliefs="map"
    )
    obs = env.reset()
    for _ in range(5):
        actions = full.step(obs)
        compact.step(obs)
        obs = env.step(actions)
    assert compact.history is not None
    assert full.history is not None
    np.testing.assert_array_equal(compact.history.window("obs"), full.history.window("obs"))
    # The newest row: per factor, the state the posterior favours and round(p * 255).
    idx = compact.history.window("qs_map", 1)[0]
    codes = compact.history.window("qs_p", 1)[0]
    for f, q in enumerate(compact.qs):
        top = q[np.arange(40), idx[:, f].astype(np.intp)]
        np.testing.assert_array_equal(top, q.max(axis=1))  # idx is a most probable state
        np.testing.assert_array_equal(codes[:, f], np.floor(top * 255.0 + 0.5).astype(np.uint8))
    F, S = env.model.num_factors, sum(env.model.num_states)
    saved = full.per_agent_nbytes() - compact.per_agent_nbytes()
    per_row = S - F * (compact.history.window("qs_map", 1).itemsize + 1)
    assert saved == 16 * per_row + per_row - compact.dtype.itemsize  # ring + staged row
    assert full.nbytes - compact.nbytes == saved * 40  # what is allocated is what is counted
    with pytest.raises(InputError, match="history_beliefs must be"):
        AifAgentGroup(env.model, 4, history_capacity=4, history_beliefs="top3")  # type: ignore[arg-type]


def test_beliefs_are_restored_even_when_the_history_layout_changed() -> None:
    env = GridWorldEnv(10, seed=2)
    full = AifAgentGroup(env.model, 10, history_capacity=8)
    obs = env.reset()
    for _ in range(3):
        obs = env.step(full.step(obs))
    compact = AifAgentGroup(env.model, 10, history_capacity=8, history_beliefs="map")
    compact.load_state_dict(full.state_dict())
    for mine, theirs in zip(compact.qs, full.qs, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert compact.history is not None
    assert len(compact.history) == 0  # the old layout's history is not carried over


@pytest.mark.parametrize(
    ("workload", "policy_len"), [("grid10", 1), ("grid10", 2), ("tmaze", 1), ("explorer", 3)]
)
def test_a_tick_allocates_no_block_sized_temporaries(workload: str, policy_len: int) -> None:
    """Every fast path, every tick: the peak of what a step allocates stays small and does not
    grow with the group (numpy's own ufunc buffers are 64 KiB), while the group's scratch is
    megabytes. Gathers into scratch with numpy's default ``take(mode="raise")`` went through a
    temporary the size of their output (0.7-3 MB a tick here)."""
    import tracemalloc

    from edge_agent.sim.registry import make_env

    n = 3000
    env = make_env(workload, n, seed=1)
    settings = AifSettings(policy_len=policy_len)
    group = AifAgentGroup(env.model, n, settings=settings, history_capacity=16)
    assert group.scratch_nbytes(n) > 900_000
    obs = env.reset()
    for tick in range(12):  # past first visits: block views and tables are made once
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs, now=float(tick)))
    worst = 0
    tracemalloc.start()
    try:
        for tick in range(12, 20):
            if env.episode_start.any():
                group.reset(env.episode_start)
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            actions = group.step(obs, now=float(tick))
            _, peak = tracemalloc.get_traced_memory()
            worst = max(worst, peak - before)
            obs = env.step(actions)
    finally:
        tracemalloc.stop()
    assert worst < 256 * 1024, f"a tick allocated {worst / 1024:.0f} KB at its peak"


@pytest.mark.parametrize("every", [1, 3])
def test_warm_up_steps_one_block_and_puts_its_state_back(
    every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """warm_up runs the kernels on the first block only and leaves every agent's state (and
    the history) as it was; the next step gives what it gives without a warm-up."""
    from edge_agent.aif.planning import EVERY_TICK, PlanningPolicy

    policy = EVERY_TICK if every == 1 else PlanningPolicy(every=every)
    env = GridWorldEnv(5 * 32, seed=2)
    warm, cold = (
        AifAgentGroup(env.model, 5 * 32, block_size=32, history_capacity=3, planning=policy)
        for _ in range(2)
    )
    obs = env.reset()
    for g in (warm, cold):
        g.step(obs)
    nxt = env.step(warm.action.copy())
    before = {k: np.array(v) for k, v in warm.state_dict().items()}
    stepped: list[int] = []
    step_block = warm.stepper.step_block

    def spy(state: Any, rows: Any, *args: Any, **kwargs: Any) -> None:
        stepped.append(rows.sl.start)
        step_block(state, rows, *args, **kwargs)

    monkeypatch.setattr(warm.stepper, "step_block", spy)
    warm.warm_up(nxt)
    monkeypatch.undo()
    assert stepped == [0]  # the first block only
    after = warm.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)
    np.testing.assert_array_equal(warm.step(nxt), cold.step(nxt))
    for a, b in zip(warm.qs, cold.qs, strict=True):
        np.testing.assert_array_equal(a, b)
