"""``learn build``'s round: the pending deltas of a model line merged
(:mod:`.merge`), made a model (:mod:`.model`), converted by the host converter
with its own int8 gate, signed with the learning key (``[learning] key_file``: a bundle key the
nodes trust, never the hub's command key), and stored with its provenance
(:mod:`.store`).

The round chains on the line's newest built round that was built on, or became, the line's
current bundle, unless its rollout was rolled back (``LearningStore.chained_round``); otherwise
(a first round, or a bundle deployed by hand since) it starts from the current bundle's counts,
which are then also the ``base`` nothing forgets.
A round the gate refuses is stored (state ``refused``, with the gate's checks) and merges
nothing: its deltas wait for the next round.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from edge_agent_host.converter.aif.options import AifOptions, AifThresholds
from edge_agent_host.converter.common import ConvertOptions
from edge_agent_host.converter.formats.aif import convert_aif
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.hub.learning.merge import MergeSettings, SparseTable, merge_sparse
from edge_agent_host.hub.learning.model import (
    counts_from_npz,
    counts_to_npz,
    learned_model,
)
from edge_agent_host.hub.learning.store import LearningStore, Pending

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["LearnInputError", "RoundSettings", "build_round", "next_version", "per_node"]

_ROUND_MARK: Final = "+learn"


class LearnInputError(FleetError):
    """A round that cannot be built from what the hub holds (one line, exit 2)."""


@dataclass(frozen=True)
class RoundSettings:
    """The merge's settings, the converter gate's simulation size and its thresholds (those of
    ``edge-agent-host convert aif`` by default)."""

    merge: MergeSettings = field(default_factory=MergeSettings)
    rollouts: int = 200
    steps: int = 30
    thresholds: AifThresholds = field(default_factory=AifThresholds)


def next_version(parent: str, round_no: int) -> str:
    """``1.0.0`` -> ``1.0.0+learn1``; ``1.0.0+learn1`` -> ``1.0.0+learn2`` (``round_no``)."""
    return f"{parent.split(_ROUND_MARK, 1)[0]}{_ROUND_MARK}{round_no}"


def per_node(
    pending: list[Pending], shapes: dict[str, tuple[int, ...]]
) -> tuple[list[str], dict[str, SparseTable], dict[str, int]]:
    """The nodes (sorted), their increments as they sent them ``{table: SparseTable}`` (the
    values not 0 and their places, never a dense column; a node's deltas summed) and their
    experience."""
    nodes = sorted({p.node for p in pending})
    index = {n: i for i, n in enumerate(nodes)}
    parts: dict[str, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {t: [] for t in shapes}
    experience = dict.fromkeys(nodes, 0)
    for p in pending:
        for t in p.tables:
            parts[t.table].append((index[p.node], *t.entries()))
        experience[p.node] += p.experience
    deltas = {
        t: SparseTable.of_entries(s[0], int(np.prod(s[1:], dtype=np.int64)), parts[t])
        for t, s in shapes.items()
    }
    return nodes, deltas, experience


def build_round(
    store: LearningStore,
    line: str,
    key: Ed25519PrivateKey,
    *,
    signer: str | None = None,
    settings: RoundSettings | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """Build the next round of ``line`` (module docstring); its summary (``state`` ``built``
    or ``refused``). LearnInputError when there is nothing to build it from; with ``owner``
    (a replica holding the line's lease), LeaseLostError when it lost the lease meanwhile."""
    settings = settings or RoundSettings()
    sha = store.current_sha256(line)
    if sha is None:
        raise LearnInputError(f"model line {line!r}: the hub holds no bundle of that name")
    model = store.model(sha)
    if model is None:
        raise LearnInputError(f"model line {line!r}: bundle {sha[:12]} cannot be read")
    if not model.counts:
        raise LearnInputError(
            f"model line {line!r} has no learning: {model.name}@{model.version} carries no "
            "Dirichlet counts (convert it with pA/pB/pD)"
        )
    pending = store.pending(line, sha)
    if not pending:
        raise LearnInputError(
            f"model line {line!r}: no accepted experience since its last round "
            f"(against {model.name}@{model.version})"
        )
    previous = store.chained_round(line, sha)
    if previous is not None:
        current, base = counts_from_npz(previous["counts"]), counts_from_npz(previous["base"])
        parent_version = previous["version"]
    else:
        current, base, parent_version = model.counts, model.counts, model.version
    nodes, deltas, experience = per_node(pending, model.shapes)
    result = merge_sparse(base, current, deltas, len(nodes), settings.merge)
    round_no = store.rounds(line) + 1
    version = next_version(parent_version, round_no)
    provenance = {
        "nodes": {
            n: {
                "experience": experience[n],
                "mass": round(float(result.mass[i]), 6),
                "capped": bool(result.capped[i]),
                "score": None if np.isnan(result.scores[i]) else round(float(result.scores[i]), 6),
                "refused": bool(result.refused[i]),
            }
            for i, n in enumerate(nodes)
        },
        "deltas": len(pending),
        "experience": sum(experience[n] for i, n in enumerate(nodes) if not result.refused[i]),
        "outliers": [n for i, n in enumerate(nodes) if result.refused[i]],
        "capped": [n for i, n in enumerate(nodes) if result.capped[i]],
        "merge": asdict(settings.merge),
        "parent": f"{model.name}@{model.version}",
    }
    float_model, agent_settings, counts = learned_model(model, result.counts)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle.tar"
        report = convert_aif(
            ConvertOptions(
                out=out, name=line, version=version, seed=round_no, sign_key=key, signer=signer
            ),
            AifOptions(
                model=float_model,
                settings=agent_settings,
                counts=counts,
                rollouts=settings.rollouts,
                steps=settings.steps,
                thresholds=settings.thresholds,
            ),
        )
        provenance["gate"] = [c.describe() for c in report.checks]
        data = out.read_bytes() if report.bundle is not None else None
    built = data is not None
    round_id = store.add_round(
        line,
        state="built" if built else "refused",
        parent_sha256=sha,
        version=version,
        bundle_sha256=None if report.bundle is None else str(report.bundle["sha256"]),
        bundle=data,
        counts=counts_to_npz(result.counts),
        base=counts_to_npz(base),
        provenance=provenance,
        merged=[p.id for p in pending] if built else [],
        owner=owner,
    )
    return {
        "round": round_id,
        "line": line,
        "state": "built" if built else "refused",
        "version": version,
        "bundle_sha256": None if report.bundle is None else report.bundle["sha256"],
        **provenance,
    }
