"""The experience a small shared group keeps before it learns from it
(``edge_agent.aif.learning_experience``): when a group keeps any, and what a kept tick
holds."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif.learning_experience import (
    EXPERIENCE_ROWS,
    EXPERIENCE_TICKS,
    Experience,
    experience_ticks,
)


@pytest.mark.parametrize(
    ("n", "refresh", "forgetting", "novelty", "expected"),
    [
        (1, 100, 0.0, False, 50),  # two updates of 50 ticks between refreshes
        (10, 100, 0.0, False, 25),
        (1, 7, 0.0, False, 7),  # never more than refresh_every
        (1, 99, 0.0, False, 50),
        (EXPERIENCE_ROWS // 2, 100, 0.0, False, 2),
        (EXPERIENCE_ROWS // 2 + 1, 100, 0.0, False, 1),  # fewer than two ticks fit
        (1000, 100, 0.0, False, 1),
        (1, 1, 0.0, False, 1),  # the tables follow the counts every tick
        (1, 100, 0.01, False, 1),  # forgetting decays the counts at each tick's update
        (1, 100, 0.0, True, 1),  # novelty reads the counts every tick
    ],
)
def test_a_group_keeps_ticks_only_where_the_counts_are_not_read_between(
    n: int, refresh: int, forgetting: float, novelty: bool, expected: int
) -> None:
    ticks = experience_ticks(n, refresh_every=refresh, forgetting=forgetting, novelty=novelty)
    assert ticks == expected
    assert ticks <= EXPERIENCE_TICKS
    assert ticks == 1 or ticks * n <= EXPERIENCE_ROWS


def test_kept_ticks_hold_what_each_tick_gave_and_count_the_ticks_with_a_transition() -> None:
    rng = np.random.default_rng(0)
    kept = Experience(3, 2, num_modalities=2, num_states=(4, 3), dtype=np.dtype(np.float32),
                      b_factors=(1,))
    ticks = []
    for t in range(3):
        obs = rng.integers(0, 4, (2, 2))
        qs = [rng.random((2, 4), dtype=np.float32), rng.random((2, 3), dtype=np.float32)]
        prev = [rng.random((2, 4), dtype=np.float32), rng.random((2, 3), dtype=np.float32)]
        actions = rng.integers(0, 3, (2, 2))
        acted = np.array([t > 0, t > 1])  # the first tick: nobody acted
        kept.append(obs, qs, prev, actions, acted)
        ticks.append((obs, qs, prev, actions, acted))
    assert kept.full
    assert kept.ticks == 3
    assert kept.rows == 6
    assert kept.acted_ticks == 2
    for t, (obs, qs, prev, actions, acted) in enumerate(ticks):
        rows = slice(2 * t, 2 * t + 2)
        np.testing.assert_array_equal(kept.obs[rows], obs)
        for f in range(2):
            np.testing.assert_array_equal(kept.qs[f][rows], qs[f])
        np.testing.assert_array_equal(kept.acted[rows], acted)
        if acted.any():  # a tick without a transition leaves nothing B would read
            np.testing.assert_array_equal(kept.qs_prev[1][rows], prev[1])
            np.testing.assert_array_equal(kept.actions[rows], actions)
    assert kept.nbytes == 6 * Experience.row_nbytes(2, (4, 3), 4, (1,))
    kept.clear()
    assert kept.ticks == kept.rows == kept.acted_ticks == 0
    assert not kept.full


def test_without_b_only_outcomes_and_posteriors_are_kept() -> None:
    kept = Experience(4, 5, num_modalities=3, num_states=(6,), dtype=np.dtype(np.float64))
    assert kept.nbytes == 20 * Experience.row_nbytes(3, (6,), 8, ())
    assert kept.actions.size == kept.acted.size == 0
