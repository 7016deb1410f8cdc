"""Giving freed heap memory back to the system (glibc's ``malloc_trim``).

Start-up (building groups, the warm-up step that copies and restores every group's state),
snapshots (every group's state gathered into one archive) and reloads free many medium-sized
blocks at once. glibc keeps them in the heap for reuse, so the resident set stays at its peak.
``malloc_trim(0)`` returns the free pages: measured on 1,000 grid10 agents, 0.6 MB of 72 MB in
the running daemon (7 MB right after the warm-up when the daemon is built in-process, most of it
is reused by the first ticks; benchmarks/notes/memory.md). It walks
the heap (about a millisecond here), so the daemon calls it after those moments, never per tick.
On a C library without it (musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

__all__ = ["release_free_heap"]


def _find_trim() -> Callable[[int], int] | None:
    # The process's own symbols (dlopen(NULL)): the C library the interpreter runs on, with no
    # search for it (ctypes.util.find_library runs ldconfig in a child process).
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM: Final = _find_trim()


def release_free_heap() -> bool:
    """Return the heap's free pages to the system; True when the C library did (or could)."""
    if _TRIM is None:
        return False
    try:
        return bool(_TRIM(0))
    except OSError:  # never fatal: this only makes the resident set smaller
        logger.debug("malloc_trim failed", exc_info=True)
        return False
