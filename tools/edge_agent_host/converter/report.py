"""Conversion reports: the numbers, the accuracy thresholds, the summary table and progress bars.

Every converter produces a :class:`ConversionReport`: a JSON-able ``data`` dict (all the numbers),
table rows for people, :class:`Check` objects for the thresholds, and ``warnings``: one line each
for what the user should know but that does not refuse the conversion (an int8 model that is not
smaller, a tiny calibration set, a dropped output, a fallback). A conversion whose checks fail is
refused (exit code 1) unless forced; the report says which numbers failed and by how much.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = [
    "TIMINGS",
    "Check",
    "ConversionReport",
    "format_bytes_exact",
    "median_latency_ms",
    "progress",
    "progress_enabled",
]

T = TypeVar("T")
#: The report's timings (``data`` keys): in the JSON and the table, not in the manifest.
TIMINGS = ("latency_ms", "quantize_s")


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only for a person watching: not with ``--quiet``, not when stderr is no TTY."""
    return not quiet and sys.stderr.isatty()


def progress(iterable: Iterable[T], *, total: int | None, desc: str, enabled: bool) -> Iterator[T]:
    """``iterable`` with a tqdm bar on stderr when ``enabled`` (and tqdm, from the ``host`` extra,
    is installed; without it, no bar)."""
    if not enabled:
        yield from iterable
        return
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        yield from iterable
        return
    yield from tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


def median_latency_ms(run: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` calls, in ms."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def format_bytes_exact(n: int) -> str:
    return f"{n:,} B"


@dataclass(frozen=True)
class Check:
    """One accuracy threshold: ``value <= limit`` (``max``) or ``value >= limit`` (``min``)."""

    name: str
    value: float
    limit: float
    kind: Literal["max", "min"]
    option: str

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit

    def describe(self) -> str:
        op = "<=" if self.kind == "max" else ">="
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.name} {self.value:.6g} (required {op} {self.limit:g}, {self.option}): {verdict}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "kind": self.kind,
            "option": self.option,
            "passed": self.passed,
        }


@dataclass
class ConversionReport:
    """What a converter measured. ``data`` is JSON-able; ``rows`` is the table for people."""

    kind: str
    source: str
    data: dict[str, Any]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    bundle: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    #: What else may pass, besides ``--force`` (said when the checks fail).
    retry: str = ""

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            **self.data,
            "checks": [c.to_json() for c in self.checks],
            "warnings": list(self.warnings),
            "passed": self.passed,
            "bundle": self.bundle,
        }

    def manifest_record(self) -> dict[str, Any]:
        """What goes into the manifest's ``quantization`` field: the data without timings
        (:data:`TIMINGS`)."""
        record = {k: v for k, v in self.data.items() if k not in TIMINGS}
        record["checks"] = [c.to_json() for c in self.checks]
        if self.warnings:
            record["warnings"] = list(self.warnings)
        return record

    def render(self) -> str:
        """The summary table, the checks and where the bundle went."""
        lines = [f"{self.kind} conversion of {self.source}"]
        width = max((len(row[0]) for row in self.rows), default=0)
        cols = max((len(row) for row in self.rows), default=1)
        # A one-value row wider than all the value columns together (the agreement rows: a
        # figure and what it means) is written from the first value column on instead of
        # widening that column.
        span = (
            sum(
                max((len(r[i]) for r in self.rows if len(r) > 2 and len(r) > i), default=0) + 2
                for i in range(1, cols)
            )
            - 2
        )
        long_rows = {
            i
            for i, row in enumerate(self.rows)
            if cols > 2 and len(row) == 2 and len(row[1]) > span
        }
        col_width = [
            max(
                (
                    len(row[i])
                    for j, row in enumerate(self.rows)
                    if len(row) > i and j not in long_rows
                ),
                default=0,
            )
            for i in range(cols)
        ]
        for j, row in enumerate(self.rows):
            if j in long_rows:
                lines.append(f"  {row[0].ljust(width)}  {row[1]}".rstrip())
                continue
            cells = [row[0].ljust(width)]
            cells += [cell.rjust(col_width[i + 1]) for i, cell in enumerate(row[1:])]
            lines.append("  " + "  ".join(cells).rstrip())
        lines.extend(f"warning: {text}" for text in self.warnings)
        if self.checks:
            lines.append("checks")
            lines.extend(f"  {check.describe()}" for check in self.checks)
        if self.bundle is not None:
            key = self.bundle.get("key_id")
            signed = f"signed by key {key}" if key else "unsigned"
            lines.append(
                f"bundle {self.bundle['path']}: {self.bundle['nbytes']:,} payload bytes, "
                f"sha256 {self.bundle['sha256'][:16]}…, {signed}"
            )
        elif not self.passed:
            also = f"try {self.retry}, or " if self.retry else ""
            lines.append(
                f"no bundle written: accuracy checks failed ({also}use --force to write it)"
            )
        return "\n".join(lines)
