"""``edge_agent.daemon.heap``: the allocator's thresholds held at their defaults.

What glibc does with a block depends on what the process freed before (the dynamic threshold),
so each check runs in a fresh interpreter (a child process): a large block freed, then a block
larger than any free chunk the heap holds, which glibc serves from the heap once the threshold
has risen past it, and as a mapping of its own while the threshold stays at 128 KB. Where the
block lies says which. (A block that a free chunk fits comes from the heap whatever the
threshold: after a daemon ran, freed small objects coalesce into chunks of hundreds of KB, so
the block is sized from ``malloc_info``'s report of the largest, after ``malloc_trim`` merged
what can be merged.)
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.daemon.test_footprint import run_fresh

#: Allocates 16 MB (a mapping, whatever the threshold), frees it (glibc's dynamic threshold then
#: rises to 16 MB), then a block of at least 256 KB above the heap's largest free chunk (and
#: under 16 MB): prints whether that block lies in the [heap] mapping.
PROBE = """
import ctypes, re, tempfile
{setup}
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fclose.argtypes = [ctypes.c_void_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
big = libc.malloc(16 << 20)
ctypes.memset(big, 1, 16 << 20)
libc.free(big)
libc.malloc_trim(0)
with tempfile.NamedTemporaryFile(suffix=".xml") as report:
    out = libc.fopen(report.name.encode(), b"w")
    assert libc.malloc_info(0, out) == 0
    libc.fclose(out)
    chunks = r'<(?:size|unsorted) from="\\d+" to="(\\d+)" total="\\d+" count="[1-9]'
    sizes = re.findall(chunks, open(report.name).read())
largest = max((int(to) for to in sizes), default=0)
size = max(256 << 10, (largest + (64 << 10)) // 4096 * 4096)
assert size < 16 << 20, largest
block = libc.malloc(size)
heap = next(line for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]"))
low, high = (int(x, 16) for x in heap.split()[0].split("-"))
print(low <= block < high)
libc.free(block)
"""


def test_glibc_serves_a_freed_size_from_the_heap_unless_the_thresholds_are_fixed() -> None:
    """Without :func:`tune_allocator` the 256 KB block comes from the heap (so the probe can
    tell); with it, from a mapping of its own, which freeing it gives back."""
    assert run_fresh(PROBE.format(setup="")).strip() == "True"
    tuned = run_fresh(
        PROBE.format(
            setup="from edge_agent.daemon.heap import tune_allocator\nassert tune_allocator()"
        )
    )
    assert tuned.strip() == "False"


def test_the_daemon_runs_with_the_thresholds_fixed(tmp_path: Path) -> None:
    """``edge-agent run`` (and ``edge-agentd``: both go through ``cmd_run``) fixes them: after
    the demo daemon ran in this process, a freed size still comes back as a mapping."""
    setup = f"""
import os
os.environ.pop("NOTIFY_SOCKET", None)
os.environ["EDGE_AGENT_RUNTIME_DIR"] = {str(tmp_path / "run")!r}
from edge_agent.cli import main
assert main(["run", "--demo", "--duration", "0.5", "--state-dir", {str(tmp_path)!r}]) == 0
"""
    assert run_fresh(PROBE.format(setup=setup)).strip() == "False"
