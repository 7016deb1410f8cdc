"""One factor's transitions (edge_agent/aif/kernels/transitions.py): where a compiled table is
non-zero, known without making it dense (the compiled tick's bytes are planned from it)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.kernels.transitions import DenseTransition, SparseTransition
from edge_agent.aif.quant import encode_transition
from edge_agent.sim.registry import BUILTIN_WORKLOADS, builtin_model


@pytest.mark.parametrize("name", list(BUILTIN_WORKLOADS))
def test_a_transition_s_support_is_where_its_dense_table_is_non_zero(name: str) -> None:
    """``support_table`` is ``dense_table(t) != 0`` for every factor of every built-in model,
    compiled from its float table and from its int8 codes."""
    for b in builtin_model(name).B:
        for source in (b, encode_transition(b)):
            for dtype in (np.float64, np.float32):
                t = kernels.make_transition(source, dtype)
                support = kernels.support_table(t)
                assert support.dtype == np.bool_
                np.testing.assert_array_equal(support, kernels.dense_table(t) != 0)


def test_both_forms_of_transitions_are_covered() -> None:
    """The built-in models compile to dense and sparse transitions both (so the test above
    checks each form)."""
    kinds = {type(kernels.make_transition(b, np.float64))
             for name in BUILTIN_WORKLOADS for b in builtin_model(name).B}
    assert kinds == {DenseTransition, SparseTransition}
