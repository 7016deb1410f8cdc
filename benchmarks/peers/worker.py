"""A peer's worker for ``bench_peers.py``: run with a pymdp venv's python, speak JSON lines.

One request per line on stdin, one answer per line on stdout (anything the libraries print goes
to stderr). Requests, by ``op``:

* ``versions``: the installed versions of pymdp, numpy, jax and jaxlib;
* ``setup``: ``impl``, ``workload`` (an ``.npz`` path), ``n``, ``policy_len``, ``seed``, ``warmup``,
  ``record_steps`` and optionally ``agents`` (a probe: only that many agents act, once) build a
  :class:`~peers.loop.ClosedLoop` (the first step and the warm-up run here); answers its timings;
* ``run``: ``min_steps``, ``min_seconds``, ``max_steps``: step on, answer the rates;
* ``finish``: ``out`` (an ``.npz`` path): write the loop's arrays there, answer the digest;
* ``quit``.

Every answer has ``ok``; a failed request answers ``ok: false`` and the traceback.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for `peers`

import numpy as np

from peers.loop import ClosedLoop


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("inferactively-pymdp", "numpy", "jax", "jaxlib", "equinox"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def handle(request: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    if op == "versions":
        return {"versions": versions()}
    if op == "setup":
        loop = ClosedLoop(
            request["impl"], request["workload"], request["n"], request["policy_len"],
            seed=request["seed"], warmup=request["warmup"], record_steps=request["record_steps"],
            agents=request.get("agents"),
        )
        state["loop"] = loop
        return loop.summary()
    loop = state["loop"]
    assert isinstance(loop, ClosedLoop)
    if op == "run":
        return loop.run(request["min_steps"], request["min_seconds"], request["max_steps"])
    if op == "finish":
        del state["loop"]
        np.savez(request["out"], **loop.arrays())  # type: ignore[arg-type]
        return loop.summary()
    raise ValueError(f"unknown op {op!r}")


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of the libraries must not break the protocol
    state: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            answer = {"ok": True, **handle(request, state)}
        except Exception:  # reported to the parent, which decides
            answer = {"ok": False, "error": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
