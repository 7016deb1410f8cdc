"""An Active Inference model's bundle payload: the int8 tables under ``aif/`` with their logical
names, the manifest's :class:`~edge_agent.bundle.manifest.AifSpec`, and Dirichlet counts checked
against the tables they parameterise (stored in float64 beside them).
"""

from __future__ import annotations

import numpy as np

from edge_agent.aif.learning_counts import check_counts
from edge_agent.aif.model import Counts, GenerativeModel
from edge_agent.aif.quant import SCHEME, QuantizedModel
from edge_agent.aif.settings import AifSettings, settings_to_json
from edge_agent.bundle.manifest import AifSpec
from edge_agent.errors import ModelError

__all__ = ["AIF_ARRAY_DIR", "aif_bundle_arrays", "aif_spec", "bundle_counts"]

#: Payload directory of the int8 arrays inside a bundle.
AIF_ARRAY_DIR = "aif"


def aif_bundle_arrays(quantized: QuantizedModel) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(payload path -> array, logical name -> payload path)`` for a bundle's AifSpec.

    Logical names are :meth:`QuantizedModel.to_arrays` keys, so a device rebuilds the model with
    ``QuantizedModel.from_arrays(bundle.aif_arrays())``.
    """
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for logical, array in quantized.to_arrays().items():
        rel = f"{AIF_ARRAY_DIR}/{logical}.npy"
        arrays[rel] = np.asarray(array)
        names[logical] = rel
    return arrays, names


def aif_spec(quantized: QuantizedModel, settings: AifSettings, names: dict[str, str]) -> AifSpec:
    return AifSpec(
        num_obs=quantized.num_obs,
        num_states=quantized.num_states,
        num_controls=quantized.num_controls,
        quant_scheme=SCHEME,
        settings=settings_to_json(settings),
        arrays=names,
    )


def bundle_counts(model: GenerativeModel, counts: Counts) -> dict[str, np.ndarray]:
    """``{"pA1": counts, ...}``: each table's counts checked against ``model`` (one line for
    a wrong shape, NaN, a negative count, a zero where the table is not, a missing table)."""
    tables = {"A": model.A, "B": model.B, "D": model.D}
    out: dict[str, np.ndarray] = {}
    for kind, by_index in counts.items():
        if kind not in tables:
            raise ModelError(f"Dirichlet counts p{kind}: expected pA, pB or pD")
        for i, value in sorted(by_index.items()):
            if not 0 <= i < len(tables[kind]):
                what = "modality" if kind == "A" else "factor"
                raise ModelError(
                    f"p{kind}{i}: counts for {what} {i}, the model has {len(tables[kind])}"
                )
            out[f"p{kind}{i}"] = check_counts(f"{kind}{i}", value, tables[kind][i])
    return out
