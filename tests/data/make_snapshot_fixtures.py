"""Make the snapshot files of the formats earlier versions wrote: ``snapshot-v2.eas`` and
``snapshot-v1.eas``, by the writer of the last commit that wrote them (:data:`WRITER_COMMIT`),
taken from git as it was.

Format v3 (a JSON header) replaced them; a daemon upgraded from those versions must still
restore its last snapshot, so ``tests/unit/daemon/snapshots/test_format.py`` reads these files
back and compares them with :func:`fixture_arrays` and :data:`META` (tests import this module
for them). The arrays are made with integer arithmetic alone, the same on every machine; the
files are byte for byte the same each time this script runs::

    .venv/bin/python tests/data/make_snapshot_fixtures.py
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WRITER_COMMIT = "744fc63"
"""The last commit whose ``edge_agent/daemon/snapshots/format.py`` wrote format v2 (and v1)."""

CREATED = 1_790_000_000.25
MONOTONIC = 12_345.5
META: dict[str, Any] = {
    "format": "edge-agent-groups-v1",
    "groups": {"grid": {"key": "grid10:int8:0123abcd", "agents": 20}},
    "version": "0.9.0",
    "config": "/etc/edge-agent/config.toml",
    "bytes": b"\x00\xffmsgpack bin",  # MessagePack had bytes; v3's JSON has none
    "nested": [1, -2, 2.5, None, True, "x"],
}


def fixture_arrays() -> dict[str, npt.NDArray[Any]]:
    """The arrays in both files: a belief history that compresses, a table of bits that does
    not compress by a tenth (stored raw in v2 too), small and empty arrays, a scalar."""
    index = np.arange(64 * 20 * 10, dtype=np.uint64)
    history = np.where(index % 10 == (index // 10) % 7, 255, 0).astype(np.uint8)
    mixed = (np.arange(3000, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    return {
        "group.grid.history.qs": history.reshape(64, 20, 10),
        "group.grid.mixed": mixed.astype(np.uint32).reshape(1000, 3),
        "group.grid.steps": np.arange(20, dtype=">i8"),
        "group.grid.qs0": (np.arange(200, dtype=np.int32) % 9).astype(np.float32).reshape(20, 10),
        "group.grid.empty": np.zeros((0, 4), np.int16),
        "group.grid.flag": np.array(True),
    }


def old_writer() -> types.ModuleType:
    """``edge_agent/daemon/snapshots/format.py`` of :data:`WRITER_COMMIT`, as a module."""
    source = subprocess.run(
        ["git", "show", f"{WRITER_COMMIT}:edge_agent/daemon/snapshots/format.py"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout
    module = types.ModuleType("snapshot_format_v2")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{WRITER_COMMIT}:format.py", "exec"), module.__dict__)
    return module


def main() -> None:
    writer = old_writer()
    arrays = list(fixture_arrays().items())
    for version, compress in ((2, True), (1, False)):
        header = {
            "format_version": version,
            "created": CREATED,
            "monotonic": MONOTONIC,
            "meta": META,
        }
        path = HERE / f"snapshot-v{version}.eas"
        with open(path, "w+b") as f:
            writer.write_body(f, writer.magic_of(version), header, arrays, compress)
        print(f"{path.relative_to(REPO)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
