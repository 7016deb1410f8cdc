"""How the C library's allocator serves the daemon: fixed thresholds, set once at start.

glibc's ``malloc`` serves a request of at least ``M_MMAP_THRESHOLD`` bytes (128 KB) with a
mapping of its own, unmapped when freed, and gives the top of the heap back once
``M_TRIM_THRESHOLD`` bytes (128 KB) are free there. Both thresholds are dynamic by default: each
time a mapped block is freed, the mapping threshold rises to its size (up to 32 MB) and the trim
threshold to twice that. Starting a daemon frees many such blocks (numpy's temporaries while a
model is compiled, the warm-up's copies, a snapshot's buffers), so from then on the same sizes
come from the heap, whose free pages stay resident: measured on the daemon of
``benchmarks/bench_memory.py`` (1,000 grid10 agents, x86-64), 1.1 MB of its resident set without
MQTT and about 1 MB with it (docs/memory.md, "What the daemon's memory is").
:func:`tune_allocator` sets both thresholds to their defaults, which makes them fixed: a large
block is always its own mapping, given back when freed.

A tick allocates no such block (STYLE 3: the kernels' scratch is preallocated; a group's tick
makes at most tens of KB of temporaries), so a fixed threshold costs the tick nothing; what
maps and unmaps is start-up, snapshots and reloads. The same settings in the environment
(``MALLOC_MMAP_THRESHOLD_=131072``, ``MALLOC_TRIM_THRESHOLD_=131072``) do the same for any
process; the daemon sets them itself so that every way of starting it (``edge-agentd`` under
the unit, ``edge-agent run``, a container) gets them. On a C library without ``mallopt`` (musl)
nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Final

logger = logging.getLogger(__name__)

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator"]

#: ``mallopt``'s parameter numbers (glibc's ``malloc.h``).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

#: Blocks of at least this many bytes are mappings of their own (glibc's default, held fixed).
MMAP_THRESHOLD: Final = 128 * 1024
#: Free bytes at the top of the heap beyond which it is given back (glibc's default, fixed).
TRIM_THRESHOLD: Final = 128 * 1024


def tune_allocator() -> bool:
    """Fix glibc's mapping and trim thresholds at their defaults (see the module's text). True
    when the C library took both; False (and nothing changed) where it has no ``mallopt``."""
    try:
        # The process's own symbols (dlopen(NULL)): the C library the interpreter runs on.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    done = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and done
    if not done:
        logger.debug("mallopt refused the allocator's thresholds")
    return done
