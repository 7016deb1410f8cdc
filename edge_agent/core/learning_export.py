"""The model a learning group has learned, from its state:
:func:`learned_arrays` reads what a learning group's
:meth:`~edge_agent.core.agents.AifAgentGroup.state_dict` gives, or a snapshot's arrays of the
group, and returns the normalised tables and the counts in pymdp's keys, the ``.npz`` that
``edge-agent export-model`` writes (``edge_agent/daemon/model_export.py``) and the host tool
converts like any other model."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edge_agent.aif.learning import LearningSpec
from edge_agent.aif.learning_kernels import normalise
from edge_agent.aif.learning_storage import saved_counts
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import QuantizedModel
from edge_agent.errors import InputError

__all__ = ["learned_arrays"]


def learned_arrays(
    model: GenerativeModel | QuantizedModel,
    learning: LearningSpec,
    state: Mapping[str, np.ndarray],
    *,
    name: str = "group",
    agent: int | None = None,
) -> dict[str, np.ndarray]:
    """The model a learning group has learned, in pymdp's keys, from its state (what
    :meth:`AifAgentGroup.state_dict` gives, or a snapshot's arrays of the group).

    ``A{m}``, ``B{f}``, ``D{f}``: the counts' expectation for a table learned since the counts
    were last their prior, else ``model``'s table (as the group infers); ``C{m}``, ``E``:
    ``model``'s. ``pA{m}``, ``pB{f}``, ``pD{f}``: the counts. ``meta_scope``, and per kind
    ``meta_version_pA`` (updates and resets so far), ``meta_reset_at_pA`` (the version of the
    last reset, 0: none) and the prior counts ``meta_prior_pA{m}``: ``pA{m} - meta_prior_pA{m}``
    is what was learned since (net of forgetting). Per-agent counts: the counts of ``agent``
    (``meta_agent``). Raises :class:`InputError` in one line for counts missing, of the wrong
    shape, negative or not finite, and for ``agent`` given to shared counts or missing for
    per-agent ones.
    """
    floats = model.dequantize() if isinstance(model, QuantizedModel) else model
    scope = learning.settings.scope
    if scope == "per_agent" and agent is None:
        raise InputError(f"group {name!r} learns per agent: name the agent to export")
    if scope == "shared" and agent is not None:
        raise InputError(f"group {name!r} learns one set of counts for all its agents (shared)")
    tables = {"A": list(floats.A), "B": list(floats.B), "D": list(floats.D)}
    out: dict[str, np.ndarray] = {"meta_scope": np.array(scope)}
    if agent is not None:
        out["meta_agent"] = np.array(agent, dtype=np.int64)
    for kind, priors in (("A", learning.pA), ("B", learning.pB), ("D", learning.pD)):
        if not priors:
            continue
        version = int(np.asarray(state.get(f"learn.version.{kind}", 0)))
        reset_at = int(np.asarray(state.get(f"learn.reset_at.{kind}", 0)))
        for index, prior in sorted(priors.items()):
            key = f"p{kind}{index}"
            counts = _state_counts(state, key, np.asarray(prior), name=name, agent=agent)
            if version > reset_at:  # learned since the counts were last their prior
                tables[kind][index] = normalise(counts)
            out[key] = counts
            out[f"meta_prior_{key}"] = np.asarray(prior, dtype=np.float64)
        out[f"meta_version_p{kind}"] = np.array(version, dtype=np.int64)
        out[f"meta_reset_at_p{kind}"] = np.array(reset_at, dtype=np.int64)
    for kind in ("A", "B", "D"):
        for index, table in enumerate(tables[kind]):
            out[f"{kind}{index}"] = np.asarray(table, dtype=np.float64)
    for m, c in enumerate(floats.C):
        out[f"C{m}"] = np.asarray(c, dtype=np.float64)
    if floats.E is not None:
        out["E"] = np.asarray(floats.E, dtype=np.float64)
    return out


def _state_counts(
    state: Mapping[str, np.ndarray],
    key: str,
    prior: np.ndarray,
    *,
    name: str,
    agent: int | None,
) -> np.ndarray:
    """The counts ``learn.<key>`` of a group's state (of one agent's, per agent), checked:
    saved whole, or as what moved from ``prior`` (:mod:`edge_agent.aif.learning_storage`)."""
    where = f"group {name!r}: {key}"
    shape = prior.shape
    saved = saved_counts(state, f"learn.{key}", prior, where=f"group {name!r}")
    if saved is None:
        raise InputError(f"{where}: not in the saved state (the group learned no {key} then)")
    counts = np.asarray(saved, dtype=np.float64)
    if agent is not None:
        if counts.ndim != len(shape) + 1 or not 0 <= agent < counts.shape[0]:
            n = counts.shape[0] if counts.ndim == len(shape) + 1 else 0
            raise InputError(f"{where}: no agent {agent} (the group has {n}: 0..{n - 1})")
        counts = counts[agent]
    if counts.shape != shape:
        raise InputError(f"{where}: saved with shape {counts.shape}, the model's is {shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise InputError(f"{where}: saved counts are negative or not finite")
    return counts.copy()
