"""A group that learns ``pA`` every tick, per agent or with shared counts, steps its learning
tick in one compiled pass (edge_agent/core/native_pass.py over
edge_agent/aif/kernels/native/tick.c) with the numbers of the numpy stages: posteriors, priors,
expected free energies, policy posteriors, counts, the tables (each agent's, or the shared
ones), experience, versions, agent-ticks, surprise and health equal up to rounding, tick after
tick, through resets, a freeze, a forget and a snapshot restored; actions optimal under the
numpy group's posterior; each per-agent agent as its own float64 reference agent (pymdp
0.0.7.1's maths). A shared group's compiled tables, which its pass leaves behind, are brought in
whenever something reads them: the stage verbs, the compiled tables, a resize. A group the pass
does not do says why and steps with numpy.

The library is the package's own (built by ``pip install -e .``, which scripts/test runs with a
C compiler present): its absence fails here, saying how to get it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.aif import kernels, quant
from edge_agent.aif.kernels.native import binding
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.reference_learning import LearningReferenceAgent
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import LOCAL_MEASURED, NATIVE_ENV, NativePass
from edge_agent.sim.registry import make_env
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model
from tests.support.native_tick import SANITIZED_ENV
from tests.support.per_agent_prior import per_agent_prior


@pytest.fixture(autouse=True)
def _the_sanitized_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """In test_recipe.py's sanitized subprocess (:data:`SANITIZED_ENV` set: the build's path),
    every group's compiled pass runs on the AddressSanitizer + UBSan build."""
    where = os.environ.get(SANITIZED_ENV)
    if where is not None:
        monkeypatch.setattr(binding, "_LIBRARY", binding.load(Path(where)))


TOL = {"rtol": 0.0, "atol": 1e-9}
MODALITY = 1


def _prior() -> dict[int, np.ndarray]:
    model = tmaze_reversal_model()
    # Counts wherever the cue could be (0.5 where the model has 0): the mask of the updates is
    # the model's support until the first refresh, the counts' from then on.
    return {MODALITY: model.A[MODALITY] * 2.0 + 0.5}


def _group(n: int, *, native_tick: bool, monkeypatch: pytest.MonkeyPatch, lr: float = 0.7,
           scope: str = "per_agent", precision: str = "float64",
           **kwargs: Any) -> AifAgentGroup:
    monkeypatch.setenv(NATIVE_ENV, "1" if native_tick else "0")
    spec = LearningSpec(pA=_prior(), refresh_every=1,
                        settings=LearningSettings(scope=scope, lr_pA=lr))  # type: ignore[arg-type]
    group = AifAgentGroup(tmaze_reversal_model(), n, learning=spec,
                          precision=precision, **kwargs)  # type: ignore[arg-type]
    monkeypatch.delenv(NATIVE_ENV)
    return group


def _stepping(group: AifAgentGroup) -> str:
    learning = group.learning
    assert learning is not None
    return str(learning.describe()["stepping"])


def test_the_package_carries_the_compiled_tick() -> None:
    assert binding.unavailable() is None, binding.unavailable()


def _assert_same(mine: AifAgentGroup, theirs: AifAgentGroup, *, since_start: bool = True) -> None:
    """``since_start`` False: ``mine`` was restored from a snapshot of ``theirs``, and counts
    its experience (what it has to report) and its refreshes from then on."""
    for a, b in zip(mine.state.qs, theirs.state.qs, strict=True):
        np.testing.assert_allclose(a, b, **TOL)
    for a, b in zip(mine.state.prior, _prior_kept_as(mine, theirs), strict=True):
        np.testing.assert_allclose(a, b, **TOL)
    np.testing.assert_allclose(mine.state.G, theirs.state.G, **TOL)
    np.testing.assert_allclose(mine.state.q_pi, theirs.state.q_pi, **TOL)
    rows = np.arange(mine.n_agents)
    np.testing.assert_allclose(mine.path.likelihood(rows)[MODALITY],
                               theirs.path.likelihood(rows)[MODALITY], **TOL)
    a, b = mine.learning.learner.pA, theirs.learning.learner.pA
    assert a is not None
    assert b is not None
    np.testing.assert_allclose(a.counts[0], b.counts[0], **TOL)
    np.testing.assert_array_equal(a.mask[0], b.mask[0])
    if not since_start:
        return
    np.testing.assert_allclose(a.experience[0], b.experience[0], rtol=0, atol=1e-9 * len(rows))
    assert (a.version, a.reset_at, list(a.agent_ticks)) == (b.version, b.reset_at,
                                                            list(b.agent_ticks))
    assert mine.learning.refreshes == theirs.learning.refreshes
    assert mine.learning.summary() == theirs.learning.summary()
    ours, others = mine.learning.numbers(), theirs.learning.numbers()
    assert ours.keys() == others.keys()
    for key, value in ours.items():
        if key == "incremental_refreshes":  # a shared pass brings its tables in when read
            continue
        assert value == pytest.approx(others[key], rel=1e-9, abs=1e-9), key


def _keeps_next_prior(group: AifAgentGroup) -> bool:
    """Whether ``group``'s prior is its per-agent compiled pass's kept next prior."""
    assert group.learning is not None
    found = group.learning.scope.tick_pass()
    return isinstance(found, NativePass) and _stepping(group) == "native"


def _prior_kept_as(mine: AifAgentGroup, theirs: AifAgentGroup) -> list[np.ndarray]:
    """What ``mine``'s prior is, of ``theirs``: theirs; ``mine`` a per-agent compiled pass's
    and ``theirs`` its numpy twin's (the tick's prior), the next prior of ``theirs`` (``B`` of
    its action times its posterior) where the pass takes the one it kept, else ``mine``'s own
    (made again at its next tick)."""
    if not _keeps_next_prior(mine) or _keeps_next_prior(theirs):
        return theirs.state.prior
    tick_pass = mine.learning.scope.tick_pass()  # type: ignore[union-attr]
    assert isinstance(tick_pass, NativePass)
    if not tick_pass.takes_kept(mine.state, mine.n_agents):
        return mine.state.prior
    return per_agent_prior(theirs)


def _optimal(actions: np.ndarray, group: AifAgentGroup, tol: float = 1e-9) -> None:
    """Each agent's action is a maximum of its marginal under ``group``'s posterior (up to
    ``tol``)."""
    policies = group.cm.tree.policies[:, 0, :]
    for f, u in enumerate(group.cm.num_controls):
        marginal = group.state.q_pi @ np.eye(u)[policies[:, f]]
        chosen = marginal[np.arange(len(actions)), actions[:, f]]
        assert np.all(chosen >= marginal.max(axis=1) - tol)


def _compiled_follow(mine: AifAgentGroup, theirs: AifAgentGroup) -> None:
    """A shared group's compiled tables, read, are the numpy group's up to rounding (they are
    brought in from the pass's as they are read)."""
    for a, b in zip(mine.cm.A_rows, theirs.cm.A_rows, strict=True):
        np.testing.assert_allclose(a, b, **TOL)
    np.testing.assert_allclose(mine.cm.utility, theirs.cm.utility, **TOL)
    np.testing.assert_allclose(mine.cm.neg_entropy, theirs.cm.neg_entropy, **TOL)


# 1 agent; 13: a partial block of the pass's 8; 40: five whole ones.
@pytest.mark.parametrize("scope", ["per_agent", "shared"])
@pytest.mark.parametrize("n", [1, 13, 40])
def test_the_pass_is_the_numpy_stages_up_to_rounding(
    n: int, scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = _group(n, native_tick=True, monkeypatch=monkeypatch, scope=scope)
    theirs = _group(n, native_tick=False, monkeypatch=monkeypatch, scope=scope)
    assert _stepping(mine) == "native"
    assert _stepping(theirs) == f"numpy: {NATIVE_ENV}=0"
    rng = np.random.default_rng(n)
    num_obs = theirs.cm.num_obs
    for t in range(48):
        obs = np.stack([rng.integers(0, o, size=n) for o in num_obs], axis=1)
        actions = mine.step(obs).copy()
        theirs.step(obs)
        _optimal(actions, theirs)
        if t % 3:  # a tie may be broken either way: go on together (and on the other ticks
            # with the pass's own choice where it is the numpy group's)
            mine.set_action(theirs.action)
        elif not np.array_equal(mine.state.action, theirs.action):  # (the state: a
            # per-agent pass's kept prior taken at the next tick, nothing handed out)
            theirs.set_action(mine.state.action)
        _assert_same(mine, theirs)
        if scope == "shared" and t % 5 == 1:
            _compiled_follow(mine, theirs)
        if scope == "shared" and t == 15:  # the stage verbs step with what the pass learned
            mine.infer_states(obs)
            theirs.infer_states(obs)
            np.testing.assert_allclose(mine.infer_policies()[0], theirs.infer_policies()[0],
                                       **TOL)
            _optimal(mine.sample_action().copy(), theirs)
            mine.set_action(theirs.sample_action())
            _assert_same(mine, theirs)
        _live_alike(mine, theirs, t, rng, freeze_at=20, resume_at=26, forget_at=32)


@pytest.mark.parametrize("scope", ["per_agent", "shared"])
def test_a_restored_snapshot_steps_on_as_the_group_it_was_taken_from(
    scope: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 9
    first = _group(n, native_tick=True, monkeypatch=monkeypatch, scope=scope)
    rng = np.random.default_rng(3)
    sequence = [np.stack([rng.integers(0, o, size=n) for o in first.cm.num_obs], axis=1)
                for _ in range(20)]
    for obs in sequence[:10]:
        first.step(obs)
    second = _group(n, native_tick=True, monkeypatch=monkeypatch, scope=scope)
    second.load_state_dict(first.state_dict())
    for obs in sequence[10:]:
        first.step(obs)
        second.step(obs)
        second.set_action(first.action)
        _assert_same(second, first, since_start=False)


def test_each_agent_learns_as_its_own_reference_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 4
    model = tmaze_reversal_model()
    group = _group(n, native_tick=True, monkeypatch=monkeypatch)
    assert _stepping(group) == "native"
    refs = [LearningReferenceAgent(model, pA=_prior(), lr_pA=0.7) for _ in range(n)]
    rng = np.random.default_rng(11)
    for _ in range(12):
        obs = np.stack([rng.integers(0, o, size=n) for o in model.num_obs], axis=1)
        actions = group.step(obs).copy()
        for i, ref in enumerate(refs):
            ref.infer_states(obs[i])
            ref.update_A(obs[i])
            ref.infer_policies()
            for f, q in enumerate(ref.qs):
                np.testing.assert_allclose(group.qs[f][i], q, **TOL)
            assert ref.q_pi is not None
            np.testing.assert_allclose(group.q_pi[i], ref.q_pi, **TOL)
            for f, marginal in enumerate(ref.action_marginals()):
                assert marginal[actions[i, f]] >= marginal.max() - 1e-9
            pA = group.learning.learner.pA
            assert pA is not None
            np.testing.assert_allclose(pA.counts[0][i], ref.pA[MODALITY], **TOL)
            ref.action = actions[i].copy()  # the group's choice, optimal under the reference's


def test_a_resized_shared_group_steps_on_as_the_numpy_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = _group(6, native_tick=True, monkeypatch=monkeypatch, scope="shared")
    theirs = _group(6, native_tick=False, monkeypatch=monkeypatch, scope="shared")
    rng = np.random.default_rng(5)
    for n in (6, 6, 6, 17, 17, 17, 17, 3, 3, 3):
        if n != mine.n_agents:  # new agents start from D; the counts and tables stay
            mine.resize(n)
            theirs.resize(n)
        obs = np.stack([rng.integers(0, o, size=n) for o in theirs.cm.num_obs], axis=1)
        actions = mine.step(obs).copy()
        theirs.step(obs)
        _optimal(actions, theirs)
        mine.set_action(theirs.action)
        _assert_same(mine, theirs)


def test_a_shared_group_with_workers_steps_frozen_ticks_with_what_the_pass_learned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its frozen ticks are the fused step, in a forked worker too: the tables the pass learned
    are brought in (and the worker forked again with them) before it."""
    n = 32
    mine = _group(n, native_tick=True, monkeypatch=monkeypatch, scope="shared", block_size=16)
    theirs = _group(n, native_tick=False, monkeypatch=monkeypatch, scope="shared",
                    block_size=16)
    assert mine.start_workers(2) == 2
    try:
        rng = np.random.default_rng(9)
        for t in range(16):
            obs = np.stack([rng.integers(0, o, size=n) for o in theirs.cm.num_obs], axis=1)
            if t == 8:
                assert mine.learning.freeze()
                assert theirs.learning.freeze()
            actions = mine.step(obs).copy()
            theirs.step(obs)
            _optimal(actions, theirs)
            if not np.array_equal(actions, theirs.action):  # a tie broken the other way
                mine.set_action(theirs.action)
            _assert_same(mine, theirs)
            if t >= 8:
                _compiled_follow(mine, theirs)
    finally:
        mine.stop_workers()


@pytest.mark.parametrize(("change", "why"), [
    ({"settings": AifSettings(action_selection="stochastic")}, "stochastic action selection"),
    ({"settings": AifSettings(policy_len=2)}, "policy_len 2"),
])
def test_a_group_the_pass_does_not_do_steps_with_numpy_and_says_why(
    change: dict[str, Any], why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = _group(3, native_tick=True, monkeypatch=monkeypatch, **change)
    assert _stepping(group) == f"numpy: {why}"
    group.step(np.zeros((3, group.cm.num_modalities), dtype=np.int64))


#: An int8 shared group's twin keeps float32 state and learns its counts in float32 where the
#: pass adds in double; its learned ``A`` rounded through codes (within one step of the twin's
#: where an expectation lies near the edge between two). On the T-maze's 40 ticks the two are
#: within ~1.3e-5 (q_pi; the likelihood ~1e-6), where the pass without the rounding is 6e-4
#: off in the likelihood and 1e-2 in q_pi: 1e-4 on the state, counts and tables.
INT8_TOL = 1e-4


def _same_a_codes(mine: AifAgentGroup, theirs: AifAgentGroup) -> dict[str, float]:
    """The learned ``A``'s codes (read: the pass's tables brought in) are the twin's or one
    step off; returns the tolerance of what follows from them (INT8_TOL, or the one-step bound
    where a code is off: docs/quantization.md)."""
    codes = []
    for group in (mine, theirs):
        group.stepper  # noqa: B018 - reading the stepper brings a pass's tables in
        quantized = group.learning.scope.quantized  # type: ignore[union-attr]
        assert quantized is not None
        codes.append(quantized.A[MODALITY])
    ours, others = codes
    step = np.abs(ours.codes.astype(np.int64) - others.codes.astype(np.int64))
    assert step.max() <= 1
    np.testing.assert_allclose(ours.top, others.top, rtol=0, atol=INT8_TOL)
    if step.max():
        eps = 2 * float(others.step.max())
        return {"rtol": eps, "atol": eps}
    return {"rtol": 0.0, "atol": INT8_TOL}


# 1 agent; 13: a partial block of the pass's 8; 40: five whole ones.
@pytest.mark.parametrize("n", [1, 13, 40])
def test_an_int8_shared_pa_group_s_pass_is_its_numpy_twin_up_to_rounding(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The T-maze int8, one set of ``pA`` counts: the pass learns them in double, the learned
    ``A`` every tick its counts' expectation rounded through its log-u8 codes as the twin keeps
    it, the surprise under the float tables (the health summary's); resets, a freeze, a resume
    and a forget on the way; actions optimal under the twin's posterior."""
    mine = _group(n, native_tick=True, monkeypatch=monkeypatch, scope="shared",
                  precision="int8")
    theirs = _group(n, native_tick=False, monkeypatch=monkeypatch, scope="shared",
                    precision="int8")
    assert _stepping(mine) == "native"
    assert _stepping(theirs) == f"numpy: {NATIVE_ENV}=0"
    rng = np.random.default_rng(n)
    num_obs = theirs.cm.num_obs
    rows = np.arange(n)
    for t in range(40):
        obs = np.stack([rng.integers(0, o, size=n) for o in num_obs], axis=1)
        # the surprise's p(o_m): under the twin's float model before the update (not the
        # rounded tables the agents infer with) and the tick's prior (the pass's)
        floats = [a.reshape(a.shape[0], -1) for a in theirs.learning.model.A]
        actions = mine.step(obs).copy()
        theirs.step(obs)
        _optimal(actions, theirs, INT8_TOL)
        native = mine.learning.scope.native  # type: ignore[union-attr]
        if not 17 < t <= 22:  # (frozen, the pass is not the tick's)
            joint = np.einsum("ni,nj->nij", *(p.astype(np.float64) for p in native._prior))
            p_obs = np.stack([(a[obs[:, m]] * joint.reshape(n, -1)).sum(axis=1)
                              for m, a in enumerate(floats)], axis=1)
            np.testing.assert_allclose(native._p_obs, p_obs, rtol=0, atol=INT8_TOL / 10)
        if t % 3:
            mine.set_action(theirs.action)
        elif not np.array_equal(mine.state.action, theirs.action):  # (the state: a
            # per-agent pass's kept prior taken at the next tick, nothing handed out)
            theirs.set_action(mine.state.action)
        close = _same_a_codes(mine, theirs)
        for name in ("qs", "prior"):
            for a, b in zip(getattr(mine.state, name), getattr(theirs.state, name),
                            strict=True):
                np.testing.assert_allclose(a, b, **close)
        np.testing.assert_allclose(mine.state.q_pi, theirs.state.q_pi, **close)
        for a, b in zip(mine.path.likelihood(rows), theirs.path.likelihood(rows), strict=True):
            np.testing.assert_allclose(a, b, **close)
        ours, others = mine.learning.learner.pA, theirs.learning.learner.pA
        assert ours is not None
        assert others is not None
        np.testing.assert_allclose(ours.counts[0], others.counts[0], rtol=0, atol=INT8_TOL)
        assert (ours.version, ours.refreshed, list(ours.agent_ticks)) == (
            others.version, others.refreshed, list(others.agent_ticks))
        _live_alike(mine, theirs, t, rng, freeze_at=17, resume_at=22, forget_at=29,
                    tol=INT8_TOL)


def test_an_int8_shared_pa_group_restored_steps_on_as_its_numpy_twin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A snapshot of an int8 shared ``pA`` group's pass, restored into a pass and into its
    numpy twin: the two step on alike (the pass takes its tables from the restored codes)."""
    n = 9
    first = _group(n, native_tick=True, monkeypatch=monkeypatch, scope="shared",
                   precision="int8")
    rng = np.random.default_rng(5)
    sequence = [np.stack([rng.integers(0, o, size=n) for o in first.cm.num_obs], axis=1)
                for _ in range(22)]
    for obs in sequence[:12]:
        first.step(obs)
    mine = _group(n, native_tick=True, monkeypatch=monkeypatch, scope="shared",
                  precision="int8")
    theirs = _group(n, native_tick=False, monkeypatch=monkeypatch, scope="shared",
                    precision="int8")
    mine.load_state_dict(first.state_dict())
    theirs.load_state_dict(first.state_dict())
    assert _stepping(mine) == "native"
    for obs in sequence[12:]:
        actions = mine.step(obs).copy()
        theirs.step(obs)
        _optimal(actions, theirs, INT8_TOL)
        mine.set_action(theirs.action)
        close = _same_a_codes(mine, theirs)
        for x, y in zip(mine.state.qs, theirs.state.qs, strict=True):
            np.testing.assert_allclose(x, y, **close)
        np.testing.assert_allclose(mine.state.q_pi, theirs.state.q_pi, **close)
        rows = np.arange(n)
        for x, y in zip(mine.path.likelihood(rows), theirs.path.likelihood(rows), strict=True):
            np.testing.assert_allclose(x, y, **close)
        np.testing.assert_allclose(mine.learning.learner.pA.counts[0],  # type: ignore[union-attr]
                                   theirs.learning.learner.pA.counts[0],  # type: ignore[union-attr]
                                   rtol=0, atol=INT8_TOL)


# -- pB: grid10's moves, each agent its own transition counts or one set ---------------------


def _corridor() -> GenerativeModel:
    """Two factors: a corridor of 12 cells (left, stay, right; its walls keep) and a context
    of 2 (no control); the cell seen with noise, the context cued on the last cell only, the
    right end preferred."""
    cells, ctx = 12, 2
    B0 = np.zeros((cells, cells, 3))
    for s in range(cells):
        for u, step in enumerate((-1, 0, 1)):
            B0[min(max(s + step, 0), cells - 1), s, u] = 1.0
    seen = 0.8 * np.eye(cells) + 0.2 / cells
    A0 = np.repeat(seen[:, :, None], ctx, axis=2)
    A1 = np.full((ctx, cells, ctx), 0.5)
    A1[:, -1, :] = np.array([[0.9, 0.1], [0.1, 0.9]])
    C0 = np.zeros(cells)
    C0[-1] = 2.0
    return GenerativeModel.from_arrays([A0, A1], [B0, np.eye(ctx)[:, :, None]],
                                       [C0, np.zeros(ctx)])


def _grid_group(n: int, *, native_tick: bool, monkeypatch: pytest.MonkeyPatch, prior: str,
                learn_A: bool = False, world: str = "grid10", scope: str = "per_agent",
                precision: str = "float64", **kwargs: Any) -> AifAgentGroup:
    """grid10 learning ``pB`` of its one factor (``scope``: per agent, or one set of counts
    ``"shared"``): ``prior`` ``"support"`` (counts on
    ``B``'s support, bench_learning_peers' row: every column a deterministic move) or
    ``"reach"`` (0.25 more on every cell some move reaches from the column's: the learned
    columns move every tick, the update's mask ``B``'s support until the first refresh, the
    counts' from then on); ``learn_A``: ``pA`` too (0.5 more on every entry); ``world``
    ``"corridor"``: the same on :func:`_corridor`'s first factor (of two); ``precision``
    ``"int8"``: the model's codes (shared counts only)."""
    model = make_env("grid10", 1, seed=0).model if world == "grid10" else _corridor()
    B = model.B[0]
    reach = np.broadcast_to((B.sum(axis=2) > 0)[:, :, None], B.shape)
    counts = B * 2.0 + (0.5 * (B > 0) if prior == "support" else 0.25 * reach)
    monkeypatch.setenv(NATIVE_ENV, "1" if native_tick else "0")
    spec = LearningSpec(pB={0: counts}, pA={0: model.A[0] * 2.0 + 0.5} if learn_A else None,
                        refresh_every=1,
                        settings=LearningSettings(scope=scope,  # type: ignore[arg-type]
                                                  lr_pB=0.8, lr_pA=0.6))
    group = AifAgentGroup(model, n, learning=spec, precision=precision,  # type: ignore[arg-type]
                          **kwargs)
    monkeypatch.delenv(NATIVE_ENV)
    return group


def _live_alike(mine: AifAgentGroup, theirs: AifAgentGroup, t: int,
                rng: np.random.Generator, *, freeze_at: int, resume_at: int,
                forget_at: int, tol: float = 1e-9) -> None:
    """What happens to both groups after tick ``t``: some agents' episodes start again (their
    prior is D, no transition to learn from), learning frozen (the pass infers and plans with
    the tables, learns nothing), resumed, forgotten (the counts their prior, the tables the
    model's again); then their health summaries are the same."""
    if t % 7 == 3:
        who = rng.random(mine.n_agents) < 0.4
        mine.reset(who)
        theirs.reset(who)
    if t == freeze_at:
        assert mine.learning.freeze()
        assert theirs.learning.freeze()
    if t == resume_at:
        assert mine.learning.resume()
        assert theirs.learning.resume()
    if t == forget_at:
        mine.learning.forget()
        theirs.learning.forget()
    ours, others = mine.health_summary(), theirs.health_summary()
    assert ours is not None
    assert others is not None
    assert ours.agent_steps == others.agent_steps
    assert ours.measures.keys() == others.measures.keys()
    for name, stats in ours.measures.items():
        assert stats.n == others.measures[name].n
        assert stats.mean == pytest.approx(others.measures[name].mean, rel=tol, abs=tol)


def _assert_same_learning(mine: AifAgentGroup, theirs: AifAgentGroup,
                          tol: float = 1e-9, widest: dict[str, float] | None = None) -> None:
    """The state, every agent's ``B`` (int8: its codes too) and every kind's counts, masks,
    experience, versions and agent-ticks, the refreshes and the learning's numbers, equal up
    to rounding (``tol``: float64's, or an int8 group's float32 state's; where an int8 code of
    the learned ``B`` is one step from its twin's, :func:`_same_codes`, docs/quantization.md's
    one-step bound; ``widest``: the widest bound of the ticks before, kept here: once a code
    was one step off, the beliefs it moved carry the difference on through their priors)."""
    close = {"rtol": 0.0, "atol": tol}
    if mine.quantized is not None:
        close = _same_codes(mine, theirs, close)
    if widest is not None:
        close = {key: max(value, widest.get(key, value)) for key, value in close.items()}
        widest.update(close)
    for a, b in zip(mine.state.qs, theirs.state.qs, strict=True):
        np.testing.assert_allclose(a, b, **close)
    for a, b in zip(mine.state.prior, _prior_kept_as(mine, theirs), strict=True):
        np.testing.assert_allclose(a, b, **close)
    np.testing.assert_allclose(mine.state.G, theirs.state.G, **close)
    np.testing.assert_allclose(mine.state.q_pi, theirs.state.q_pi, **close)
    ours_l, theirs_l = mine.learning, theirs.learning
    assert ours_l is not None
    assert theirs_l is not None
    np.testing.assert_allclose(_transitions(mine), _transitions(theirs), **close)
    rows = np.arange(mine.n_agents)
    for a, b in zip(mine.path.likelihood(rows), theirs.path.likelihood(rows), strict=True):
        np.testing.assert_allclose(a, b, **close)
    for a, b in zip(ours_l.learner.counts, theirs_l.learner.counts, strict=True):
        assert a.kind == b.kind
        for slot in range(len(a.tables)):
            np.testing.assert_allclose(a.counts[slot], b.counts[slot], **close)
            np.testing.assert_array_equal(a.mask[slot], b.mask[slot])
            np.testing.assert_allclose(a.experience[slot], b.experience[slot], rtol=0,
                                       atol=tol * len(rows))
        assert (a.version, a.reset_at, a.refreshed, list(a.agent_ticks)) == (
            b.version, b.reset_at, b.refreshed, list(b.agent_ticks))
    assert ours_l.refreshes == theirs_l.refreshes
    assert ours_l.summary() == theirs_l.summary()
    ours, others = ours_l.numbers(), theirs_l.numbers()
    assert ours.keys() == others.keys()
    for key, value in ours.items():
        if key == "incremental_refreshes":  # a shared pass brings its tables in when read
            continue
        assert value == pytest.approx(others[key], rel=tol, abs=tol), key


def _same_codes(
    mine: AifAgentGroup, theirs: AifAgentGroup, close: dict[str, float]
) -> dict[str, float]:
    """An int8 shared group's learned ``B`` codes (read: a pass's brought in) are its numpy
    twin's, or one step off (the counts the pass learns in double from the float32 state and
    those its twin learns in float32 differ by ~1e-4 after some hundreds of updates: an
    expectation near the edge between two codes rounds the other way); what the agents plan
    with (the pass's own values, its twin's compiled tables) within ``close``. Returns the
    tolerance of the state: ``close`` where every code is the twin's, else docs/quantization.md's
    one-step bound (a log error of ``eps_B`` in ``B``: the beliefs' within ``2 eps_B``; a
    learned ``A``'s codes likewise, ``2 eps_A``)."""
    group_codes = []
    for group in (mine, theirs):
        group.stepper  # noqa: B018 - reading the stepper brings a pass's tables in
        learning = group.learning
        assert learning is not None
        quantized = learning.scope.quantized  # type: ignore[attr-defined]
        assert quantized is not None
        group_codes.append(quantized.B[0])
    if mine.learning.learner.pA is not None:  # type: ignore[union-attr]
        # a learned A (its first modality) too: its codes the twin's or one step off
        ours_A, others_A = (_learned_a_codes(group) for group in (mine, theirs))
        off = np.abs(ours_A.codes.astype(np.int64) - others_A.codes.astype(np.int64))
        assert off.max() <= 1
        np.testing.assert_allclose(ours_A.top, others_A.top, rtol=0, atol=1e-3)
        if off.max():
            eps_A = 2 * float(others_A.step.max())
            close = {"rtol": max(close["rtol"], eps_A), "atol": max(close["atol"], eps_A)}
    ours, others = group_codes
    np.testing.assert_array_equal(ours.index, others.index)
    assert (ours.values is None) == (others.values is None)
    bound = close
    if ours.values is not None:
        step = np.abs(ours.values.codes.astype(np.int64) - others.values.codes.astype(np.int64))
        assert step.max() <= 1
        np.testing.assert_allclose(ours.values.top, others.values.top, rtol=0, atol=1e-3)
        if step.max():
            eps = 2 * float(others.values.step.max())
            bound = {"rtol": max(close["rtol"], eps), "atol": max(close["atol"], eps)}
    np.testing.assert_allclose(quant.decode_transition(ours),
                               kernels.dense_table(theirs.cm.transitions[0]), **bound)
    native = mine.learning.scope.native  # type: ignore[union-attr]
    assert native is not None
    action, row, col = native._at[0]  # the values the pass plans with, at its entries
    np.testing.assert_allclose(native._values[0][0],
                               kernels.dense_table(theirs.cm.transitions[0])[row, col, action],
                               **bound)
    return bound


def _learned_a_codes(group: AifAgentGroup) -> quant.LogU8:
    """An int8 shared group's codes of its first modality's ``A`` (its tables brought in)."""
    group.stepper  # noqa: B018 - reading the stepper brings a pass's tables in
    quantized = group.learning.scope.quantized  # type: ignore[union-attr]
    assert quantized is not None
    return quantized.A[0]


def _transitions(group: AifAgentGroup) -> np.ndarray:
    """The learned ``B`` the agents step with: each agent's (per agent), or the one the
    compiled tables hold (shared: a pass's brought in, as anything that reads them does)."""
    learning = group.learning
    assert learning is not None
    scope = learning.scope
    if scope.name == "shared":
        group.stepper  # noqa: B018 - reading the stepper brings a pass's tables in
        return np.asarray(learning.scope.model.B[0])
    return np.asarray(scope.transition_table(0))  # type: ignore[attr-defined]


# 1 agent; 13: a partial block of the pass's 8; 40: five whole ones (grid10 learning pA too
# at 1 and 13 only: its dense pA's numpy twin is slow, and 13 already has a whole block).
PB_CASES = [
    (n, prior, learn_A, world)
    for prior, learn_A, world in [
        ("support", False, "grid10"), ("reach", False, "grid10"), ("reach", True, "grid10"),
        ("reach", False, "corridor"), ("reach", True, "corridor"),
    ]
    for n in (1, 13, 40)
    if not (learn_A and world == "grid10" and n == 40)
]
#: The scopes and precisions: float64 per agent and shared; int8 shared (per-agent learning
#: is float64 only). The int8 twin keeps float32
#: state and learns its counts in float32 where the pass adds in double: after 40 ticks of 40
#: agents the counts differ by up to ~1e-4 and the tables following them (each column's top
#: and step) by ~2e-5; 1e-3 on the state, counts and tables (a frozen group, on the same
#: tables: 2e-4, tests/unit/aif/kernels/native/test_equality.py), far inside the codes' own
#: bound (eps_B >= 0.01 on these tables, docs/quantization.md).
PB_PRECISIONS = [("per_agent", "float64", 1e-9), ("shared", "float64", 1e-9),
                 ("shared", "int8", 1e-3)]


#: Each case in each scope and precision that the pass takes: not an int8 one on B's support
#: above :data:`LOCAL_MEASURED` agents (numpy's local planner steps it: the test below).
PB_PASS_CASES = [
    (*scoped, *case) for scoped in PB_PRECISIONS for case in PB_CASES
    if not (scoped[1] == "int8" and case[1] == "support" and case[0] > LOCAL_MEASURED)
]


@pytest.mark.parametrize(("scope", "precision", "tol", "n", "prior", "learn_A", "world"),
                         PB_PASS_CASES)
def test_the_pass_learning_transitions_is_the_numpy_stages_up_to_rounding(
    n: int, prior: str, learn_A: bool, world: str, *, scope: str, precision: str, tol: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each agent its own transition counts, or one set every agent teaches (the columns of
    the actions taken follow it every tick, the learned table the pass's until read; int8:
    each such column rounded through its codes, as the numpy twin keeps it)."""
    mine = _grid_group(n, native_tick=True, monkeypatch=monkeypatch, prior=prior,
                       learn_A=learn_A, world=world, scope=scope, precision=precision)
    theirs = _grid_group(n, native_tick=False, monkeypatch=monkeypatch, prior=prior,
                         learn_A=learn_A, world=world, scope=scope, precision=precision)
    assert _stepping(mine) == "native"
    assert _stepping(theirs) == f"numpy: {NATIVE_ENV}=0"
    rng = np.random.default_rng(n)
    # outcomes near each agent's last cell (a step or two away), so that its transitions
    # learn something: the cell seen, a neighbour of it at times
    size, row = (100, 10) if world == "grid10" else (12, 1)
    cells = rng.integers(0, size, size=n)
    widest: dict[str, float] = {}  # (int8: the one-step bound once a code was off)
    for t in range(40):
        moved = cells + rng.choice([0, 1, -1, row, -row], size=n)
        cells = np.clip(moved, 0, size - 1)
        obs = cells[:, None].astype(np.int64)
        if world == "corridor":  # and a context cue, at random
            obs = np.concatenate([obs, rng.integers(0, 2, size=(n, 1))], axis=1)
        actions = mine.step(obs).copy()
        theirs.step(obs)
        _optimal(actions, theirs, widest.get("atol", tol))
        if t % 3:  # a tie may be broken either way: go on together
            mine.set_action(theirs.action)
        elif not np.array_equal(mine.state.action, theirs.action):  # (the state: a
            # per-agent pass's kept prior taken at the next tick, nothing handed out)
            theirs.set_action(mine.state.action)
        _assert_same_learning(mine, theirs, tol, widest)
        _live_alike(mine, theirs, t, rng, freeze_at=17, resume_at=22, forget_at=29, tol=tol)


@pytest.mark.parametrize(("scope", "precision", "tol"), PB_PRECISIONS)
def test_a_restored_snapshot_of_a_pb_group_steps_on_as_the_group_it_was_taken_from(
    scope: str, precision: str, tol: float, monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 9
    first = _grid_group(n, native_tick=True, monkeypatch=monkeypatch, prior="reach",
                        scope=scope, precision=precision)
    rng = np.random.default_rng(3)
    sequence = [rng.integers(0, 100, size=(n, 1)) for _ in range(20)]
    for obs in sequence[:10]:
        first.step(obs)
    second = _grid_group(n, native_tick=True, monkeypatch=monkeypatch, prior="reach",
                         scope=scope, precision=precision)
    assert _stepping(second) == "native"
    second.load_state_dict(first.state_dict())
    close = {"rtol": 0.0, "atol": tol}
    for obs in sequence[10:]:
        first.step(obs)
        second.step(obs)
        second.set_action(first.action)
        for a, b in zip(second.state.qs, first.state.qs, strict=True):
            np.testing.assert_allclose(a, b, **close)
        np.testing.assert_allclose(second.state.q_pi, first.state.q_pi, **close)
        np.testing.assert_allclose(_transitions(second), _transitions(first), **close)


@pytest.mark.parametrize(("n", "prior", "stepping"), [
    (LOCAL_MEASURED, "support", "native"),
    (LOCAL_MEASURED + 1, "reach", "native"),
    (LOCAL_MEASURED + 1, "support", "numpy: B's learned columns stay fixed and numpy's local "
     f"one-step planner outruns the compiled pass's dense plan above {LOCAL_MEASURED} agents"),
])
def test_a_large_int8_shared_group_whose_columns_stay_fixed_steps_numpy_s_local_planner(
    n: int, prior: str, stepping: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """grid10's moves learned on their support never move: above LOCAL_MEASURED agents its
    numpy tick (the local planner, nothing to refresh) is the cheaper."""
    group = _grid_group(n, native_tick=True, monkeypatch=monkeypatch, prior=prior,
                        scope="shared", precision="int8")
    assert _stepping(group) == stepping
    group.step(np.zeros((n, 1), dtype=np.int64))


def test_a_resized_int8_shared_pb_group_steps_on_as_the_numpy_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resized (the new agents from D, the counts and codes kept), an int8 shared group's pass
    steps on with its float32 state as its numpy twin does."""
    mine = _grid_group(6, native_tick=True, monkeypatch=monkeypatch, prior="reach",
                       scope="shared", precision="int8")
    theirs = _grid_group(6, native_tick=False, monkeypatch=monkeypatch, prior="reach",
                         scope="shared", precision="int8")
    assert _stepping(mine) == "native"
    rng = np.random.default_rng(8)
    for n in (6, 6, 6, 17, 17, 17, 17, 3, 3, 3):
        if n != mine.n_agents:
            mine.resize(n)
            theirs.resize(n)
        obs = rng.integers(0, 100, size=(n, 1))
        actions = mine.step(obs).copy()
        theirs.step(obs)
        _optimal(actions, theirs, 1e-3)
        mine.set_action(theirs.action)
        _assert_same_learning(mine, theirs, 1e-3)


def test_a_pb_group_on_a_dense_support_steps_with_numpy_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The T-maze's small ``B`` is kept whole per agent (not on its support): numpy."""
    model = tmaze_reversal_model()
    monkeypatch.setenv(NATIVE_ENV, "1")
    spec = LearningSpec(pB={0: model.B[0] * 2.0 + 0.5}, refresh_every=1,
                        settings=LearningSettings(scope="per_agent"))
    group = AifAgentGroup(model, 3, learning=spec, precision="float64")
    assert _stepping(group) == ("numpy: B0 learned on a dense support (the compiled tick "
                                "takes a sparse one)")
    group.step(np.zeros((3, group.cm.num_modalities), dtype=np.int64))


def _frozen(n: int, monkeypatch: pytest.MonkeyPatch) -> AifAgentGroup:
    monkeypatch.setenv(NATIVE_ENV, "1")
    group = AifAgentGroup(tmaze_reversal_model(), n, precision="int8")
    monkeypatch.delenv(NATIVE_ENV)
    return group


@pytest.mark.parametrize("kind", ["per_agent", "frozen"])
def test_outcomes_the_pass_reads_where_they_are_step_as_a_new_array_each_tick(
    kind: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A group given its outcomes in another dtype (converted into the array its check keeps,
    the same array every tick, which the compiled tick reads where it is) or in one int64 array
    written in place each tick (a world's), or in turns, steps to the bit as one given a new
    int64 array every tick: beliefs, plans, actions, counts, the surprise and health. (Not a
    shared float64 group: two of them given the same new arrays differ by ~1e-29 in their
    posteriors, on main too, whatever the outcomes' array.)"""
    n = 40
    fresh, reused = ((_frozen(n, monkeypatch) if kind == "frozen" else
                      _group(n, native_tick=True, monkeypatch=monkeypatch)) for _ in range(2))
    assert type(fresh.path).__name__ == ("CompiledTick" if kind == "frozen" else "PassTick")
    rng = np.random.default_rng(5)
    world = np.zeros((n, len(fresh.cm.num_obs)), dtype=np.int64)
    for t in range(40):
        obs = np.stack([rng.integers(0, o, size=n) for o in fresh.cm.num_obs], axis=1)
        if t % 10 < 6:  # int16 outcomes: the check's own array, the same tick after tick
            given = obs.astype(np.int16)
        else:  # one array a world writes in place (another between the two kinds)
            np.copyto(world, obs)
            given = world
        np.testing.assert_array_equal(fresh.step(obs.copy()), reused.step(given))
        for a, b in zip((*fresh.state.qs, *fresh.state.prior, fresh.state.G, fresh.state.q_pi),
                        (*reused.state.qs, *reused.state.prior, reused.state.G,
                         reused.state.q_pi), strict=True):
            np.testing.assert_array_equal(a, b)
        mine, theirs = fresh.learning, reused.learning
        if mine is not None and theirs is not None:
            np.testing.assert_array_equal(mine.learner.counts[0].counts[0],
                                          theirs.learner.counts[0].counts[0])
            assert mine.surprise.value == theirs.surprise.value
    ours, others = fresh.health_summary(), reused.health_summary()
    assert ours is not None
    assert others is not None
    assert ours.drift is not None
    assert others.drift is not None
    assert (ours.agent_steps, ours.measures, ours.drift.statistic) == (
        others.agent_steps, others.measures, others.drift.statistic)  # (not its wall clock)
