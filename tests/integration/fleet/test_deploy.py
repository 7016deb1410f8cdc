"""Over-the-air deployment to a real daemon through a real broker."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.fleet.protocol import ResultCode
from edge_agent_host.fleet.transfer import BroadcastStats
from edge_agent_host.fleetctl import DeployPlan
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.integration.fleet.test_fleet_daemon import (
    Node,
    hub_for,
    hub_sees,
    status_view,
    wait_until,
)
from tests.support.broker import MosquittoBroker
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = pytest.mark.integration


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.close()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey, Path]:
    """One trusted directory: the hub's key (commands) and the CI key (bundles)."""
    trusted = tmp_path / "trusted"
    hub = generate_keypair(trusted, "hub")
    ci = generate_keypair(trusted, "ci")
    return trusted, load_signing_key(hub.private_path), ci.private_path


def sha_of(tar: Path, trusted: Path) -> str:
    return load_bundle(tar, trusted_keys=TrustedKeys.from_dir(trusted)).sha256


def grid_of(status: dict[str, Any]) -> dict[str, Any]:
    return next(g for g in status["groups"] if g["name"] == "grid")


def test_a_good_bundle_switches_and_survives_a_restart(
    mosquitto: MosquittoBroker, tmp_path: Path, keys: Any, nodes: list[Node]
) -> None:
    trusted, hub_key, ci = keys
    tar = bundle_tar(tmp_path, ci)
    sha = sha_of(tar, trusted)
    node = Node(tmp_path, mosquitto, "pi-05", keys_dir=trusted)
    nodes.append(node)
    node.start()
    with hub_for(mosquitto, hub_key, "pi-05") as hub:
        progress: list[tuple[int, int, str]] = []
        results = hub.deploy(
            tar,
            "grid",
            ["pi-05"],
            chunk_size=4096,
            watch_ticks=10,
            progress=lambda _n, done, total, phase: progress.append((done, total, phase)),
        )
        assert results["pi-05"].code is ResultCode.OK, results
        assert progress[-1][0] == progress[-1][1] > 3
        # The hub has the node's result; the status file is written on the daemon's own
        # schedule, so it may still show the watch that ended just before the result went out.
        status = node.wait_status(
            lambda s: grid_of(s)["bundle_sha256"] == sha and s["deploy"]["phase"] == "done",
            "the switch, watched and done",
        )
        assert status["deploy"]["overlay"] == {"grid": sha}
        text = status_view(node.state)
        assert f"deploy     done: group grid -> {sha[:12]}" in text
        assert f"sha256 {sha}" in text
        view = hub.nodes["pi-05"]
        wait_until(
            lambda: (
                hub.listen(0.1) is not None
                and view.birth is not None
                and view.birth.groups["grid"].bundle_sha256 == sha
            ),
            "a birth naming the new bundle",
        )
        # The same bundle again: nothing to send, the group already runs it.
        again = hub.deploy(tar, "grid", ["pi-05"], chunk_size=4096)
        assert again["pi-05"].code is ResultCode.OK
        assert "already runs" in again["pi-05"].detail
    assert node.stop() == 0
    node.start()  # the config file still names the built-in model
    status = node.wait_status(lambda s: s["tick"]["ticks"] >= 3, "ticks after the restart")
    assert grid_of(status)["bundle_sha256"] == sha
    assert grid_of(status)["model"].endswith(f"bundles/{sha}.tar")
    assert status["overlay_problems"] == []
    staged = sorted(p.name for p in (node.state / "bundles").glob("*.tar"))
    assert staged == [f"{sha}.tar"]
    assert node.stop() == 0


def test_unhealthy_and_tampered_bundles_are_refused_and_the_group_runs_on(
    mosquitto: MosquittoBroker, tmp_path: Path, keys: Any, nodes: list[Node]
) -> None:
    trusted, hub_key, ci = keys
    node = Node(tmp_path, mosquitto, "pi-06", keys_dir=trusted)
    nodes.append(node)
    node.start()
    with hub_for(mosquitto, hub_key, "pi-06") as hub:
        # A T-maze model for the grid group: signed and intact, but it cannot run there.
        wrong = bundle_tar(tmp_path, ci, world="tmaze", policy_len=1)
        progress: list[tuple[int, int, str]] = []
        result = hub.deploy(
            wrong, "grid", ["pi-06"], chunk_size=4096,
            progress=lambda _n, done, total, phase: progress.append((done, total, phase)),
        )["pi-06"]  # fmt: skip
        assert result.code is ResultCode.FAILED
        assert result.detail.startswith("health"), result.detail
        assert result.data["phase"] == "failed"
        # Every chunk arrived (the health check failed after): the progress line says so.
        chunks = DeployPlan.from_bundle(wrong, 4096).chunks
        assert (result.data["received"], result.data["total"]) == (chunks, chunks)
        assert progress[-1] == (chunks, chunks, "failed"), progress
        # A payload byte changed after signing; the chunk hashes describe the changed file,
        # so the transfer completes and verification must catch it.
        good = bundle_tar(tmp_path, ci)
        data = bytearray(good.read_bytes())
        data[len(data) // 2] ^= 0x01
        plan = DeployPlan(bytes(data), sha_of(good, trusted), "grid10", "1.2.0", 4096)
        args = plan.args("grid")
        nonce = hub.send_command("pi-06", "deploy", args)
        assert hub.wait_result(nonce).code is ResultCode.ACCEPTED
        bad_chunk = hub.send_chunk("pi-06", plan.sha256, 0, b"\x00" * 4096)
        assert hub.wait_result(bad_chunk).code is ResultCode.BAD_ARGS
        for index in range(plan.chunks):
            sent = hub.send_chunk("pi-06", plan.sha256, index, plan.chunk(index))
            assert hub.wait_result(sent).code is ResultCode.OK
        final = hub.wait_result(nonce, accept=lambda r: r.code is not ResultCode.ACCEPTED)
        assert final.code is ResultCode.FAILED
        assert final.detail.startswith("verify"), final.detail
    status = node.wait_status(lambda s: s["deploy"]["failed"] == 2, "both failures counted")
    assert grid_of(status)["bundle_sha256"] is None
    assert grid_of(status)["model"] == "grid10"
    assert status["deploy"]["chunks_rejected"] == 1
    assert list((node.state / "bundles").glob("*.tar")) == []  # nothing was staged
    assert not any((node.state / "bundles" / "incoming").iterdir())
    ticks = status["tick"]["ticks"]
    node.wait_status(lambda s: s["tick"]["ticks"] > ticks + 5, "still ticking")
    assert node.stop() == 0


def test_a_transfer_cut_by_sigkill_resumes_after_the_restart(
    mosquitto: MosquittoBroker, tmp_path: Path, keys: Any, nodes: list[Node]
) -> None:
    trusted, hub_key, ci = keys
    tar = bundle_tar(tmp_path, ci)
    sha = sha_of(tar, trusted)
    node = Node(tmp_path, mosquitto, "pi-07", keys_dir=trusted)
    nodes.append(node)
    node.start()
    with hub_for(mosquitto, hub_key, "pi-07") as hub:
        plan = DeployPlan.from_bundle(tar, chunk_size=1024)
        assert plan.chunks > 20
        nonce = hub.send_command("pi-07", "deploy", plan.args("grid"))
        assert hub.wait_result(nonce).code is ResultCode.ACCEPTED
        for index in range(10):
            sent = hub.send_chunk("pi-07", plan.sha256, index, plan.chunk(index))
            assert hub.wait_result(sent).code is ResultCode.OK
        node.signal(signal.SIGKILL)
        node.kill()
        journal = (node.state / "bundles" / "deploy.json").read_text()
        assert '"phase": "receiving"' in journal
        node.start()
        status = node.wait_status(
            lambda s: s["deploy"].get("phase") == "receiving", "the resumed transfer"
        )
        assert status["deploy"]["received"] >= 10
        assert status["deploy"]["resumed"] == 1
        wait_until(hub_sees(hub, "pi-07"), "the node again")
        results = hub.deploy(tar, "grid", ["pi-07"], chunk_size=1024, watch_ticks=5)
        assert results["pi-07"].code is ResultCode.OK, results
    status = node.wait_status(lambda s: grid_of(s)["bundle_sha256"] == sha, "the switch")
    assert status["deploy"]["chunks"] <= plan.chunks - 10  # the first ten were kept
    assert node.stop() == 0


def test_one_broadcast_serves_every_node_and_a_late_node_is_repaired(
    mosquitto: MosquittoBroker, tmp_path: Path, keys: Any, nodes: list[Node]
) -> None:
    """Three nodes, one of them down when the deployment starts: the hub publishes each chunk
    once for the nodes that answered, and the late node gets the chunks it misses in a repair
    round. Bytes the hub publishes grow with the bundle, not with nodes x bundle."""
    trusted, hub_key, ci = keys
    tar = bundle_tar(tmp_path, ci)
    sha = sha_of(tar, trusted)
    names = ["pi-21", "pi-22", "pi-23"]
    for name in names:
        nodes.append(Node(tmp_path, mosquitto, name, keys_dir=trusted))
    for node in nodes[:2]:
        node.start()
    with hub_for(mosquitto, hub_key, "pi-21") as hub:
        wait_until(hub_sees(hub, "pi-22"), "the second node")
        size = len(tar.read_bytes())
        stats = BroadcastStats()
        late_started = False

        def progress(node: str, _done: int, _total: int, _phase: str) -> None:
            nonlocal late_started
            if not late_started and node in ("pi-21", "pi-22"):
                late_started = True
                nodes[2].start(wait_ready=False)  # comes up while the first round goes out

        results = hub.deploy(
            tar,
            "grid",
            names,
            chunk_size=4096,
            watch_ticks=5,
            rate_chunks_s=200.0,
            timeout_s=120.0,
            progress=progress,
            stats=stats,
        )
        assert {n: r.code for n, r in results.items()} == dict.fromkeys(names, ResultCode.OK), (
            results
        )
        plan = DeployPlan.from_bundle(tar, chunk_size=4096)
        assert stats.rounds >= 2  # the late node needed a repair round
        # Each round publishes at most the bundle once: 3 nodes never cost 3 x the bundle.
        assert stats.bytes_published <= stats.rounds * size
        assert stats.chunks_published <= stats.rounds * plan.chunks
        assert hub.bytes_published < 3 * size  # everything the hub sent, commands included
    for node in nodes:
        status = node.wait_status(lambda s: grid_of(s)["bundle_sha256"] == sha, "the switch")
        assert status["deploy"]["chunks_rejected"] == 0
        assert status["deploy"]["chunks_broadcast"] + status["deploy"]["chunks_duplicate"] >= 1
        assert node.stop() == 0
