"""The pymdp learning golden file, shared by the learning tests (the reference agent in
tests/unit/aif/test_learning.py, the learning group in tests/unit/core/test_learning.py,
``edge-agent replay`` in tests/unit/core/test_replay.py).

``tests/data/pymdp_learning_golden.npz`` was written by
``tests/data/make_pymdp_learning_golden.py`` from a real pymdp 0.0.7.1 ``Agent`` with
``pA``/``pB``/``pD`` (see the script for the scenarios and the step protocol): learned counts are
compared to ``COUNTS_TOL``, beliefs and policy posteriors after learning to ``BELIEF_TOL``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.reference_learning import LearningReferenceAgent

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "pymdp_learning_golden.npz"
SCENARIOS = ("learn_single", "learn_multi", "learn_novelty")
COUNTS_TOL = {"rtol": 0.0, "atol": 1e-10}
BELIEF_TOL = {"rtol": 0.0, "atol": 1e-6}


@functools.cache
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def indexed(name: str, prefix: str) -> dict[int, np.ndarray]:
    """``{i: array}`` for the keys ``{name}/{prefix}{i}``."""
    out = {}
    for key, value in golden().items():
        scenario, _, leaf = key.partition("/")
        if scenario == name and leaf.startswith(prefix) and leaf[len(prefix):].isdigit():
            out[int(leaf[len(prefix):])] = value
    return dict(sorted(out.items()))


def reference_for(name: str) -> LearningReferenceAgent:
    g = golden()
    model = GenerativeModel.from_arrays(
        list(indexed(name, "A").values()), list(indexed(name, "B").values()),
        list(indexed(name, "C").values()), list(indexed(name, "D").values()),
    )
    return LearningReferenceAgent(
        model, pA=indexed(name, "pA"), pB=indexed(name, "pB"), pD=indexed(name, "pD"),
        lr_pA=float(g[f"{name}/lr_pA"]), lr_pB=float(g[f"{name}/lr_pB"]),
        lr_pD=float(g[f"{name}/lr_pD"]),
        use_param_info_gain=bool(g[f"{name}/use_param_info_gain"]),
    )
