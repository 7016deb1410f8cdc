"""The hub's fleet page at 1,000 nodes: what one refresh costs the hub, the
network and the browser, a page of 50 against the whole fleet on one page.

Starts a loopback mosquitto, ``--nodes`` simulated nodes (:mod:`edge_agent_host.fleetsim`, at
most 100 per process) and ``edge-agent-hub run`` (SQLite, ``[http]`` on), waits for the registry,
then gives every node a bundle (a rollout of grid10 2.0.0, no soak) and halts a second one that
``--fail-fraction`` of the nodes fail (3.0.0-bad, waves 10 %, 50 %, 100 %, rolled back), so the
page has bundles, deployments in every state and a failed rollout with reasons to show. Then, one
JSON object per line:

1. ``api``: ``/api/fleet.json`` as the page asks for it (50 rows: the first page, a sort, a
   filter, a search, the last page) and as a script does (every node): bytes and the best time of
   ``--repeats`` (wall clock over loopback, the request and the hub building the answer);
2. ``render``: the page in a real headless Chromium driven over the DevTools protocol
   (``tests/support/chromium.py``): for each view, building the table plus the layout
   (``render_ms``) and the whole refresh from the request to the laid-out table (``refresh_ms``),
   median and best of ``--repeats`` refreshes; ``all_rows`` is the whole fleet on one page (what
   the page did before it paged), the baseline the 50-row page is compared with, in the same
   browser.

    python benchmarks/bench_hub_page.py [--nodes 1000] [--quick]

``--smoke``: 20 nodes, 2 repeats, 10 % failing bundle 2, the temporary directory removed: the code
path, for CI (tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_hub_scale import (  # noqa: E402
    Hub,
    emit,
    start_simulators,
    vm_hwm_mb,
    wait_registry,
    wait_rollout,
)

from edge_agent.aif.quant import SCHEME, quantize_model  # noqa: E402
from edge_agent.aif.settings import AifSettings, settings_to_json  # noqa: E402
from edge_agent.bundle.signing import load_private_key  # noqa: E402
from edge_agent.bundle.writer import pack_tar, sign_bundle, write_bundle  # noqa: E402
from edge_agent.sim.registry import builtin_model  # noqa: E402
from edge_agent_host.keys import generate_keypair  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402
from tests.support.chromium import Browser  # noqa: E402

#: The views measured: name -> the page's URL query (the page asks the API for 50 rows of it).
VIEWS = {
    "first_page": "",
    "sorted_by_cpu": "sort=cpu&order=desc",
    "failed_only": "deploy=failed",
    "search": "q=sim-09",
    "last_page": "page=20",
    "all_rows": "size=1000",
}
API = {
    "first_page": "sort=node&order=asc&offset=0&limit=50",
    "sorted_by_cpu": "sort=cpu&order=desc&offset=0&limit=50",
    "failed_only": "deploy=failed&sort=node&order=asc&offset=0&limit=50",
    "search": "q=sim-09&sort=node&order=asc&offset=0&limit=50",
    "last_page": "sort=node&order=asc&offset=950&limit=50",
    "every_node": "",
}


def grid10_bundle(out: Path, key: Path, version: str) -> Path:
    """A signed grid10 bundle (``version``), packed as a tar."""
    q = quantize_model(builtin_model("grid10"))
    write_bundle(
        out,
        name="grid10",
        version=version,
        kind="aif",
        arrays={f"aif/{k}.npy": v for k, v in q.to_arrays().items()},
        aif={
            "num_obs": q.num_obs,
            "num_states": q.num_states,
            "num_controls": q.num_controls,
            "quant_scheme": SCHEME,
            "settings": settings_to_json(AifSettings(policy_len=1)),
            "arrays": {k: f"aif/{k}.npy" for k in q.to_arrays()},
        },
    )
    sign_bundle(out, load_private_key(key))
    tar = out.with_suffix(".tar")
    pack_tar(out, tar)
    return tar


def fleet(url: str, query: str = "") -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{url}api/fleet.json?{query}", timeout=60) as answer:
        body = answer.read()
    return time.perf_counter() - t0, body


def wait_deployments(url: str, rollout_id: str, timeout: float) -> dict[str, Any]:
    """Until the hub's snapshot has the rolled-back rollout (status every second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data: dict[str, Any] = json.loads(fleet(url, "limit=1")[1])
        if any(r["id"] == rollout_id and r["state"] == "rolled_back" for r in data["rollouts"]):
            return data
        time.sleep(0.5)
    raise SystemExit(f"the snapshot never showed rollout {rollout_id} rolled back")


def measure_api(url: str, nodes: int, repeats: int) -> None:
    record: dict[str, Any] = {"bench": "api", "nodes": nodes}
    for name, query in API.items():
        times, size, rows = [], 0, 0
        for _ in range(repeats):
            seconds, body = fleet(url, query)
            times.append(seconds)
            size, rows = len(body), len(json.loads(body)["nodes"])
        record[name] = {"bytes": size, "rows": rows, "best_ms": round(min(times) * 1e3, 2)}
    record["every_node_over_first_page_bytes"] = round(
        record["every_node"]["bytes"] / record["first_page"]["bytes"], 1
    )
    emit(record)


def measure_render(url: str, profile: Path, nodes: int, repeats: int) -> None:
    record: dict[str, Any] = {"bench": "render", "nodes": nodes}
    with Browser(profile, width=1400, height=1000) as page:
        version = page.send("Browser.getVersion")["product"]
        for name, query in VIEWS.items():
            page.open(f"{url}?{query}")
            page.wait_for("document.body.dataset.ready === '1'", f"{name}: the first render")
            render, refresh = [], []
            for _ in range(repeats):  # the page's own refresh, as its 5 s timer runs it
                page.evaluate("document.body.dataset.ready = '0'; refresh()")
                page.wait_for("document.body.dataset.ready === '1'", f"{name}: a refresh")
                render.append(float(page.evaluate("document.body.dataset.renderMs")))
                refresh.append(float(page.evaluate("document.body.dataset.refreshMs")))
            record[name] = {
                "rows": page.evaluate("document.querySelectorAll('#nodes tbody tr').length"),
                "bytes": int(page.evaluate("document.body.dataset.bytes")),
                "render_ms_median": round(statistics.median(render), 1),
                "render_ms_best": round(min(render), 1),
                "refresh_ms_median": round(statistics.median(refresh), 1),
                "refresh_ms_best": round(min(refresh), 1),
            }
            if name == "first_page":
                page.screenshot(profile.parent / "fleet-page-1000.png")
    record["browser"] = version
    record["all_rows_over_first_page_render"] = round(
        record["all_rows"]["render_ms_median"] / record["first_page"]["render_ms_median"], 1
    )
    emit(record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="simulated nodes")
    parser.add_argument("--fail-fraction", type=float, default=0.05, help="nodes failing bundle 2")
    parser.add_argument("--repeats", type=int, default=20, help="measurements per view")
    parser.add_argument("--quick", action="store_true", help="100 nodes, 5 repeats")
    parser.add_argument("--keep", type=Path, help="copy the screenshot of the page here")
    parser.add_argument("--smoke", action="store_true", help="20 nodes, 2 repeats: for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.repeats = 100, 5
    if args.smoke:
        args.nodes, args.repeats, args.fail_fraction = 20, 2, 0.1
    procs = -(-args.nodes // 100)
    root = Path(tempfile.mkdtemp(prefix="bench-hub-page-"))
    keys = root / "keys"
    hub_key = generate_keypair(keys, "hub").private_path
    ci = generate_keypair(keys, "ci").private_path
    good = grid10_bundle(root / "good", ci, "2.0.0")
    bad = grid10_bundle(root / "bad", ci, "3.0.0-bad")
    emit(
        {
            "bench": "setup",
            "nodes": args.nodes,
            "procs": procs,
            "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
    )
    broker = MosquittoBroker(root / "broker")
    broker.start()
    sims = start_simulators(
        root, broker.port, keys, args.nodes, procs=procs, fail_fraction=args.fail_fraction
    )
    hub = Hub(root, broker.port, hub_key, "hub-page")
    try:
        wait_registry(hub, args.nodes, 600)
        first = hub.rollout("start", str(good), "--group", "grid", "--all", "--soak", "0",
                            "--rate", "64", "--watch-ticks", "5", "--json")  # fmt: skip
        wait_rollout(hub, first["id"], 1800)
        second = hub.rollout("start", str(bad), "--group", "grid", "--all", "--soak", "0",
                             "--waves", "10%,50%,100%", "--rate", "64", "--watch-ticks", "5",
                             "--rollback-bundle", str(good), "--json")  # fmt: skip
        end = wait_rollout(hub, second["id"], 1800)
        url = hub.url()
        counts = wait_deployments(url, second["id"], 60)["counts"]
        emit(
            {
                "bench": "fleet",
                "nodes": args.nodes,
                "halted": {"state": end["state"], "detail": end["detail"]},
                "counts": counts,
            }
        )
        measure_api(url, args.nodes, args.repeats)
        measure_render(url, root / "chromium", args.nodes, args.repeats)
        emit({"bench": "hub", "hub_rss_peak_mb": vm_hwm_mb(hub.proc.pid)})
        if args.keep:
            (args.keep / "fleet-page-1000.png").write_bytes(
                (root / "fleet-page-1000.png").read_bytes()
            )
    finally:
        hub.proc.send_signal(signal.SIGTERM)
        for sim in sims:
            sim.send_signal(signal.SIGTERM)
        for proc in [hub.proc, *sims]:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        if args.smoke:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
