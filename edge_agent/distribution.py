"""Our distribution's name, and the notice when PyPI's ``edge-agent`` shares our environment.

The project is distributed as ``edge-agent-runtime``. PyPI's ``edge-agent`` is another project,
and its wheel also writes an import package named ``edge_agent``: installed into one environment,
the two distributions overwrite each other's files, and uninstalling either removes files of the
other (README.md, "Why the name"). The import packages keep their names (``edge_agent``,
``edge_agent_host``: users' code, config ``type`` paths and the service's venvs use them), so the
clash is not prevented but detected: ``edge-agent --version|check-config|run``, ``edge-agentd``,
``edge-agent-host`` and ``edge-agent-hub`` print :func:`clash_notice`'s line when it finds the
other distribution.

The lookup lists the directories of ``sys.path`` for ``edge_agent-*.dist-info`` and
``edge_agent*.egg-info`` as importlib.metadata does, without importing it: importlib.metadata
costs the daemon about 3 MB resident and 35 ms, this 20 kB and half a millisecond
(benchmarks/notes/packaging-and-ci.md, "Our own name").
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Final, NamedTuple

#: Our distribution (pyproject.toml's ``[project] name``).
DISTRIBUTION: Final = "edge-agent-runtime"
#: The other project's distribution, whose wheel writes ``edge_agent`` too.
FOREIGN: Final = "edge-agent"

# Metadata directory names of a distribution whose normalized name is "edge-agent" (PEP 503):
# edge_agent-0.4.0.dist-info, Edge.Agent-0.4.0.dist-info, edge_agent.egg-info, ... but not
# edge_agent_runtime-0.1.0.dist-info.
_METADATA_DIR: Final = re.compile(r"^edge[-_.]+agent(-[^/]*)?\.(dist|egg)-info$", flags=re.I)


class Installed(NamedTuple):
    """A distribution found on ``sys.path``: its name and version as its metadata says them, and
    its metadata directory."""

    name: str
    version: str
    path: Path


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_metadata(path: Path) -> tuple[str, str] | None:
    """``(Name, Version)`` of a ``.dist-info`` (METADATA) or ``.egg-info`` (PKG-INFO, or the file
    itself) directory; None when unreadable."""
    candidates = [path / "METADATA", path / "PKG-INFO"] if path.is_dir() else [path]
    for candidate in candidates:
        try:
            text = candidate.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        headers: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip():
                break  # the headers end at the first blank line; the description follows
            key, sep, value = line.partition(":")
            if sep and key in {"Name", "Version"}:
                headers.setdefault(key, value.strip())
        if "Name" in headers:
            return headers["Name"], headers.get("Version", "?")
    return None


def find_foreign(paths: Iterable[str] | None = None) -> Installed | None:
    """The ``edge-agent`` distribution installed on ``paths`` (default ``sys.path``), or None."""
    for entry in sys.path if paths is None else paths:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a missing directory
            continue
        for name in sorted(names):
            if not _METADATA_DIR.match(name):
                continue
            path = Path(entry or ".") / name
            metadata = _read_metadata(path)
            if metadata is not None and _normalize(metadata[0]) == FOREIGN:
                return Installed(metadata[0], metadata[1], path)
    return None


def clash_notice(prog: str, paths: Iterable[str] | None = None) -> str | None:
    """One line saying what is wrong and what to do when ``edge-agent`` shares this environment
    with us (``prog``: the command that prints it), else None."""
    found = find_foreign(paths)
    if found is None:
        return None
    return (
        f"{prog}: warning: the distribution '{found.name}' {found.version} ({found.path}) is "
        f"installed next to ours, {DISTRIBUTION}: it is another project (or this one before its "
        "rename) and writes the same edge_agent package, so each overwrites the other's files; "
        f"run 'pip uninstall {FOREIGN}', then reinstall {DISTRIBUTION} with --force-reinstall "
        "(README.md, 'Why the name')"
    )

