"""An agent group on several cores: its blocks stepped by forked workers
(:mod:`edge_agent.core.workers`), its per-agent state in shared memory.

:class:`GroupWorkers` owns the group's :class:`~edge_agent.core.workers.BlockWorkers`, what the
budget reserves for their scratch and the seed of their per-block generators. The group hands it,
when it starts them, what they need from its parts: how to move its state into shared memory (its
memory's ``share``), the per-block step (its blocks' or its planning policy's ``step_index``) and
what each process does once forked (held weakly by the workers: the parts are the group's, which
is freed by reference counting, its workers with it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_agent.core.budget import MemoryBudget, Reservation

if TYPE_CHECKING:
    from edge_agent.core.block_stepper import BlockStepper
    from edge_agent.core.workers import BlockWorkers, StepBlock


class GroupWorkers:
    """The processes that step group ``name``'s blocks (none until :meth:`start`), reserved in
    ``budget``."""

    def __init__(self, name: str, budget: MemoryBudget | None) -> None:
        self.name = name
        self._budget = budget
        #: The workers while they run (None: the caller steps every block).
        self.running: BlockWorkers | None = None
        self._reservation: Reservation | None = None
        #: The per-block generators' seed when actions are sampled and workers were started
        #: (the caller draws the same streams when it steps the blocks alone).
        self.seed: int | None = None
        #: Processes asked for: a resize starts as many again.
        self.wanted = 1

    @property
    def count(self) -> int:
        """Processes that step the blocks (1: the caller alone)."""
        return 1 if self.running is None else self.running.count

    @property
    def restarts(self) -> int:
        """How often the workers were forked again after one died or failed."""
        return 0 if self.running is None else self.running.restarts

    def rss_bytes(self) -> int:
        """What the workers hold that the caller does not (their unique resident pages)."""
        return 0 if self.running is None else self.running.rss_bytes()

    def start(
        self,
        count: int,
        *,
        blocks: int,
        obs_shape: tuple[int, int],
        scratch_nbytes: int,
        share: Callable[[], None],
        step_block: StepBlock,
        stepper: BlockStepper,
        after_fork: Callable[[], None],
    ) -> int:
        """Step ``blocks`` blocks on ``count`` processes (at most one per block): reserve each
        worker's kernel scratch (``scratch_nbytes``), ``share()`` the state, and fork the
        workers, which run ``step_block(index, obs, record)`` and, once forked,
        ``after_fork()``; their generators are seeded from ``stepper``'s when actions are
        sampled. Returns the count used."""
        from edge_agent.core.workers import BlockWorkers  # noqa: PLC0415 - multi-core groups only

        self.stop()
        count = max(1, min(int(count), blocks))
        self.wanted = count
        if count == 1:
            return 1
        if self._budget is not None:
            self._reservation = self._budget.reserve(
                f"{self.name}:workers",
                "agents",
                (count - 1) * scratch_nbytes,
                hint=f"lower the workers of group {self.name!r}",
            )
        share()
        if not stepper.deterministic:
            self.seed = int(stepper.rng.integers(2**63))
        self.running = BlockWorkers(
            count,
            blocks,
            obs_shape,
            step_block,
            set_rng=stepper.set_rng,
            seed=self.seed,
            name=f"group {self.name!r}",
            after_fork=after_fork,
        )
        return self.running.count

    def refork(self) -> None:
        """Fork the workers again: the caller changed what they hold copy-on-write (a learning
        group's refreshed tables)."""
        if self.running is not None:
            self.running.refork()

    def stop(self, *, for_good: bool = False) -> None:
        """Stop the workers and give their reservation back (``for_good``: a resize does not
        start them again)."""
        if for_good:
            self.wanted = 1
        if self.running is not None:
            self.running.close()
            self.running = None
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
