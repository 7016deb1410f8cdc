"""A large group's blocks stepped on several cores: forked worker processes, state in shared memory.

numpy releases the GIL inside each call, but the kernels make many short calls and the Python
between them holds it, so threads do not scale (measured: 0.7-1.25x on two cores). Processes do.
:class:`BlockWorkers` moves a group's per-agent state (beliefs, priors, policy posteriors,
actions, the staged history row) into anonymous shared memory, then forks ``count - 1`` workers.
The blocks are cut into ``count`` contiguous ranges of about equal size; the calling process
steps the first range itself while each worker steps its own, on the same arrays. One tick:

1. the caller copies the checked observations into a shared buffer and writes one byte to each
   worker's pipe;
2. everyone steps their blocks (infer, plan, act, stage the history row) exactly as the serial
   loop does, each in its own kernel scratch (the caller's workspace, copied on write);
3. the caller waits for one byte back from every worker: that is the tick's barrier, and the
   only synchronisation (no block is written by two processes).

So a tick's result does not depend on the split: the same blocks run the same kernels on the
same inputs. Action sampling (``action_selection = "stochastic"``) draws from one random stream
per block (seeded from the group's seed and the block's index) instead of the group's single
stream, so stochastic results do not depend on the number of workers either; they differ from
a group stepped without workers (which draws the blocks one after the other from one stream).

What the workers cost: each is a forked copy of the caller, sharing every page it does not
write. It writes its blocks' kernel scratch (at most one block's, :meth:`scratch_nbytes`, the
same as the caller's) and, by reference counting, some pages of the Python heap; the memory
budget reserves the scratch per worker, and :meth:`rss_bytes` reports what the workers really
hold (their unique pages: ``USS``).

A worker that dies or fails stops all of them: the caller steps every block itself from then on
(the tick that failed is completed by the caller: blocks of the failed worker that had already
been stepped in that tick are stepped twice) and :attr:`failure` says why. Workers exit when the
caller closes them, or when the caller dies (their pipe closes).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import mmap
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BlockWorkers", "shared_copy", "split_blocks"]

logger = logging.getLogger(__name__)

_STEP, _STEP_RECORD, _QUIT, _OK, _FAILED = b"s", b"r", b"q", b"k", b"e"


def shared_copy(arr: np.ndarray) -> np.ndarray:
    """``arr`` copied into anonymous shared memory: a child forked after this sees its writes."""
    buf = mmap.mmap(-1, max(arr.nbytes, 1), flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    out: np.ndarray = np.frombuffer(buf, dtype=arr.dtype, count=arr.size).reshape(arr.shape)
    out[...] = arr
    return out


def split_blocks(sizes: Sequence[int], parts: int) -> list[range]:
    """Cut blocks of ``sizes`` agents into ``parts`` contiguous ranges of about equal agents."""
    total = sum(sizes)
    bounds = [0]
    done = 0
    for i, size in enumerate(sizes):
        done += size
        # Close a range where the agents so far reach its share of the total.
        if len(bounds) < parts and done * parts >= total * len(bounds) and i + 1 < len(sizes):
            bounds.append(i + 1)
    bounds.append(len(sizes))
    return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]


@dataclass(frozen=True, slots=True)
class _Worker:
    pid: int
    to_worker: int  # the pipe the orders go down
    from_worker: int  # the pipe the answers come up
    blocks: range


StepBlock = Callable[[int, np.ndarray, bool], None]
"""``step_block(index, obs, record)``: one block's tick on the group's (shared) arrays."""


class BlockWorkers:
    """``count - 1`` forked processes that step ranges of a group's blocks with the caller.

    ``step_block`` is the group's own per-block step; ``block_sizes`` the agents in each block;
    ``rngs`` per-block random streams (``None``: the group's actions are deterministic) that the
    group's ``set_rng(generator)`` installs before each block. Create it after the group's state
    is in shared memory (:func:`shared_copy`) and before any other thread of the caller holds a
    lock the children could need (they only run numpy kernels and read and write their pipes).
    """

    def __init__(
        self,
        count: int,
        block_sizes: Sequence[int],
        obs_shape: tuple[int, int],
        step_block: StepBlock,
        *,
        set_rng: Callable[[np.random.Generator], None] | None = None,
        rngs: Sequence[np.random.Generator] | None = None,
        name: str = "group",
        after_fork: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._after_fork = after_fork
        self.ranges = split_blocks(block_sizes, max(1, count))
        self._all = range(len(block_sizes))
        self.obs = shared_copy(np.zeros(obs_shape, dtype=np.int64))
        self._step_block = step_block
        self._set_rng, self._rngs = set_rng, rngs
        self.failure: str | None = None
        self._workers: list[_Worker] = []
        # Objects that exist now are moved out of the collector's reach: a collection in either
        # process would write to every object's header and so copy the whole heap into the
        # worker (measured: ~20 MB per worker without this, see bench_workers.py).
        gc.freeze()
        for blocks in self.ranges[1:]:
            self._workers.append(self._fork(blocks))
        if self._after_fork is not None and self._workers:
            self._after_fork()

    # -- the caller's side ------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Processes stepping the blocks now: the caller and its live workers."""
        return 1 + len(self._workers)

    @property
    def active(self) -> bool:
        return bool(self._workers)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def step(self, obs: np.ndarray, record: bool) -> None:
        """One tick of every block; returns when all are done (by the workers or the caller)."""
        np.copyto(self.obs, obs)
        if not self._workers:
            self._run(self._all, record)
            return
        order = _STEP_RECORD if record else _STEP
        told: list[_Worker] = []
        undone: list[range] = []
        for w in self._workers:
            try:
                os.write(w.to_worker, order)
                told.append(w)
            except OSError as err:
                self._fail(f"worker {w.pid}: {err}")
                undone.append(w.blocks)
        self._run(self.ranges[0], record)
        for w in told:  # the barrier
            try:
                answer = os.read(w.from_worker, 1)
            except OSError:
                answer = b""
            if answer != _OK:
                self._fail(f"worker {w.pid} " + ("failed" if answer == _FAILED else "exited"))
                undone.append(w.blocks)
        if undone:
            for blocks in undone:
                self._run(blocks, record)
            self.close()

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            logger.warning(
                "%s: %s; its blocks and every other worker's are stepped by pid %d from now on",
                self.name,
                why,
                os.getpid(),
            )

    def _run(self, blocks: range, record: bool) -> None:
        for i in blocks:
            if self._rngs is not None and self._set_rng is not None:
                self._set_rng(self._rngs[i])
            self._step_block(i, self.obs, record)

    def close(self) -> None:
        """Stop the workers (the caller steps everything from now on)."""
        workers, self._workers = self._workers, []
        for w in workers:
            with contextlib.suppress(OSError):
                os.write(w.to_worker, _QUIT)
            os.close(w.to_worker)
            os.close(w.from_worker)
        for w in workers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(w.pid, 0)
        self.ranges = [self._all]  # the caller steps every block from now on

    def rss_bytes(self) -> int:
        """Memory the workers hold that the caller does not (their unique set size, USS)."""
        total = 0
        for pid in self.pids:
            total += _uss_bytes(pid)
        return total

    def __del__(self) -> None:
        if getattr(self, "_workers", None):
            self.close()

    # -- the worker's side ------------------------------------------------------------------------
    def _fork(self, blocks: range) -> _Worker:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                os.close(to_w)
                os.close(from_r)
                for w in self._workers:  # earlier workers' pipes are not ours
                    os.close(w.to_worker)
                    os.close(w.from_worker)
                _quiet_signals()
                if self._after_fork is not None:
                    self._after_fork()
                self._serve(blocks, to_r, from_w)
                code = 0
            finally:
                os._exit(code)
        os.close(to_r)
        os.close(from_w)
        return _Worker(pid, to_w, from_r, blocks)

    def _serve(self, blocks: range, orders: int, answers: int) -> None:
        while True:
            order = os.read(orders, 1)
            if order not in (_STEP, _STEP_RECORD):
                return  # _QUIT, or the caller is gone (end of file)
            try:
                self._run(blocks, order == _STEP_RECORD)
                answer = _OK
            except BaseException:  # reported to the caller, which steps the blocks itself
                answer = _FAILED
            os.write(answers, answer)


def _quiet_signals() -> None:
    """In a worker: none of the caller's signal handlers (a SIGHUP is the daemon's to handle,
    and its wakeup pipe is the daemon's to read); SIGTERM and SIGKILL end the worker."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        handler = signal.getsignal(sig)
        if callable(handler) or sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _uss_bytes(pid: int) -> int:
    """Private (unique) resident bytes of ``pid``: ``Private_Clean + Private_Dirty``."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total
