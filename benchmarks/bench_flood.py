"""Command latency under a forged-command flood: the ratio to an unflooded ping.

``tests/integration/fleet/test_command_flood.py`` checks that a flood of forged commands is refused
before it queues and that a signed ping sent in the middle of it is answered, but not how long
that answer takes. Here, against a real daemon (``python -m edge_agent run``, 1,000 agents at
10 Hz) through a real mosquitto: ``--pings`` signed pings one at a time, first alone, then while a
second client floods the node's command topic with unsigned pings at ``--rate`` a second (QoS 1,
the same forgery as the test). One JSON line with both distributions and their ratios (same
process, same daemon, same broker: the ratio is what to compare across machines and commits)::

    python benchmarks/bench_flood.py [--pings 100] [--rate 1500] [--timeout-s 30]
                                     [--quick | --smoke]

``--smoke``: 5 pings in a flood of 100 forged commands a second: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.

A daemon that cannot screen ``--rate`` forged commands a second (a machine whose cores are busy
with other work) falls behind: the broker queues the flood for it in order, and a signed ping
waits behind the whole backlog, which grows for as long as the flood lasts. A ping not answered
within ``--timeout-s`` is counted ``flooded_unanswered`` and enters the distribution at the
timeout (censored: the percentiles and ratios are then lower bounds, and the line says so); the
flooded series stops at the first one, since every ping after it waits behind a longer backlog.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from bench_fleet import DAEMON_CONFIG, FLEET, emit, percentile  # noqa: E402

from tests.support.broker import MosquittoBroker  # noqa: E402

HZ = 10.0


def flood(port: int, node: str, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Unsigned pings (an unknown key, no signature) on the node's command topic at ``rate``."""
    import paho.mqtt.client as paho
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from msgspec.structs import replace

    from edge_agent.fleet.protocol import Envelope, encode
    from edge_agent.fleet.topics import Topics
    from edge_agent_host.fleetctl import FleetClient

    forger = FleetClient(fleet=FLEET, port=port, key=Ed25519PrivateKey.generate())
    payloads = []
    for _ in range(2000):
        body = replace(forger.make_command(node, "ping"), signature=b"")
        env = Envelope(type=body.TYPE, node="hub", seq=0, bdseq=0, ts=1.0, clock_synced=True,
                       body=body)  # fmt: skip
        payloads.append(encode(env))
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="forger")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = Topics(FLEET).command(node)
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        client.publish(topic, payloads[i % len(payloads)], qos=1)
        i += 1
        sent[0] = i
    client.loop_stop()
    client.disconnect()


def pings(
    hub: object, node: str, n: int, rng: random.Random, timeout_s: float
) -> tuple[list[float], int]:
    """Up to ``n`` signed pings one at a time: their round-trip times, and 1 if the last was not
    answered within ``timeout_s`` (its time is then the timeout, and no ping follows it)."""
    from edge_agent_host.fleet.errors import FleetError

    times = []
    for _ in range(n):
        time.sleep(rng.uniform(0, 1 / HZ))  # a random phase of the tick, as commands arrive
        start = time.perf_counter()
        try:
            result = hub.command(node, "ping", timeout_s=timeout_s)  # type: ignore[attr-defined]
        except FleetError:
            times.append(timeout_s)
            return times, 1
        times.append(time.perf_counter() - start)
        if result.code.value != "ok":
            raise RuntimeError(f"ping answered {result}")
    return times, 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1500.0, help="forged commands a second")
    parser.add_argument(
        "--timeout-s", type=float, default=30.0,
        help="a ping not answered within this is counted unanswered (default 30)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="30 pings")
    parser.add_argument(
        "--smoke", action="store_true", help="5 pings in a flood of 100 a second, for CI"
    )
    args = parser.parse_args()
    n = 5 if args.smoke else 30 if args.quick else args.pings
    if args.smoke:  # the code path: a flood the daemon screens, not a backlog to wait behind
        args.rate = 100.0

    from edge_agent_host.fleetctl import FleetClient
    from edge_agent_host.keys import generate_keypair, load_signing_key

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        broker = MosquittoBroker(tmpdir / "broker")
        broker.start()
        pair = generate_keypair(tmpdir / "keys", "hub")
        node = f"bench-flood-{os.urandom(2).hex()}"
        cfg = tmpdir / "cfg.toml"
        cfg.write_text(
            DAEMON_CONFIG.format(
                state=tmpdir / "state", hz=HZ, keys=tmpdir / "keys", port=broker.port,
                fleet=FLEET, node=node,
            )
        )  # fmt: skip
        env = {**os.environ, "EDGE_AGENT_PROFILES_DIR": str(REPO / "firmware_profiles")}
        env.pop("NOTIFY_SOCKET", None)
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
                rng = random.Random(0)
                quiet, quiet_lost = pings(hub, node, n, rng, args.timeout_s)
                if quiet_lost:
                    raise RuntimeError(
                        f"a ping without a flood was not answered within {args.timeout_s:g} s"
                    )
                stop, sent = threading.Event(), [0]
                flooder = threading.Thread(
                    target=flood, args=(broker.port, node, args.rate, stop, sent), daemon=True
                )
                started = time.monotonic()
                flooder.start()
                while sent[0] < args.rate and flooder.is_alive():  # one second into the flood
                    time.sleep(0.01)
                flooded, unanswered = pings(hub, node, n, rng, args.timeout_s)
                stop.set()
                flooder.join(30)
                flood_s = time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            broker.kill()
    q50, q99 = statistics.median(quiet), percentile(quiet, 99)
    f50, f99 = statistics.median(flooded), percentile(flooded, 99)
    emit(
        {
            "bench": "flood_latency",
            "pings": n,
            "flooded_pings": len(flooded),
            "flooded_unanswered": unanswered,
            "ping_timeout_s": args.timeout_s,
            "censored": bool(unanswered),
            "tick_hz": HZ,
            "agents": 1000,
            "flood_rate_asked": args.rate,
            "flood_rate_sent": round(sent[0] / flood_s, 1),
            "unflooded_p50_ms": round(q50 * 1e3, 2),
            "unflooded_p99_ms": round(q99 * 1e3, 2),
            "flooded_p50_ms": round(f50 * 1e3, 2),
            "flooded_p99_ms": round(f99 * 1e3, 2),
            "flooded_max_ms": round(max(flooded) * 1e3, 2),
            "ratio_p50": round(f50 / q50, 2),
            "ratio_p99": round(f99 / q99, 2),
            "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 2),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
