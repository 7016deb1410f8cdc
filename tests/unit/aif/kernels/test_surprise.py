"""Each agent's surprise -ln p(o) after state inference (edge_agent.aif.kernels.surprise_block):
the normaliser of the inference, checked against the prior predictive summed directly."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies
from edge_agent.sim.registry import make_env


def _direct(model: GenerativeModel, obs: np.ndarray, prior: list[np.ndarray]) -> np.ndarray:
    """-ln sum over joint states of prod_m A_m[o_m, s] * prod_f prior_f(s_f), agent by agent."""
    out = []
    for i in range(len(obs)):
        joint = prior[0][i]
        for p in prior[1:]:
            joint = np.multiply.outer(joint, p[i])
        like = np.ones_like(joint)
        for m, a in enumerate(model.A):
            like = like * a[obs[i, m]]
        out.append(-np.log((like * joint).sum()))
    return np.array(out)


@pytest.mark.parametrize("world", ["grid10", "tmaze", "explorer"])
def test_surprise_is_minus_log_the_prior_predictive(world: str) -> None:
    n = 40
    env = make_env(world, n, seed=3)
    model = env.model
    cm = kernels.compile_model(
        model, construct_policies(model.num_controls, 1), dtype=np.float64
    )
    ws = kernels.Workspace(cm, n, info_gain=True, dense_capacity=n)
    blk = ws.block(n)
    rng = np.random.default_rng(0)
    prior = [rng.dirichlet(np.ones(s), size=n) for s in model.num_states]
    obs = env.reset()
    qs = [np.empty_like(p) for p in prior]
    kernels.infer_block(cm, obs, prior, qs, blk, num_iter=10, dF_tol=1e-3, roots=False)
    got = np.empty(n)
    kernels.surprise_block(cm, blk, got)
    # eps (1e-16) in the likelihood and the prior moves p(o) by far less than this
    np.testing.assert_allclose(got, _direct(model, obs, prior), rtol=1e-9, atol=1e-9)
    assert (got >= 0).all()


def test_an_impossible_observation_is_very_surprising_not_infinite() -> None:
    env = make_env("tmaze", 2, seed=1)
    model = env.model
    cm = kernels.compile_model(model, construct_policies(model.num_controls, 1), dtype=np.float32)
    ws = kernels.Workspace(cm, 2, info_gain=True, dense_capacity=2)
    blk = ws.block(2)
    # a prior certain of one joint state, and outcomes that state cannot give where it can
    prior = [np.eye(s, dtype=np.float32)[[0, 0]] for s in model.num_states]
    obs = env.reset().copy()
    impossible = int(np.flatnonzero(model.A[0].reshape(model.A[0].shape[0], -1)[:, 0] == 0)[0])
    obs[:, 0] = impossible  # an outcome of the first modality the state never gives
    qs = [np.empty_like(p) for p in prior]
    kernels.infer_block(cm, obs, prior, qs, blk, num_iter=10, dF_tol=1e-3, roots=False)
    got = np.empty(2, dtype=np.float32)
    with np.errstate(divide="raise", invalid="raise", over="raise"):  # underflow is fine
        kernels.surprise_block(cm, blk, got)
    assert np.isfinite(got).all()
    assert (got > 30).all()  # p(o) of the order of eps
