"""The cgroup memory limit reader (edge_agent/daemon/cgroup.py) and the budget check against it
(edge_agent/daemon/admission.py). The real-cgroup journey is in
tests/integration/daemon/test_config_checks.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.profiles import load_profiles
from edge_agent.daemon.admission import cgroup_memory_problems
from edge_agent.daemon.cgroup import CgroupMemory, read_cgroup_memory

REPO = Path(__file__).resolve().parents[3]
MiB = 2**20


def _v2_root(tmp_path: Path, limits: dict[str, dict[str, str]]) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for rel, files in limits.items():
        directory = root / rel
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in files.items():
            (directory / name).write_text(value + "\n")
    return root


def test_v2_reads_the_units_memory_max_and_high(tmp_path: Path) -> None:
    unit = "system.slice/edge-agent.service"
    root = _v2_root(
        tmp_path,
        {
            "system.slice": {"memory.max": "max", "memory.high": "max"},
            unit: {"memory.max": str(576 * MiB), "memory.high": str(528 * MiB)},
        },
    )
    proc = tmp_path / "cgroup.txt"
    proc.write_text(f"0::/{unit}\n")
    assert read_cgroup_memory(proc, root) == CgroupMemory(
        576 * MiB, 528 * MiB, root / unit / "memory.max", 2
    )


def test_v2_a_tighter_slice_above_the_unit_binds(tmp_path: Path) -> None:
    root = _v2_root(
        tmp_path,
        {
            "edge.slice": {"memory.max": str(256 * MiB)},
            "edge.slice/a.service": {"memory.max": "max"},
        },
    )
    proc = tmp_path / "cgroup.txt"
    proc.write_text("0::/edge.slice/a.service\n")
    limits = read_cgroup_memory(proc, root)
    assert limits is not None
    assert limits.max_bytes == 256 * MiB
    assert limits.max_file == root / "edge.slice" / "memory.max"
    assert limits.high_bytes is None


def test_v2_without_limits_and_without_a_cgroup_fs(tmp_path: Path) -> None:
    root = _v2_root(tmp_path, {"user.slice": {"memory.max": "max"}})
    proc = tmp_path / "cgroup.txt"
    proc.write_text("0::/user.slice\n")
    assert read_cgroup_memory(proc, root) == CgroupMemory(None, None, None, 2)
    assert read_cgroup_memory(tmp_path / "no-such-file", root) is None
    assert read_cgroup_memory(proc, tmp_path / "no-cgroup-fs") is None


def test_v1_hybrid_reads_memory_limit_in_bytes(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "memory" / "docker" / "abc").mkdir(parents=True)
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (root / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{512 * MiB}\n")
    proc = tmp_path / "cgroup.txt"
    proc.write_text("12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert read_cgroup_memory(proc, root) == CgroupMemory(
        512 * MiB, None, root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", 1
    )
    (root / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(
        "9223372036854771712\n"
    )
    assert read_cgroup_memory(proc, root) == CgroupMemory(None, None, None, 1)


def test_this_process_cgroup_is_read_for_real() -> None:
    """The real /proc/self/cgroup and /sys/fs/cgroup of this machine: a limit or none, never an
    error; a limit found names a file that holds it."""
    limits = read_cgroup_memory()
    assert limits is not None, "no cgroup memory controller found under /sys/fs/cgroup"
    assert limits.version in (1, 2)
    if limits.max_bytes is not None:
        assert limits.max_file is not None
        assert limits.max_file.read_text().strip() == str(limits.max_bytes)


@pytest.fixture
def profiles() -> dict:  # type: ignore[type-arg]
    return load_profiles(REPO / "firmware_profiles")


def test_every_shipped_profile_passes_its_own_dropin_quietly(profiles: dict) -> None:  # type: ignore[type-arg]
    """The limits `edge-agent systemd-dropin --profile NAME` writes neither refuse nor warn."""
    for profile in profiles.values():
        limits = CgroupMemory(
            profile.memory_max_mb * MiB, profile.memory_high_mb * MiB, Path("memory.max"), 2
        )
        assert cgroup_memory_problems(profile, limits, under_systemd=True) == (None, None), (
            profile.name
        )


def test_refusal_and_warnings_say_the_numbers_and_the_fix(profiles: dict) -> None:  # type: ignore[type-arg]
    pi = profiles["pi4-2gb"]
    total_mib = pi.memory_budget_mb + pi.base_mb
    where = Path("/sys/fs/cgroup/system.slice/edge-agent.service/memory.max")
    refusal, warning = cgroup_memory_problems(
        pi, CgroupMemory(256 * MiB, None, where, 2), under_systemd=True
    )
    assert warning is None
    assert refusal == (
        f"profile 'pi4-2gb' budgets {total_mib:.1f} MiB (memory_budget_mb {pi.memory_budget_mb}"
        f" + base_mb {pi.base_mb}), above this process's cgroup memory limit of 256.0 MiB "
        f"({where}): set the unit's limits to the profile's: edge-agent systemd-dropin "
        "--profile pi4-2gb | sudo tee /etc/systemd/system/edge-agent.service.d/profile.conf "
        "&& sudo systemctl daemon-reload && sudo systemctl restart edge-agent, or choose a "
        "profile with a smaller budget"
    )
    refusal, warning = cgroup_memory_problems(
        pi, CgroupMemory(None, (total_mib - 1) * MiB, None, 2), under_systemd=False
    )
    assert refusal is None
    assert warning is not None
    assert f"above the cgroup's memory.high of {total_mib - 1:.1f} MiB" in warning
    assert cgroup_memory_problems(pi, None, under_systemd=True) == (None, None)
    assert cgroup_memory_problems(pi, CgroupMemory(None, None, None, 2), under_systemd=True) == (
        None,
        None,
    )
