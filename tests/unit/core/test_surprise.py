"""The sampled surprise (edge_agent.core.surprise): every SURPRISE_EVERY-th tick, over at most
SURPRISE_AGENTS agents spread evenly, folded into a moving mean."""

from __future__ import annotations

import numpy as np

from edge_agent.aif.constants import EPS
from edge_agent.core.surprise import SURPRISE_AGENTS, SURPRISE_EVERY, SampledSurprise


def test_the_moving_mean_of_minus_log_p_of_the_sampled_ticks() -> None:
    meter = SampledSurprise()
    told: list[np.ndarray] = []

    def p_obs(obs: np.ndarray, rows: np.ndarray, joint: np.ndarray) -> np.ndarray:
        told.append(rows)
        return np.full((len(rows), 2), 0.5)  # two modalities, p = 1/2 each

    n = 10
    obs = np.zeros((n, 2), dtype=np.int64)
    prior = [np.full((n, 3), 1 / 3)]
    for tick in range(2 * SURPRISE_EVERY + 1):
        meter.note(obs, prior, p_obs)
        assert len(told) == tick // SURPRISE_EVERY + 1  # the first tick, then every 8th
    assert abs(meter.value + 2 * np.log(0.5 + EPS)) < 1e-12
    np.testing.assert_array_equal(told[0], np.arange(n))


def test_a_large_group_is_sampled_evenly() -> None:
    meter = SampledSurprise()
    n = 3 * SURPRISE_AGENTS + 5
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    obs = np.arange(n)[:, None]
    prior = [np.tile(np.eye(2)[0], (n, 1))]

    def p_obs(obs: np.ndarray, rows: np.ndarray, joint: np.ndarray) -> np.ndarray:
        seen.append((obs.copy(), rows))
        np.testing.assert_array_equal(joint, np.tile([1.0, 0.0], (len(rows), 1)))
        return np.where(rows % 2 == 0, 0.25, 1.0)[:, None].astype(np.float64)

    meter.note(obs, prior, p_obs)
    (got, rows), = seen
    step = -(-n // SURPRISE_AGENTS)
    np.testing.assert_array_equal(rows, np.arange(0, n, step))
    np.testing.assert_array_equal(got[:, 0], rows)
    expected = -np.mean(np.log(np.where(rows % 2 == 0, 0.25, 1.0) + EPS))
    assert abs(meter.value - expected) < 1e-12


def test_a_tick_that_took_its_p_is_sampled_as_one_that_did_not() -> None:
    """note_taken (a compiled pass's p(o), asked of the sampled rows alone) folds the same
    agents on the same ticks into the same moving mean as note."""
    n = 3 * SURPRISE_AGENTS + 5
    rng = np.random.default_rng(0)
    ticks = [rng.random((n, 2)) for _ in range(3 * SURPRISE_EVERY + 2)]
    given, taken = SampledSurprise(), SampledSurprise()
    asked: list[np.ndarray] = []
    obs = np.zeros((n, 2), dtype=np.int64)
    prior = [np.full((n, 3), 1 / 3)]

    def take(rows: np.ndarray) -> np.ndarray:
        asked.append(rows)
        return p[rows]

    for p in ticks:
        given.note(obs, prior, lambda o, rows, joint, p=p: p[rows])
        taken.note_taken(n, take)
        assert taken.value == given.value
    assert len(asked) == -(-len(ticks) // SURPRISE_EVERY)
    np.testing.assert_array_equal(asked[0], np.arange(0, n, -(-n // SURPRISE_AGENTS)))
