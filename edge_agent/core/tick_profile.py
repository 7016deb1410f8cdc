"""The workload the build profiles the compiled tick on (``python -m
edge_agent.core.tick_profile LIBRARY``): groups of the package's own worlds
stepped through a library built with ``-fprofile-arcs`` (:data:`recipe.PROFILE_GENERATE
<edge_agent.aif.kernels.native.recipe.PROFILE_GENERATE>`), whose counts the second build reads
(``-fprofile-use``): the package's own worlds (the benchmarks build theirs from the same
modules), the T-maze, a 6 x 6 grid world and the two-factor grid, each as a group runs it
(learning ``pA`` or ``pB``, each agent its own counts or one shared set, float64 or int8,
frozen, policy_len 1 and 2, health sampled), 203 agents (whole blocks and a partial one) for
100 ticks each: under a second of ticks on x86-64.

It imports numpy and the package only (setup.py runs it with the build's own interpreter, the
source tree on its path). Each case's stepping is checked: a case the compiled tick did not
step would profile nothing, so the run fails (exit status 1) and the build keeps its plain
library."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.aif.kernels import native
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.learning_counts import Scope
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup, Precision
from edge_agent.sim import BatchEnv
from edge_agent.sim.grid2f import TwoFactorGridEnv
from edge_agent.sim.gridworld import GridWorldEnv
from edge_agent.sim.tmaze import TMazeEnv

#: Agents in each case (a few whole blocks and a partial one) and its ticks.
AGENTS = 203
TICKS = 100


@dataclass(frozen=True)
class Case:
    """One group of the workload: its world, what it learns and how."""

    world: str
    learns: str | None  # "pA", "pB" or None (frozen)
    scope: Scope = "per_agent"
    precision: Precision = "float64"
    policy_len: int = 1


CASES = (
    Case("tmaze", "pA"),
    Case("tmaze", "pA", scope="shared", precision="int8"),
    Case("tmaze", None, precision="int8"),
    Case("tmaze", None, precision="int8", policy_len=2),
    Case("grid", "pB"),
    Case("grid", "pB", scope="shared", precision="int8"),
    Case("grid", None, precision="int8"),
    Case("grid2f", "pA"),
    Case("grid2f", None, precision="int8", policy_len=2),
)


def _env(world: str, n: int) -> BatchEnv:
    makers: dict[str, Callable[[], BatchEnv]] = {
        "tmaze": lambda: TMazeEnv(n, seed=1),
        "grid": lambda: GridWorldEnv(n, seed=1, height=6, width=6),
        "grid2f": lambda: TwoFactorGridEnv(n, seed=1),
    }
    return makers[world]()


def run_case(case: Case, n: int = AGENTS, ticks: int = TICKS) -> str:
    """Step one case's group ``ticks`` ticks in its world; returns the group's stepping."""
    env = _env(case.world, n)
    model = env.model
    learning = None
    if case.learns == "pA":
        m = len(model.A) - 1  # the last modality (the T-maze's cue, the grid2f's last sensor)
        learning = LearningSpec(pA={m: np.asarray(model.A[m]) * 4.0 + 0.25}, refresh_every=1,
                                settings=LearningSettings(lr_pA=1.0, scope=case.scope))
    elif case.learns == "pB":
        B = np.asarray(model.B[0])
        # a learner unsure where its moves lead: a little on every cell any move reaches
        reach = (B.sum(axis=2, keepdims=True) > 0) * 0.25
        learning = LearningSpec(pB={0: B * 4.0 + reach}, refresh_every=1,
                                settings=LearningSettings(lr_pB=1.0, scope=case.scope))
    settings = AifSettings(policy_len=case.policy_len, use_utility=True,
                           use_states_info_gain=True, action_selection="deterministic")
    group = AifAgentGroup(model, n, settings=settings, precision=case.precision,
                          learning=learning)
    obs = env.reset()
    for _ in range(ticks):
        obs = env.step(group.step(obs, starts=env.episode_start))
    return str(group.describe()["stepping"])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edge_agent.core.tick_profile LIBRARY",
              file=sys.stderr)
        return 2
    os.environ["EDGE_AGENT_NATIVE_TICK"] = "1"
    native.use(Path(args[0]))
    for case in CASES:
        stepping = run_case(case)
        if stepping != "native":
            print(f"profile workload: {case} stepped on {stepping}, not the compiled tick",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
