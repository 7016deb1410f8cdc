"""One exception root for everything edge-agent raises on purpose.

Callers catch :class:`EdgeAgentError` to handle any expected failure (bad input, bad config, a
bundle that fails verification, a budget that does not fit) without catching programming errors.
"""

from __future__ import annotations

import os

#: Top-level module -> the pip extra that installs it (``pip install 'edge-agent-runtime[EXTRA]'``).
EXTRA_OF_MODULE = {
    "onnxruntime": "onnx",
    "ai_edge_litert": "tflite",
    "tflite_runtime": "tflite",
    "onnx": "host",
    "sympy": "host",
    "tqdm": "host",
    "tensorflow": "tf-convert",
    "PIL": "camera",
}


def missing_module_message(err: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs the module ``err`` misses, or ``None`` when the
    module is not one of our optional dependencies (then it is a bug, not a missing extra)."""
    root = (err.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(root)
    if extra is None:
        return None
    return (
        f"needs the Python package {root!r}, which is not installed: "
        f"pip install 'edge-agent-runtime[{extra}]'"
    )


def file_problem(err: OSError) -> str:
    """One line for a file operation that failed: ``door-v9.tar: No such file or directory``
    (the file first, as the config errors put it; ``str(err)`` when the error names no file).
    What the command lines print for an ``OSError`` that nothing closer to it explained."""
    if err.filename is None or not err.strerror:
        return str(err)
    where = os.fsdecode(err.filename)
    if err.filename2 is not None:
        where += f" -> {os.fsdecode(err.filename2)}"
    return f"{where}: {err.strerror}"


class EdgeAgentError(Exception):
    """Root of every error edge-agent raises deliberately."""


class ConfigError(EdgeAgentError):
    """A config or firmware profile is invalid.

    ``str(err)`` reads ``path:line: field: problem`` for every problem found, one per line.
    """

    def __init__(self, message: str, *, path: str | None = None, problems: list[str] | None = None):
        super().__init__(message)
        self.path = path
        self.problems = problems or [message]


class ModelError(EdgeAgentError):
    """A generative model or neural model is malformed: shapes, normalisation, NaN, ranges."""


class InputError(EdgeAgentError):
    """Run-time input is out of range or of the wrong shape (observations, actions)."""


class BundleError(EdgeAgentError):
    """A bundle is malformed, oversized, path-escaping, altered or otherwise refused."""


class SignatureError(BundleError):
    """A bundle or command signature is missing, invalid or from an untrusted key."""


class BudgetError(EdgeAgentError):
    """A memory reservation does not fit in the budget.

    A refused plan carries ``offenders``, ``(owner, problem)`` per request that does not fit, and
    ``summary``, the totals and what to change, so that callers can place each problem.
    """

    def __init__(
        self, message: str, *, offenders: list[tuple[str, str]] | None = None, summary: str = ""
    ):
        super().__init__(message)
        self.offenders = offenders or []
        self.summary = summary or message


class BackendUnavailableError(EdgeAgentError):
    """An inference backend's optional dependency is not installed."""


class ProtocolError(EdgeAgentError):
    """A fleet message is malformed, oversized, of the wrong schema, or refused."""


class SnapshotError(EdgeAgentError):
    """A state snapshot is corrupt, truncated or of an unknown version."""
