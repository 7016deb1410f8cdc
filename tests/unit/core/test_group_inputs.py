"""What a group's tick takes from outside, checked at the boundary
(edge_agent.core.group_inputs): each wrong input refused naming what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.core.group_inputs import CHECK_VALUES, GroupInputs
from edge_agent.errors import InputError

INPUTS = GroupInputs((3, 2), (4,), np.dtype(np.float32))


@pytest.mark.parametrize("n", [1, 5])
def test_outcomes_in_range_are_taken_as_int64(n: int) -> None:
    obs = np.tile(np.array([[2, 1]], dtype=np.uint8), (n, 1))
    checked = INPUTS.obs(obs, n)
    assert checked.dtype == np.int64
    np.testing.assert_array_equal(checked, obs)
    hard, soft = INPUTS.evidence(obs, n)
    assert soft is None
    assert hard is not None
    np.testing.assert_array_equal(hard, obs)


@pytest.mark.parametrize(("obs", "message"), [
    (np.zeros((2, 3), dtype=np.int64), r"obs has shape \(2, 3\), expected \(2, 2\)"),
    (np.zeros((2, 2)), "obs must be integer outcomes, got dtype float64"),
    (np.array([[0, 0], [3, 1]]), r"obs\[1, 0\] = 3 is out of range \[0, 3\) \(1 agent"),
    (np.array([[0, -1], [0, 0]]), r"obs\[0, 1\] = -1 is out of range \[0, 2\)"),
])
def test_wrong_outcomes_are_refused_naming_what_is_wrong(obs: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        INPUTS.obs(obs, 2)


def test_soft_evidence_is_a_distribution_per_modality() -> None:
    p0, p1 = np.full((2, 3), 1 / 3), np.full((2, 2), 0.5)
    hard, soft = INPUTS.evidence([p0, p1], 2)
    assert hard is None
    assert soft is not None
    assert [s.dtype for s in soft] == [np.float32, np.float32]
    with pytest.raises(InputError, match="soft evidence has 1 modalities, expected 2"):
        INPUTS.evidence([p0], 2)
    with pytest.raises(InputError, match=r"modality 1 has shape \(2, 3\), expected \(2, 2\)"):
        INPUTS.evidence([p0, p0], 2)
    with pytest.raises(InputError, match="modality 0 must be finite and non-negative"):
        INPUTS.evidence([-p0, p1], 2)


def test_actions_within_each_factors_controls() -> None:
    np.testing.assert_array_equal(INPUTS.actions(np.array([[3], [0]]), 2), [[3], [0]])
    with pytest.raises(InputError, match=r"actions has shape \(2,\), expected \(2, 1\)"):
        INPUTS.actions(np.array([1, 2]), 2)
    with pytest.raises(InputError, match="actions must be integers"):
        INPUTS.actions(np.array([[1.0], [2.0]]), 2)
    with pytest.raises(InputError, match=r"actions on factor 0 must be in \[0, 4\), got 4"):
        INPUTS.actions(np.array([[4], [0]]), 2)


@pytest.mark.parametrize("n", [2, 63, 64, 65, 130, 256, 257, 1000, 1365, 1366, 3000])
def test_a_batch_s_outcomes_are_checked_every_agent_every_modality(n: int) -> None:
    """The outcomes compared a run of the limits' length at a time (CHECK_VALUES at most: 1,365
    agents of 3 modalities) and the rest after them: one outcome out of range anywhere (either
    end of its modality's range, at any agent, either side of a run's end) is refused, none
    taken."""
    inputs = GroupInputs((4, 3, 3), (2,), np.dtype(np.float32))
    rng = np.random.default_rng(n)
    obs = np.stack([rng.integers(0, o, n) for o in (4, 3, 3)], axis=1)
    np.testing.assert_array_equal(inputs.obs(obs, n), obs)
    for agent in sorted({0, 63 % n, 64 % n, 1364 % n, 1365 % n, 2730 % n, n - 1}):
        for m, o in enumerate((4, 3, 3)):
            for bad in (-1, o, 2**40):
                wrong = obs.copy()
                wrong[agent, m] = bad
                with pytest.raises(InputError, match=rf"obs\[{agent}, {m}\] = {bad} is out"):
                    inputs.obs(wrong, n)


def test_the_limits_follow_the_batch_s_size() -> None:
    """The limits made for one batch serve a smaller one (their start) and are made again,
    longer, for a larger one (a resized group), up to CHECK_VALUES: every outcome of every
    batch is checked, whatever came before."""
    inputs = GroupInputs((4, 3, 3), (2,), np.dtype(np.float32))
    rng = np.random.default_rng(0)
    for n in (5, 2, 7, 400, 9, 1365, 2000, 3, 5000, 1000):
        obs = np.stack([rng.integers(0, o, n) for o in (4, 3, 3)], axis=1)
        np.testing.assert_array_equal(inputs.obs(obs, n), obs)
        made = inputs._limits
        assert made.size <= CHECK_VALUES
        inputs.obs(obs, n)
        assert inputs._limits is made  # (made once for a batch's size: none a tick)
        for agent in sorted({0, n // 2, n - 1}):
            wrong = obs.copy()
            wrong[agent, 2] = 3
            with pytest.raises(InputError, match=rf"obs\[{agent}, 2\] = 3 is out"):
                inputs.obs(wrong, n)


def test_outcomes_of_another_dtype_or_layout_are_converted_into_one_array_per_shape() -> None:
    """C-contiguous int64 outcomes are taken as they are; others (another integer dtype, a
    strided view) are written into the array the check keeps for the batch's shape: the same
    array batch after batch (no array made a tick), made again for another shape, their
    values ``np.ascontiguousarray``'s every time."""
    inputs = GroupInputs((3, 2), (4,), np.dtype(np.float32))
    rng = np.random.default_rng(0)
    own = np.zeros((4, 2), dtype=np.int64)
    assert inputs.obs(own, 4) is own
    kept, most = None, 0
    for n, dtype in [(4, np.int16), (4, np.uint8), (4, np.int16), (6, np.int16), (4, np.int32)]:
        obs = np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n)], axis=1).astype(dtype)
        checked = _checked(inputs, obs, n)
        np.testing.assert_array_equal(checked, np.ascontiguousarray(obs, dtype=np.int64))
        assert checked.dtype == np.int64
        assert checked.flags.c_contiguous
        if kept is not None and kept.shape == checked.shape:
            assert checked is kept  # written again, not made again
        kept = checked
        held = inputs._limits.nbytes + inputs._below.nbytes + checked.nbytes
        most = max(most, n)  # (the limits are made for the largest batch yet)
        assert held <= GroupInputs.check_nbytes(most, 2)  # (reserved with the group)
    wide = np.zeros((4, 4), dtype=np.int64)
    wide[:, ::2] = [[2, 1]] * 4
    strided = _checked(inputs, wide[:, ::2], 4)
    assert strided is kept
    assert strided.tolist() == [[2, 1]] * 4
    with pytest.raises(InputError, match=r"obs\[1, 0\] = 3 is out of range"):
        inputs.obs(np.array([[0, 0], [3, 1], [0, 0], [0, 0]], dtype=np.int16), 4)


def _checked(inputs: GroupInputs, obs: np.ndarray, n: int) -> np.ndarray:
    """``inputs.obs`` and ``inputs.evidence`` of ``obs``: the same array, returned."""
    checked = inputs.obs(obs, n)
    hard, _ = inputs.evidence(obs, n)
    assert hard is checked
    return checked
