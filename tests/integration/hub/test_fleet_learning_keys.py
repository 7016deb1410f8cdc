"""The learning key on the setup the docs recommend (docs/fleet-learning.md "Signing keys"), with
real daemons: the hub service signs rounds with ``[learning] key_file``, a bundle key of its own,
and its nodes hold the command key in ``hub_keys_dir`` alone. Before ``learning.pub`` is in
their ``trusted_keys_dir``, their births say so and the policy builds no round (one line in the
hub's log naming the key and the directory, ``learn status`` too); once it is copied there and
the daemons reloaded (SIGHUP: a new birth), the next look builds the round, publishes it, and
every node runs it."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.bundle.signing import key_id
from edge_agent_host.keys import load_signing_key
from tests.integration.fleet.test_fleet_daemon import wait_until
from tests.integration.hub.test_fleet_learning_by_hand import count, tmaze_line
from tests.integration.hub.test_fleet_learning_e2e import learn_status
from tests.integration.hub.test_rollout_health_gate import ENDS, wait_state
from tests.integration.hub.test_rollouts import rollout, sha_of
from tests.support.secure_fleet import runs_sha, secure_fleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NODES = ("pi-a", "pi-b")
LEARNING = """
[learning]
min_experience = 2000
check_interval_s = 0.3
lines = ["tmaze"]
gate_rollouts = 20
gate_steps = 4
publish = true
rollout = ["--group", "grid", "--waves", "1,100%", "--soak", "0", "--watch-ticks", "3"]
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    bundle, table = tmaze_line(tmp_path_factory.mktemp("learn-keys"))
    with secure_fleet(bundle.parent, dict.fromkeys(NODES, table), database="learn_keys",
                      hub_tail=LEARNING, learning_trusted=False) as parts:  # fmt: skip
        yield {"parts": parts, "bundle": bundle}


def test_no_round_until_the_nodes_trust_the_learning_key(fleet: dict[str, Any]) -> None:
    parts = fleet["parts"]
    hub, nodes = parts.hub, parts.nodes
    kid = key_id(load_signing_key(parts.learning_key).public_key())
    rollout(hub, "start", str(fleet["bundle"]), "--group", "grid", "--waves", "100%",
            "--soak", "0", "--watch-ticks", "3", "--json")  # fmt: skip
    wait_until(lambda: count(hub, "accepted") >= 4 * len(NODES), "deltas accepted")
    said = (
        f"learning rounds of tmaze not built: 2 node(s) (pi-a, pi-b) do not trust the learning "
        f"key {kid} ([learning] key_file = {parts.learning_key}): put its .pub in their "
        "[daemon] trusted_keys_dir"
    )
    wait_until(lambda: said in hub.log(), "the one line that says why")
    assert hub.log().count(said) == 1  # once, not at every look
    (status,) = learn_status(hub)
    assert set(status["not_trusting"]) == set(NODES), status["not_trusting"]
    assert status["rounds"] == 0
    # The operator copies learning.pub into the nodes' trusted_keys_dir and reloads them.
    shutil.copy(parts.learning_key.with_suffix(".pub"), parts.keys / "learning.pub")
    for node in nodes.values():
        node.signal(signal.SIGHUP)

    seen: dict[str, Any] = {}

    def published() -> bool:
        (row,) = learn_status(hub)
        last = row["last_round"]
        if last and last["rollout"]:
            seen.setdefault("round1", last)
        return "round1" in seen

    wait_until(published, "round 1 built and published", timeout=180)
    (status,) = learn_status(hub)
    assert status["not_trusting"] == {}
    # Round 1 as the look that saw it published: by the next look its soak-free rollout may have
    # ended and enough experience come in for a round 2 (building, gated, or rolling out).
    round1 = seen["round1"]
    end = wait_state(hub, round1["rollout"]["id"], ENDS, "round 1's rollout")
    assert end["state"] == "done", json.dumps(end)[:2000]
    original = sha_of(fleet["bundle"], parts.keys)
    assert round1["bundle_sha256"] != original

    def on_a_learned_round(node: Any) -> bool:
        """On round 1, or on a later round that replaced it (the line's current version)."""
        if runs_sha(node, "grid", round1["bundle_sha256"]):
            return True
        (row,) = learn_status(hub)
        current = row["current_sha256"]
        return current not in (None, original) and runs_sha(node, "grid", current)

    for name, node in nodes.items():
        wait_until(lambda n=node: on_a_learned_round(n), f"{name} on a learned round")
