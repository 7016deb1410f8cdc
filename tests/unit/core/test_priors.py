"""edge_agent.core.priors: where a prior follows from what a group keeps, and reading the
priors of a group that kept them (the whole numbers are tests/unit/core/test_agents_prior.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.priors import prior_follows, resets_of_kept_priors, saved_small_flags
from edge_agent.errors import InputError
from edge_agent.sim.registry import builtin_model


def test_where_the_prior_follows() -> None:
    grid = AifAgentGroup(builtin_model("grid10"), 5)  # local planner; 1,645 a block
    cm, block, dense = grid.cm, grid.block_size, grid.stepper.sizes.dense

    def follows(n: int, every_tick: bool = True) -> bool:
        return prior_follows(
            cm, every_tick=every_tick, block_size=block, dense_block_size=dense, n_agents=n
        )

    assert follows(10)  # one small block
    assert not follows(50)  # one block the dense tree takes (with soft evidence)
    assert follows(50, every_tick=False)  # a planning policy propagates every prior
    assert dense + 10 < block
    assert follows(600 * block + dense + 10)  # a million agents or so: a last block above dense
    assert not follows(block + 50)  # a last block of 50
    assert follows(block + 10)  # a last block of 10: small


def test_the_resets_of_kept_priors_and_what_is_refused() -> None:
    D = [np.full(4, 0.25, dtype=np.float32)]
    prior = np.tile(D[0], (10, 1))
    prior[[1, 5, 9]] = [0.7, 0.1, 0.1, 0.1]
    out = np.empty(10, dtype=bool)
    resets_of_kept_priors({"prior0": prior}, D, out, rows=3, name="g")
    np.testing.assert_array_equal(out, ~np.isin(np.arange(10), [1, 5, 9]))
    with pytest.raises(InputError, match=r"^group 'g' snapshot 'prior0' has 10 rows, expected 12$"):
        resets_of_kept_priors({"prior0": prior}, D, np.empty(12, dtype=bool), rows=3, name="g")
    with pytest.raises(InputError, match="has rows of shape"):
        resets_of_kept_priors({"prior0": prior[:, :3]}, D, out, rows=3, name="g")


def test_small_flags_of_other_blocks_are_none() -> None:
    saved = {"prior_small": np.array([0, 1, 1], dtype=np.uint8)}
    np.testing.assert_array_equal(saved_small_flags(saved, 3), [0, 1, 1])
    np.testing.assert_array_equal(saved_small_flags(saved, 4), [0, 0, 0, 0])
    np.testing.assert_array_equal(saved_small_flags({}, 2), [0, 0])
