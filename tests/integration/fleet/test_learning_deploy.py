"""An over-the-air switch of a learning group to a new bundle (docs/learning.md "In the daemon"):
a real daemon, a real broker, the hub's deploy; the group learns on from the new bundle's priors,
not from what it learned on the old model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.fleet.protocol import ResultCode
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.integration.fleet.test_fleet_daemon import Node, hub_for
from tests.support.broker import MosquittoBroker
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = pytest.mark.integration

LEARNING_GROUP = """
[[groups]]
name = "grid"
model = { type = "builtin", name = "tmaze-reversal" }
count = 40
source = { type = "sim" }
sink = { type = "sim" }

[groups.learning]
A = [1]
lr_pA = 0.2
prior_scale = 2.0
"""


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.close()


def learning(status: dict[str, Any]) -> dict[str, Any]:
    group = next(g for g in status["groups"] if g["name"] == "grid")
    return group["learning"]  # type: ignore[no-any-return]


def test_a_switch_to_a_new_bundle_learns_from_its_priors(
    mosquitto: MosquittoBroker, tmp_path: Path, nodes: list[Node]
) -> None:
    trusted = tmp_path / "trusted"
    hub_key = load_signing_key(generate_keypair(trusted, "hub").private_path)
    ci = generate_keypair(trusted, "ci").private_path
    tar = bundle_tar(tmp_path, ci, world="tmaze-reversal", policy_len=2)
    sha = load_bundle(tar, trusted_keys=TrustedKeys.from_dir(trusted)).sha256
    node = Node(tmp_path, mosquitto, "pi-07", keys_dir=trusted, groups=LEARNING_GROUP)
    nodes.append(node)
    node.start()
    learned = learning(node.wait_status(lambda s: learning(s)["updates"] >= 100, "learning"))
    assert learned["divergence"] > 0
    with hub_for(mosquitto, hub_key, "pi-07") as hub:
        results = hub.deploy(tar, "grid", ["pi-07"], chunk_size=4096, watch_ticks=5)
        assert results["pi-07"].code is ResultCode.OK, results
    status = node.wait_status(
        lambda s: next(g for g in s["groups"] if g["name"] == "grid")["bundle_sha256"] == sha
        and s["deploy"]["phase"] == "done",
        "the switch, watched and done",
    )
    after = learning(status)
    assert after["counts_from"] == "priors"
    # The new group counts its own updates from the switch on (a few ticks' watch), fewer than
    # the 100 the old one had before the deployment began.
    switched = node.log()
    assert f"group grid switched to bundle {sha[:12]}" in switched
    assert f"group grid: learning starts from bundle {sha[:12]}'s priors" in switched
    assert after["updates"] < learned["updates"]
    assert node.stop() == 0
