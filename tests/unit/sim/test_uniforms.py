"""``edge_agent.sim.uniforms``: SplitMix64 in whole-array steps, and the worlds drawing from it."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.sim.registry import make_env
from edge_agent.sim.uniforms import GAMMA, MASK64, SplitMix64, mix64


def reference(state: int, n: int) -> list[int]:
    """The reference implementation's ``next()``, one call at a time."""
    out = []
    for _ in range(n):
        state = (state + GAMMA) & MASK64
        out.append(mix64(state))
    return out


def test_the_published_outputs() -> None:
    # Vigna's splitmix64.c from state 0, and the seeding stream of the xoshiro test suite.
    assert int(SplitMix64.from_state(0).bits(1)[0]) == 0xE220A8397B1DCDAF
    assert [int(x) for x in SplitMix64.from_state(1234567).bits(3)] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
    ]


@pytest.mark.parametrize("state", [0, 1, 2**63 + 5, MASK64])
def test_batches_are_the_sequential_stream_however_split(state: int) -> None:
    expected = reference(state, 47)
    stream = SplitMix64.from_state(state)
    got: list[int] = []
    for n in (1, 7, 7, 25, 3, 4):  # larger buffers, the same again, larger, smaller ones
        got.extend(int(x) for x in stream.bits(n))
    assert got == expected
    assert stream.state == (state + 47 * GAMMA) & MASK64


def test_uniforms_are_53_bit_fractions_in_the_unit_interval() -> None:
    u = np.empty(200_000)
    assert SplitMix64(3).random(out=u) is u
    assert u.min() >= 0.0
    assert u.max() < 1.0
    assert np.all(u * 2.0**53 == np.floor(u * 2.0**53))  # exactly k / 2**53
    first = reference(SplitMix64(3).state, 5)
    assert list(u[:5]) == [(x >> 11) * 2.0**-53 for x in first]
    # Equidistribution at a fixed seed (deterministic, so it cannot flake): chi-square over 100
    # equal bins, 99 degrees of freedom, below its 99.9th percentile (148.2).
    counts = np.bincount((u * 100).astype(np.intp), minlength=100)
    expected = u.size / 100
    assert ((counts - expected) ** 2 / expected).sum() < 148.2
    # Neighbouring draws are uncorrelated.
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01


def test_nearby_seeds_give_unrelated_streams() -> None:
    a, b = np.empty(1000), np.empty(1000)
    SplitMix64(0).random(out=a)
    SplitMix64(1).random(out=b)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1
    assert not set(a) & set(b)
    assert SplitMix64(2**64 + 7).state == SplitMix64(7).state  # modulo 2**64, as documented


def test_random_refuses_what_it_cannot_fill() -> None:
    with pytest.raises(ValueError, match="1-d float64"):
        SplitMix64().random(out=np.empty(4, dtype=np.float32))
    with pytest.raises(ValueError, match="1-d float64"):
        SplitMix64().random(out=np.empty((2, 2)))


def test_a_world_is_fixed_by_its_seed_and_varies_with_it() -> None:
    def run(seed: int) -> np.ndarray:
        env = make_env("grid10", 500, seed=seed)
        rows = [env.reset().copy()]
        actions = np.zeros((500, 1), dtype=np.int64)
        (controls,) = env.model.num_controls
        for t in range(20):
            actions[:, 0] = t % controls
            rows.append(env.step(actions).copy())
        return np.stack(rows)

    assert np.array_equal(run(4), run(4))
    assert not np.array_equal(run(4), run(5))


def test_uniforms_at_offsets_are_those_a_batch_would_give() -> None:
    """random_at picks some of the next uniforms without making the others; skip moves the
    stream past them: together, the stream a batch of all of them gives."""
    whole, part = SplitMix64(9), SplitMix64(9)
    everything = whole.random(out=np.empty(1000))
    offsets = np.array([0, 3, 4, 500, 999], dtype=np.intp)
    picked = part.random_at(offsets, out=np.empty(5))
    np.testing.assert_array_equal(picked, everything[offsets])
    part.skip(1000)
    assert part.state == whole.state
    np.testing.assert_array_equal(part.random(out=np.empty(7)), whole.random(out=np.empty(7)))
