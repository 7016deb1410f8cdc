"""A kind of agent group defined outside edge_agent: the daemon runs it through the contract.

``model = { type = "kind", module = "tests.support.kind_tally" }`` on a built-in world that
gives outcome indices. Each agent tallies the outcomes it has seen; its action on each control
factor is the outcome it saw most often on one modality (modulo that factor's choices): the
first, or the one its table says, ``[groups.tally] modality = 1``. Nothing in
``edge_agent/daemon`` or ``edge_agent/config`` knows this module: it is one file, and one config
line (and a table) names it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np

from edge_agent.aif.model import GenerativeModel
from edge_agent.config.daemon import GroupConfig, SimSource
from edge_agent.core.budget import MemoryBudget, PlanRequest, Reservation
from edge_agent.core.contract import GroupIO
from edge_agent.errors import ConfigError, InputError
from edge_agent.kinds.base import GroupKind, LoadedModel, Verify, sim_world, world_name
from edge_agent.records import Record, Rule
from edge_agent.sim.registry import builtin_model

NAME = "tally"


class TallyTable(Record):
    """``[groups.tally]``: which modality's outcomes a tally acts on."""

    KEY: ClassVar[str] = "tally"
    TITLE: ClassVar[str] = "[groups.tally]"

    modality: Annotated[
        int, Rule(ge=0, le=63, description="The modality whose most seen outcome is the action.")
    ] = 0

    # -- the table's hooks (edge_agent.config.group_tables) ------------------------------------
    def refusal(self, kind: object, kind_name: str) -> str | None:
        """Only a tally takes it (a bundle deployed to the group, say, does not)."""
        if getattr(kind, "name", None) == NAME:
            return None
        return f"{self.TITLE} is for tally groups; a {kind_name} group cannot take it"

    def problem_keys(self, message: str) -> tuple[str, ...] | None:
        """A problem that names the table is reported at its modality."""
        return (self.KEY, "modality") if self.TITLE in message else None

    def summary_tail(self) -> str:
        """What ``check-config`` adds at the end of the group's line."""
        return f"tallies modality {self.modality}"

    def status(self) -> dict[str, Any]:
        """What the status file shows of the table in the group's entry."""
        return {"tally_modality": self.modality}


#: The tables this kind adds to its groups (edge_agent.config.group_tables.kind_tables).
TABLES = (TallyTable,)


class TallyGroup:
    """``n_agents`` tallies of outcome counts, one row of ``sum(num_obs)`` int64 per agent."""

    precision = "int64"
    history_capacity = 0
    shared_nbytes = 0

    def __init__(
        self,
        name: str,
        n_agents: int,
        num_obs: tuple[int, ...],
        num_controls: tuple[int, ...],
        budget: MemoryBudget | None,
        *,
        modality: int = 0,
    ) -> None:
        self.name = name
        self.num_obs = num_obs
        self.num_controls = num_controls
        self.modality = modality
        self.key = f"tally:{num_obs}:{num_controls}"
        self._offsets = np.cumsum((0, *num_obs[:-1]))
        self._acted = slice(self._offsets[modality], self._offsets[modality] + num_obs[modality])
        self._budget = budget
        self._reservation: Reservation | None = None
        self._allocate(n_agents)

    def _allocate(self, n_agents: int) -> None:
        if self._budget is not None:
            new = self._budget.reserve(self.name, "agents", n_agents * self.per_agent_nbytes())
            if self._reservation is not None:
                self._reservation.release()
            self._reservation = new
        self.counts = np.zeros((n_agents, sum(self.num_obs)), dtype=np.int64)
        self._action = np.zeros((n_agents, len(self.num_controls)), dtype=np.int64)
        self._rows = np.arange(n_agents)

    @property
    def n_agents(self) -> int:
        return int(self.counts.shape[0])

    @property
    def action(self) -> np.ndarray:
        return self._action

    def per_agent_nbytes(self) -> int:
        return 8 * (sum(self.num_obs) + len(self.num_controls) + 1)

    def step(self, obs: np.ndarray, now: float | None = None) -> np.ndarray:
        del now
        o = np.asarray(obs)
        if o.shape != (self.n_agents, len(self.num_obs)):
            raise InputError(
                f"obs has shape {o.shape}, expected ({self.n_agents}, {len(self.num_obs)})"
            )
        for m, offset in enumerate(self._offsets):
            np.add.at(self.counts, (self._rows, offset + o[:, m]), 1)
        most = self.counts[:, self._acted].argmax(axis=1)
        for f, choices in enumerate(self.num_controls):
            self._action[:, f] = most % choices
        return self._action

    def advance(
        self, obs: np.ndarray, now: float | None, outcomes: np.ndarray | None,
        starts: np.ndarray | None = None,
    ) -> np.ndarray:
        del outcomes, starts  # a tally outlives episodes
        return self.step(obs, now)

    def reset(self, mask: np.ndarray | None = None) -> None:
        del mask  # a tally outlives episodes

    def resize(self, n_agents: int) -> None:
        self._allocate(n_agents)

    def resize_history(self, capacity: int) -> None:
        del capacity  # no history

    def release(self) -> None:
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts.copy(), "action": self._action.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.counts[...] = state["counts"]
        self._action[...] = state["action"]

    def io(self) -> GroupIO:
        return GroupIO(num_obs=self.num_obs, actions=self.num_controls)

    def io_signature(self) -> tuple[object, ...]:
        return (NAME, self.num_obs, self.num_controls)

    def warm_up(self, obs: np.ndarray) -> None:
        state = self.state_dict()
        self.step(obs)
        self.load_state_dict(state)

    def finite(self) -> bool:
        return True  # integers

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        return np.stack(
            [rng.integers(0, o, size=self.n_agents) for o in self.num_obs], axis=1
        ), None

    def describe(self) -> dict[str, Any]:
        return {"workers": 1, "tallied": int(self.counts[:, self._acted].sum())}

    def metrics(self) -> dict[str, object]:
        return {}


class TallyKind:
    name = NAME
    shares_beliefs = False
    plans = False
    learns = False

    def load(self, cfg: GroupConfig, bundle: object, verify: Verify) -> LoadedModel:
        del bundle, verify
        if not isinstance(cfg.source, SimSource):
            raise ConfigError(f"group {cfg.name!r}: a tally needs a sim source", path=None)
        model = builtin_model(world_name(cfg))
        modality = cfg.table_or_default(TallyTable).modality
        if modality >= len(model.num_obs):
            raise ConfigError(
                f"group {cfg.name!r}: {TallyTable.TITLE} modality {modality}: world "
                f"{world_name(cfg)!r} has {len(model.num_obs)} modalities",
                path=None,
            )
        return LoadedModel(kind=__name__, own=model)

    def check(self, cfg: GroupConfig, loaded: LoadedModel) -> None:
        world = sim_world(cfg)
        if world is not None and world[1]:
            raise ConfigError(f"group {cfg.name!r}: a tally counts outcome indices", path=None)

    def plan(
        self, loaded: LoadedModel, cfg: GroupConfig, history_capacity: int, workers: int
    ) -> list[PlanRequest]:
        probe = self.build(loaded, cfg, 1, budget=None, history_capacity=0, threads=1, workers=1)
        return [(cfg.name, "agents", cfg.count * probe.per_agent_nbytes(), None)]

    def build(
        self,
        loaded: LoadedModel,
        cfg: GroupConfig,
        n_agents: int,
        *,
        budget: MemoryBudget | None,
        history_capacity: int,
        threads: int,
        workers: int,
    ) -> TallyGroup:
        model = loaded.own
        assert isinstance(model, GenerativeModel)
        return TallyGroup(
            cfg.name,
            n_agents,
            tuple(model.num_obs),
            tuple(model.num_controls),
            budget,
            modality=cfg.table_or_default(TallyTable).modality,
        )


KIND: GroupKind = TallyKind()
