"""The per-agent state of an Active Inference group (edge_agent.core.agent_state): its arrays,
what a resize carries over, a reset, its bytes, and its arrays in and out of a snapshot."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.core.agent_state import TILE_BYTES, AgentState, RowTiles, fill_rows
from edge_agent.errors import InputError

S, P, F = (3, 2), 4, 2
D = [np.array([0.5, 0.25, 0.25]), np.array([0.9, 0.1])]


def zeros(shape: int | tuple[int, ...], dtype: object) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)  # type: ignore[call-overload]


def state(n: int, *, keeps_prior: bool = True, block_size: int = 4) -> AgentState:
    s = AgentState(S, P, F, np.dtype(np.float64), keep_prior=keeps_prior)

    def unused(out: list[np.ndarray], n: int) -> None:
        raise AssertionError("no priors to make")

    s.allocate(n, keeps_prior=keeps_prior, block_size=block_size, new=zeros, make_priors=unused)
    return s


def test_a_resize_carries_the_first_agents_and_moves_the_version() -> None:
    s = state(5)
    s.reset(slice(None), D)
    s.qs[0][:, :] = np.arange(15).reshape(5, 3)
    s.action[:, :] = np.arange(10).reshape(5, 2)
    s.has_action[:] = True
    version = s.version

    def unused(out: list[np.ndarray], n: int) -> None:
        raise AssertionError("the prior was kept")

    changed = s.allocate(7, keeps_prior=True, block_size=4, new=zeros, make_priors=unused)
    assert not changed
    assert s.version > version
    assert s.n_agents == 7
    np.testing.assert_array_equal(s.qs[0][:5], np.arange(15).reshape(5, 3))
    np.testing.assert_array_equal(s.action[:5], np.arange(10).reshape(5, 2))
    assert s.has_action[:5].all()
    assert not s.has_action[5:].any()
    np.testing.assert_array_equal(s.prior[1][:5], np.broadcast_to(D[1], (5, 2)))
    s.allocate(2, keeps_prior=True, block_size=4, new=zeros, make_priors=unused)
    np.testing.assert_array_equal(s.qs[0], np.arange(6).reshape(2, 3))


def test_a_state_that_starts_keeping_its_prior_has_the_first_agents_priors_made() -> None:
    s = state(5, keeps_prior=False)
    assert s.prior == []
    assert s.prior_reset.shape == (5,)
    assert s.prior_small.shape == (2,)
    made: list[int] = []

    def make(out: list[np.ndarray], n: int) -> None:
        made.append(n)
        for o in out:
            o[:n] = 7.0

    assert s.allocate(6, keeps_prior=True, block_size=4, new=zeros, make_priors=make)
    assert made == [5]
    assert (s.prior[0][:5] == 7.0).all()
    assert (s.prior[0][5:] == 0.0).all()
    assert s.keeps_prior
    assert s.prior_was_kept


def test_a_reset_starts_a_trial_from_d() -> None:
    s = state(4)
    s.has_action[:] = True
    s.G[:] = 3.0
    s.reset(np.array([1, 3]), D)
    assert list(s.has_action) == [True, False, True, False]
    np.testing.assert_array_equal(s.qs[0][[1, 3]], np.broadcast_to(D[0], (2, 3)))
    np.testing.assert_array_equal(s.q_pi[1], np.full(P, 1.0 / P))
    assert (s.G[[1, 3]] == 0.0).all()
    assert (s.G[[0, 2]] == 3.0).all()
    kept_none = state(4, keeps_prior=False)
    kept_none.reset(slice(None), D)
    assert kept_none.prior_reset.all()
    kept_none.commit(slice(0, 4), small=True, index=0)
    assert not kept_none.prior_reset.any()
    assert kept_none.prior_small[0] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8, 100])
def test_rows_filled_are_the_bytes_of_the_row_assigned(dtype: type, k: int) -> None:
    """fill_rows writes what ``a[sel] = row`` writes (the row cast to the array's dtype),
    whether the rows are contiguous (one value of a row's bytes each) or not (strided columns,
    a block of a wider array's columns), for a slice and for indices."""
    rng = np.random.default_rng(k)
    row = rng.random(k)
    for n in (1, 7, 300, 1000):
        for sel in (slice(None), slice(2, 5), np.flatnonzero(rng.random(n) < 0.3)):
            for a in (rng.random((n, k)).astype(dtype),
                      rng.random((n, 2 * k)).astype(dtype)[:, ::2],
                      rng.random((n, 2 * k)).astype(dtype)[:, :k]):
                expected = a.copy()
                expected[sel] = row
                fill_rows(a, sel, row)
                assert a.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 100, TILE_BYTES])
def test_a_tile_writes_the_bytes_of_its_row_and_follows_the_row(dtype: type, k: int) -> None:
    """RowTiles.fill writes what ``a[sel] = row`` writes, whatever the agents (a tile's rows a
    divisor of them or not, fewer than a tile), and a key's tile is made again when its row is
    another, changed in place, or cast to another dtype: every reset writes the row it is
    given."""
    rng = np.random.default_rng(k)
    tiles = RowTiles()
    row = rng.random(k)
    for n in (1, 7, 255, 256, 300, 512, 1000, 1025):
        for sel in (slice(None), slice(2, 5), np.flatnonzero(rng.random(n) < 0.3)):
            for _ in range(2):  # the same row again, then one changed in place
                a = rng.random((n, k)).astype(dtype)
                expected = a.copy()
                expected[sel] = row
                tiles.fill(0, a, sel, row)
                assert a.tobytes() == expected.tobytes()
                row[rng.integers(k)] = rng.random()
    wide = rng.random((1000, k))  # the same key, the other dtype: the tile is not reused
    other = np.float64 if dtype == np.float32 else np.float32
    for a in (rng.random((1000, k)).astype(other), wide.astype(dtype)):
        expected = a.copy()
        expected[:] = row
        tiles.fill(0, a, slice(None), row)
        assert a.tobytes() == expected.tobytes()
    # a row of the same bytes in another dtype (two float32 as one float64)
    pair = np.array([0.25, 0.75], dtype=np.float32)
    for a, r in ((np.zeros((1000, 2), np.float32), pair),
                 (np.zeros((1000, 1)), pair.view(np.float64))):
        tiles.fill(1, a, slice(None), r)
        assert (a == r).all()


def test_a_reset_of_every_agent_writes_the_prior_it_is_given() -> None:
    """A reset of every agent (tiles) writes the ``D`` it is given each time: another array, or
    the same changed in place."""
    n = 1000
    s = state(n)
    d = [np.array([0.2, 0.3, 0.5]), np.array([0.5, 0.5])]
    for new in ([0.5, 0.3, 0.2], [0.8, 0.1, 0.1]):
        s.reset(slice(None), d)
        for f in range(2):
            assert (s.qs[f] == d[f]).all()
            assert (s.prior[f] == d[f]).all()
        d[0][:] = new  # in place
    d = [np.array([0.6, 0.3, 0.1]), np.array([0.9, 0.1])]  # other arrays
    s.reset(slice(None), d)
    for f in range(2):
        assert (s.qs[f] == d[f]).all()
        assert (s.prior[f] == d[f]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keeps_prior", [True, False])
def test_a_reset_of_every_agent_writes_what_a_reset_of_each_writes(
    dtype: type, keeps_prior: bool
) -> None:
    """A reset of every agent (``slice(None)``: each array filled whole) leaves the bytes a
    reset of the same agents by index leaves."""
    n, policies = 300, 7  # (1/7 rounds in float32)
    states = []
    for sel in (slice(None), np.arange(n)):
        s = AgentState(S, policies, F, np.dtype(dtype), keep_prior=keeps_prior)
        s.allocate(n, keeps_prior=keeps_prior, block_size=4, new=zeros,
                   make_priors=lambda out, n: None)
        rng = np.random.default_rng(0)
        for a in (*s.qs, *s.prior, s.q_pi, s.G):
            a[...] = rng.random(a.shape)
        s.has_action[...] = True
        s.prior_reset[...] = False
        s.reset(sel, D)
        states.append(s)
    every, each = states
    for name in ("qs", "prior"):
        for a, b in zip(getattr(every, name), getattr(each, name), strict=True):
            assert a.tobytes() == b.tobytes()
    for name in ("q_pi", "G", "has_action", "prior_reset"):
        assert getattr(every, name).tobytes() == getattr(each, name).tobytes(), name
    assert not every.has_action.any()
    if not keeps_prior:
        assert every.prior_reset.all()


@pytest.mark.parametrize("keeps_prior", [True, False])
def test_its_bytes_are_what_it_allocates(keeps_prior: bool) -> None:
    n = 6
    s = state(n, keeps_prior=keeps_prior)
    per = s.bytes_per_agent(keeps_prior)
    assert set(per) == {"beliefs", "policy", "actions"}
    assert s.nbytes == n * sum(per.values())


def test_its_arrays_go_in_and_out_of_a_snapshot() -> None:
    s = state(3)
    s.reset(slice(None), D)
    s.qs[1][:] = [[0.2, 0.8]] * 3
    out = s.state_dict(ticks=9)
    assert set(out) == {"action", "has_action", "q_pi", "ticks", "qs0", "qs1", "prior0", "prior1"}
    assert int(out["ticks"]) == 9
    saved = {k: np.array(v, copy=True) for k, v in out.items()}
    other = state(3)

    def take(name: str, into: np.ndarray) -> None:
        if name not in saved:
            raise InputError(f"lacks {name}")
        into[...] = saved[name]

    def no_priors(reset: np.ndarray, small: np.ndarray) -> None:
        raise AssertionError("the priors were saved")

    other.load_state_dict(saved, take, D=D, blocks=1, block_size=4, small_from_planner=True,
                          make_priors=no_priors, name="g")
    for k, v in saved.items():
        if k != "ticks":
            np.testing.assert_array_equal(other.state_dict(0)[k], v, err_msg=k)
    kept_none = state(3, keeps_prior=False)  # a saved group that kept them: D where it is D
    saved["prior0"][1] = [1.0, 0.0, 0.0]
    kept_none.load_state_dict(saved, take, D=D, blocks=1, block_size=2,
                              small_from_planner=True, make_priors=no_priors, name="g")
    assert list(kept_none.prior_reset) == [True, False, True]
    assert list(kept_none.prior_small) == [1]


def test_sharing_moves_the_arrays_and_the_version() -> None:
    s = state(3)
    version, qs = s.version, s.qs[0]
    s.share()
    from edge_agent.core.workers import is_shared

    assert s.version > version
    assert s.qs[0] is not qs
    assert is_shared(s.qs[0])
    assert all(is_shared(a) for a in (*s.prior, s.q_pi, s.G, s.action, s.has_action))
