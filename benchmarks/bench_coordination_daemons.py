"""Coordination between real daemons: five ``edge-agentd`` processes on a loopback
mosquitto. One JSON object per line.

- ``allocation``: five daemons of 100 grid10 agents each (20 Hz); the hub announces 100 tasks at
  once, ``--rounds`` times (new tasks each round; earlier holders keep theirs). Per round: when
  the last daemon's award last changed, after the announcement and after the bidding window
  (negative: before the window closed), whether every daemon's award was final before its own
  window closed, and the messages and bytes on the ``tasks`` topic until every daemon agreed
  (counted by a client subscribed to the fleet, with their types). Timestamps are the daemons'
  own wall clocks (one machine) from their status files (``coordination.award_changed_at``,
  ``rounds_opened_at``), to within one tick.
- ``belief_bandwidth``: five daemons of 100 agents (4 Hz, then 10 Hz) observe a static 8-state
  factor per channel through noisy sensors (this process is the sensors: it answers each
  daemon's action batch with its next observations over MQTT) and share it at the default
  budget (64 B/agent/s); the bytes on ``node/+/beliefs`` counted at the broker per agent per
  second, against the budget, and the daemons' own figure.

    python benchmarks/bench_coordination_daemons.py [--rounds 3] [--seconds 20]

``--smoke``: two daemons, one round, one 2 s bandwidth run at 4 Hz: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import numpy as np  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

import edge_agent.coordination.messages  # noqa: E402, F401  (registers the task message types)
from edge_agent.fleet.protocol import DecodeError, decode  # noqa: E402
from edge_agent.fleet.topics import Topics  # noqa: E402
from edge_agent_host.fleetctl.tasks import announce, random_specs  # noqa: E402
from tests.integration.coordination.test_coordination_daemons import (  # noqa: E402
    GRID_GROUP,
    Sensors,
    auction,
    coord,
    hub,
    sensor_node,
    start_all,
    static_bundle,
    wait_settled,
)
from tests.integration.fleet.test_fleet_daemon import FLEET, Node  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


class Counted:
    """Every message of the fleet with its arrival time, topic kind, type and size."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.topics = Topics(FLEET)
        self.rows: list[tuple[float, str, str, int]] = []
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="bench-counter",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(self.topics.fleet_all(), 1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        self.ready.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        route = self.topics.parse(msg.topic)
        try:
            kind = decode(msg.payload).type
        except DecodeError:
            kind = "malformed"
        where = str(route.kind) if route else "?"
        with self._lock:
            self.rows.append((time.time(), where, kind, len(msg.payload)))

    def between(self, start: float, end: float, topic_kind: str) -> list[tuple[str, int]]:
        with self._lock:
            return [(t, n) for ts, k, t, n in self.rows if start <= ts <= end and k == topic_kind]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def bench_allocation(
    root: Path, broker: MosquittoBroker, *, rounds: int, window_s: float, daemons: int = 5
) -> list[dict[str, Any]]:
    nodes = [
        Node(
            root,
            broker,
            f"d{i}",
            groups=GRID_GROUP + auction(window_s, state_every_s=1.0),
            telemetry_s=1.0,
        )
        for i in range(daemons)
    ]
    counter = Counted(broker)
    out = []
    try:
        start_all(nodes)
        time.sleep(3.0)  # births, the syncs they cause and the first task_state are behind us
        with hub(broker) as client:
            for r in range(rounds):
                specs = random_specs(
                    100, 100, capability="grid", announced_by="hub", seed=r, prefix=f"r{r}-"
                )
                announced = time.time()
                announce(client, specs)
                views = wait_settled(nodes, 100 * (r + 1), timeout=30)
                agreed = max(v["award_changed_at"] for v in views)
                msgs = counter.between(announced - 0.01, agreed + 0.01, "tasks")
                types = Counter(t for t, _ in msgs)
                out.append(
                    {
                        "bench": "allocation_daemons",
                        "round": r,
                        "daemons": daemons,
                        "agents": 100 * daemons,
                        "tasks": 100,
                        "held_before": 100 * r,
                        "window_s": window_s,
                        "tick_hz": 20,
                        "agreed_after_announce_s": round(agreed - announced, 4),
                        "agreed_after_window_s": round(agreed - announced - window_s, 4),
                        "final_before_own_window_closed": all(
                            v["award_changed_at"] <= v["rounds_opened_at"] + window_s for v in views
                        ),
                        "last_daemon_saw_round_after_s": round(
                            max(v["rounds_opened_at"] for v in views) - announced, 4
                        ),
                        "messages_until_agreed": len(msgs),
                        "message_types": dict(types),
                        "bytes_until_agreed": sum(n for _, n in msgs),
                        "reawards": int(sum(v["metrics"]["reawards"] for v in views)),
                        "converge_s_max": max(v["metrics"]["converge_s_max"] for v in views),
                    }
                )
                time.sleep(window_s + 0.5)
        # Steady state: what the task topic carries when nothing changes (task_state).
        time.sleep(3.0)
        now = time.time()
        idle = counter.between(now - 3.0, now, "tasks")
        out.append(
            {
                "bench": "allocation_daemons_idle",
                "daemons": daemons,
                "tasks_held": 100 * rounds,
                "messages_per_s": len(idle) / 3.0,
                "bytes_per_s": sum(n for _, n in idle) / 3.0,
                "message_types": dict(Counter(t for t, _ in idle)),
            }
        )
    finally:
        counter.close()
        for node in nodes:
            node.close()
    return out


def bench_belief_bandwidth(
    root: Path, broker: MosquittoBroker, *, seconds: float, budget: float, tick_hz: float,
    daemons: int = 5,
) -> dict[str, Any]:
    S, accuracy, agents = 8, 0.3, 100
    bundle = static_bundle(root / "static8", S, accuracy)
    truth = np.random.default_rng(3).integers(0, S, agents)
    sharing = f"factors = [0]\nbytes_per_agent_s = {budget}\nmin_evidence_nats = 0.1"
    nodes = [
        sensor_node(
            root,
            broker,
            f"b{tick_hz:g}-{i}",  # a fresh name: a fresh node (bdseq from 0)
            "w",
            bundle=bundle,
            agents=agents,
            sharing=sharing,
            tick_hz=tick_hz,
        )
        for i in range(daemons)
    ]
    counter = Counted(broker)
    sensors = Sensors(broker, truth, S, accuracy, {n.name: "w" for n in nodes})
    try:
        start_all(nodes)
        sensors.kick(nodes)
        start = time.time()
        steps0 = [_steps(n) for n in nodes]
        time.sleep(seconds)
        end = time.time()
        steps = [_steps(n) - s for n, s in zip(nodes, steps0, strict=True)]
        msgs = counter.between(start, end, "beliefs")
        reported = [coord(n)["metrics"]["beliefs.w.bytes_per_agent_s"] for n in nodes]
        return {
            "bench": "belief_bandwidth_daemons",
            "daemons": daemons,
            "agents": daemons * agents,
            "tick_hz": tick_hz,
            "seconds": round(end - start, 2),
            "budget_bytes_per_agent_s": budget,
            "wire_bytes_per_agent_s": sum(n for _, n in msgs) / (daemons * agents) / (end - start),
            "reported_bytes_per_agent_s_mean": statistics.mean(reported),
            "messages_per_daemon_s": len(msgs) / daemons / (end - start),
            "steps_per_daemon": steps,
        }
    finally:
        sensors.close()
        counter.close()
        for node in nodes:
            node.close()


def _steps(node: Node) -> int:
    group = next(g for g in node.status()["groups"] if g["name"] == "w")
    return int(group["steps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--budget", type=float, default=64.0)
    parser.add_argument("--daemons", type=int, default=5)
    parser.add_argument("--smoke", action="store_true",
                        help="2 daemons, 1 round, one 2 s run at 4 Hz: the code path, for CI")
    args = parser.parse_args()
    rates = (4.0, 10.0)
    if args.smoke:
        args.daemons, args.rounds, args.seconds, rates = 2, 1, 2.0, (4.0,)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = MosquittoBroker(root / "mosquitto")
        broker.start()
        try:
            for record in bench_allocation(
                root / "alloc", broker, rounds=args.rounds, window_s=args.window,
                daemons=args.daemons,
            ):
                emit(record)
            for tick_hz in rates:
                emit(
                    bench_belief_bandwidth(
                        root / f"beliefs-{tick_hz:g}",
                        broker,
                        seconds=args.seconds,
                        budget=args.budget,
                        tick_hz=tick_hz,
                        daemons=args.daemons,
                    )
                )
        finally:
            broker.kill()


if __name__ == "__main__":
    main()
