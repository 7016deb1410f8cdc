"""The team award's assignment on both its paths: the compiled search
(edge_agent/aif/kernels/native/assignment.c) and its Python twin. A module that marks its tests
``pytest.mark.usefixtures("assignment_path")`` runs each on both (in test_recipe.py's sanitized
subprocess, the compiled one on the AddressSanitizer + UBSan build)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.aif.kernels.native import binding
from edge_agent.coordination import assignment
from edge_agent.core.native_pass import NATIVE_ENV
from tests.support.native_tick import SANITIZED_ENV


@pytest.fixture(params=["compiled", "python"])
def assignment_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every :class:`~edge_agent.coordination.assignment.Assignment` the test makes searches
    in the compiled library (which must be there) or in Python."""
    if request.param == "python":
        monkeypatch.setenv(NATIVE_ENV, "0")
    else:
        monkeypatch.delenv(NATIVE_ENV, raising=False)
        where = os.environ.get(SANITIZED_ENV)
        if where is not None:
            monkeypatch.setattr(binding, "_LIBRARY", binding.load(Path(where)))
        assert assignment.unavailable() is None, assignment.unavailable()
    return str(request.param)
