"""A large group's blocks stepped on several cores: forked worker processes, state in shared memory.

numpy releases the GIL inside each call, but the kernels make many short calls and the Python
between them holds it, so threads do not scale (measured: 0.7-1.25x on two cores). Processes do.
:class:`BlockWorkers` forks ``count - 1`` workers once a group's per-agent state (beliefs, priors,
policy posteriors, actions, the staged history row) is in anonymous shared memory: allocated
there from the start (:func:`shared_empty`: a group built to be stepped by workers), or moved
there (:func:`shared`).
One tick:

1. the caller copies the checked observations into a shared buffer, writes every block's index
   into the tick's queue (a pipe: one write, two bytes an index) and one byte to each worker's
   pipe;
2. every process, the caller included, takes the next index from the queue (reads of two bytes
   from a pipe are atomic: no block is taken twice), steps that block (infer, plan, act, stage
   the history row) exactly as the serial loop does, in its own kernel scratch, marks it done in
   a shared byte array, and takes the next, until the queue is empty; a process that the
   machine preempted simply steps fewer blocks;
3. the caller waits for one byte back from every worker: that is the tick's barrier, and the
   only synchronisation besides the queue (no block is written by two processes).

So a tick's result does not depend on which process stepped which block: the same blocks run the
same kernels on the same inputs. Action sampling (``action_selection = "stochastic"``) draws,
for each block and tick, from a generator seeded with the group's seed, the block's index and the
tick, so stochastic results do not depend on the number of workers either; they differ from a
group stepped without workers (which draws the blocks one after the other from one stream).

What the workers cost: each is a forked copy of the caller, sharing every page it does not
write. It writes its blocks' kernel scratch (at most one block's, :meth:`scratch_nbytes`, the
same as the caller's) and, by reference counting, some pages of the Python heap; the memory
budget reserves the scratch per worker, and :meth:`rss_bytes` reports what the workers really
hold (their unique pages: ``USS``).

A worker that dies or fails stops all of them: the caller completes the tick (the block the
failed worker was stepping, not marked done, is stepped again from whatever state it left),
:attr:`failure` says why, and the caller steps every block itself until the workers are forked
again, :data:`RESTART_AFTER_S` later (doubling after each failure up to
:data:`RESTART_AFTER_MAX_S`, back to the start after :data:`HEALTHY_TICKS` good ticks);
:attr:`restarts` counts the restarts. Workers exit when the caller closes them, or when the
caller dies (their pipe closes).

The objects the caller holds when it forks are frozen out of the collector's reach
(``gc.freeze``), so that a collection does not copy the whole heap into every worker; while no
workers run anywhere in the process, they are unfrozen again, so that garbage made of them is
collected as usual.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import math
import mmap
import os
import select
import signal
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["BlockWorkers", "is_shared", "shared", "shared_copy", "shared_empty"]

logger = logging.getLogger(__name__)

_STEP, _STEP_RECORD, _QUIT, _OK, _FAILED = b"s", b"r", b"q", b"k", b"e"
#: Block indices travel as two bytes, and a tick's indices in one atomic pipe write.
_MAX_BLOCKS = min(select.PIPE_BUF // 2, 65535)
#: Seconds after a failure before the workers are forked again; doubles after each failure.
RESTART_AFTER_S: Final = 1.0
RESTART_AFTER_MAX_S: Final = 300.0
#: Good ticks with workers after which the next failure waits RESTART_AFTER_S again.
HEALTHY_TICKS: Final = 1000


class _Heap:
    """The frozen heap: how many BlockWorkers of this process have workers (see the module
    docstring)."""

    holders = 0

    @classmethod
    def freeze(cls) -> None:
        """Before a fork: collect the garbage, freeze what is left."""
        gc.collect()
        gc.freeze()
        cls.holders += 1

    @classmethod
    def thaw(cls) -> None:
        """After workers stopped: unfreeze once no workers run anywhere in the process."""
        cls.holders -= 1
        if cls.holders == 0:
            gc.unfreeze()


def shared_empty(shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """A new array in anonymous shared memory (zero-filled: the kernel's pages are, and they
    become resident only when written): a child forked after this sees its writes."""
    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = math.prod(dims)
    buf = mmap.mmap(-1, max(count * dt.itemsize, 1), flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    out: np.ndarray = np.frombuffer(buf, dtype=dt, count=count).reshape(dims)
    return out


def is_shared(arr: np.ndarray) -> bool:
    """Whether ``arr`` lives in memory from :func:`shared_empty` (a view of it included)."""
    base: object = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer's: the buffer it was given
        base = base.obj
    return isinstance(base, mmap.mmap)


def shared_copy(arr: np.ndarray) -> np.ndarray:
    """``arr`` copied into anonymous shared memory: a child forked after this sees its writes."""
    out = shared_empty(arr.shape, arr.dtype)
    out[...] = arr
    return out


def shared(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself if it is in shared memory already (allocated there from the start: no copy,
    no second footprint while it moves), else :func:`shared_copy`."""
    return arr if is_shared(arr) else shared_copy(arr)


@dataclass(frozen=True, slots=True)
class _Worker:
    pid: int
    to_worker: int  # the pipe the orders go down
    from_worker: int  # the pipe the answers come up


StepBlock = Callable[[int, np.ndarray, bool], None]
"""``step_block(index, obs, record)``: one block's tick on the group's (shared) arrays."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _weakly(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn``, holding its object weakly if it is a bound method."""
    if not inspect.ismethod(fn):
        return fn
    ref = weakref.WeakMethod(fn)

    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        method = ref()
        if method is None:
            raise ReferenceError("the group these workers step is gone")
        result: _R = method(*args, **kwargs)
        return result

    return call


class BlockWorkers:
    """``count - 1`` forked processes that step a group's blocks with the caller.

    ``step_block`` is the group's own per-block step; ``num_blocks`` how many blocks the group
    has. ``seed``: the group's actions are sampled (``None``: deterministic); each block of each
    tick then draws from its own generator, seeded ``(seed, block, tick)``, that ``set_rng``
    installs before the block. Create it after the group's state is in shared memory
    (:func:`shared_copy`) and before any other thread of the caller holds a lock the children
    could need (they only run numpy kernels and read and write their pipes).
    """

    def __init__(
        self,
        count: int,
        num_blocks: int,
        obs_shape: tuple[int, int],
        step_block: StepBlock,
        *,
        set_rng: Callable[[np.random.Generator], None] | None = None,
        seed: int | None = None,
        name: str = "group",
        after_fork: Callable[[], None] | None = None,
    ) -> None:
        if num_blocks > _MAX_BLOCKS:
            raise ValueError(f"at most {_MAX_BLOCKS} blocks, got {num_blocks}")
        self.name = name
        # Held weakly: the group holds these workers, so strong references back would make a
        # cycle, and a group in a cycle that the heap's freeze hides from the collector would
        # keep its workers until the process ends. Dropped, the group frees them (``__del__``).
        self._after_fork = _weakly(after_fork) if after_fork is not None else None
        self._all = range(num_blocks)
        self._indices = np.arange(num_blocks, dtype="<u2").tobytes()
        self.obs = shared_copy(np.zeros(obs_shape, dtype=np.int64))
        self._done = shared_copy(np.zeros(max(num_blocks, 1), dtype=np.uint8))
        self._step_block = _weakly(step_block)
        self._set_rng = _weakly(set_rng) if set_rng is not None else None
        self._seed = seed
        self._tick = shared_copy(np.zeros(1, dtype=np.int64))
        self.failure: str | None = None
        self.restarts = 0
        self._wanted = max(1, min(count, num_blocks))
        self._restart_at: float | None = None
        self._restart_after_s = RESTART_AFTER_S
        self._good_ticks = 0
        self._failed_now = False
        self._workers: list[_Worker] = []
        # The tick's work: every block's index, two bytes each, written at once (at most
        # PIPE_BUF bytes: atomic) and read two bytes at a time by whichever process is free.
        self._queue_r, self._queue_w = os.pipe()
        self._queue_open = True
        os.set_blocking(self._queue_r, False)
        if self._wanted == 1:
            self.close()  # one block, or one process asked for: the caller steps them all
        else:
            self._start()

    def _start(self) -> None:
        """Fork the workers. Objects that exist now are moved out of the collector's reach: a
        collection in either process would write to every object's header and so copy the whole
        heap into the worker. Garbage is collected first, so that only live objects are frozen."""
        _Heap.freeze()
        for _ in range(self._wanted - 1):
            self._workers.append(self._fork())
        if self._after_fork is not None:
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

    def step(
        self,
        obs: np.ndarray | None,
        record: bool,
        tick: int = 0,
        blocks: int | None = None,
    ) -> None:
        """One tick of every block (of the first ``blocks``); returns when all are done (by the
        workers or the caller). ``tick`` seeds the blocks' generators when actions are sampled.
        ``obs``: the tick's observations, or None for those of the last call (a later pass of
        the same tick: not copied again)."""
        if obs is not None:
            np.copyto(self.obs, obs)
        count = len(self._all) if blocks is None else min(blocks, len(self._all))
        self._tick[0] = tick
        if self._restart_at is not None and time.monotonic() >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            logger.info("%s: forking its workers again (restart %d)", self.name, self.restarts)
            self._start()
        if not self._workers:
            for i in range(count):
                self._run(i, record)
            return
        self._done.fill(0)
        self._failed_now = False
        os.write(self._queue_w, self._indices[: 2 * count])
        order = _STEP_RECORD if record else _STEP
        told: list[_Worker] = []
        for w in self._workers:
            try:
                os.write(w.to_worker, order)
                told.append(w)
            except OSError as err:
                self._fail(f"worker {w.pid}: {err}")
        self._drain(record)
        failed = False
        for w in told:  # the barrier
            try:
                answer = os.read(w.from_worker, 1)
            except OSError:
                answer = b""
            if answer != _OK:
                self._fail(f"worker {w.pid} " + ("failed" if answer == _FAILED else "exited"))
                failed = True
        if failed or len(told) < len(self._workers):
            self._drain(record)  # what no process took (a worker that could not be told)
            for i in np.flatnonzero(self._done[:count] == 0).tolist():
                self._run(i, record)  # what a failed worker took and did not finish
            self._stop()
            self._restart_at = time.monotonic() + self._restart_after_s
            self._restart_after_s = min(2 * self._restart_after_s, RESTART_AFTER_MAX_S)
            self._good_ticks = 0
        else:
            self._good_ticks += 1
            if self._good_ticks == HEALTHY_TICKS:
                self._restart_after_s = RESTART_AFTER_S

    def refork(self) -> None:
        """Fork the workers again (between ticks): the caller changed what they cannot see,
        memory they only share copy-on-write (a learning group's refreshed tables). Workers
        stopped after a failure are left to their restart, which forks the caller as it is."""
        if self._workers:
            self._stop()
            self._start()

    def _drain(self, record: bool) -> None:
        """Step blocks from the tick's queue until it is empty."""
        while True:
            try:
                index = os.read(self._queue_r, 2)
            except BlockingIOError:
                return
            i = int.from_bytes(index, "little")
            self._run(i, record)
            self._done[i] = 1

    def _fail(self, why: str) -> None:
        """Note a worker's failure (once per failed tick: the first reason)."""
        if self._failed_now:
            return
        self._failed_now = True
        self.failure = why
        logger.warning(
            "%s: %s; pid %d steps every block for %.0f s, then forks the workers again",
            self.name,
            why,
            os.getpid(),
            self._restart_after_s,
        )

    def _run(self, i: int, record: bool) -> None:
        if self._seed is not None and self._set_rng is not None:
            self._set_rng(np.random.default_rng((self._seed, i, int(self._tick[0]))))
        self._step_block(i, self.obs, record)

    def close(self) -> None:
        """Stop the workers for good (the caller steps everything from now on)."""
        self._restart_at = None
        self._stop()
        if self._queue_open:  # nothing is queued between ticks: the queue is no longer needed
            self._queue_open = False
            os.close(self._queue_r)
            os.close(self._queue_w)
        self.ranges = [self._all]  # the caller steps every block from now on

    def _stop(self) -> None:
        """Stop the workers (and wait for them to exit)."""
        workers, self._workers = self._workers, []
        for w in workers:
            with contextlib.suppress(OSError):
                os.write(w.to_worker, _QUIT)
            os.close(w.to_worker)
            os.close(w.from_worker)
        for w in workers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(w.pid, 0)
        if workers:
            _Heap.thaw()

    def rss_bytes(self) -> int:
        """Memory the workers hold that the caller does not (their unique set size, USS)."""
        total = 0
        for pid in self.pids:
            total += _uss_bytes(pid)
        return total

    def __del__(self) -> None:
        if getattr(self, "_queue_open", False):
            self.close()

    # -- the worker's side ------------------------------------------------------------------------
    def _fork(self) -> _Worker:
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
                self._serve(to_r, from_w)
                code = 0
            finally:
                os._exit(code)
        os.close(to_r)
        os.close(from_w)
        return _Worker(pid, to_w, from_r)

    def _serve(self, orders: int, answers: int) -> None:
        while True:
            order = os.read(orders, 1)
            if order not in (_STEP, _STEP_RECORD):
                return  # _QUIT, or the caller is gone (end of file)
            try:
                self._drain(order == _STEP_RECORD)
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
