"""The incremental refresh of a learned likelihood: after a table's first
refresh, a refresh brings only the columns touched since the last one into the compiled tables
(``kernels.refresh_likelihood``), and what it gives equals a full compile of the same model up to
rounding, for every compiled table (the planners' included), int8 and float; past the first
one it writes into the group's own tables, never into those the group was loaded with."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.learning_experience import experience_ticks
from edge_agent.aif.learning_kernels import normalise
from edge_agent.aif.learning_storage import saved_counts
from edge_agent.aif.quant import encode_log_u8
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.sim.registry import builtin_model, make_env


def assert_same_tables(mine: Any, full: Any, where: str, rtol: float) -> None:
    """Every array of two compiled models (dataclasses, tuples, arrays) equal up to rounding
    (a dataclass's fields that are not compared, such as a refresh's cache, left out)."""
    if dataclasses.is_dataclass(mine) and not isinstance(mine, type):
        assert type(mine) is type(full), where
        for f in dataclasses.fields(mine):
            if not f.compare:
                continue
            assert_same_tables(getattr(mine, f.name), getattr(full, f.name), f"{where}.{f.name}",
                               rtol)
    elif isinstance(mine, (tuple, list)):
        assert isinstance(full, (tuple, list)), where
        assert len(mine) == len(full), where
        for i, (a, b) in enumerate(zip(mine, full, strict=True)):
            assert_same_tables(a, b, f"{where}[{i}]", rtol)
    elif isinstance(mine, np.ndarray):
        assert isinstance(full, np.ndarray), where
        assert mine.shape == full.shape, where
        if np.issubdtype(mine.dtype, np.floating):
            np.testing.assert_allclose(mine, full, rtol=rtol, atol=rtol * 1e-3, err_msg=where)
        else:
            np.testing.assert_array_equal(mine, full, err_msg=where)
    elif isinstance(mine, dict):
        assert mine.keys() == full.keys(), where
        for key in mine:
            assert_same_tables(mine[key], full[key], f"{where}[{key!r}]", rtol)
    else:
        assert mine == full, where


def steps_checking_refreshes(group: AifAgentGroup, env: Any, ticks: int) -> int:
    """``ticks`` steps of ``group`` in ``env``; after each incremental refresh, the group's
    compiled model equals ``compile_model`` of the model it now infers with (int8: its codes),
    table by table. Returns how many were checked."""
    obs = env.reset()
    rtol = 1e-5 if group.quantized is not None else 1e-12
    checked = 0
    for _ in range(ticks):
        before = group.learning.incremental_refreshes
        obs = env.step(group.step(obs))
        if group.learning.incremental_refreshes == before:
            continue
        source = group.quantized if group.quantized is not None else group.learning.model
        full = kernels.compile_model(source, group.cm.tree.policies, dtype=group.dtype.type)
        assert_same_tables(group.cm, full, "cm", rtol)
        checked += 1
    return checked


def learned_counts(model: Any, modalities: tuple[int, ...]) -> dict[int, np.ndarray]:
    return {m: model.A[m] * 2.0 + 0.5 * (model.A[m] > 0) for m in modalities}


@pytest.mark.parametrize("precision", ["int8", "float64"])
@pytest.mark.parametrize(
    ("world", "modalities"),
    [("tmaze", (1,)), ("tmaze", (0, 1)), ("grid10", (0,)), ("grid2f", (0, 1))],
)
def test_incremental_refresh_equals_a_full_compile(
    world: str, modalities: tuple[int, ...], precision: str
) -> None:
    """T-maze (two factors, three modalities: the joint planner), grid10 (one factor: the local
    and small-block planners) and grid2f (two factors, two modalities learned): after every
    refresh past the first, the group's compiled model equals ``compile_model`` of the model it
    now infers with (int8: its codes), table by table; the touched columns are fewer than all
    on the grid (the agents see a few cells between refreshes)."""
    n = 30
    model = builtin_model(world)
    spec = LearningSpec(pA=learned_counts(model, modalities), refresh_every=3,
                        settings=LearningSettings(lr_pA=0.5))
    group = AifAgentGroup(model, n, learning=spec, precision=precision)
    checked = steps_checking_refreshes(group, make_env(world, n, seed=3), 15)
    assert group.learning.refreshes == 5
    assert checked == 4  # every refresh but the first (each learned A's first: a full compile)


@pytest.mark.parametrize(("world", "modalities"), [("tmaze", (1,)), ("grid10", (0,))])
def test_a_refresh_in_place_equals_a_full_refresh_and_leaves_the_shared_tables(
    world: str, modalities: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared int8 group refreshed every tick (pymdp's cadence), replayed: past its first
    incremental refresh, each one writes into the group's own compiled tables (the same object
    from tick to tick) and reads the modalities that did not move from the codes it decoded
    before; after every one its int8 codes are those of its counts encoded whole, bit for bit,
    and its compiled tables ``compile_model``'s of those codes, to rounding. The tables a plain
    group on the same model steps with (which the learning group was loaded with) are
    untouched. (The group on numpy, its refresh's path: where the compiled pass takes it, it
    brings its tables in when read, tests/unit/core/test_native_pass.py.)"""
    monkeypatch.setenv(NATIVE_ENV, "0")
    n = 4
    model = builtin_model(world)
    plain = AifAgentGroup(model, n, precision="int8")
    loaded = [a.copy() for a in (*plain.cm.A_rows, plain.cm.utility, plain.cm.A_joint_T)]
    spec = LearningSpec(pA=learned_counts(model, modalities), refresh_every=1,
                        settings=LearningSettings(lr_pA=1.0))
    group = AifAgentGroup(model, n, learning=spec, precision="int8")
    env = make_env(world, n, seed=5)
    obs = env.reset()
    own = []
    for _ in range(5):
        before = group.learning.incremental_refreshes
        obs = env.step(group.step(obs))
        if group.learning.incremental_refreshes == before:
            continue
        own.append((group.cm.utility, group.cm.A_joint_T, group.cm.A_rows))
        pA, quantized = group.learning.learner.pA, group.quantized
        assert pA is not None
        assert quantized is not None
        for slot, m in enumerate(pA.tables):
            whole = encode_log_u8(normalise(pA.counts[slot]))
            for name in ("codes", "top", "step"):
                np.testing.assert_array_equal(getattr(quantized.A[m], name),
                                              getattr(whole, name), err_msg=f"A{m}.{name}")
        full = kernels.compile_model(quantized, group.cm.tree.policies, dtype=group.dtype.type)
        assert_same_tables(group.cm, full, "cm", 1e-5)
    assert len(own) >= 3
    for tables in own[2:]:  # written in place from the second one on
        assert all(mine is theirs for mine, theirs in zip(tables, own[1], strict=True))
    assert own[0][0] is not plain.cm.utility
    for before, after in zip(loaded, (*plain.cm.A_rows, plain.cm.utility, plain.cm.A_joint_T),
                             strict=True):
        np.testing.assert_array_equal(before, after)


def test_a_changed_support_compiles_in_full() -> None:
    """The incremental path is only for a likelihood whose support stays: new counts where the
    table had a zero (a snapshot's) take the full compile, and the compiled model still equals
    ``compile_model``'s. (A learned ``B``: tests/unit/aif/kernels/test_refresh_transitions.py.)"""
    n = 10
    model = builtin_model("grid10")
    env = make_env("grid10", n, seed=1)
    only_a = LearningSpec(pA=learned_counts(model, (0,)), refresh_every=2,
                          settings=LearningSettings(lr_pA=0.5))
    group = AifAgentGroup(model, n, learning=only_a, precision="float64")
    obs = env.reset()
    for _ in range(4):
        obs = env.step(group.step(obs))
    assert group.learning.incremental_refreshes == 1
    pA = group.learning.learner.pA
    assert pA is not None
    pA.counts[0] += 0.25  # every entry, zeros included: the support moves
    pA.touched[0].fill(True)
    group.learning.refresh()
    assert group.learning.incremental_refreshes == 1
    full = kernels.compile_model(group.learning.model, group.cm.tree.policies,
                                 dtype=group.dtype.type)
    assert_same_tables(group.cm, full, "cm", 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_support_gathered_a_increment_equals_the_masked_full_one(dtype: type) -> None:
    """grid10's likelihood (5 states of 100 per outcome): the increment summed only over each
    outcome's support equals the full increment times the mask, up to rounding, and is 0
    outside it; a dense row (more than a quarter of the states) takes the full path."""
    from edge_agent.aif.learning_kernels import (
        a_increment_shared,
        a_increment_support,
        support_index,
    )

    mask = builtin_model("grid10").A[0] > 0
    support = support_index(mask)
    assert support is not None
    assert support[0].shape == (100, 5)
    rng = np.random.default_rng(7)
    n = 257
    joint: np.ndarray = rng.dirichlet(np.ones(100), size=n).astype(dtype)
    obs = rng.integers(0, 100, n)
    k = support[0].shape[1]
    got = a_increment_support(
        obs, joint, support, rows_offset=np.arange(n)[:, None] * 100,
        cols_out=np.empty((n, k), dtype=np.intp), vals_out=np.empty((n, k)),
        gathered_out=np.empty((n, k), dtype=dtype),
    )
    assert got is not None
    want = a_increment_shared(obs, joint, 100) * mask
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert np.all(got[~mask] == 0)
    dense = mask.copy()
    dense[3, :30] = True
    assert support_index(dense) is None


@pytest.mark.parametrize("counts_dtype", ["float64", "float32"])
def test_a_few_agents_add_their_support_entries_where_they_fall(
    counts_dtype: Literal["float64", "float32"],
) -> None:
    """grid10, 3 agents (15 entries against a 100 x 100 table): the counts gain exactly what the
    masked full increment gives (up to rounding), the experience the same, and only the
    columns that gained are marked touched."""
    from edge_agent.aif.learning import Learner
    from edge_agent.aif.learning_kernels import a_increment_shared

    model = builtin_model("grid10")
    prior = model.A[0] * 2.0 + 0.5 * (model.A[0] > 0)
    learner = Learner(model.A, model.B, model.D, pA={0: prior}, n_agents=3,
                      settings=LearningSettings(lr_pA=0.3, counts_dtype=counts_dtype))
    rng = np.random.default_rng(5)
    qs = [rng.dirichlet(np.ones(100), size=3)]
    obs = np.array([[4], [4], [57]])
    learner.learn_A(obs, qs)
    pA = learner.pA
    assert pA is not None
    want = 0.3 * a_increment_shared(obs[:, 0], qs[0], 100) * (model.A[0] > 0)
    rtol = 1e-12 if counts_dtype == "float64" else 1e-6
    np.testing.assert_allclose(pA.counts[0], prior + want, rtol=rtol)
    np.testing.assert_allclose(pA.experience[0], want, rtol=rtol, atol=1e-12)
    np.testing.assert_array_equal(pA.touched[0], (want != 0).any(axis=0))
    assert 0 < pA.touched[0].sum() <= 10
    assert pA.version == 1


def _grid10_learning_a_and_b(
    n: int, *, refresh_every: int, seed: int
) -> tuple[AifAgentGroup, Any]:
    """An int8 grid10 group learning ``A0`` and ``B0`` with counts only where its moves go (one
    target per column: a learned ``B`` that normalises to the ``B`` the agents use), and its
    world."""
    model = builtin_model("grid10")
    B = model.B[0]
    spec = LearningSpec(pA=learned_counts(model, (0,)), pB={0: B * 2.0 + 0.5 * (B > 0)},
                        refresh_every=refresh_every,
                        settings=LearningSettings(lr_pA=0.5, lr_pB=0.5))
    group = AifAgentGroup(model, n, learning=spec, precision="int8")
    return group, make_env("grid10", n, seed=seed)


def test_a_learned_deterministic_transition_keeps_the_refresh_incremental() -> None:
    """grid10 learning A0 and B0 with counts only where its moves go (one target per column):
    the learned B normalises to exactly the B the agents use, so after the first refresh every
    refresh is incremental, and the compiled model equals compile_model's of the group's model."""
    n = 20
    group, env = _grid10_learning_a_and_b(n, refresh_every=3, seed=2)
    obs = env.reset()
    for _ in range(12):
        obs = env.step(group.step(obs))
    assert group.learning.refreshes == 4
    assert group.learning.incremental_refreshes == 3
    pB = group.learning.learner.pB
    assert pB is not None
    assert pB.version > 0
    assert not pB.touched[0].any()  # marked refreshed with the rest
    source = group.quantized
    assert source is not None
    full = kernels.compile_model(source, group.cm.tree.policies, dtype=group.dtype.type)
    assert_same_tables(group.cm, full, "cm", 1e-5)


@pytest.mark.parametrize("n", [1, 20])
def test_known_fixed_transition_columns_answer_as_the_full_comparison(n: int) -> None:
    """Whether a learned deterministic B still normalises to the table the agents use is
    answered from the columns known to stay so (``DirichletCounts.fixed_columns``): before
    every refresh the answer is the full comparison's of every touched column; counts restored
    from a snapshot with a count off a move's target make the refresh a full compile, equal to
    ``compile_model``'s."""
    from edge_agent.aif.learning_refresh import moved_transition_columns

    group, env = _grid10_learning_a_and_b(n, refresh_every=4, seed=4)
    obs = env.reset()
    answers = []
    state: dict[str, np.ndarray] = {}
    for tick in range(16):
        if tick == 13:  # counts of a version no refresh had (a refresh follows their change)
            state = {key: value.copy() for key, value in group.state_dict().items()}
        if tick % 4 == 3 and group.learning.refreshes:  # the tick that refreshes
            pB = group.learning.learner.pB
            assert pB is not None
            touched = pB.touched[0]
            full = bool(np.array_equal(normalise(pB.counts[0][:, touched]),
                                       group.learning.model.B[0][:, touched]))
            moved, _ = moved_transition_columns(pB, 0, group.learning.model.B[0])
            answers.append((not moved.any(), full))
        obs = env.step(group.step(obs))
    assert answers == [(True, True)] * 3
    assert group.learning.incremental_refreshes == 3
    state["learn.pB0"] = _moved_off_the_target(state, group)
    group.load_state_dict(state)
    assert group.learning.incremental_refreshes == 3  # a full compile
    assert group.learning.model.B[0][5, 0, 0] > 0
    source = group.quantized
    assert source is not None
    full_cm = kernels.compile_model(source, group.cm.tree.policies, dtype=group.dtype.type)
    assert_same_tables(group.cm, full_cm, "cm", 1e-5)


def _moved_off_the_target(state: dict[str, np.ndarray], group: AifAgentGroup) -> np.ndarray:
    """``state``'s ``pB0`` with one count off the one target of a column (``B[:, 0, 0]``),
    saved whole (as snapshots held counts before they held what moved from the prior)."""
    pB = group.learning.learner.pB
    assert pB is not None
    counts = saved_counts(state, "learn.pB0", pB.prior[0], where="test")
    assert counts is not None
    counts = counts.copy()
    counts[5, 0, 0] += 1.0
    return counts


def test_counts_restored_at_the_version_of_the_last_refresh_are_refreshed_in_full() -> None:
    """A snapshot's counts may differ anywhere from what the agents use, whatever their
    version: restored into a group whose last refresh had the same version (of ``B`` here), the
    tables are made from them in full, not from the columns touched since."""
    group, env = _grid10_learning_a_and_b(3, refresh_every=4, seed=4)
    obs = env.reset()
    for _ in range(10):
        obs = env.step(group.step(obs))
    group.learning.refresh()
    state = {key: value.copy() for key, value in group.state_dict().items()}
    state["learn.pB0"] = _moved_off_the_target(state, group)
    refreshes = group.learning.incremental_refreshes
    group.load_state_dict(state)  # pA and pB at the versions of the refresh just made
    assert group.learning.incremental_refreshes == refreshes
    assert group.learning.model.B[0][5, 0, 0] > 0
    source = group.quantized
    assert source is not None
    full_cm = kernels.compile_model(source, group.cm.tree.policies, dtype=group.dtype.type)
    assert_same_tables(group.cm, full_cm, "cm", 1e-5)


@pytest.mark.parametrize(("world", "modalities"),
                         [("tmaze", (1,)), ("tmaze", (0, 1, 2)), ("grid10", (0,)),
                          ("grid2f", (0, 1, 2))])
def test_the_update_scratch_is_within_what_the_budget_reserves(
    world: str, modalities: tuple[int, ...]
) -> None:
    """The shared update's scratch (one-hot tables, the state-major joint, grouped rows or the
    support gather) stays within ``scratch_bytes_per_agent`` per row it takes, which the group's
    per-agent reservation includes, and its gain scratch within ``gain_nbytes`` (none when a
    few agents add their entries where they fall: grid10 at N = 50)."""
    n = 50
    model = builtin_model(world)
    spec = LearningSpec(pA=learned_counts(model, modalities), refresh_every=4,
                        settings=LearningSettings(lr_pA=0.5))
    group = AifAgentGroup(model, n, learning=spec, precision="int8")
    env = make_env(world, n, seed=0)
    obs = env.reset()
    for _ in range(6):
        obs = env.step(group.step(obs))
    learner = group.learning.learner
    held = sum(buf.nbytes for buf in learner._scratch.values())
    # An update takes the rows of the ticks the group keeps (4 ticks of 50 agents here), and the
    # group reserves the scratch for as many (AifAgentGroup.per_agent_nbytes).
    rows = n * experience_ticks(n, refresh_every=4, forgetting=0.0, novelty=False)
    assert rows == 4 * n
    assert 0 < held <= rows * learner.scratch_bytes_per_agent(group.dtype.itemsize)
    pA = learner.pA
    assert pA is not None
    assert sum(g.nbytes for g in pA.scratch) <= learner.gain_nbytes
