"""The stored benchmark results: one JSON object per line in ``benchmarks/results/``.

A file per day and machine, ``<YYYY-MM-DD>-<machine>.jsonl`` (the day in UTC). Each line is one
record a benchmark printed (``result``) with what it was measured on, at and with:

* ``machine``: a stable name for the machine (its hostname, or ``record.py --machine NAME``);
* ``cpu``: the CPU's model name, ``arch`` (``x86_64``, ``aarch64``), ``cores`` (CPUs online);
  ``device``: the board's model where the kernel names one (a Raspberry Pi's device tree);
* ``python`` and ``numpy``: the versions that ran it;
* ``commit``: ``git rev-parse HEAD`` of the checkout, ``dirty``: whether the code a benchmark
  runs had uncommitted changes (:data:`MEASURED_CODE`);
* ``date``: when the run started (UTC, ISO 8601), ``run``: the same for every line of one run;
  ``load1``: the 1-minute load average then (a shared machine's numbers need it);
* ``benchmark``: the script's file name, ``command``: the exact command, as run from the
  repository's root.

:func:`append` writes lines (``benchmarks/record.py`` is the one writer) and :func:`read_all`
reads every stored line (``benchmarks/render.py`` renders the performance page from them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "benchmarks" / "results"

#: What every stored line names (tests/unit/benchmarks/test_result_store.py checks the store).
REQUIRED = (
    "machine", "cpu", "arch", "cores", "python", "numpy", "commit", "dirty", "date", "run",
    "benchmark", "command", "result",
)

#: The code a benchmark runs: an uncommitted change here makes a run ``dirty`` (a change to the
#: results, the notes, the docs or the tests does not).
MEASURED_CODE = (
    "edge_agent", "tools", "examples", "firmware_profiles", "pyproject.toml",
    "benchmarks/peers", "benchmarks/bench_*.py",
)


def file_for(day: str, machine: str, store: Path = STORE) -> Path:
    """The file of ``machine``'s runs on ``day`` (``YYYY-MM-DD``)."""
    return store / f"{day}-{machine}.jsonl"


def append(path: Path, lines: Iterable[dict[str, Any]]) -> int:
    """Append ``lines`` to ``path`` (one JSON object each, keys sorted); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)
    return text.count("\n")


def read_all(store: Path = STORE) -> list[dict[str, Any]]:
    """Every stored line of every file in ``store``, in file then line order, each with
    ``source`` (``file:line``) added; a line that is not a JSON object raises ``ValueError``
    naming it."""
    lines: list[dict[str, Any]] = []
    for path in sorted(store.glob("*.jsonl")):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip():
                continue
            where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{number}"
            try:
                line = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not JSON: {err}") from err
            if not isinstance(line, dict):
                raise ValueError(f"{where}: not a JSON object")
            lines.append({**line, "source": where})
    return lines


def missing_fields(line: dict[str, Any]) -> list[str]:
    """The fields of :data:`REQUIRED` that ``line`` lacks or leaves empty."""
    return [k for k in REQUIRED if line.get(k) in (None, "")]
