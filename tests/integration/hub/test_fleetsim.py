"""The fleet simulator against a real mosquitto: its nodes are what the hub sees of real ones
(births, signed commands, refusals, the broadcast and unicast transfers, real verification)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.fleet.protocol import ResultCode
from edge_agent_host.fleetctl import FleetClient
from edge_agent_host.fleetsim.__main__ import fails
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.integration.daemon.test_daemon import REPO
from tests.support.broker import MosquittoBroker
from tests.support.doc_blocks import doc_block
from tests.support.readme_venv import ReadmeVenv
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = pytest.mark.integration

FLEET = "simtest"
NODES = 20


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[dict[str, Any]]:
    keys = tmp_path / "keys"
    hub_key = load_signing_key(generate_keypair(keys, "hub").private_path)
    ci = generate_keypair(keys, "ci").private_path
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent_host.fleetsim", "--nodes", str(NODES),
         "--port", str(mosquitto.port), "--fleet", FLEET, "--state-dir", str(tmp_path / "nodes"),
         "--hub-keys", str(keys), "--bundle-keys", str(keys), "--fail-fraction", "0.2",
         "--seed", "7", "--telemetry", "1"],
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools'}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )  # fmt: skip
    try:
        yield {"keys": keys, "hub_key": hub_key, "ci": ci, "proc": proc}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def names() -> list[str]:
    return [f"sim-{i:04d}" for i in range(NODES)]


def connected_hub(mosquitto: MosquittoBroker, key: Ed25519PrivateKey | None) -> FleetClient:
    hub = FleetClient(fleet=FLEET, port=mosquitto.port, key=key)
    hub.connect()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        hub.listen(0.2)
        seen = [n for n in names() if n in hub.nodes and hub.nodes[n].birth is not None]
        if len(seen) == NODES:
            return hub
    pytest.fail(f"the hub saw {sorted(hub.nodes)} of {NODES} simulated nodes")


def test_simulated_nodes_take_commands_and_deployments_like_real_ones(
    mosquitto: MosquittoBroker, fleet: dict[str, Any], tmp_path: Path
) -> None:
    failing = {n for n in names() if fails(n, 0.2, 7)}
    assert 0 < len(failing) < NODES
    hub = connected_hub(mosquitto, fleet["hub_key"])
    try:
        birth = hub.nodes["sim-0000"].birth
        assert birth is not None
        assert birth.groups["grid"].agents == 1000
        # Signed commands are answered; a command signed by an unknown key is refused.
        for node in names()[:5]:
            assert hub.command(node, "ping").code is ResultCode.OK
        stranger = FleetClient(fleet=FLEET, port=mosquitto.port, key=Ed25519PrivateKey.generate())
        stranger.connect()
        try:
            refused = stranger.wait_result(stranger.send_command("sim-0001", "ping"), 20)
            assert refused.code is ResultCode.UNKNOWN_KEY
        finally:
            stranger.close()
        # A broadcast deployment to every node: the failing ones answer 'failed' (health), the
        # others switch; their next birth names the bundle.
        tar = bundle_tar(tmp_path, fleet["ci"], policy_len=1)
        sha = load_bundle(tar, trusted_keys=TrustedKeys.from_dir(fleet["keys"])).sha256
        results = hub.deploy(tar, "grid", names(), chunk_size=4096, watch_ticks=3, timeout_s=120)
        assert set(results) == set(names())
        for node, result in results.items():
            if node in failing:
                assert result.code is ResultCode.FAILED, (node, result)
                assert result.detail.startswith("health"), result.detail
            else:
                assert result.code is ResultCode.OK, (node, result)
        ok_node = next(n for n in names() if n not in failing)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            hub.listen(0.2)
            b = hub.nodes[ok_node].birth
            if b is not None and b.groups["grid"].bundle_sha256 == sha:
                break
        else:
            pytest.fail("no birth naming the deployed bundle")
        # The same by unicast, of another bundle, to a few nodes.
        other = bundle_tar(tmp_path, fleet["ci"], policy_len=2)
        few = [n for n in names() if n not in failing][:3]
        again = hub.deploy(other, "grid", few, transfer="unicast", chunk_size=4096, watch_ticks=3)
        assert {n: r.code for n, r in again.items()} == dict.fromkeys(few, ResultCode.OK)
    finally:
        hub.close()
    proc = fleet["proc"]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines
    assert lines[-1]["nodes"] == NODES


@pytest.mark.timeout(1800)
def test_the_documented_simulation_runs_as_written(
    mosquitto: MosquittoBroker, tmp_path: Path, readme_venv: ReadmeVenv
) -> None:
    """docs/hub.md block 5 as written (its ``PORT=`` the test broker's), in the venv the page
    names (the README's: :mod:`tests.support.readme_venv`): 100 simulated nodes, whose births
    and online states a hub hears; SIGTERM stops them with their summary line."""
    block = doc_block("docs/hub.md", 5)
    lines = block.splitlines()
    assert lines[0].startswith("PORT=1883 "), lines[0]
    script = "\n".join([f"PORT={mosquitto.port}", *lines[1:]])
    work = tmp_path / "work"
    generate_keypair(work / "keys", "hub")
    generate_keypair(work / "keys", "ci")
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script],
        env=readme_venv.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=work,
        start_new_session=True,  # SIGTERM to its process group reaches the simulator
    )
    hub = FleetClient(fleet="sim", port=mosquitto.port)
    try:
        hub.connect()
        wanted = {f"sim-{i:04d}" for i in range(100)}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            hub.listen(0.5)
            heard = {n for n, v in hub.nodes.items() if v.birth is not None and v.online}
            if heard >= wanted:
                break
        else:
            proc.kill()
            out, _ = proc.communicate(timeout=60)
            pytest.fail(f"the hub heard {len(hub.nodes)} of 100 simulated nodes:\n{out[-3000:]}")
        assert sorted(hub.nodes) == sorted(wanted)
    finally:
        hub.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert (work / "sim").is_dir()
    summary = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert summary[-1]["nodes"] == 100, summary[-1:]
