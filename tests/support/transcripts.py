"""Docs transcripts (``$ command`` lines, each followed by its output) checked against real runs.

:func:`steps` splits a transcript block (from :func:`tests.support.doc_blocks.doc_block`) into
commands and the output the doc shows for each; :func:`matches` says whether a real output has the
doc's shape: the same lines, in order, with every number, hexadecimal id or hash allowed to differ
(a key id, a sha256, a latency) and runs of spaces allowed to differ in length (column widths follow
the numbers). Words, units, labels and line count must be what the doc shows.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# A hex id or hash (16+ hex digits, or a shortened one before "…"), else a number: 1,240,
# 0.0153, 2.17e-24, -3, 2024 (a date is numbers and punctuation).
_VOLATILE = re.compile(
    r"(?P<hex>(?<![0-9A-Za-z])[0-9a-f]{16,}|(?<![0-9A-Za-z])[0-9a-f]{4,}(?=…))"
    r"|(?P<num>[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)"
)
_HEX = r"[0-9a-f]+"
_NUM = r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"


class Step(NamedTuple):
    """One command of a transcript and the output lines the doc shows for it."""

    command: str
    output: list[str]


def steps(block: str) -> list[Step]:
    """The ``$ `` commands of a transcript (``\\`` continuations joined) with their output lines
    (blank lines at the end of an output dropped: they separate the commands)."""
    out: list[Step] = []
    command: str | None = None
    lines: list[str] = []
    continued = False
    for raw in block.splitlines():
        line = raw.rstrip()
        if continued and command is not None:
            command += " " + line.strip().removesuffix("\\").rstrip()
            continued = line.endswith("\\")
            continue
        if line.startswith("$ "):
            if command is not None:
                out.append(Step(command, _trim(lines)))
            command, lines = line[2:].removesuffix("\\").rstrip(), []
            continued = line.endswith("\\")
        elif command is None:
            raise ValueError(f"transcript output before any '$ ' command: {line!r}")
        else:
            lines.append(line)
    if command is not None:
        out.append(Step(command, _trim(lines)))
    return out


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def line_pattern(line: str) -> re.Pattern[str]:
    """The regular expression of one shown output line (see the module docstring)."""
    parts: list[str] = []
    last = 0
    for match in _VOLATILE.finditer(line):
        parts.append(re.escape(line[last:match.start()]))
        parts.append(_HEX if match["hex"] else _NUM)
        last = match.end()
    parts.append(re.escape(line[last:]))
    pattern = re.sub(r"(?:\\ )+", r"\\s+", "".join(parts))
    return re.compile(rf"^\s*{pattern}\s*$")


def matches(shown: list[str], real: str) -> str | None:
    """None when the real output has the shown lines' shape, else what differs (for the
    assertion message)."""
    got = _trim([line.rstrip() for line in real.splitlines()])
    if len(got) != len(shown):
        return f"{len(got)} lines, the doc shows {len(shown)}:\n" + "\n".join(got)
    for number, (want, have) in enumerate(zip(shown, got, strict=True), 1):
        if not line_pattern(want).match(have):
            return f"line {number} differs:\n  doc:  {want}\n  real: {have}"
    return None
