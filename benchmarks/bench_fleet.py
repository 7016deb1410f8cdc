"""Fleet link benchmarks: outbox throughput, write amplification, command latency,
reconnect time. One JSON object per line.

Everything runs against a real mosquitto started here on a free loopback port (the tests' helper,
``tests/support/broker.py``), with persistence off.

- ``outbox_throughput``: events published through FleetLink (msgspec body and envelope,
  the outbox's record log, paho) until every one is acknowledged, against a baseline in the same
  run: the same payloads published with bare paho at QoS 1 with the same in-flight window (16), no
  outbox. Two outbox cases: ``bulk`` (the link's batched commits, messages back to back) and
  ``per_tick`` (one message, then ``flush()``, as a daemon that publishes one message per tick).
- ``write_amplification``: bytes this process caused to be written to storage
  (``/proc/self/io`` write_bytes) per message, and per payload byte, for both cases; the outbox
  file's size at the end.
- ``command_latency``: a real daemon (``python -m edge_agent run``) at two tick rates; the hub
  client sends signed ``ping`` commands one at a time and times each until its result arrives.
  Commands are applied between ticks, so about half a tick period is expected on top of the
  broker round trip; the baseline is a bare MQTT request/response through the same broker.
- ``reconnect``: the broker is killed, kept down for a while and started again; the time from
  "listening again" to the link being online (birth sent), with the daemon's default back-off
  (0.5 s doubling to 60 s, jitter 0.5) and with a short one (0.05 s to 0.3 s).

    python benchmarks/bench_fleet.py [--quick] [--only outbox|command_latency|reconnect]

``--smoke``: 200 messages, 3 commands at 50 Hz, one reconnect per case: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from edge_agent.fleet.comms.base import Backoff  # noqa: E402
from edge_agent.fleet.comms.mqtt import MqttSettings, MqttTransport  # noqa: E402
from edge_agent.fleet.link import FleetLink  # noqa: E402
from edge_agent.fleet.node import OUTBOX_DB  # noqa: E402
from edge_agent.fleet.outbox import Outbox  # noqa: E402
from edge_agent.fleet.protocol import Envelope, Event, encode  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402

FLEET = "bench"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def new_link(broker: MosquittoBroker, state: Path, backoff: Backoff) -> tuple[FleetLink, Outbox]:
    transport = MqttTransport(
        MqttSettings(client_id=f"bench-{os.urandom(3).hex()}", port=broker.port),
        backoff=backoff,
    )
    outbox = Outbox(state / OUTBOX_DB)
    link = FleetLink(
        transport,
        outbox,
        "bench-node",
        FLEET,
        state,
        birth={"software_version": "bench", "profile": "bench", "budget_bytes": 0},
    )
    return link, outbox


def wait_online(link: FleetLink, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while not link.online:
        link.pump()
        if time.monotonic() - start > timeout:
            raise RuntimeError("the link did not come online")
        time.sleep(0.001)
    return time.monotonic() - start


def sample_payload(size: int) -> bytes:
    env = Envelope(
        type="event",
        node="bench-node",
        seq=0,
        bdseq=0,
        ts=time.time(),
        clock_synced=False,
        body=Event(kind="other", detail="x" * size),
    )
    return encode(env)


# ------------------------------------------------------------------------------------ throughput
def paho_baseline(broker: MosquittoBroker, n: int, payload: bytes, window: int) -> float:
    """Bare paho, QoS 1, at most ``window`` unacknowledged: messages per second."""
    done = threading.Event()
    acked = [0]
    lock = threading.Condition()

    def on_publish(*_a: Any) -> None:
        with lock:
            acked[0] += 1
            lock.notify_all()
            if acked[0] == n:
                done.set()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-paho",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(window)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    time.sleep(0.2)
    start = time.perf_counter()
    for i in range(n):
        with lock:
            while i - acked[0] >= window:
                lock.wait(1.0)
        client.publish(f"ea/v1/{FLEET}/node/bench-paho/event", payload, qos=1)
    done.wait(120)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return n / elapsed


def outbox_run(
    broker: MosquittoBroker, n: int, detail_bytes: int, per_tick: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=REPO / "benchmarks") as tmp:
        state = Path(tmp)
        link, outbox = new_link(broker, state, Backoff(initial_s=0.05, max_s=0.3))
        link.start()
        wait_online(link)
        link.pump()
        detail = "x" * detail_bytes
        written_before = write_bytes()
        start = time.perf_counter()
        for i in range(n):
            link.publish_event("other", detail, data={"n": i})
            if per_tick:  # a daemon tick: publish, pump (commits, sends), flush
                link.pump()
                link.flush()
        while outbox.depth_rows:
            link.pump()
            time.sleep(0.0002)
        elapsed = time.perf_counter() - start
        outbox.flush()
        written = write_bytes() - written_before
        sizes = {p.name: p.stat().st_size for p in state.iterdir() if p.name.startswith(OUTBOX_DB)}
        stats = outbox.stats()
        link.stop(drain_timeout_s=0.5)
        outbox.close()
    return {
        "msgs_per_s": round(n / elapsed, 1),
        "write_bytes_per_msg": round(written / n, 1),
        "outbox_files_bytes": sizes,
        "acked": stats["acked"],
    }


def bench_throughput(broker: MosquittoBroker, n: int) -> None:
    detail = 120
    payload = sample_payload(detail)
    baseline = paho_baseline(broker, n, payload, window=16)
    for mode in ("bulk", "per_tick"):
        count = n if mode == "bulk" else max(200, n // 5)
        result = outbox_run(broker, count, detail, per_tick=mode == "per_tick")
        emit(
            {
                "bench": "outbox_throughput",
                "mode": mode,
                "messages": count,
                "payload_bytes": len(payload),
                "msgs_per_s": result["msgs_per_s"],
                "baseline_paho_qos1_msgs_per_s": round(baseline, 1),
                "ratio_to_baseline": round(result["msgs_per_s"] / baseline, 3),
                "acked": result["acked"],
            }
        )
        emit(
            {
                "bench": "write_amplification",
                "mode": mode,
                "messages": count,
                "payload_bytes": len(payload),
                "write_bytes_per_msg": result["write_bytes_per_msg"],
                "amplification": round(result["write_bytes_per_msg"] / len(payload), 2),
                "outbox_files_bytes_at_end": result["outbox_files_bytes"],
            }
        )


# ------------------------------------------------------------------------------- command latency
DAEMON_CONFIG = """
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state}/status.json"
tick_hz = {hz}
log_level = "warning"
trusted_keys_dir = "{keys}"

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 1000
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[mqtt]
enabled = true
port = {port}
fleet = "{fleet}"
node_id = "{node}"
telemetry_interval_s = 1.0
"""


def mqtt_round_trip(broker: MosquittoBroker, n: int) -> list[float]:
    """Baseline: request -> echo -> response through the broker, two bare paho clients."""
    echo = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="echo")
    asker = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="asker")
    got = threading.Event()
    echo.on_message = lambda c, _u, m: c.publish("bench/resp", m.payload, qos=1)
    asker.on_message = lambda _c, _u, _m: got.set()
    for client, topic in ((echo, "bench/req"), (asker, "bench/resp")):
        client.connect(broker.host, broker.port)
        client.subscribe(topic, qos=1)
        client.loop_start()
    time.sleep(0.3)
    times = []
    for _ in range(n):
        got.clear()
        start = time.perf_counter()
        asker.publish("bench/req", b"x" * 200, qos=1)
        got.wait(10)
        times.append(time.perf_counter() - start)
    for client in (echo, asker):
        client.disconnect()
        client.loop_stop()
    return times


NODELAY_PATCH = """
import socket

_create_connection = socket.create_connection


def _nodelay(*args, **kwargs):
    sock = _create_connection(*args, **kwargs)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


socket.create_connection = _nodelay
"""


def bench_command_latency(
    broker: MosquittoBroker, n: int, broker_config: str, *, client_nodelay: bool = False,
    rates: tuple[float, ...] = (10.0, 50.0),
) -> None:
    """``client_nodelay``: every MQTT client (hub, baseline, daemon) sets TCP_NODELAY, which
    paho does not do by itself; the daemon gets it through a ``sitecustomize`` module."""
    saved = socket.create_connection
    if client_nodelay:
        exec(NODELAY_PATCH, {})  # the same code the daemon runs; patches socket in place
    try:
        base = mqtt_round_trip(broker, n)
        for hz in rates:
            times = ping_daemon(broker, n, hz, client_nodelay=client_nodelay)
            emit(
                {
                    "bench": "command_latency",
                    "tick_hz": hz,
                    "agents": 1000,
                    "commands": n,
                    "p50_ms": round(statistics.median(times) * 1e3, 2),
                    "p99_ms": round(percentile(times, 99) * 1e3, 2),
                    "max_ms": round(max(times) * 1e3, 2),
                    "broker": broker_config,
                    "clients_tcp_nodelay": client_nodelay,
                    "half_tick_ms": round(500 / hz, 1),
                    "baseline_mqtt_round_trip_p50_ms": round(statistics.median(base) * 1e3, 2),
                    "baseline_mqtt_round_trip_p99_ms": round(percentile(base, 99) * 1e3, 2),
                }
            )
    finally:
        socket.create_connection = saved


def ping_daemon(broker: MosquittoBroker, n: int, hz: float, *, client_nodelay: bool) -> list[float]:
    """Start a daemon at ``hz``, send it ``n`` signed pings one at a time: their round trips."""
    from edge_agent_host.fleetctl import FleetClient
    from edge_agent_host.keys import generate_keypair, load_signing_key

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        pair = generate_keypair(tmpdir / "keys", "hub")
        cfg = tmpdir / "cfg.toml"
        node = f"bench-{int(hz)}hz-{os.urandom(2).hex()}"  # not a retained birth of before
        cfg.write_text(
            DAEMON_CONFIG.format(
                state=tmpdir / "state",
                hz=hz,
                keys=tmpdir / "keys",
                port=broker.port,
                fleet=FLEET,
                node=node,
            )
        )
        env = {**os.environ, "EDGE_AGENT_PROFILES_DIR": str(REPO / "firmware_profiles")}
        env.pop("NOTIFY_SOCKET", None)
        if client_nodelay:
            (tmpdir / "sitecustomize.py").write_text(NODELAY_PATCH)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(tmpdir), *filter(None, [env.get("PYTHONPATH")])]
            )
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            key = load_signing_key(pair.private_path)
            with FleetClient(fleet=FLEET, port=broker.port, key=key) as hub:
                hub.connect()
                deadline = time.monotonic() + 60
                while node not in hub.nodes or hub.nodes[node].birth is None:
                    hub.listen(0.1)
                    if time.monotonic() > deadline:
                        raise RuntimeError("the daemon never published its birth")
                hub.command(node, "ping")  # warm up
                times = []
                rng = random.Random(0)
                for _ in range(n):
                    # Arrive at a random phase of the tick, as commands do: sent back to back,
                    # each ping would lock onto the tick and always wait a whole period.
                    time.sleep(rng.uniform(0, 1 / hz))
                    start = time.perf_counter()
                    result = hub.command(node, "ping", timeout_s=10)
                    times.append(time.perf_counter() - start)
                    if result.code.value != "ok":
                        raise RuntimeError(f"ping answered {result}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return times


# ------------------------------------------------------------------------------------ reconnect
def bench_reconnect(broker: MosquittoBroker, rounds: int, down_s: float) -> None:
    """Back-to-back restarts let the back-off grow (it resets only after a connection stayed
    up ``stable_after_s``, 10 s): that is the reconnect-storm protection at work. Isolated
    restarts wait ``stable_after_s`` between rounds, the usual case."""
    cases = {
        "daemon_default_backoff/back_to_back": (Backoff(), 0.0),
        "daemon_default_backoff/isolated": (Backoff(), Backoff().stable_after_s + 0.5),
        "short_backoff/back_to_back": (Backoff(initial_s=0.05, max_s=0.3), 0.0),
    }
    for name, (backoff, settle_s) in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            link, outbox = new_link(broker, Path(tmp), backoff)
            link.start()
            wait_online(link)
            times = []
            for round_ in range(rounds):
                broker.kill()
                lost = time.monotonic()
                while link.online and time.monotonic() - lost < 10:
                    link.pump()
                    time.sleep(0.001)
                time.sleep(down_s)
                broker.start()  # returns once the port accepts connections
                times.append(wait_online(link, timeout=120))
                if round_ == rounds - 1:
                    break  # nothing follows to settle for
                settle = time.monotonic() + settle_s
                while time.monotonic() < settle:
                    link.pump()
                    time.sleep(0.01)
            link.stop(drain_timeout_s=0.2)
            outbox.close()
        emit(
            {
                "bench": "reconnect",
                "case": name,
                "broker_down_s": down_s,
                "rounds": rounds,
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
                "all_s": [round(t, 3) for t in times],
            }
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    parser.add_argument("--smoke", action="store_true", help="the code path at tiny sizes: CI")
    parser.add_argument(
        "--only",
        choices=("outbox", "command_latency", "reconnect"),
        action="append",
        help="run only these benchmarks (repeatable)",
    )
    args = parser.parse_args()
    only = set(args.only or ("outbox", "command_latency", "reconnect"))
    n = 200 if args.smoke else 2000 if args.quick else 10_000
    emit(
        {
            "bench": "machine",
            "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(Path(tmp) / "broker")
        broker.start()
        count = 3 if args.smoke else 50 if args.quick else 200
        rates = (50.0,) if args.smoke else (10.0, 50.0)
        try:
            if "outbox" in only:
                bench_throughput(broker, n)
            if "command_latency" in only:
                bench_command_latency(broker, count, "mosquitto defaults", rates=rates)
            if "reconnect" in only:
                bench_reconnect(broker, 1 if args.smoke else 3 if args.quick else 5, down_s=1.0)
        finally:
            broker.kill()
        if "command_latency" not in only:
            return 0
        # mosquitto leaves Nagle's algorithm on for its clients unless told otherwise.
        fast = MosquittoBroker(Path(tmp) / "nodelay", extra_config="set_tcp_nodelay true\n")
        fast.start()
        try:
            if not args.smoke:  # the same path as the one above, on another broker
                bench_command_latency(fast, count, "set_tcp_nodelay true")
            bench_command_latency(fast, count, "set_tcp_nodelay true", client_nodelay=True,
                                  rates=rates)
        finally:
            fast.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
