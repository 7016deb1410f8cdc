"""The hub's /metrics and fleet page, end to end: the real hub service with simulated nodes on a
real mosquitto, a rollout under way, scraped over HTTP and rendered by a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent_host.keys import generate_keypair
from tests.integration.broker import MosquittoBroker, free_port
from tests.integration.test_daemon import REPO
from tests.integration.test_fleet_daemon import FLEET, wait_until
from tests.integration.test_hubd import Hub, sqlite_table
from tests.unit.test_deploy import bundle_tar

pytestmark = pytest.mark.integration

NODES = 5


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "these tests render the fleet page in a real headless Chromium: install it with "
        "'sudo apt-get install chromium' (scripts/test does)"
    )


@pytest.fixture
def served(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[dict[str, Any]]:
    keys = tmp_path / "keys"
    hub_key = generate_keypair(keys, "hub").private_path
    ci = generate_keypair(keys, "ci").private_path
    port = free_port()
    hub = Hub(tmp_path, "hub-web", mosquitto, sqlite_table())
    hub.config.write_text(
        hub.config.read_text()
        + f'\n[rollouts]\nkey_file = "{hub_key}"\npoll_interval_s = 0.2\n'
        + f'\n[http]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\n'
    )
    sim = subprocess.Popen(
        [sys.executable, "-m", "edge_agent_host.fleetsim", "--nodes", str(NODES),
         "--port", str(mosquitto.port), "--fleet", FLEET, "--state-dir", str(tmp_path / "nodes"),
         "--hub-keys", str(keys), "--bundle-keys", str(keys), "--telemetry", "1"],
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools'}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        hub.start()
        yield {"hub": hub, "url": f"http://127.0.0.1:{port}", "ci": ci, "tmp": tmp_path}
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(60)
        except subprocess.TimeoutExpired:
            sim.kill()
        hub.kill()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fleet_json(url: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(get(f"{url}/api/fleet.json")[2])
    return data


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def test_metrics_json_and_the_page_in_chromium(served: dict[str, Any]) -> None:
    browser = chromium()
    hub, url = served["hub"], served["url"]
    wait_until(
        lambda: sum(n["online"] and n["telemetry_ts"] is not None
                    for n in fleet_json(url)["nodes"]) == NODES,
        "every simulated node online with telemetry on /api/fleet.json",
        timeout=60,
    )  # fmt: skip
    # A rollout under way (the nodes take it: its progress shows).
    tar = bundle_tar(served["tmp"], served["ci"], policy_len=1)
    started = subprocess.run(
        [sys.executable, "-m", "edge_agent_host.hubd", "rollout", "start", "--config",
         str(hub.config), str(tar), "--group", "grid", "--all", "--soak", "0", "--json"],
        capture_output=True, text=True, timeout=120, check=True, env=hub.env(),
    )  # fmt: skip
    rollout_id = json.loads(started.stdout)["id"]
    wait_until(
        lambda: any(r["id"] == rollout_id and r["state"] == "done"
                    for r in fleet_json(url)["rollouts"]),
        "the rollout done on /api/fleet.json",
        timeout=120,
    )  # fmt: skip

    status, kind, body = get(f"{url}/metrics")
    assert status == 200
    assert kind.startswith("text/plain")
    values = samples(body.decode())
    assert values[("edge_agent_hub_nodes", (("state", "online"),))] == NODES
    assert values[("edge_agent_hub_nodes", (("state", "offline"),))] == 0
    assert values[("edge_agent_hub_node_online", (("node", "sim-0000"),))] == 1
    assert values[("edge_agent_hub_node_budget_bytes", (("node", "sim-0000"),))] == 48 * 2**20
    assert 0 < values[("edge_agent_hub_node_tick_p99_seconds", (("node", "sim-0000"),))] < 1
    assert values[("edge_agent_hub_node_outbox_depth", (("node", "sim-0000"),))] >= 0
    assert values[("edge_agent_hub_db_up", ())] == 1
    ok = (("group", "grid"), ("rollout", rollout_id), ("state", "ok"))
    assert values[("edge_agent_hub_rollout_nodes", ok)] == NODES
    assert values[("edge_agent_hub_rollout_state", (("rollout", rollout_id), ("state", "done")))]
    assert get(f"{url}/nope")[0] == 404
    assert get(f"{url}/healthz")[2] == b"ok\n"

    # The page, rendered by a real browser: the table has every node, the rollout is listed.
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={served['tmp'] / 'chromium'}", "--virtual-time-budget=5000",
    ]  # fmt: skip
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", f"{url}/"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for i in range(NODES):
        assert f'data-node="sim-{i:04d}"' in html, html[:3000]
    assert f'data-rollout="{rollout_id}"' in html
    assert 'class="dot green"' in html
    shot = served["tmp"] / "fleet-page.png"
    taken = subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1280,800", f"{url}/"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert png_size(shot) == (1280, 800)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    keep = os.environ.get("EDGE_AGENT_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)


def test_the_http_side_serves_from_a_snapshot_bounded_and_read_only(
    served: dict[str, Any],
) -> None:
    url = served["url"]
    request = urllib.request.Request(f"{url}/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 501  # only GET and HEAD
    err.value.close()
    head = urllib.request.Request(f"{url}/api/fleet.json", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as answer:
        assert answer.status == 200
        assert answer.read() == b""
    t0 = time.monotonic()
    for _ in range(50):  # a bounded burst of scrapes: answered from the snapshot
        assert get(f"{url}/metrics")[0] == 200
    assert time.monotonic() - t0 < 120
