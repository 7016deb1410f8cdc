"""Rollouts gated on behaviour, end to end on a simulated fleet: the hub service
(``edge-agent-hub run``, SQLite) hears the health of simulated nodes (the fleet simulator over a
loopback mosquitto: real MQTT, real signed commands and deployments) and judges each wave's nodes
against the untouched ones. (The same gates with real daemons on the ``broker init`` broker, and
docs/hub.md's and docs/health.md's blocks that show them: ``test_behaviour_gate_e2e.py``.)

The simulated nodes report the excess surprise of a model that fits (around 0, noise 0.03 nats)
and a worse model's (0.5 nats more) while they run a bundle of version 1.1.0
(``--worse-version``): a rollout of that bundle halts at its canaries and rolls them back; the
same with its criterion in dry run records the fail and goes on; a bundle of the same health
passes; too few samples pauses. Each soak is 2 s of 0.3 s windows: the thresholds are far from
the noise, so no verdict depends on how fast the machine is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.keys import generate_keypair
from tests.integration.daemon.test_daemon import REPO
from tests.integration.fleet.test_fleet_daemon import FLEET, wait_until
from tests.integration.hub.test_hubd import Hub, sqlite_table
from tests.integration.hub.test_rollouts import rollout
from tests.support.broker import MosquittoBroker
from tests.support.doc_blocks import doc_block
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = pytest.mark.integration

NODES = 8
ENDS = {"done", "halted", "rolled_back"}
CRITERION = "excess_surprise:max_increase=0.1:min_samples=8"


@pytest.fixture
def gated(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[dict[str, Any]]:
    keys = tmp_path / "keys"
    hub_pair = generate_keypair(keys, "hub")
    ci = generate_keypair(keys, "ci").private_path
    sim = subprocess.Popen(
        [sys.executable, "-m", "edge_agent_host.fleetsim", "--nodes", str(NODES),
         "--port", str(mosquitto.port), "--fleet", FLEET, "--state-dir", str(tmp_path / "sim"),
         "--hub-keys", str(keys), "--bundle-keys", str(keys), "--telemetry", "0.3",
         "--worse-version", "1.1.0", "--seed", "46"],
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools'}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )  # fmt: skip
    hub = Hub(tmp_path, "hub-1", mosquitto, sqlite_table())
    hub.config.write_text(
        hub.config.read_text()
        + f'\n[rollouts]\nkey_file = "{hub_pair.private_path}"\npoll_interval_s = 0.2\n'
    )
    try:
        hub.start()
        yield {
            "hub": hub,
            "worse": bundle_tar(tmp_path, ci, policy_len=1),  # version 1.1.0
            "same": bundle_tar(tmp_path, ci, policy_len=2),  # version 1.2.0
            "keys": keys,
        }
    finally:
        hub.kill()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(60)
        except subprocess.TimeoutExpired:
            sim.kill()


def wait_state(hub: Hub, rollout_id: str, states: set[str], what: str) -> dict[str, Any]:
    """The rollout's summary once its state is one of ``states`` (read from the service's
    database, as ``rollout status --json`` reads it, without a process per look)."""
    db = hub.database()
    last: dict[str, Any] = {}
    try:

        def reached() -> bool:
            nonlocal last
            last = RolloutStore(db).get(rollout_id).summary()
            return last["state"] in states

        wait_until(reached, what, timeout=180)
    except BaseException:
        print(json.dumps(last, indent=1, default=str)[:4000], hub.log()[-4000:])
        raise
    finally:
        db.close()
    return json.loads(json.dumps(last, default=str))


def shell(block: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A docs block as written, in ``cwd``, with the venv's ``edge-agent-hub`` on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", block], cwd=cwd, env={**os.environ, "PATH": path},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def health_rows(hub: Hub) -> list[dict[str, Any]]:
    done = hub.cli("health", "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def start(hub: Hub, bundle: Path, *criteria: str, rollback: Path | None = None) -> str:
    args = [str(bundle), "--group", "grid", "--waves", "2,100%", "--soak", "2",
            "--watch-ticks", "3", "--json"]  # fmt: skip
    for criterion in criteria:
        args += ["--criterion", criterion]
    if rollback is not None:
        args += ["--rollback-bundle", str(rollback)]
    plan = rollout(hub, "start", *args)
    assert plan["waves"] == [2, NODES]
    return str(plan["id"])


def test_a_rollout_is_judged_on_the_health_of_its_waves(gated: dict[str, Any]) -> None:
    hub = gated["hub"]
    wait_until(lambda: len(health_rows(hub)) == NODES, "every simulated node's health")
    row = health_rows(hub)[0]
    assert row["group"] == "grid"
    assert abs(row["measures"]["excess_surprise"]["mean"]) < 0.2

    # Too few samples (1,000 a side asked): the wave is inconclusive and the rollout pauses.
    rid = start(hub, gated["same"], CRITERION.replace("=8", "=1000"))
    paused = wait_state(hub, rid, {"paused", *ENDS}, "an inconclusive pause")
    assert paused["state"] == "paused", paused
    (verdict,) = paused["verdicts"]
    assert (verdict["wave"], verdict["outcome"], verdict["p"]) == (1, "inconclusive", None)
    assert "fewer than 1000 a side" in paused["detail"]
    assert "'rollout resume' judges again" in paused["detail"]
    rollout(hub, "abort", rid)
    wait_state(hub, rid, ENDS, "the abort")

    # The same health: the canaries pass, the last wave (no untouched node left) is not judged.
    rid = start(hub, gated["same"], CRITERION)
    done = wait_state(hub, rid, ENDS, "a rollout of the same health")
    assert done["state"] == "done", done
    (verdict,) = done["verdicts"]
    assert (verdict["wave"], verdict["outcome"]) == (1, "pass"), verdict
    assert verdict["wave_samples"] >= 8
    assert verdict["control_samples"] >= 8
    assert verdict["test"].startswith("Mann-Whitney U one-sided")

    # docs/hub.md's health view and alert rules, as written, beside hub.toml.
    viewed = shell(doc_block("docs/hub.md", 6), hub.dir)
    assert viewed.returncode == 0, viewed.stdout + viewed.stderr
    lines = viewed.stdout.splitlines()
    assert any(line.split()[2:4] == ["sim-0000", "grid"] for line in lines), lines
    history = [json.loads(line) for line in lines if line.startswith("{")]
    assert history
    assert {h["node"] for h in history} == {"sim-0000"}
    assert "SUCCESS: 2 rules found" in viewed.stdout

    # A worse model: the canaries fail the gate, the rollout halts and rolls them back (the
    # same with real daemons is docs/hub.md's block: test_behaviour_gate_e2e.py). Started and
    # followed in one command: a later 'status --follow' prints only the verdicts to come, and
    # on a loaded machine the wave's verdict can come before it starts.
    followed = shell(
        f"edge-agent-hub rollout start --config hub.toml {gated['worse']} --group grid"
        f" --waves 2,100% --soak 2 --watch-ticks 3 --criterion {CRITERION}"
        f" --rollback-bundle {gated['same']} --follow",
        hub.dir,
    )
    assert followed.returncode == 5, followed.stdout + followed.stderr  # rolled back
    rid = followed.stdout.split()[1]  # "rollout r-..."
    verdict_lines = [line for line in followed.stdout.splitlines() if " fail: " in line]
    assert verdict_lines, followed.stdout
    assert verdict_lines[0].startswith(f"{rid} wave 1 {CRITERION}:alpha=0.05 fail: ")
    print(followed.stdout)
    end = rollout(hub, "status", rid, "--json")
    assert end["state"] == "rolled_back", end
    (verdict,) = end["verdicts"]
    assert verdict["outcome"] == "fail"
    assert verdict["value"] > 0.3  # the median shift, nats
    assert verdict["threshold"] == 0.1
    assert verdict["p"] < 0.05
    assert end["detail"].startswith(f"wave 1: {CRITERION}:alpha=0.05: fail: "), end["detail"]
    canaries = [n for n, r in end["nodes"].items() if r["wave"] == 1]
    assert {end["nodes"][n]["state"] for n in canaries} == {"reverted"}
    assert {r["state"] for r in end["nodes"].values() if r["wave"] == 2} == {"pending"}
    # The verdicts are the hub's events, under the replica's id (events --node takes it).
    events = hub.cli("events", "--node", "hub-1", "--json", "--limit", "1000")
    assert events.returncode == 0, events.stderr
    verdict_events = [
        e for e in map(json.loads, events.stdout.splitlines())
        if e["kind"] == "rollout" and e["data"]["rollout"] == rid
    ]  # fmt: skip
    assert [(e["node"], e["severity"], e["data"]["outcome"]) for e in verdict_events] == [
        ("hub-1", "error", "fail")
    ]

    # The same criterion in dry run: the fail is recorded, nothing halts.
    rid = start(hub, gated["worse"], CRITERION + ":dry_run")
    done = wait_state(hub, rid, ENDS, "a dry-run rollout")
    assert done["state"] == "done", done
    (verdict,) = done["verdicts"]
    assert (verdict["outcome"], verdict["dry_run"]) == ("fail", True)
    text = rollout(hub, "status", rid)
    assert f"    wave 1 {CRITERION}:alpha=0.05:dry_run fail (dry run): excess_surprise" in text
