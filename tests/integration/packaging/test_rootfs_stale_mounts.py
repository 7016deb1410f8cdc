"""scripts/arm64/rootfs.sh: a run killed with SIGKILL leaves its mounts; the next one clears them.

The traps of test-arm64, build-deb and test-deb unmount what they mounted, but SIGKILL skips
them, and the next run's `mount -t sysfs` over the sysfs left in the cached root failed on the
CI machine ("already mounted", exit 32; whether a second sysfs mounts over the first depends on
how /sys is mounted where the script runs: in the Python 3.13 stage's root it does, and two are
stacked there). lock_cache,
once it holds the root's lock, unmounts whatever is still mounted in that root and in its
overlays ($CACHE/*-<suite>-<arch>) and says so, and leaves another root's mounts alone. Real
mounts (sysfs, tmpfs) in a private mount namespace, the library sourced as the scripts source
it, on a cache of empty directories.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]

SCRIPT = r"""
set -eu
REPO="$1" SCRIPT_NAME=stale-test SUITE=trixie ROOTFS_ARCH=arm64
. "$REPO/scripts/arm64/rootfs.sh"
mkdir -p "$ROOTFS/sys" "$ROOTFS/proc" "$CACHE/wheel-build-$ROOTFS_NAME/root" \
    "$CACHE/bookworm-arm64-rootfs/sys"
# What a killed run leaves: sysfs and proc in the root, an overlay's root (tmpfs here) with a
# mount below it, and another root's sysfs (not this lock's to touch).
mount -t sysfs -o ro sysfs "$ROOTFS/sys"
mount -t tmpfs -o size=1m tmpfs "$ROOTFS/proc"
mount -t tmpfs -o size=1m tmpfs "$CACHE/wheel-build-$ROOTFS_NAME/root"
mkdir -p "$CACHE/wheel-build-$ROOTFS_NAME/root/sys"
mount -t sysfs -o ro sysfs "$CACHE/wheel-build-$ROOTFS_NAME/root/sys"
mount -t sysfs -o ro sysfs "$CACHE/bookworm-arm64-rootfs/sys"
lock_cache
echo "=== left"
awk -v c="$CACHE" 'index($5, c "/") == 1 { print $5 }' /proc/self/mountinfo
# The next mount_rootfs step succeeds now, and its sysfs is the only one there.
mount -t sysfs -o ro sysfs "$ROOTFS/sys"
echo "=== mounted again"
awk -v c="$CACHE" 'index($5, c "/") == 1 { print $5 }' /proc/self/mountinfo
"""


def test_lock_cache_unmounts_what_a_killed_run_left_in_its_root_only(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "this test mounts sysfs and tmpfs: run it as root"
    for tool in ("unshare", "flock", "mount"):
        assert shutil.which(tool), f"{tool} not found: apt-get install util-linux mount"
    cache = tmp_path / "cache"
    done = subprocess.run(  # noqa: PLW1510 - asserted below
        ["unshare", "-m", "--propagation", "private", "bash", "-c", SCRIPT, "stale", str(REPO)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "EDGE_AGENT_ARM64_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    root = cache / "trixie-arm64-rootfs"
    overlay = cache / "wheel-build-trixie-arm64" / "root"
    said = done.stderr
    for target in (root / "sys", root / "proc", overlay / "sys", overlay):
        assert f"stale-test: unmounting {target} (left mounted by an earlier run)" in said, said
    # Deepest first: the overlay's sysfs before the overlay itself.
    assert said.index(f"unmounting {overlay / 'sys'} ") < said.index(f"unmounting {overlay} ")
    left, again = done.stdout.split("=== left\n", 1)[1].split("=== mounted again\n", 1)
    assert left.split() == [str(cache / "bookworm-arm64-rootfs" / "sys")]
    # Without the unmounting the next run's sysfs either fails to mount over the one left
    # ("already mounted", exit 32, on the CI machine) or mounts on top of it (in the Python 3.13
    # stage's root): after it, that sysfs is the one mount in the root, not a second.
    assert sorted(again.split()) == sorted(
        [str(cache / "bookworm-arm64-rootfs" / "sys"), str(root / "sys")]
    ), again
    assert "bookworm-arm64-rootfs" not in said
