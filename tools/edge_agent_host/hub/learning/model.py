"""A model line's learning model as the hub reads it from a bundle it holds, and the new model a
round's merged counts make.

:func:`line_model` reads a bundle file (the bytes of the hub's ``bundles`` table) without
trusting a key (the hub stored it when it deployed it): its name, version, identity, and the
Dirichlet counts it carries by table name (``A1``, ``B0``, ``D0``: the names of
:class:`~edge_agent.fleet.protocol.CountsDelta`). :func:`learned_model` turns merged counts into
the generative model the host converter takes: each learned table is its counts normalised per
column, every other table (and the agents' settings) is the bundle's own.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_agent.aif.model import Counts, GenerativeModel
from edge_agent.aif.quant import QuantizedModel
from edge_agent.aif.settings import AifSettings, settings_from_json
from edge_agent.bundle.loader import Bundle, load_bundle
from edge_agent.bundle.manifest import COUNT_NAME

__all__ = [
    "LineModel",
    "counts_from_npz",
    "counts_to_npz",
    "learned_model",
    "line_model",
    "table_counts",
]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LineModel:
    """``counts``: the bundle's Dirichlet counts by table name (empty: it does not learn)."""

    name: str
    version: str
    sha256: str
    counts: dict[str, F64]
    bundle: Bundle

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {t: tuple(int(n) for n in c.shape) for t, c in self.counts.items()}


def table_counts(counts: Counts) -> dict[str, F64]:
    """``{"A": {1: pA1}}`` -> ``{"A1": pA1}`` (float64)."""
    return {
        f"{kind}{i}": np.asarray(a, dtype=np.float64)
        for kind, by_index in sorted(counts.items())
        for i, a in sorted(by_index.items())
    }


def line_model(data: bytes) -> LineModel:
    """The model of a bundle file's bytes (BundleError when it is not a readable bundle)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.tar"
        path.write_bytes(data)
        bundle = load_bundle(path, trusted_keys=None, require_signature=False)
    counts = table_counts(bundle.aif_counts()) if bundle.manifest.aif is not None else {}
    m = bundle.manifest
    return LineModel(
        name=m.name, version=m.version, sha256=bundle.sha256, counts=counts, bundle=bundle
    )


def learned_model(
    line: LineModel, counts: Mapping[str, F64]
) -> tuple[GenerativeModel, AifSettings, Counts]:
    """The float model, the settings and the counts (by kind and index) a round converts:
    the bundle's tables dequantized, each learned table replaced by its merged counts
    normalised per column (ValueError on counts of another table set)."""
    if set(counts) != set(line.counts):
        raise ValueError(f"counts of {sorted(counts)}, the model learns {sorted(line.counts)}")
    aif = line.bundle.manifest.aif
    if aif is None:
        raise ValueError(f"{line.name}@{line.version} is not an Active Inference bundle")
    arrays = {k: v for k, v in line.bundle.aif_arrays().items() if not COUNT_NAME.match(k)}
    model = QuantizedModel.from_arrays(arrays).dequantize()
    tables: dict[str, list[np.ndarray]] = {
        "A": list(model.A),
        "B": list(model.B),
        "D": list(model.D),
    }
    by_kind: Counts = {}
    for name, c in counts.items():
        kind, index = name[0], int(name[1:])
        total = c.sum(axis=0, keepdims=True)
        tables[kind][index] = c / np.where(total > 0, total, 1.0)
        by_kind.setdefault(kind, {})[index] = c
    new = GenerativeModel.from_arrays(
        A=tables["A"], B=tables["B"], C=list(model.C), D=tables["D"], E=model.E
    )
    return new, settings_from_json(aif.settings), by_kind


def counts_to_npz(counts: Mapping[str, F64]) -> bytes:
    """Counts by table name as ``.npz`` bytes (the rounds table's ``counts`` and ``base``)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=np.float64) for k, v in counts.items()})  # type: ignore[arg-type]
    return buf.getvalue()


def counts_from_npz(data: bytes) -> dict[str, F64]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: np.asarray(npz[k], dtype=np.float64) for k in npz.files}
