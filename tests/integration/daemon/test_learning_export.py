"""A model one daemon learned, exported, converted, signed and run by another.

Real processes only: daemon A learns ``pA1`` of the reversal T-maze and stops (its final
snapshot), starts again (restoring it) and, while it runs, docs/learning.md block 4 runs as
written: ``edge-agent export-model`` reads that snapshot, ``edge-agent-host convert aif`` makes
a signed bundle of the file. The file holds exactly the snapshot's counts and the tables they
stand for. Daemon B runs the bundle with a ``[groups.learning]`` table that names no table, so
it learns what the bundle carries: its priors are A's learned counts and it starts on A's
learned tables. ``export-model``'s refusals are one line each: no such group, a group that does
not learn, a damaged snapshot.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.learning_kernels import normalise
from edge_agent.aif.learning_storage import saved_counts
from edge_agent.aif.quant import QuantizedModel
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.daemon.snapshots.format import read_snapshot
from edge_agent.sim.registry import builtin_model
from edge_agent_host.keys import generate_keypair
from tests.integration.daemon.test_daemon import Daemon, NotifySocket
from tests.integration.fleet.test_fleet_daemon import status_of, wait_until
from tests.support.doc_blocks import doc_block

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent

MAZE = """
[[groups]]
name = "maze"
model = {model}
count = 32
source = {{ type = "sim", world = "tmaze-reversal" }}
sink = {{ type = "sim" }}

[groups.learning]
{learning}
"""

DOORS = """
[[groups]]
name = "doors"
model = { type = "builtin", name = "grid10" }
count = 4
source = { type = "sim" }
sink = { type = "sim" }
"""


def write_config(path: Path, state: Path, groups: str, keys: Path | None = None) -> Path:
    trusted = f'trusted_keys_dir = "{keys}"' if keys is not None else ""
    path.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = 50
log_level = "info"
{trusted}
{groups}
"""
    )
    return path


class Run:
    """One daemon process on ``config``, started until READY."""

    def __init__(self, config: Path, n: int) -> None:
        self.notify = NotifySocket(config.parent / f"notify-{n}.sock")
        self.daemon = Daemon(config, self.notify)
        self.notify.wait_for("READY=1", 90)
        self.config = config

    def stop(self) -> None:
        self.daemon.signal(signal.SIGTERM)
        assert self.daemon.wait(60) == 0, self.log()
        self.notify.close()

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text(errors="replace")[-3000:]


def ticks(state: Path) -> int:
    return int((status_of(state).get("tick") or {}).get("ticks", 0))


def shell(script: str, cwd: Path, **names: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **names}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False, stdin=subprocess.DEVNULL)


def export(config: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edge-agent"), "export-model", "--config", str(config), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )


def test_a_learned_model_is_exported_signed_and_run_by_another_daemon(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    key = generate_keypair(tmp_path / "keys", "ci")
    learning = "A = [1]\nlr_pA = 0.5\nprior_scale = 2.0\nrefresh_every = 4"
    builtin = '{ type = "builtin", name = "tmaze-reversal" }'
    state_a = tmp_path / "a" / "state"
    state_a.parent.mkdir()
    config_a = write_config(tmp_path / "a" / "edge.toml", state_a,
                            MAZE.format(model=builtin, learning=learning) + DOORS)

    # Daemon A learns, stops (its final snapshot), starts again on it and runs on.
    first = Run(config_a, 1)
    try:
        wait_until(lambda: ticks(state_a) >= 150, "150 ticks of learning", timeout=120)
    finally:
        first.stop()
    (saved,) = sorted((state_a / "snapshots").glob("snapshot-*.eas"))
    snap = read_snapshot(saved)
    prior = 2.0 * builtin_model("tmaze-reversal").A[1]  # prior_scale = 2.0
    counts = saved_counts(snap.arrays, "group.maze.learn.pA1", prior, where="test")
    assert counts is not None
    version = int(snap.arrays["group.maze.learn.version.A"])
    assert version >= 150
    second = Run(config_a, 2)
    try:
        # docs/learning.md block 5 as written, while A runs; CONFIG and the signing key are
        # the test's. It runs on the device (the page says so), with the daemon's venv: the
        # suite's stands for it here (the .deb's /opt/edge-agent/venv holds the same code).
        block = doc_block("docs/learning.md", 5)
        first_line, rest = block.split("\n", 1)
        assert first_line.startswith("CONFIG="), block
        done = shell(rest, work, CONFIG=str(config_a), SIGNING_KEY=str(key.private_path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"exported group 'maze': pA version {version} -> maze-learned.npz" in done.stdout
        assert ticks(state_a) > 0  # A was running all along
    finally:
        second.stop()

    with np.load(work / "maze-learned.npz") as f:
        learned = {k: f[k] for k in f.files}
    np.testing.assert_array_equal(learned["pA1"], counts)  # the snapshot's, exactly
    np.testing.assert_allclose(learned["A1"], normalise(counts), rtol=0, atol=1e-15)
    assert int(learned["meta_version_pA"]) == version
    assert str(learned["meta_group"]) == "maze"
    assert str(learned["meta_snapshot"]) == str(saved)
    assert not np.array_equal(learned["pA1"], learned["meta_prior_pA1"])  # it learned
    keys = TrustedKeys.from_dir(tmp_path / "keys")
    bundle = load_bundle(work / "maze-learned.tar", trusted_keys=keys, require_signature=True)
    np.testing.assert_array_equal(bundle.aif_counts()["A"][1], counts)

    # Daemon B runs the signed bundle and learns what it carries, from A's counts.
    state_b = tmp_path / "b" / "state"
    state_b.parent.mkdir()
    model_b = f'{{ type = "bundle", path = "{work / "maze-learned.tar"}" }}'
    config_b = write_config(tmp_path / "b" / "edge.toml", state_b,
                            MAZE.format(model=model_b, learning="lr_pA = 0.5"),
                            keys=tmp_path / "keys")
    b = Run(config_b, 1)
    try:
        wait_until(lambda: ticks(state_b) >= 3, "B ticks", timeout=60)
        status = status_of(state_b)
        assert status["groups"][0]["bundle_sha256"] == bundle.sha256
        assert status["groups"][0]["learning"]["tables"] == ["pA1"]  # what the bundle carries
    finally:
        b.stop()
    done = export(config_b, work, "--group", "maze", "--out", "b.npz")
    assert done.returncode == 0, done.stderr
    with np.load(work / "b.npz") as f:
        np.testing.assert_array_equal(f["meta_prior_pA1"], counts)  # B's priors: A's counts
        assert int(f["meta_version_pA"]) >= 3
        assert str(f["meta_bundle_sha256"]) == bundle.sha256
    # B started on A's learned tables: the bundle's int8 codes of them.
    tables = QuantizedModel.from_arrays(bundle.aif_arrays()).dequantize()
    np.testing.assert_allclose(tables.A[1], learned["A1"], atol=0.02)

    # Refusals, one line each (exit 2).
    def refused(config: Path, *args: str) -> str:
        out = export(config, work, *args)
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr.count("\n") == 1, out.stderr
        return out.stderr

    assert "no group 'hall' (groups: maze, doors)" in refused(
        config_a, "--group", "hall", "--out", "x.npz")
    assert "group 'doors' does not learn" in refused(
        config_a, "--group", "doors", "--out", "x.npz")
    damaged = tmp_path / "damaged"
    shutil.copytree(state_a, damaged, ignore=shutil.ignore_patterns("*.sock"))
    for path in (damaged / "snapshots").glob("snapshot-*.eas"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    assert "no readable snapshot in" in refused(
        config_a, "--group", "maze", "--out", "x.npz", "--state-dir", str(damaged))
    assert not (work / "x.npz").exists()
