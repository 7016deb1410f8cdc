"""Rollouts gated on behaviour and the drift alarm, end to end with real parts (issue 46 item 5;
docs/health.md, docs/hub.md "Rollouts gated on behaviour"): three edge-agentd processes on the
``edge-agent-host broker init`` broker (TLS, one identity each, the ACL), the hub service
(``edge-agent-hub run``, configured from its generated ``hub.toml``) on PostgreSQL, and signed
T-maze bundles rolled out to the nodes' group ``tmaze`` (32 agents, the built-in T-maze, 20 Hz,
1 s health windows) in waves of one canary, then the two others:

1. a **worse** model, the T-maze with its reward arms swapped, with ``--shadow-s``: the canary
   runs it as a shadow beside its live group, the shadow criterion fails, the rollout halts at
   the canary and rolls it back (docs/health.md's block, as written beside ``hub.toml``);
2. the same worse model without a shadow: the canary switches, and the live criterion (the
   canary's windows against the two untouched nodes', Mann-Whitney) fails: rolled back
   (docs/hub.md's block); its verdicts are the hub's events under the replica's own id;
3. a **better** model (the same T-maze planning two steps ahead: its model fits as well, and it
   visits the cue first) passes every wave it is judged on;
4. all along, node ``pi-c`` also runs a group ``maze`` whose world (the reversal T-maze) swaps its
   rewarded arm after 50 trials (150 ticks, about 7.5 s) while its model stays frozen: the world
   drifts mid-run, and the drift alarm rises on the device (its ``drift`` event) and on the hub
   (its events, and the windows it stored, ``edge-agent-hub health``), after windows in which
   the model fitted; it clears once the world is back (every 150 ticks it swaps again), and each
   transition is one line of the daemon's log (WARNING raised, INFO cleared). No switch of a
   deployment or rollback raises a drift alarm by itself. ``health --group`` with a group the
   node has not is one line naming its groups.

The two worse bundles are made by docs/health.md's block as written (``edge-agent-host variant``
and ``convert aif``, in a directory holding ``examples/`` and ``keys/fleet.key``: the key the
nodes trust for bundles, ``secure_fleet``'s CI key) and copied beside the service's ``hub.toml``.

Why no verdict depends on the machine's speed: the swapped arms raise the excess surprise by
about 1.2 nats per agent-step (+0.9 nats or more in every shadow window of 16 ticks,
``tests/unit/daemon/test_shadow.py``; the canary's 1 s windows +1.5 nats above the untouched
nodes'), where the fitting model's window means stay within about 0.1 of 0; the thresholds
(0.3 nats) sit far from both. The live samples are wall-clock windows (a 6 s soak holds 4 or 5
of them whatever the tick rate; 3 a side are asked, and 3 against 6 windows wholly apart give
p = 0.01); each window of 20 ticks measures 5 ticks, which cover every tick of the T-maze's
3-tick trial (down to 12 ticks a window, 12 Hz). The shadow gives one pair per 16 ticks: 10 in
its 8 s at 20 Hz, 5 asked. The module shares one fleet (module scope): the scenarios run in
sequence in one test, the drift group beside them."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent_host.hub.storage.database import HubDatabase
from tests.integration.daemon.test_daemon import REPO
from tests.integration.fleet.test_fleet_daemon import wait_until
from tests.integration.fleet.test_health_telemetry import drift_log
from tests.integration.hub.test_hubd import Hub, db_rows
from tests.integration.hub.test_hubd_faults import HUB
from tests.integration.hub.test_rollout_health_gate import ENDS, shell, wait_state
from tests.integration.hub.test_rollouts import rollout, sha_of
from tests.support.doc_blocks import doc_block
from tests.support.secure_fleet import bundle_of, hub_events, json_lines, runs_sha, secure_fleet
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NODES = ("pi-a", "pi-b", "pi-c")
CANARY, DRIFTER = NODES[0], NODES[-1]
GROUP = """
[[groups]]
name = "tmaze"
model = { type = "builtin", name = "tmaze" }
count = 32
source = { type = "sim" }
sink = { type = "sim" }
"""
DRIFTING = """
[[groups]]
name = "maze"
model = { type = "builtin", name = "tmaze-reversal" }
count = 32
source = { type = "sim" }
sink = { type = "sim" }
"""
SHADOW = "shadow:excess_surprise:max_increase=0.3:min_pairs=5"
LIVE = "excess_surprise:max_increase=0.3:min_samples=3"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The broker ``broker init`` made, PostgreSQL, the hub service (up before the nodes: it
    hears every health window) and the three daemons; the bundles, signed by the CI's key."""
    tmp = tmp_path_factory.mktemp("gate-e2e")
    groups = {n: GROUP + (DRIFTING if n == DRIFTER else "") for n in NODES}
    with secure_fleet(tmp, groups, database="gate_e2e") as parts:
        # docs/health.md's bundles, as written, where the docs make them: a checkout's
        # examples/ and the CI key the nodes trust (keys/fleet.key); then beside hub.toml.
        checkout = tmp / "checkout"
        (checkout / "keys").mkdir(parents=True)
        (checkout / "examples").symlink_to(REPO / "examples")
        shutil.copy(parts.ci_key, checkout / "keys" / "fleet.key")
        made = shell(doc_block("docs/health.md", 0), checkout)
        assert made.returncode == 0, made.stdout + made.stderr
        for name in ("tmaze-1.1.0.tar", "tmaze-2.0.0.tar"):
            shutil.copy(checkout / name, parts.hub.dir / name)
        yield {
            "hub": parts.hub,
            "nodes": parts.nodes,
            "good": checkout / "tmaze-1.1.0.tar",
            "worse": checkout / "tmaze-2.0.0.tar",
            "better": bundle_tar(tmp / "better", parts.ci_key, world="tmaze", policy_len=2),
            "keys": parts.keys,
        }


def start(hub: Hub, bundle: Path, *args: str) -> str:
    plan = rollout(hub, "start", str(bundle), "--group", "tmaze", "--all", "--waves", "1,100%",
                   "--watch-ticks", "3", "--json", *args)  # fmt: skip
    assert plan["nodes"] == list(NODES)
    assert plan["waves"] == [1, 3]
    return str(plan["id"])


def test_rollouts_are_gated_on_behaviour_and_a_drifting_world_raises_the_alarm(
    fleet: dict[str, Any],
) -> None:
    hub, nodes = fleet["hub"], fleet["nodes"]
    wait_until(
        lambda: (
            {(r["node"], r["group"]) for r in db_rows(hub, HubDatabase.latest_health)}
            >= {*((n, "tmaze") for n in NODES), (DRIFTER, "maze")}
        ),
        "every node's health at the hub",
        timeout=120,
    )

    # 1. The worse model as a shadow on the canary (docs/health.md's block as written): the
    # shadow verdict fails, rolled back to the good bundle; nothing goes beyond the canary.
    shadowed = shell(doc_block("docs/health.md", 1), hub.dir)
    print(shadowed.stdout)
    assert shadowed.returncode == 5, shadowed.stdout + shadowed.stderr  # rolled back
    rid = shadowed.stdout.split()[1]  # "rollout r-..."
    assert (
        "3 node(s) of group tmaze in 2 wave(s) of 1, 2\n  the first wave runs it as a shadow "
        f"for 8 s\n  criterion {SHADOW}:alpha=0.05\n"
    ) in shadowed.stdout, shadowed.stdout
    assert shadowed.stdout.rstrip().splitlines()[-1].startswith(f"{rid} rolled_back: ")
    end = wait_state(hub, rid, ENDS, "the shadow's verdict")
    assert end["state"] == "rolled_back", end
    (verdict,) = end["verdicts"]
    assert (verdict["wave"], verdict["kind"], verdict["outcome"]) == (1, "shadow", "fail"), verdict
    assert verdict["value"] > 0.6  # the mean difference candidate - live, nats
    assert verdict["wave_samples"] >= 5
    assert verdict["test"].startswith("Wilcoxon signed-rank one-sided")
    assert end["nodes"][CANARY]["state"] == "reverted", end["nodes"]
    assert {end["nodes"][n]["state"] for n in NODES[1:]} == {"pending"}
    good = sha_of(fleet["good"], fleet["keys"])
    wait_until(lambda: runs_sha(nodes[CANARY], "tmaze", good), "the canary rolled back")
    assert all(bundle_of(nodes[n], "tmaze") is None for n in NODES[1:])

    # 2. The same model with the shadow off (docs/hub.md's block as written): the canary
    # switches, and its live windows are judged against the untouched nodes' at the end of its
    # soak.
    judged = shell(doc_block("docs/hub.md", 7), hub.dir)
    print(judged.stdout)
    assert judged.returncode == 5, judged.stdout + judged.stderr  # rolled back
    rid = judged.stdout.split()[1]
    end = wait_state(hub, rid, ENDS, "the live verdict")
    assert end["state"] == "rolled_back", end
    (verdict,) = end["verdicts"]
    assert (verdict["wave"], verdict["kind"], verdict["outcome"]) == (1, "health", "fail"), verdict
    assert verdict["value"] > 0.6  # the canary's median less the untouched nodes', nats
    assert verdict["wave_samples"] >= 3
    assert verdict["control_samples"] >= 3
    assert verdict["test"].startswith("Mann-Whitney U one-sided")
    assert end["nodes"][CANARY]["state"] == "reverted", end["nodes"]
    wait_until(lambda: runs_sha(nodes[CANARY], "tmaze", good), "the canary rolled back again")
    # The verdicts are the hub's events under the replica's own id (events --node takes it).
    own = json_lines(hub.cli("events", "--node", HUB, "--json", "--limit", "100"))
    assert [(e["node"], e["kind"], e["data"]["outcome"]) for e in own] == [
        (HUB, "rollout", "fail"), (HUB, "rollout", "fail")
    ]  # fmt: skip

    # 4. The drifting world (pi-c's group maze; pi-c untouched so far): the alarm on the
    # device, its drift event in the status (which keeps the newest 10 events) ...
    drifting = nodes[DRIFTER]

    def device_alarm() -> list[dict[str, Any]]:
        return [e for e in drifting.status()["events"] if e["kind"] == "drift"]

    wait_until(lambda: bool(device_alarm()), f"the drift event on {DRIFTER}", timeout=120)
    for event in device_alarm():
        assert event["detail"].startswith("group maze: the model stopped fitting"), event

    # 3. A better model passes every wave it is judged on (the last has no untouched node).
    rid = start(hub, fleet["better"], "--soak", "6", "--criterion", LIVE)
    end = wait_state(hub, rid, ENDS, "the better model's rollout")
    assert end["state"] == "done", end
    (verdict,) = end["verdicts"]
    assert (verdict["wave"], verdict["outcome"]) == (1, "pass"), verdict
    assert abs(verdict["value"]) < 0.3
    better = sha_of(fleet["better"], fleet["keys"])
    for name in NODES:
        wait_until(
            lambda n=name: runs_sha(nodes[n], "tmaze", better), f"{name} on the better model"
        )
    verdict_events = [
        e for e in hub_events(hub) if e["kind"] == "rollout" and e["data"].get("outcome")
    ]  # fmt: skip
    assert [e["data"]["outcome"] for e in verdict_events] == ["fail", "fail", "pass"]

    # 4. ... and on the hub: its events, and the windows it stored (edge-agent-hub health),
    # in which the model fitted before the world changed and the alarm rose after.
    alarms = [
        e for e in hub_events(hub) if e["kind"] == "alarm" and e["data"].get("name") == "drift"
    ]
    alarmed = {(e["node"], e["group"]) for e in alarms}
    assert (DRIFTER, "maze") in alarmed, alarms
    # The T-maze groups alarm only where the swapped arms ran (the canary): no switch of a
    # deployment or a rollback raises one by itself.
    assert alarmed <= {(DRIFTER, "maze"), (CANARY, "tmaze")}, alarms
    history = json_lines(hub.cli("health", DRIFTER, "--group", "maze", "--json"))
    states = [h["drift"]["alarm"] for h in history if h.get("drift")]
    first = states.index(True)
    assert first >= 2, states  # windows in which the model fitted ...
    assert not any(states[:first]), states  # ... and none alarmed before the world changed
    # A group the node has not (a typo): one line naming its groups, exit 1.
    typo = hub.cli("health", DRIFTER, "--group", "mazee")
    assert (typo.returncode, typo.stdout) == (1, ""), typo
    assert typo.stderr.splitlines() == [
        f"edge-agent-hub health: node '{DRIFTER}' has no group 'mazee' (its groups: maze, "
        "tmaze); --force to read it all the same"
    ]

    # 4. ... and in the daemon's log: one line per transition, WARNING when the alarm rose,
    # INFO when it cleared (the world swaps back every 150 ticks), each the event's detail.
    wait_until(
        lambda: any(kind == "drift_cleared" for _, kind, _ in drift_log(drifting, "maze")),
        f"the drift alarm cleared on {DRIFTER}",
        timeout=120,
    )
    logged = drift_log(drifting, "maze")
    assert [(level, kind) for level, kind, _ in logged[:2]] == [
        ("WARNING", "drift"), ("INFO", "drift_cleared")
    ], logged  # fmt: skip
    assert all(a[1] != b[1] for a, b in itertools.pairwise(logged)), logged  # alternating
    assert logged[0][2].startswith("group maze: the model stopped fitting"), logged
    assert "the model fits what its agents observe again" in logged[1][2], logged
    print("\n".join(f"{level} {kind}: {detail}" for level, kind, detail in logged[:2]))
    wait_until(
        lambda: {(kind, detail) for _, kind, detail in logged[:2]} <= {
            (e["data"]["name"], e["detail"]) for e in hub_events(hub)
            if (e["node"], e["group"]) == (DRIFTER, "maze")
        },
        "the hub's events of the two transitions the log shows",
    )  # fmt: skip
    assert drift_log(drifting, "tmaze") == []
