"""A small random model to learn on (two state factors, two modalities, a zero in ``A[0]``),
its Dirichlet priors and random posteriors, shared by the tests of edge_agent/aif/learning*.py."""

from __future__ import annotations

import numpy as np

from edge_agent.aif.model import GenerativeModel


def random_model(rng: np.random.Generator) -> GenerativeModel:
    num_states, num_controls, num_obs = (3, 4), (2, 3), (4, 3)
    A = [rng.dirichlet(np.ones(o), size=num_states).transpose(2, 0, 1) for o in num_obs]
    B = [
        rng.dirichlet(np.ones(s), size=(s, u)).transpose(2, 0, 1)
        for s, u in zip(num_states, num_controls, strict=True)
    ]
    A[0][:, 0, 0] = [1.0, 0.0, 0.0, 0.0]  # a table zero under counts: the first-update mask
    return GenerativeModel.from_arrays(A, B)


def priors(model: GenerativeModel) -> tuple[dict[int, np.ndarray], ...]:
    pA = {0: model.A[0] * 3.0 + 0.2, 1: model.A[1] * 2.0 + 0.5}
    pB = {1: model.B[1] * 4.0 + 0.3}
    pD = {0: model.D[0] * 2.0 + 0.1, 1: model.D[1] + 0.4}
    return pA, pB, pD


def random_qs(rng: np.random.Generator, n: int, num_states: tuple[int, ...]) -> list[np.ndarray]:
    return [rng.dirichlet(np.ones(s), size=n) for s in num_states]
