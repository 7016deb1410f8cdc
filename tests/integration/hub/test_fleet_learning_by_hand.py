"""Fleet learning by hand, as docs/fleet-learning.md's "By hand" block says, on the setup the docs
recommend (tests/support/secure_fleet.py): the ``broker init`` broker (TLS, one identity each,
the ACL), the hub service on PostgreSQL, two edge-agentd processes whose ``[daemon]
trusted_keys_dir`` holds the bundle keys (the CI's and the hub's learning key) and whose ``[mqtt]
hub_keys_dir`` holds the hub's command key alone.

1. The daemons run the line ``tmaze`` 1.0.0 from their config and report what their group
   ``grid`` learns every second, before the hub holds that bundle: their deltas are refused
   ``unknown_model``, and ``learn status`` names the bundle and the command that stores it.
2. ``rollout start`` stores it (the nodes run it already: they answer ``ok`` at once); from then
   on their deltas are accepted by the same service, no restart.
3. The block as written, in the hub's directory: ``learn status``, ``learn build`` (the round,
   signed with ``[learning] key_file``, also written to ``tmaze-learn1.tar``) and ``learn
   publish`` (a staged rollout of it, gated on behaviour). The canary takes the round: it
   verifies it with the learning key it trusts for bundles (a round signed with the command
   key, which it trusts only for commands, it would refuse).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys, key_id
from edge_agent.errors import SignatureError
from edge_agent.sim.tmaze import tmaze_model
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.integration.fleet.test_fleet_daemon import wait_until
from tests.integration.hub.test_fleet_learning_e2e import SHIPPED, convert_line, learn_status
from tests.integration.hub.test_hubd import Hub, db_rows
from tests.integration.hub.test_rollout_health_gate import shell
from tests.integration.hub.test_rollouts import rollout, sha_of
from tests.support.doc_blocks import doc_block
from tests.support.secure_fleet import runs_sha, secure_fleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NODES = ("pi-a", "pi-b")
LINE = "tmaze"
GROUP = """
[[groups]]
name = "grid"
model = { type = "bundle", path = "BUNDLE" }
count = 16
source = { type = "sim", world = "tmaze" }
sink = { type = "sim" }

[groups.learning]
A = [1]
lr_pA = 0.1
report_every_s = 1
"""


def tmaze_line(tmp: Path) -> tuple[Path, str]:
    """The line's bundle ``tmaze`` 1.0.0, signed by a release key of the CI's made in the
    nodes' trusted_keys_dir (before secure_fleet makes the others), and the ``[[groups]]``
    table of a daemon that runs it from its config as group ``grid``."""
    bundle = tmp / "tmaze-1.0.0.tar"
    release = generate_keypair(tmp / "trusted", "release").private_path
    convert_line(bundle, "1.0.0", release, "ci", tmaze_model(reward_probs=SHIPPED))
    return bundle, GROUP.replace("BUNDLE", str(bundle))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The fleet, its daemons on ``tmaze`` 1.0.0 from their config; the hub holds no bundle
    yet."""
    bundle, table = tmaze_line(tmp_path_factory.mktemp("learn-by-hand"))
    with secure_fleet(bundle.parent, dict.fromkeys(NODES, table), database="learn_by_hand",
                      hub_tail="[learning]\n") as parts:  # fmt: skip
        yield {"parts": parts, "bundle": bundle}


def count(hub: Hub, status: str) -> int:
    """Deltas stored with ``status``."""
    rows = db_rows(hub, lambda db: db.query(
        "SELECT COUNT(*) FROM learning_deltas WHERE status = :s", {"s": status}))  # fmt: skip
    return int(rows[0][0])


def test_learning_by_hand_on_the_recommended_setup(fleet: dict[str, Any]) -> None:
    parts = fleet["parts"]
    hub, nodes = parts.hub, parts.nodes
    v1 = sha_of(fleet["bundle"], parts.keys)
    # 1. Deltas on a bundle the hub does not hold: refused, and said how to fix.
    wait_until(lambda: count(hub, "unknown_model") >= 2 * len(NODES), "unknown_model deltas")
    (status,) = learn_status(hub)
    (unknown,) = status["unknown_models"]
    assert (unknown["model"], unknown["sha256"], unknown["group"], unknown["held"]) == (
        f"{LINE}@1.0.0", v1, "grid", False,
    )  # fmt: skip
    assert "'edge-agent-hub rollout start FILE --group grid' stores it" in unknown["fix"]
    assert "refused as unknown_model: the hub holds no such bundle" in hub.log()
    # 2. rollout start stores it (the nodes run it: ok at once); accepted from then on.
    plan = rollout(hub, "start", str(fleet["bundle"]), "--group", "grid", "--waves", "100%",
                   "--soak", "0", "--watch-ticks", "3", "--json")  # fmt: skip
    assert plan["nodes"] == list(NODES)
    wait_until(lambda: count(hub, "accepted") >= 3 * len(NODES), "deltas accepted, no restart")
    # 3. The docs' block, as written, beside the hub's hub.toml.
    assert hub.config.name == "hub.toml"
    ran = shell(doc_block("docs/fleet-learning.md", 0), hub.dir)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = ran.stdout.splitlines()
    assert out[0].startswith(f"{LINE}: "), out
    assert f"  version {LINE}@1.0.0 ({v1[:12]}): what the nodes run and learn on" in out
    built = next(line for line in out if line.startswith("round 1: built "))
    assert f"{LINE}@1.0.0+learn1" in built
    rollout_id = next(line for line in out if line.startswith("rollout ")).split()[1]
    # The round is signed with the learning key: a bundle key the nodes trust, not the
    # command key, which they hold in hub_keys_dir alone.
    learn1 = hub.dir / "tmaze-learn1.tar"
    round1 = load_bundle(learn1, trusted_keys=TrustedKeys.from_dir(parts.keys))
    assert round1.key_id == key_id(load_signing_key(parts.learning_key).public_key())
    with pytest.raises(SignatureError, match="untrusted key"):
        load_bundle(learn1, trusted_keys=TrustedKeys.from_dir(parts.hub_keys))
    # The canary verifies and runs it (the gate then judges it: not this test's concern).
    canary = wait_until_deployed(hub, rollout_id)
    wait_until(lambda: runs_sha(nodes[canary], "grid", round1.sha256), f"{canary} on round 1")


def wait_until_deployed(hub: Hub, rollout_id: str) -> str:
    """The rollout's first node once its deployment came back ``ok``."""
    found: list[str] = []

    def deployed() -> bool:
        summary = rollout(hub, "status", rollout_id, "--json")
        ok = [n for n, r in summary["nodes"].items() if r["state"] == "ok"]
        assert all(r["state"] in ("pending", "ok") for r in summary["nodes"].values()), summary
        found[:] = ok
        return bool(ok)

    wait_until(deployed, "the canary deployed", timeout=180)
    return found[0]
