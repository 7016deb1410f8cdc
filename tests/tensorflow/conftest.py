"""The host tool with real TensorFlow: ``scripts/test-tf`` runs these tests in a venv of their own.

TensorFlow is not a project dependency (about 1.2 GB installed), so these tests are not under the
main suite's ``testpaths``; ``scripts/test`` runs them through ``scripts/test-tf`` first.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _tensorflow() -> None:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pytest.fail(
            "these tests need TensorFlow: run them with scripts/test-tf, which makes a venv with "
            "tensorflow-cpu (or pip install 'edge-agent-runtime[tf-convert]')"
        )


# TensorFlow 2.21's tensors predate numpy 2's copy keyword; Keras converts them with np.array and
# numpy warns (the suite turns warnings into errors). Their warning, not ours: let it pass.
_TF_WARNINGS = (
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for spec in _TF_WARNINGS:
            item.add_marker(pytest.mark.filterwarnings(spec))
