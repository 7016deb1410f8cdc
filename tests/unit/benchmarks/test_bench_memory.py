"""bench_memory.py reads the real daemon's memory: the smaps breakdown and one short run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_memory  # noqa: E402


def test_by_mapping_adds_up_to_the_resident_set() -> None:
    mapping = bench_memory.by_mapping(os.getpid())
    assert "[heap]" in mapping or "[anon]" in mapping
    status = Path("/proc/self/status").read_text()
    rss_mb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    rss_mb /= 1024
    # Mappings under 256 KB are left out; the rest is most of the resident set.
    assert 0.5 * rss_mb < sum(mapping.values()) <= rss_mb * 1.05


@pytest.mark.parametrize("edge_agentd", [False, True])
def test_a_short_run_of_the_daemon_without_mqtt(edge_agentd: bool) -> None:
    """Through ``python -m edge_agent run`` and, as the unit starts it, ``edge-agentd``."""
    row = bench_memory.run_once(
        bench_memory.REPO, None, agents=50, seconds=4.0, edge_agentd=edge_agentd
    )
    assert float(row["rss_mb"]) > 10  # type: ignore[arg-type]
    assert row["pydantic_mapped"] is False
    assert isinstance(row["by_mapping"], dict)
