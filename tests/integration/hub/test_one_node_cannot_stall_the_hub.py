"""One valid node identity cannot stall the hub's learning nor bloat its health (issue 54 item 4;
docs/fleet-learning.md "On the hub", docs/hub.md "Health on the hub"), on the setup the docs
recommend (tests/support/secure_fleet.py: the ``broker init`` broker, the hub service on
PostgreSQL with ``[http]``, a learning daemon), against ``rogue-1``: a client with a node identity
of its own (``broker init --node``) that says what a node says, within its own topics, as a
compromised node (or a daemon whose numbers churn) could.

1. **Experience.** Two deltas that each claim 2**63 - 1 agent-ticks (the largest the protocol
   takes; two of them overflowed SQLite's ``SUM`` before, and every look of the policy failed):
   refused ``experience`` (more than its birth's agents at its tick rate lived since), counted;
   ``learn status`` answers, the policy's looks go on without an error, and a round is built from
   the daemon's deltas.
2. **Health, undeclared groups.** 20 health messages of 1,024 group names its birth does not
   declare (each new): every window counted and dropped; no row, no series.
3. **Health, declared groups.** A birth that declares 1,024 groups, and 5 health messages with
   all of them: the first ``[retention] health_groups_per_node`` (64) are kept, the rest counted
   and dropped.

The figures asserted are the hub's own, not times: rows of ``health`` and ``node_health``, the
series of ``/metrics`` and its size. The test prints them (and the hub's RSS) as one JSON line,
for the numbers the docs give.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.fleet.health_measures import MeasureName
from edge_agent.fleet.protocol import (
    Birth,
    Envelope,
    GroupHealth,
    GroupInfo,
    Health,
    LearningDelta,
    MeasureSummary,
    NodeState,
    encode,
)
from edge_agent.sim.tmaze import tmaze_model
from edge_agent_host.hub.storage.database import HubDatabase
from tests.integration.fleet.test_broker_acl import Client
from tests.integration.fleet.test_fleet_daemon import TOPICS, wait_until
from tests.integration.hub.test_fleet_learning_by_hand import tmaze_line
from tests.integration.hub.test_hubd import Hub, db_rows
from tests.integration.hub.test_rollouts import rollout, sha_of
from tests.support.broker import free_port
from tests.support.secure_fleet import secure_fleet
from tests.unit.host.hub.learning.test_store import counts_delta

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NODE = "pi-a"
ROGUE = "rogue-1"
LINE = "tmaze"
HUB = """
[learning]
min_experience = 3000
check_interval_s = 0.5
lines = ["tmaze"]
gate_rollouts = 20
gate_steps = 4

[http]
enabled = true
port = PORT
"""
MEASURES: dict[MeasureName, MeasureSummary] = {
    "excess_surprise": MeasureSummary(mean=0.1, p95=0.5, n=100)
}


class Rogue:
    """``rogue-1``: its state, births, health and learning deltas on its own topics."""

    def __init__(self, parts: Any) -> None:
        self.seq = 0
        self.client = Client(parts.broker, parts.clients / ROGUE).ready()

    def send(self, topic: str, body: Any, *, retain: bool = False) -> None:
        self.seq += 1
        env = Envelope(type=body.TYPE, node=ROGUE, seq=self.seq, bdseq=1, ts=time.time(),
                       clock_synced=True, body=body)  # fmt: skip
        assert self.client.publish(topic, encode(env), retain=retain) == "Success"

    def birth(self, groups: dict[str, GroupInfo]) -> None:
        self.send(TOPICS.birth(ROGUE), Birth(software_version="0.1.0", profile="x86-dev",
                  budget_bytes=2**30, groups=groups, tick_hz=20.0), retain=True)  # fmt: skip

    def health(self, names: list[str]) -> None:
        window = GroupHealth(model=f"{LINE}@1.0.0", agent_steps=100, measures=MEASURES)
        self.send(TOPICS.health(ROGUE), Health(window_s=1.0, groups=dict.fromkeys(names, window)))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    bundle, table = tmaze_line(tmp_path_factory.mktemp("one-node"))
    port = free_port()
    with secure_fleet(bundle.parent, {NODE: table},
                      database="one_node", identities=(ROGUE,),
                      hub_tail=HUB.replace("PORT", str(port))) as parts:  # fmt: skip
        yield {"parts": parts, "bundle": bundle, "url": f"http://127.0.0.1:{port}"}


def figures(hub: Hub, url: str) -> dict[str, Any]:
    """The hub's figures: its rows of health, its /metrics (size, series of health)."""
    rows = db_rows(hub, lambda db: db.query(
        "SELECT (SELECT COUNT(*) FROM health), (SELECT COUNT(*) FROM node_health), "
        "(SELECT COUNT(*) FROM health WHERE node = :r), "
        "(SELECT COUNT(*) FROM node_health WHERE node = :r)", {"r": ROGUE}))  # fmt: skip
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert hub.proc is not None
    rss_kib = 0
    for line in Path(f"/proc/{hub.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    return {
        "health_rows": int(rows[0][0]), "node_health_rows": int(rows[0][1]),
        "rogue_health_rows": int(rows[0][2]), "rogue_node_health_rows": int(rows[0][3]),
        "metrics_bytes": len(text), "series": len(series),
        "rogue_series": sum(f'node="{ROGUE}"' in s for s in series), "hub_rss_kib": rss_kib,
    }  # fmt: skip


def status(hub: Hub) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent_host.hub", "status", "--config", str(hub.config),
         "--json"], capture_output=True, text=True, timeout=60, check=False, env=hub.env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got: dict[str, Any] = json.loads(done.stdout)
    return got


def test_one_node_s_numbers_cannot_stall_learning_nor_bloat_health(
    fleet: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    parts, url = fleet["parts"], fleet["url"]
    hub = parts.hub
    sha = sha_of(fleet["bundle"], parts.keys)
    rollout(hub, "start", str(fleet["bundle"]), "--group", "grid", "--waves", "100%",
            "--soak", "0", "--watch-ticks", "3", "--json")  # fmt: skip
    wait_until(lambda: NODE in {r["node"] for r in db_rows(hub, HubDatabase.latest_health)},
               "the daemon's health")  # fmt: skip
    before = figures(hub, url)
    rogue = Rogue(parts)
    request.addfinalizer(rogue.client.close)
    rogue.send(TOPICS.node_state(ROGUE), NodeState(online=True), retain=True)
    rogue.birth({"grid": GroupInfo(agents=16, bundle=f"{LINE}@1.0.0", bundle_sha256=sha)})
    # 1. Experience: two deltas of 2**63 - 1 agent-ticks each.
    mass = np.zeros_like(tmaze_model().A[1])
    mass[0, 0, 0] = 1.0
    for seq in (1, 2):
        table = counts_delta("A1", mass, 2**63 - 1, 0.1)
        rogue.send(TOPICS.learning(ROGUE), LearningDelta(group="grid", model=f"{LINE}@1.0.0",
                   model_sha256=sha, seq=seq, tables=[table]))  # fmt: skip
    # 2. Health of groups its birth does not declare: 20 messages of 1,024 new names each.
    for k in range(20):
        rogue.health([f"churn-{k:02d}-{i:04d}" for i in range(1024)])
    wait_until(lambda: status(hub)["health_dropped"]["unknown_group"] >= 20 * 1024,
               "the undeclared windows counted")  # fmt: skip
    after_churn = figures(hub, url)
    assert status(hub)["health_dropped"] == {"unknown_group": 20 * 1024, "over_cap": 0}
    assert (after_churn["rogue_health_rows"], after_churn["rogue_node_health_rows"]) == (0, 0)
    assert after_churn["rogue_series"] <= 8  # its per-node gauges, no group's health
    # 3. A birth that declares 1,024 groups, and their health: 64 kept, the rest dropped.
    names = [f"declared-{i:04d}" for i in range(1024)]
    rogue.birth(dict.fromkeys(names, GroupInfo(agents=1)))
    time.sleep(0.5)  # the birth is on the same topic order as what follows: the broker keeps it
    for _ in range(5):
        rogue.health(names)
    wait_until(lambda: status(hub)["health_dropped"]["over_cap"] >= 5 * 960, "the cap counted")
    capped = figures(hub, url)
    assert capped["rogue_node_health_rows"] == 64
    assert capped["rogue_health_rows"] == 5 * 64
    per_group = 2 * len(MEASURES) + len(MEASURES) + 2  # mean and p95, samples, steps, window
    assert capped["rogue_series"] <= 8 + 64 * per_group
    # Learning went on: the lies refused and counted, status and looks fine, a round built.
    (line,) = learn_status(hub)
    assert line["refused"].get("experience") == 2, line["refused"]
    wait_until(lambda: any(r["state"] == "built" for r in rounds(hub)), "a round built")
    built = next(r for r in rounds(hub) if r["state"] == "built")
    assert set(json.loads(built["provenance"])["nodes"]) == {NODE}
    learning = status(hub)["learning_rounds"]
    assert learning["errors"] == 0, learning
    print(json.dumps({"probe": "one_node", "before": before, "after_churn": after_churn,
                      "capped": capped}))  # fmt: skip


def learn_status(hub: Hub) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent_host.hub", "learn", "status", "--config",
         str(hub.config), "--json"], capture_output=True, text=True, timeout=60, check=False,
        env=hub.env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def rounds(hub: Hub) -> list[dict[str, Any]]:
    rows = db_rows(hub, lambda db: db.query(
        "SELECT id, state, provenance FROM learning_rounds ORDER BY id"))  # fmt: skip
    return [{"id": r[0], "state": str(r[1]), "provenance": str(r[2])} for r in rows]
