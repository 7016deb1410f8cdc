"""Uniform random numbers for the built-in worlds, without ``numpy.random``.

A daemon that runs a built-in world draws a few arrays of uniforms per tick and nothing else;
importing ``numpy.random`` for that costs 2.4 MB of resident memory (its extension modules,
``secrets``, ``hmac``, ``random``: ``benchmarks/notes/memory.md``), 6 % of the 40 MB a daemon
without MQTT is to stay within.
:class:`SplitMix64` is the generator of Steele, Lea and Flood ("Fast splittable pseudorandom number
generators", OOPSLA 2014; Java's ``SplittableRandom``), which passes TestU01's BigCrush. Its state
advances by a constant, so the ``n`` next outputs are ``mix(state + k * GAMMA)`` for ``k = 1..n``:
a batch is a handful of whole-array operations on reused buffers, with no Python loop.

``SplitMix64(seed).random(out=u)`` fills a float64 array with numbers in ``[0, 1)`` (53 random
bits each), like ``numpy.random.Generator.random(out=u)``. The same seed gives the same numbers on
every machine and for every way of splitting a run into batches.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["GAMMA", "SplitMix64", "mix64"]

MASK64 = (1 << 64) - 1
#: The state's increment: 2**64 divided by the golden ratio, made odd.
GAMMA = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
_TO_53_BITS = np.uint64(11)
_UNIT = 2.0**-53


def mix64(z: int) -> int:
    """SplitMix64's output function on one 64-bit integer (a bijection)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class SplitMix64:
    """A SplitMix64 stream seeded by any integer (taken modulo 2**64).

    The seed is mixed once before it becomes the state, so the streams of nearby seeds (0, 1, 2,
    ...) start at unrelated points of the generator's period of 2**64.
    """

    __slots__ = ("_state", "_steps", "_t", "_z")

    def __init__(self, seed: int = 0) -> None:
        self._state = mix64(int(seed))
        self._steps: NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self._z: NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self._t: NDArray[np.uint64] = np.empty(0, dtype=np.uint64)

    @classmethod
    def from_state(cls, state: int) -> SplitMix64:
        """A stream whose state is ``state`` as it is (no seed mixing): the reference
        implementation's own seeding, for its published outputs."""
        stream = cls()
        stream._state = int(state) & MASK64
        return stream

    @property
    def state(self) -> int:
        """The 64-bit state: the next output is ``mix64(state + GAMMA)``."""
        return self._state

    def _buffers(self, n: int) -> None:
        # k * GAMMA for k = 1..n, wrapping modulo 2**64 as uint64 arithmetic does.
        self._steps = np.arange(1, n + 1, dtype=np.uint64)
        np.multiply(self._steps, np.uint64(GAMMA), out=self._steps)
        self._z = np.empty(n, dtype=np.uint64)
        self._t = np.empty(n, dtype=np.uint64)

    def bits(self, n: int) -> NDArray[np.uint64]:
        """The next ``n`` raw 64-bit outputs (a buffer the next call reuses: its buffers grow
        to the largest ``n`` asked for, and a smaller batch uses their start)."""
        if self._steps.shape[0] < n:
            self._buffers(n)
        z = self._z[:n]
        np.add(self._steps[:n], np.uint64(self._state), out=z)
        self._state = (self._state + n * GAMMA) & MASK64
        return self._mix(z)

    def _mix(self, z: NDArray[np.uint64]) -> NDArray[np.uint64]:
        """The output function on states ``z``, in place."""
        t = self._t[: z.shape[0]]
        for shift, factor in zip(_SHIFTS, (_M1, _M2, None), strict=True):
            np.right_shift(z, shift, out=t)
            np.bitwise_xor(z, t, out=z)
            if factor is not None:
                np.multiply(z, factor, out=z)
        return z

    def random(self, out: NDArray[np.float64]) -> NDArray[np.float64]:
        """Fill the 1-d float64 array ``out`` with uniforms in ``[0, 1)``; returns ``out``."""
        if out.ndim != 1 or out.dtype != np.float64:
            raise ValueError(f"out must be a 1-d float64 array, got {out.dtype} {out.shape}")
        return self._uniforms(self.bits(out.shape[0]), out)

    def random_at(
        self, offsets: NDArray[np.intp], out: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Of the next uniforms, those at ``offsets`` (0: the next one; intp, not negative),
        into ``out``. The stream does not move (:meth:`skip` moves it): drawing ``n`` and
        keeping some of them, without making the others."""
        k = offsets.shape[0]
        if out.shape != (k,) or out.dtype != np.float64:
            raise ValueError(f"out must be a ({k},) float64 array, got {out.dtype} {out.shape}")
        if self._steps.shape[0] < k:
            self._buffers(k)
        z = self._z[:k]
        np.add(offsets.view(np.uint64), np.uint64(1), out=z)
        np.multiply(z, np.uint64(GAMMA), out=z)
        np.add(z, np.uint64(self._state), out=z)
        return self._uniforms(self._mix(z), out)

    def skip(self, n: int) -> None:
        """Move the stream past its next ``n`` outputs."""
        self._state = (self._state + n * GAMMA) & MASK64

    @staticmethod
    def _uniforms(z: NDArray[np.uint64], out: NDArray[np.float64]) -> NDArray[np.float64]:
        np.right_shift(z, _TO_53_BITS, out=z)
        np.multiply(z, _UNIT, out=out)
        return out
