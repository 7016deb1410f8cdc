"""The memory limit of the cgroup the daemon runs in, so that a budget above it is refused.

systemd puts a service in its own cgroup and writes the unit's ``MemoryMax=`` and
``MemoryHigh=`` there; a container runtime does the same with ``--memory``. A profile whose
budget is above that limit would be OOM-killed as it fills, long after start, so the daemon
reads the limit at start (``check-config`` and a reload too:
:func:`edge_agent.daemon.admission.admit`) and refuses a budget above ``memory.max``.

cgroup v2 (Raspberry Pi OS, Debian >= 11): ``/proc/self/cgroup`` has one line ``0::/path``; the
limits are ``/sys/fs/cgroup/path/memory.max`` and ``memory.high`` (``max``: none). cgroup v1 (or
the hybrid layout): the ``memory`` line names the path under ``/sys/fs/cgroup/memory``, whose
``memory.limit_in_bytes`` is the limit (a huge number: none). A limit set on an enclosing cgroup
(a slice) binds too, so every level up to the root is read and the smallest wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CgroupMemory", "read_cgroup_memory"]

PROC_SELF_CGROUP: Final = Path("/proc/self/cgroup")
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
#: cgroup v1 writes "no limit" as the largest page-aligned counter (9223372036854771712).
_V1_UNLIMITED: Final = 2**62


@dataclass(frozen=True)
class CgroupMemory:
    """The tightest memory limits on this process's cgroup and those enclosing it (bytes)."""

    #: ``memory.max`` (v1: ``memory.limit_in_bytes``); None: no limit.
    max_bytes: int | None
    #: ``memory.high`` (v2 only): above it the kernel throttles and reclaims; None: no limit.
    high_bytes: int | None
    #: The file the ``max_bytes`` came from (for messages).
    max_file: Path | None
    version: int


def _read_limit(path: Path, unlimited_from: int | None) -> int | None:
    """A limit file's value in bytes, or None for none (``max``, v1's huge value, no file)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max" or not text.isdigit():
        return None
    value = int(text)
    if unlimited_from is not None and value >= unlimited_from:
        return None
    return value


def _levels(root: Path, relative: str) -> list[Path]:
    """``root/relative`` and every directory above it up to ``root``, innermost first."""
    parts = [p for p in relative.strip("/").split("/") if p and p not in (".", "..")]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _tightest(levels: list[Path], name: str, unlimited_from: int | None) -> tuple[int, Path] | None:
    best: tuple[int, Path] | None = None
    for level in levels:
        value = _read_limit(level / name, unlimited_from)
        if value is not None and (best is None or value < best[0]):
            best = (value, level / name)
    return best


def read_cgroup_memory(
    proc_cgroup: Path = PROC_SELF_CGROUP, root: Path = CGROUP_ROOT
) -> CgroupMemory | None:
    """The memory limits of the cgroup in ``proc_cgroup`` (default: this process's) under
    ``root``; None when no cgroup memory controller can be found (not Linux, no cgroupfs)."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    v2_path: str | None = None
    v1_path: str | None = None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    if v2_path is not None and (root / "cgroup.controllers").exists():
        levels = _levels(root, v2_path)
        if any((level / "memory.max").exists() for level in levels) or (
            "memory" in _read_words(root / "cgroup.controllers")
        ):
            found = _tightest(levels, "memory.max", None)
            high = _tightest(levels, "memory.high", None)
            return CgroupMemory(
                max_bytes=found[0] if found else None,
                high_bytes=high[0] if high else None,
                max_file=found[1] if found else None,
                version=2,
            )
    if v1_path is not None and (root / "memory").is_dir():
        found = _tightest(_levels(root / "memory", v1_path), "memory.limit_in_bytes", _V1_UNLIMITED)
        return CgroupMemory(
            max_bytes=found[0] if found else None,
            high_bytes=None,
            max_file=found[1] if found else None,
            version=1,
        )
    return None


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return []
