"""Hashes of many ticks of compiled-tick learning groups, to compare two builds of the library
bit for bit (a branch's against main's): ``python tests/support/tick_hashes.py LIBRARY [TICKS]``
prints one line per case, its hash and the path the group stepped. Run it with each tree's own
Python path (``PYTHONPATH=<tree>``) and library, then ``diff`` the two outputs.

Each case is a learning group (each agent its own ``pA`` counts, or one shared set; float64 and,
shared, int8) of the equality suite's worlds (tests/support/native_tick.py) at 1, 13, 100 and
1,000 agents (whole and partial blocks), stepped ``TICKS`` (200) ticks in closed loop through
episode starts, frozen for the middle fifth (the pass's ``learn`` 0: the tables read as they
are) and learning again. The hash covers every tick's posteriors, ``G``, ``q_pi`` and actions,
and at the end the counts and the learned tables (each agent's, per agent; the pass's own,
shared); then frozen int8 groups (nobody learns) of each world planning one and two steps.
benchmarks/notes/learning.md (issue 58, branch pa10) says where it was used."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_agent.aif.kernels.native import binding
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.model import GenerativeModel
from edge_agent.core.agents import AifAgentGroup
from tests.support.native_tick import SETTINGS, make_world, outcomes

WORLDS = ("tmaze-A1", "tmaze-A2", "grid2f-A1", "factors3")
CASES = (("per_agent", "float64"), ("shared", "float64"), ("shared", "int8"))
AGENTS = (1, 13, 100, 1000)


def _stepped(group: AifAgentGroup, world: Any, n: int, ticks: int, h: Any, *,
             before: Callable[[int], None] | None = None) -> None:
    """``group`` stepped ``ticks`` ticks in closed loop on ``world``'s outcomes (``before(t)``
    first at each), every tick's posteriors, ``G``, ``q_pi`` and actions into ``h``."""
    env = outcomes(world, n)
    obs, start = env.reset()
    for t in range(ticks):
        if before is not None:
            before(t)
        if start.any():
            group.reset(start)
        actions = group.step(obs)
        # (the state, not the group's views: reading those makes a per-agent pass make its
        # next prior again, AgentState.wrote; read so, the kept prior is taken and hashed)
        for x in (*group.state.qs, group.G, group.q_pi, np.asarray(actions)):
            h.update(np.ascontiguousarray(x).tobytes())
        obs, start = env.step(actions)


def case_hash(world_name: str, scope: str, precision: str, n: int, *, ticks: int,
              tmp: Path) -> tuple[str, str]:
    """The hash of one case and the group's stepping (``native`` when the pass stepped it)."""
    world = make_world(world_name, tmp)
    spec = LearningSpec(pA=world.pA, refresh_every=1,
                        settings=LearningSettings(lr_pA=world.lr, scope=scope))
    group = AifAgentGroup(GenerativeModel.from_arrays(world.A, world.B, world.C, world.D), n,
                          settings=dataclasses.replace(SETTINGS, policy_len=1),
                          precision=precision, learning=spec)
    learning = group.learning
    assert learning is not None
    h = hashlib.sha256()

    def freeze_middle_fifth(t: int) -> None:
        if t == 2 * ticks // 5:
            learning.freeze()
        if t == 3 * ticks // 5:
            learning.resume()

    _stepped(group, world, n, ticks, h, before=freeze_middle_fifth)
    pA = learning.learner.pA
    assert pA is not None
    for counts in pA.counts:
        h.update(np.ascontiguousarray(counts).tobytes())
    for table in learning.scope.tick_pass().likelihood(np.arange(n)):  # type: ignore[union-attr]
        h.update(np.ascontiguousarray(table).tobytes())
    return h.hexdigest()[:16], learning.scope.stepping_name


def frozen_hash(world_name: str, policy_len: int, n: int, *, ticks: int,
                tmp: Path) -> tuple[str, str]:
    """The hash of a frozen int8 group (nobody learns: the daemon's everyday group) of
    ``policy_len`` planning: every tick's posteriors, ``G``, ``q_pi`` and actions."""
    world = make_world(world_name, tmp)
    group = AifAgentGroup(GenerativeModel.from_arrays(world.A, world.B, world.C, world.D), n,
                          settings=dataclasses.replace(SETTINGS, policy_len=policy_len),
                          precision="int8")
    h = hashlib.sha256()
    _stepped(group, world, n, ticks, h)
    return h.hexdigest()[:16], str(group.describe()["stepping"])


def main() -> None:
    library = Path(sys.argv[1])
    ticks = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    binding._LIBRARY = binding.load(library)
    os.environ["EDGE_AGENT_NATIVE_TICK"] = "1"
    tmp = Path(tempfile.mkdtemp())
    for world_name in WORLDS:
        for scope, precision in CASES:
            for n in AGENTS:
                try:
                    digest, stepping = case_hash(world_name, scope, precision, n, ticks=ticks,
                                               tmp=tmp)
                except ValueError as error:  # a scope or precision the group refuses
                    print(world_name, scope, precision, n, "refused:", error)
                    continue
                print(world_name, scope, precision, n, digest, stepping)
    for world_name in WORLDS:
        for policy_len in (1, 2):
            for n in AGENTS:
                digest, stepping = frozen_hash(world_name, policy_len, n, ticks=ticks, tmp=tmp)
                print(world_name, "frozen", "int8", f"policy_len={policy_len}", n, digest,
                      stepping)


if __name__ == "__main__":
    main()
