"""docs/arm64.md's commands, as scripts/test-arm64 and scripts/test-docker ran them.

Both need root, qemu's binfmt entry and minutes under emulation (test-docker also a Docker engine),
so CI runs them before the test suite (.ci/run), with the cache these tests read. Each writes a
summary only when it passed: scripts/test-arm64 ``$EDGE_AGENT_ARM64_CACHE/test-arm64-trixie.json``,
scripts/test-docker ``$EDGE_AGENT_ARM64_CACHE/docker/summary.json``. A missing summary fails with
the command to run.

The image block (``docker buildx build``, ``docker run``) cannot run as written where no registry is
reachable (buildx's BuildKit, ``python:3.13-slim-trixie`` and ``tonistiigi/binfmt`` come from one);
scripts/test-docker builds the same Dockerfile.arm64 with the classic builder on a base made from
the trixie arm64 root, and runs the block's two ``docker run`` forms (the demo; a mounted config
with ``--config``) and its ``docker exec ... status`` as the HEALTHCHECK (docs/arm64.md says so).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.doc_blocks import ROOT, commands, doc_block

pytestmark = pytest.mark.integration


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_AGENT_ARM64_CACHE") or ROOT / ".cache")


def summary(path: Path, script: str) -> dict[str, Any]:
    if not path.is_file():
        pytest.fail(f"no summary of a passed run at {path}; run: sudo "
                    f"EDGE_AGENT_ARM64_CACHE={cache_dir()} {script}")
    data: dict[str, Any] = json.loads(path.read_text())
    assert data["passed"] is True
    return data


def test_make_test_arm64_ran_on_trixie() -> None:
    assert commands(doc_block("docs/arm64.md", 1))[0].startswith("sudo make test-arm64")
    s = summary(cache_dir() / "test-arm64-trixie.json", "scripts/test-arm64")
    # Debian trixie's python3 under qemu, the daemon supervised as systemd would.
    assert s["suite"] == "trixie"
    assert s["python"].startswith("3.13.")
    assert s["platform_machine"] == "aarch64"
    assert s["exit_code"] == 0
    assert s["watchdog_pings"] >= 2
    # The wheel built in the root carries the learning tick compiled for aarch64, and the
    # installed venv loads it (check-backends: edge_tick exported, no flush-to-zero).
    assert s["native_tick"] == "_tick.cpython-313-aarch64-linux-gnu.so"
    # That library's equality suite passed in the arm64 venv, and gcc vectorised its loops with
    # NEON's 16-byte vectors there (the loops listed in the cache's tick-vectorised.log).
    assert s["tick_equality_passed"] > 0
    assert s["tick_neon_loops"] > 0
    log = cache_dir() / "trixie-arm64-tick-vectorised.log"
    assert sum("using 16 byte vectors" in line
               for line in log.read_text().splitlines()) == s["tick_neon_loops"]


def test_make_test_docker_built_and_ran_the_image() -> None:
    assert commands(doc_block("docs/arm64.md", 2))[0].startswith("sudo make test-docker")
    s = summary(cache_dir() / "docker" / "summary.json", "scripts/test-docker")
    assert s["base_image"] == "edge-agent-base:trixie-py313-arm64"
    assert s["restart_restored"] is True
    assert s["demo"]["agents"] > 0
    # The builder stage compiled the learning tick; the image (no compiler) loads it.
    assert s["native_tick"] == "_tick.cpython-313-aarch64-linux-gnu.so"


def test_the_image_block_forms_are_what_test_docker_runs() -> None:
    """The block's docker run forms (demo; a mounted config plus --config) and its status
    command are the ones scripts/test-docker runs; its summary says all of them passed."""
    block = commands(doc_block("docs/arm64.md", 0))
    runs = [c for c in block if c.startswith("docker run ")]
    assert len(runs) == 2
    assert runs[0].endswith("edge-agent:arm64")
    assert "-v \"$PWD/config.toml:/etc/edge-agent/config.toml:ro\"" in runs[1]
    assert runs[1].endswith("--config /etc/edge-agent/config.toml")
    assert any(c.startswith("docker exec edge-agent edge-agent status --status-file "
                            "/var/lib/edge-agent/status.json") for c in block)
    script = (ROOT / "scripts" / "test-docker").read_text()
    assert "CONFIG=/etc/edge-agent/config.toml" in script
    assert ':$CONFIG:ro" -- --config "$CONFIG"' in script  # the mounted config, then --config
    assert '["edge-agent", "status", "--status-file", "/var/lib/edge-agent/status.json"]' in (
        ROOT / "Dockerfile.arm64"
    ).read_text()  # the HEALTHCHECK
    s = summary(cache_dir() / "docker" / "summary.json", "scripts/test-docker")
    assert s["config"]["healthy_s"] > 0
    assert s["demo"]["healthy_s"] > 0
