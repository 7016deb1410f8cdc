"""``[groups.learning]``: what an Active Inference group of the daemon learns, and how.

The table names what :class:`~edge_agent.aif.learning.LearningSpec` takes, with pymdp's names
(``lr_pA``, ``lr_pB``, ``lr_pD``, ``param_info_gain``) and those of ``edge-agent replay``:

- ``A``, ``B``, ``D``: the modalities (``A``) and factors (``B``, ``D``) learned, a list of
  indices or ``"all"``; left out, the tables whose counts the model's bundle carries (``pA1``
  in the bundle: ``A = [1]``); ``[]``, none.
- prior counts: the bundle's where it carries them, else ``prior_scale`` times the model's
  table (pymdp's ``utils.dirichlet_like(A, scale)``) plus ``prior_floor`` everywhere: a small
  scale is a model barely known, one the first experience moves; a large one a confident model;
  a floor lets the agents learn what their model says cannot happen.
- ``scope``, ``forgetting``, ``refresh_every`` (the tables follow the counts every K ticks),
  ``counts_dtype``; ``D`` learns at the end of every trial, from the trial's last posterior.
- ``report_every_s``: how often the daemon publishes what the group learned to the fleet
  (:mod:`edge_agent.daemon.learning_reports`, ``docs/fleet-learning.md``); 0, the default: never.

:meth:`LearningTable.spec` turns the table and a model into a ``LearningSpec``, raising a
:class:`~edge_agent.errors.ConfigError` whose message starts ``[groups.learning] <key>:`` so
that the config's reader reports it at that key's line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol, TypeVar

import numpy as np

from edge_agent.aif.learning import Learner, LearningSettings, LearningSpec
from edge_agent.aif.planning import PlanningPolicy
from edge_agent.errors import ConfigError, ModelError
from edge_agent.records import Check, Problem, Record, Rule, raise_problems

__all__ = ["KEY", "TABLE", "GroupView", "LearningTable", "Tables"]

#: The table's key in a ``[[groups]]`` table.
KEY = "learning"
#: The text every problem of the table starts with (the config's reader finds its key by it).
TABLE = "[groups.learning]"

#: ``report_every_s``: each report is a durable outbox write (an SD card wears with each): at
#: most one a second (a hub merges in rounds of hours: minutes are plenty), at least one a day.
MIN_REPORT_EVERY_S = 1.0
MAX_REPORT_EVERY_S = 86_400.0

Tables = tuple[int, ...] | Literal["all"] | None
R = TypeVar("R", bound=Record)
_KINDS = ("A", "B", "D")


def _indices(value: object, context: Mapping[str, Any]) -> object:
    """A list of modality or factor indices: each >= 0, none twice."""
    del context
    if isinstance(value, tuple):
        if any(i < 0 for i in value):
            raise ValueError(f"indices are >= 0, got {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"an index is named twice in {list(value)}")
    return value


def _learned(what: str) -> str:
    return (
        f"The {what} learned: a list of indices, or \"all\"; left out, those whose counts the "
        "model's bundle carries; [] none."
    )


class GroupView(Protocol):
    """What the table's checks read of the group it is in (a ``[[groups]]`` record)."""

    @property
    def workers(self) -> int | None: ...

    @property
    def precision(self) -> str: ...

    @property
    def history_capacity(self) -> int | None: ...

    def table_or_default(self, record: type[R]) -> R: ...


class LearningTable(Record):
    """``[groups.learning]``: the group's agents learn their model's ``A``, ``B`` or ``D``.

    The ``aif`` kind's own table (:mod:`edge_agent.config.group_tables` lists it); its hooks
    check the group it is in, set the group's processes and history, say where its problems
    are reported, refuse a kind that does not learn and describe it for ``check-config``.
    """

    A: Annotated[Tables, Rule(description=_learned("modalities of A")), Check(_indices)] = None
    B: Annotated[Tables, Rule(description=_learned("factors of B")), Check(_indices)] = None
    D: Annotated[Tables, Rule(description=_learned("factors of D")), Check(_indices)] = None
    scope: Annotated[
        Literal["shared", "per_agent"],
        Rule(
            description="'shared': one set of counts for the group, every agent's experience "
            "summed; 'per_agent': each agent its own counts and tables (float64, no history)."
        ),
    ] = "shared"
    lr_pA: Annotated[float, Rule(ge=0, le=1e6, description="Learning rate of pA.")] = 1.0
    lr_pB: Annotated[float, Rule(ge=0, le=1e6, description="Learning rate of pB.")] = 1.0
    lr_pD: Annotated[float, Rule(ge=0, le=1e6, description="Learning rate of pD.")] = 1.0
    forgetting: Annotated[
        float,
        Rule(
            ge=0,
            lt=1,
            description="Share of the learned difference from the prior lost at each update "
            "(0: pymdp's update, no forgetting).",
        ),
    ] = 0.0
    param_info_gain: Annotated[
        bool,
        Rule(
            description="Add the information gain about pA and pB to the expected free energy "
            "(pymdp's use_param_info_gain): agents seek what they do not know yet."
        ),
    ] = False
    refresh_every: Annotated[
        int,
        Rule(
            ge=1,
            le=1_000_000,
            description="The tables the agents infer with follow the counts every this many "
            "ticks (1: every tick, as pymdp).",
        ),
    ] = 1
    prior_scale: Annotated[
        float,
        Rule(
            gt=0,
            le=1e9,
            description="Prior counts of a learned table the bundle has no counts for: this "
            "times the model's table (pymdp's dirichlet_like).",
        ),
    ] = 1.0
    prior_floor: Annotated[
        float,
        Rule(
            ge=0,
            le=1e9,
            description="Added to every entry of such prior counts: what the model says cannot "
            "happen (a slip, a wall) can then be learned (0: only the table's support).",
        ),
    ] = 0.0
    counts_dtype: Annotated[
        Literal["float64", "float32"],
        Rule(description="What the counts are stored in (float32: half the memory)."),
    ] = "float64"
    report_every_s: Annotated[
        float,
        Rule(
            ge=0,
            le=MAX_REPORT_EVERY_S,
            description="Publish what the agents learned since the last report (a learning "
            "delta, docs/fleet-learning.md) this often, in seconds, through the outbox "
            f"(needs [mqtt] enabled); 0: never. At least {MIN_REPORT_EVERY_S:g} s.",
        ),
    ] = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        problems: list[Problem] = []
        if self.scope == "per_agent" and self.param_info_gain:
            problems.append(
                (
                    ("param_info_gain",),
                    "per-agent counts do not take the parameter information gain",
                )
            )
        if all(getattr(self, kind) == () for kind in _KINDS):
            problems.append((("A",), "A, B and D are all []: the group would learn nothing"))
        if 0 < self.report_every_s < MIN_REPORT_EVERY_S:
            problems.append(
                (
                    ("report_every_s",),
                    f"{self.report_every_s:g} s: a learning report is a durable write, at most "
                    f"one every {MIN_REPORT_EVERY_S:g} s (0: never)",
                )
            )
        raise_problems("LearningTable", problems)

    # -- the table's hooks (edge_agent.config.group_tables) ------------------------------------
    def group_problems(self, group: GroupView) -> list[Problem]:
        """What the table cannot run with in ``group``: per-agent counts with int8, a history,
        several processes or a planning policy (shared counts take all of them:
        docs/learning.md). Locations are the group's keys."""
        problems: list[Problem] = []
        if self.scope == "per_agent":
            if group.workers is not None and group.workers > 1:
                problems.append(
                    (
                        ("workers",),
                        "a group with per-agent counts steps on one process; set workers = 1 "
                        "or leave it out",
                    )
                )
            if not group.table_or_default(PlanningPolicy).every_tick:
                problems.append(
                    (
                        (KEY, "scope"),
                        "per-agent counts plan every agent every tick: leave [groups.planning] "
                        "out, or learn shared counts",
                    )
                )
            if group.precision != "float64":
                problems.append(
                    (
                        (KEY, "scope"),
                        "per-agent counts run float64 tables: set precision = \"float64\"",
                    )
                )
            if group.history_capacity is not None:
                problems.append(
                    (
                        ("history_capacity",),
                        "a group with per-agent counts keeps no history: leave it out",
                    )
                )
        return problems

    def processes(self, group: GroupView) -> int:
        """A learning group runs on one process unless its ``workers`` says otherwise (its
        workers are forked again at every refresh of its tables: worth it with a long
        ``refresh_every``), and per-agent counts always on one."""
        return group.workers or 1 if self.scope == "shared" else 1

    def history(self, group: GroupView) -> int | None:
        """A group with per-agent counts keeps no history (None: the group's own says)."""
        del group
        return 0 if self.scope == "per_agent" else None

    def problem_keys(self, message: str) -> tuple[str, ...] | None:
        """A problem of the table (its message starts :data:`TABLE`) is reported at the key it
        names (``[groups.learning] B: ...``), else at the table."""
        if TABLE not in message:
            return None
        found = re.search(re.escape(TABLE) + r" (\w+):", message)
        if found is not None and found[1] in self.given:
            return (KEY, found[1])
        return (KEY,)

    def refusal(self, kind: object, kind_name: str) -> str | None:
        """Why a group of ``kind`` (a :class:`~edge_agent.kinds.base.GroupKind`) cannot take the
        table: only kinds that learn do (None: it can)."""
        if getattr(kind, "learns", False):
            return None
        return (
            f"{TABLE} is for Active Inference agents that observe outcome indices; a "
            f"{kind_name} group does not learn"
        )

    def fleet_keys(self) -> tuple[str, ...]:
        """Its keys set to use the fleet link: ``report_every_s`` when it reports."""
        return ("report_every_s",) if self.report_every_s else ()

    def summary_tail(self) -> str:
        """What ``check-config`` adds at the end of the group's line."""
        return f"learning {self.describe()}"

    def describe(self) -> str:
        """One line: ``A [1], shared, lr_pA 0.01, forgetting 0.02, refresh every 3 ticks``."""
        named = [kind for kind in _KINDS if getattr(self, kind)]
        parts = [f"{kind} {'all' if getattr(self, kind) == 'all' else list(getattr(self, kind))}"
                 for kind in named] or ["the bundle's counts"]
        parts.append(self.scope)
        parts.extend(f"lr_p{kind} {getattr(self, f'lr_p{kind}'):g}" for kind in named)
        if self.forgetting:
            parts.append(f"forgetting {self.forgetting:g}")
        if self.param_info_gain:
            parts.append("param_info_gain")
        every = self.refresh_every
        parts.append("refresh every tick" if every == 1 else f"refresh every {every} ticks")
        if self.report_every_s:
            parts.append(f"reported every {self.report_every_s:g} s")
        return ", ".join(parts)

    def spec(
        self,
        A: Sequence[np.ndarray],
        B: Sequence[np.ndarray],
        D: Sequence[np.ndarray],
        counts: Mapping[str, Mapping[int, np.ndarray]] | None = None,
    ) -> LearningSpec:
        """The learning of a model with normalised tables ``A``, ``B``, ``D`` whose bundle
        carries ``counts`` (``{"A": {1: pA1}}``; None or empty for a built-in model).

        Raises ConfigError ``[groups.learning] <key>: <problem>`` for a modality or factor the
        model lacks, counts the tables refuse (a prior 0 where the table is not: it could never
        be learned), or nothing to learn.
        """
        counts = counts or {}
        tables = {"A": A, "B": B, "D": D}
        priors: dict[str, dict[int, np.ndarray]] = {}
        for kind in _KINDS:
            priors[kind] = self._priors(kind, tables[kind], counts.get(kind, {}))
        if not any(priors.values()):
            raise ConfigError(
                f"{TABLE} A: names no table to learn and the model carries no counts "
                '(write A = "all", B = [0], ...)',
                path=None,
            )
        try:
            settings = LearningSettings(
                lr_pA=self.lr_pA, lr_pB=self.lr_pB, lr_pD=self.lr_pD,
                forgetting=self.forgetting, scope=self.scope, counts_dtype=self.counts_dtype,
            )
            spec = LearningSpec(
                pA=priors["A"], pB=priors["B"], pD=priors["D"], settings=settings,
                refresh_every=self.refresh_every, param_info_gain=self.param_info_gain,
            )
            # The counts against the tables now (check-config), not when the group is built.
            Learner(A, B, D, pA=spec.pA, pB=spec.pB, pD=spec.pD, settings=settings)
        except ModelError as err:
            text = str(err)  # "pB0 has negative counts ...": reported at B
            key = text[1] if text[:1] == "p" and text[1:2] in _KINDS else "A"
            raise ConfigError(f"{TABLE} {key}: {err}", path=None) from err
        return spec

    def _priors(
        self, kind: str, tables: Sequence[np.ndarray], carried: Mapping[int, np.ndarray]
    ) -> dict[int, np.ndarray]:
        """The prior counts of the ``kind`` tables learned, by index."""
        value = getattr(self, kind)
        what = "modality" if kind == "A" else "factor"
        if value is None:
            wanted: tuple[int, ...] = tuple(sorted(carried))
        elif value == "all":
            wanted = tuple(range(len(tables)))
        else:
            wanted = value
        for index in wanted:
            if index >= len(tables):
                raise ConfigError(
                    f"{TABLE} {kind}: learning asked for {what} {index}, the model has "
                    f"{len(tables)} ({what} indices 0..{len(tables) - 1})",
                    path=None,
                )
        return {
            i: np.asarray(carried[i], dtype=np.float64) if i in carried
            else self.prior_scale * np.asarray(tables[i], dtype=np.float64) + self.prior_floor
            for i in wanted
        }
