"""What a node's agents learn reaches the fleet (docs/fleet-learning.md, "On the node"): a real
daemon whose group learns publishes learning deltas on its ``learning`` topic of a real
mosquitto, numbered 1, 2, ... with nothing lost across a broker outage (the outbox), the last
one at shutdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.fleet.protocol import LearningDelta
from tests.integration.fleet.test_fleet_daemon import (  # noqa: F401 - the fixtures
    TOPICS,
    Listener,
    Node,
    listener,
    nodes,
    restart_broker_while_frozen,
    wait_until,
)
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration

MAZE = """
[[groups]]
name = "maze"
model = { type = "builtin", name = "tmaze-reversal" }
count = 20
source = { type = "sim" }
sink = { type = "sim" }

[groups.learning]
A = [1]
lr_pA = 0.5
forgetting = 0.01
report_every_s = 1
"""


def deltas(sniff: Listener) -> list[LearningDelta]:
    return [e.body for e in sniff.on_topic(TOPICS.learning("pi-01"))
            if isinstance(e.body, LearningDelta)]


def test_learning_deltas_arrive_numbered_across_a_broker_outage(
    mosquitto: MosquittoBroker,
    listener: Listener,  # noqa: F811 - the fixture
    nodes: list[Node],  # noqa: F811
    tmp_path: Path,
) -> None:
    node = Node(tmp_path, mosquitto, "pi-01", groups=MAZE, telemetry_s=5.0)
    nodes.append(node)
    node.start()
    wait_until(lambda: len(deltas(listener)) >= 1, "a first learning delta")
    mosquitto.kill()
    offline = node.wait_status(
        lambda s: s["fleet"]["learning_published"] >= len(deltas(listener)) + 2,
        "learning deltas kept in the outbox while the broker is away",
    )["fleet"]["learning_published"]
    restart_broker_while_frozen(mosquitto, listener, node)
    wait_until(lambda: {d.seq for d in deltas(listener)} >= set(range(1, offline + 1)),
               "the deltas kept offline")
    assert node.stop() == 0  # the last delta, what was learned since the one before
    final = node.status()["fleet"]
    sent = final["learning_published"]
    assert final["learning_lost"] == 0
    wait_until(lambda: {d.seq for d in deltas(listener)} == set(range(1, sent + 1)),
               f"deltas 1..{sent}")
    for d in deltas(listener):
        assert (d.group, d.model_sha256) == ("maze", deltas(listener)[0].model_sha256)
        assert d.model.startswith("tmaze-reversal@edge-agent-")
        (table,) = d.tables
        columns, values = table.arrays()
        assert (table.table, table.lr) == ("A1", 0.5)
        assert table.experience > 0
        assert table.experience % 20 == 0  # whole ticks of 20 agents
        # every agent-tick adds lr of mass to A (its mask is the whole table), forgetting none
        assert float(values.sum(dtype=np.float64)) == pytest.approx(table.experience * 0.5,
                                                                    rel=1e-5)
        assert len(columns) > 0
