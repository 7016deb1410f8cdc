"""Count the numpy calls a piece of code makes (the fixed cost of a tick).

A tick of a small model costs per numpy call, not per element: each call pays ~1 us of argument
parsing, dispatch and iterator set-up whatever the size of its arrays. :func:`count_numpy_calls`
runs a callable a few times and counts, per call, what it invoked of numpy:

* every ufunc called through the ``numpy`` namespace (``np.add(...)``, ``np.matmul(...)``): the
  namespace's ufuncs are replaced by counting wrappers for the duration;
* numpy's array functions called through the namespace (``np.dot``, ``np.copyto``,
  ``np.count_nonzero``, ...): wrapped the same way;
* methods of arrays and ufuncs implemented in C (``a.take(...)``, ``a.reshape(...)``,
  ``np.add.reduce(...)``), seen by a :func:`sys.setprofile` hook.

Operators on arrays (``a * b``) and calls through names bound before the count starts (``from numpy
import add``) are not seen; the kernels call numpy through ``np.`` with ``out=`` buffers. The
counts are exact and do not depend on the machine; the wrappers slow the counted calls down, so
time nothing while counting.

:func:`count_python_calls` counts the Python-level work the same way: every Python function
entered (a method, a property, numpy's own Python wrappers such as ``np.argmax`` and the
dispatchers of its array functions, a generator each time it resumes), by
:func:`sys.setprofile`'s ``call`` events; each costs about 0.1 us before its body runs.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

import numpy as np

#: Array functions of the numpy namespace that the kernels call (the ufuncs are found by type).
ARRAY_FUNCTIONS = (
    "dot",
    "copyto",
    "count_nonzero",
    "argmax",
    "take",
    "cumsum",
    "ascontiguousarray",
    "asarray",
    "concatenate",
    "stack",
    "where",
    "einsum",
    "put",
    "clip",
    "abs",
)


class _Counted:
    """A numpy callable that counts its calls into ``counts[name]``."""

    def __init__(self, fn: Any, name: str, counts: Counter[str]) -> None:
        self._fn, self._name, self._counts = fn, name, counts

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._counts[self._name] += 1
        return self._fn(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:  # np.add.reduce: the real method (seen by the hook)
        return getattr(self._fn, attr)


def count_numpy_calls(fn: Callable[[], object], repeats: int = 5) -> tuple[float, dict[str, float]]:
    """Numpy calls per call of ``fn`` (mean over ``repeats`` calls) and the same by name."""
    counts: Counter[str] = Counter()
    names = [k for k in dir(np) if isinstance(getattr(np, k), np.ufunc)]
    names += [k for k in ARRAY_FUNCTIONS if hasattr(np, k) and k not in names]
    saved = {k: getattr(np, k) for k in names}

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and isinstance(
            getattr(arg, "__self__", None), (np.ndarray, np.ufunc, np.generic)
        ):
            owner = type(arg.__self__).__name__
            counts[f"{owner}.{arg.__name__}"] += 1

    for k in names:
        setattr(np, k, _Counted(saved[k], k, counts))
    sys.setprofile(hook)
    try:
        for _ in range(repeats):
            fn()
    finally:
        sys.setprofile(None)
        for k, v in saved.items():
            setattr(np, k, v)
    per_call = {k: v / repeats for k, v in counts.most_common()}
    return sum(per_call.values()), per_call


def count_python_calls(
    fn: Callable[[], object], repeats: int = 5
) -> tuple[float, dict[str, float]]:
    """Python function calls per call of ``fn`` (mean over ``repeats`` calls, ``fn`` itself not
    counted) and the same by ``file:function``."""
    counts: Counter[str] = Counter()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            counts[f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}"] += 1

    for _ in range(repeats):
        sys.setprofile(hook)
        try:
            fn()
        finally:
            sys.setprofile(None)
    per_call = {k: v / repeats for k, v in counts.most_common()}
    name = getattr(fn, "__code__", None)
    if name is not None:  # fn's own frame
        per_call.pop(f"{name.co_filename.rsplit('/', 1)[-1]}:{name.co_qualname}", None)
    return sum(per_call.values()), per_call
