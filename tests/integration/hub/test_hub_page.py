"""The hub's /metrics and fleet page, end to end: the real hub service with simulated nodes on a
real mosquitto, a rollout done and one halted by a node's failed health check, scraped over HTTP,
rendered by a real headless Chromium and driven in it (filter, sort, pages)."""

from __future__ import annotations

import json
import os
import re
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

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.fleet.protocol import NodeState
from edge_agent_host.hub.learning.store import LearningStore
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.hub.web.server import WebServer
from edge_agent_host.hub.web.snapshot import FleetSnapshot, condition_of
from edge_agent_host.keys import generate_keypair
from tests.integration.daemon.test_daemon import REPO
from tests.integration.fleet.test_fleet_daemon import FLEET, wait_until
from tests.integration.hub.test_hubd import Hub, sqlite_table
from tests.support.broker import MosquittoBroker, free_port
from tests.support.chromium import FLAGS, Browser, chromium
from tests.unit.fleet.test_deploy import bundle_tar
from tests.unit.host.hub.storage.test_database import heard, telemetry_body

pytestmark = pytest.mark.integration

NODES = 5


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
         "--hub-keys", str(keys), "--bundle-keys", str(keys), "--telemetry", "1",
         "--fail-fraction", "1", "--fail-version", "1.2.0"],
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


def fleet_json(url: str, query: str = "") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(get(f"{url}/api/fleet.json?{query}")[2])
    return data


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def start_rollout(hub: Hub, tar: Path, *args: str) -> str:
    started = subprocess.run(
        [sys.executable, "-m", "edge_agent_host.hub", "rollout", "start", "--config",
         str(hub.config), str(tar), "--group", "grid", "--all", "--soak", "0", "--json", *args],
        capture_output=True, text=True, timeout=120, check=True, env=hub.env(),
    )  # fmt: skip
    rollout_id: str = json.loads(started.stdout)["id"]
    return rollout_id


def rollout_state(url: str, rollout_id: str) -> str | None:
    for r in fleet_json(url)["rollouts"]:
        if r["id"] == rollout_id:
            return str(r["state"])
    return None


def test_metrics_json_and_the_page_in_chromium(served: dict[str, Any]) -> None:
    browser = chromium()
    hub, url = served["hub"], served["url"]
    wait_until(
        lambda: sum(n["online"] and n["telemetry_ts"] is not None
                    for n in fleet_json(url)["nodes"]) == NODES,
        "every simulated node online with telemetry on /api/fleet.json",
        timeout=60,
    )  # fmt: skip
    # A rollout every node takes (its progress shows), then one whose first node fails its
    # health check (the simulator fails version 1.2.0): halted after wave 1, the others untouched.
    good = bundle_tar(served["tmp"], served["ci"], policy_len=1)  # grid10 1.1.0
    # (with a health criterion in dry run: its verdicts show, and a 0 s soak has no sample)
    rollout_id = start_rollout(hub, good, "--criterion", "excess_surprise:max_increase=0.2:dry_run")
    wait_until(
        lambda: rollout_state(url, rollout_id) == "done", "the rollout done on /api/fleet.json",
        timeout=120,
    )  # fmt: skip
    wait_until(
        lambda: all(n["bundles"][0]["bundle"] == "grid10@1.1.0" for n in fleet_json(url)["nodes"]),
        "every node's birth naming the bundle it runs now",
        timeout=60,
    )  # fmt: skip
    bad = bundle_tar(served["tmp"], served["ci"], policy_len=2)  # grid10 1.2.0: fails
    halted_id = start_rollout(hub, bad, "--waves", "1,100%")
    wait_until(
        lambda: rollout_state(url, halted_id) == "halted", "the second rollout halted",
        timeout=120,
    )  # fmt: skip
    # Two learning rounds of a model line, as a round stores them (hub/learning/round.py): one
    # built and published, one the int8 gate refused; the page shows their provenance.
    rounds = HubDatabase(SqliteEngine(hub.state / "hub.sqlite3"))
    rounds.open()
    try:
        store = LearningStore(rounds)
        for state, sha, nodes, outliers, rollout in (
            ("built", "ab" * 32, ["sim-0000", "sim-0001", "sim-0002"], ["sim-0002"], rollout_id),
            ("refused", None, ["sim-0003", "sim-0004"], [], None),
        ):
            made = store.add_round(
                "tmaze", state=state, parent_sha256="cd" * 32, version=f"1.0.0+learn{len(nodes)}",
                bundle_sha256=sha, bundle=None, counts=b"", base=b"", merged=[],
                provenance={"nodes": {n: {} for n in nodes}, "deltas": 2 * len(nodes),
                            "experience": 40 * len(nodes), "outliers": outliers,
                            "capped": nodes[:1]},
            )  # fmt: skip
            if rollout is not None:
                store.set_rollout(made, rollout)
    finally:
        rounds.close()
    wait_until(
        lambda: len(fleet_json(url)["learning_rounds"]) == 2, "the rounds on /api/fleet.json"
    )

    status, kind, body = get(f"{url}/metrics")
    assert status == 200
    assert kind.startswith("text/plain")
    values = samples(body.decode())
    assert values[("edge_agent_hub_nodes", (("state", "online"),))] == NODES
    assert values[("edge_agent_hub_nodes", (("state", "offline"),))] == 0
    assert values[("edge_agent_hub_node_online", (("node", "sim-0000"),))] == 1
    assert values[("edge_agent_hub_node_budget_bytes", (("node", "sim-0000"),))] == 48 * 2**20
    assert 0 < values[("edge_agent_hub_node_tick_p99_seconds", (("node", "sim-0000"),))] < 1
    assert values[("edge_agent_hub_node_outbox_messages", (("node", "sim-0000"),))] >= 0
    assert values[("edge_agent_hub_database_up", ())] == 1
    ok = (("group", "grid"), ("rollout", rollout_id), ("state", "ok"))
    assert values[("edge_agent_hub_rollout_nodes", ok)] == NODES
    assert values[("edge_agent_hub_rollout_state", (("rollout", rollout_id), ("state", "done")))]
    assert values[("edge_agent_hub_rollout_state", (("rollout", halted_id), ("state", "halted")))]
    assert get(f"{url}/nope")[0] == 404
    assert get(f"{url}/healthz")[2] == b"ok\n"

    # The JSON: each node's bundle and deployment, the halted rollout's failed node and reason.
    data = fleet_json(url)
    halted = next(r for r in data["rollouts"] if r["id"] == halted_id)
    assert halted["nodes_failed"] == 1
    assert halted["detail"].startswith("wave 1: 1 failed")
    [failure] = halted["failed_nodes"]
    failed_node = failure["node"]
    assert failure["state"] == "failed"
    assert failure["detail"].endswith("simulated health check failure of grid10@1.2.0")
    by_node = {n["node"]: n for n in data["nodes"]}
    mine = by_node[failed_node]["deployment"]
    assert (mine["rollout"], mine["rollout_state"], mine["state"]) == (
        halted_id,
        "halted",
        "failed",
    )
    assert mine["detail"] == failure["detail"]
    others = sorted(set(by_node) - {failed_node})
    assert {by_node[n]["deployment"]["state"] for n in others} == {"pending"}  # never sent it
    assert data["counts"]["deploy"]["failed"] == 1
    assert data["counts"]["deploy"]["pending"] == NODES - 1
    # ... and on the hub's side: filtered, sorted and paged, the counts still over every node.
    paged = fleet_json(url, "sort=node&order=desc&offset=1&limit=2")
    assert [n["node"] for n in paged["nodes"]] == ["sim-0003", "sim-0002"]
    assert (paged["matched"], paged["counts"]["total"]) == (NODES, NODES)
    failed_only = fleet_json(url, "deploy=failed")
    assert [n["node"] for n in failed_only["nodes"]] == [failed_node]
    assert get(f"{url}/api/fleet.json?health=purple")[:2] == (400, "text/plain")

    # The page, rendered by a real browser with no driver (what a person's first look gets).
    flags = [
        *FLAGS, f"--user-data-dir={served['tmp'] / 'chromium'}", "--virtual-time-budget=5000",
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
    assert f'data-failed-node="{failed_node}"' in html
    assert 'class="dot green"' in html
    assert " MiB / 48.0 MiB" in html
    assert not re.search(r"\d MB\b", html)  # mebibytes say so
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

    # Driven over the DevTools protocol: what a person sees and does on it.
    with Browser(served["tmp"] / "chromium-driven", width=1400, height=900) as page:
        page.open(f"{url}/?size=2")
        page.wait_for(READY, "the first render")
        assert page.evaluate(ROWS) == ["sim-0000", "sim-0001"]
        assert (
            page.evaluate("document.getElementById('range').textContent") == "1\u20132 of 5 nodes"
        )
        # The halted rollout is visibly failed, with the node's reason.
        row = f"document.querySelector('#rollouts tr[data-rollout=\"{halted_id}\"]')"
        assert page.evaluate(f"{row}.querySelector('.badge').textContent") == "failed (halted)"
        assert page.evaluate(f"{row}.className") == "failed"
        reason = page.evaluate(f"{row}.querySelector('[data-failed-node]').textContent")
        assert reason == f"{failed_node}: {failure['detail']}"
        done = f"document.querySelector('#rollouts tr[data-rollout=\"{rollout_id}\"]')"
        assert page.evaluate(f"{done}.querySelector('.badge').textContent") == "done"
        # The learning rounds, newest first: version, nodes, deltas, experience, refused,
        # capped, and the rollout that published the built one.
        learning = page.evaluate(
            "[...document.querySelectorAll('#learning tbody tr')]"
            ".map((r) => [...r.cells].map((c) => c.textContent))"
        )
        assert learning == [
            ["2", "tmaze@1.0.0+learn2", "refused by the int8 gate", "2", "4", "80", "0", "1", "-"],
            ["1", f"tmaze@1.0.0+learn3 {'ab' * 6}", "built", "3", "6", "120", "1", "1",
             rollout_id],
        ]  # fmt: skip
        # Per node: its bundle, its deployment (here pending: the rollout halted before it).
        assert others[0] in ("sim-0000", "sim-0001")  # on the first page
        first = f"document.querySelector('#nodes tbody tr[data-node=\"{others[0]}\"]')"
        cells = page.evaluate(f"[...{first}.cells].map((c) => c.textContent)")
        assert cells[HEADERS.index("bundle")].startswith("grid: grid10@1.1.0 ")
        assert cells[HEADERS.index("deployment")] == f"pending wave 2{halted_id}, halted"
        assert re.fullmatch(
            r"\d+\.\d MiB / 48\.0 MiB", cells[HEADERS.index("RSS / budget")].strip()
        )
        assert page.evaluate("[...document.querySelectorAll('#nodes th')].map(h => h.textContent)"
                             ) == HEADERS  # fmt: skip
        # Model health: per node and group its key measure, per group the fleet's with a plot
        # (a point per snapshot: wait for a second one), and the rollout's gate verdicts.
        health = cells[HEADERS.index("model health")]
        assert re.fullmatch(r"grid: excess_surprise -?\d\.\d+(e-?\d+)?", health), health
        group_row = "document.querySelector('#groups tr[data-group=\"grid\"]')"
        page.wait_for(
            f"{group_row}.querySelectorAll('polyline').length === 1", "the group's health plot"
        )
        group_cells = page.evaluate(f"[...{group_row}.cells].map((c) => c.textContent)")
        assert group_cells[:2] == ["grid", "excess_surprise"]
        assert abs(float(group_cells[2])) < 0.2  # a model that fits: around 0
        assert group_cells[4] == str(NODES)
        assert group_cells[6] == "grid10@1.1.0"
        points = page.evaluate(f"{group_row}.querySelector('polyline').getAttribute('points')")
        assert len(points.split()) >= 2
        outcomes = page.evaluate(
            f"[...{done}.querySelectorAll('.verdict')].map(v => v.dataset.outcome)"
        )
        assert outcomes, "no verdict on the page"
        assert set(outcomes) == {"inconclusive"}, outcomes
        # Paging: next, next (the last, short page), then no further.
        for expected in (["sim-0002", "sim-0003"], ["sim-0004"]):
            act(page, "document.getElementById('next').click()")
            assert page.evaluate(ROWS) == expected
        assert page.evaluate("document.getElementById('next').disabled") is True
        assert page.evaluate("location.search") == "?page=3&size=2"
        # Sorting (back to page 1): by CPU temperature, as the hub sorts it; by node, twice.
        act(page, "document.querySelector('th button[data-sort=\"cpu\"]').click()")
        by_cpu = fleet_json(url, "sort=cpu&limit=2")["nodes"]
        assert page.evaluate(ROWS) == [n["node"] for n in by_cpu]
        act(page, "document.querySelector('th button[data-sort=\"node\"]').click()")
        assert page.evaluate(ROWS) == ["sim-0000", "sim-0001"]
        act(page, "document.querySelector('th button[data-sort=\"node\"]').click()")
        assert page.evaluate(ROWS) == ["sim-0004", "sim-0003"]
        assert (
            page.evaluate(
                "document.querySelector('th button[data-sort=\"node\"]').getAttribute('aria-sort')"
            )
            == "descending"
        )
        # Filtering: the deployment's chip, then text in the search box.
        act(page, "[...document.querySelectorAll('#deploy-counts .chip')]"
                  ".find((c) => c.textContent === '1 failed').click()")  # fmt: skip
        assert page.evaluate(ROWS) == [failed_node]
        assert "simulated health check failure" in page.evaluate(
            f"document.querySelector('#nodes tr[data-node=\"{failed_node}\"] .reason').textContent"
        )
        set_control(page, "deploy", "", "change")
        assert len(page.evaluate(ROWS)) == 2
        set_control(page, "q", "SIM-0002", "input")
        assert page.evaluate(ROWS) == ["sim-0002"]
        assert page.evaluate("document.getElementById('range').textContent") == (
            "1\u20131 of 1 matching (5 nodes)"
        )
        # The view is in the URL: opening it again shows the same rows.
        search = page.evaluate("location.search")
        page.open(f"{url}/{search}")
        page.wait_for(READY, "the page opened from the view's URL")
        assert page.evaluate(ROWS) == ["sim-0002"]
        page.screenshot(served["tmp"] / "fleet-page-driven.png")
    assert png_size(served["tmp"] / "fleet-page-driven.png") == (1400, 900)
    if keep:
        shutil.copy(served["tmp"] / "fleet-page-driven.png", Path(keep))


READY = "document.body.dataset.ready === '1'"
ROWS = "[...document.querySelectorAll('#nodes tbody tr')].map((r) => r.dataset.node)"
HEADERS = ["health", "node", "deployment", "bundle", "last seen", "RSS / budget", "tick p50",
           "tick p99", "CPU", "outbox", "version", "model health"]  # fmt: skip


def set_control(page: Browser, control: str, value: str, event: str) -> None:
    """Set a control of the page as a person does (its value, then its event) and wait."""
    act(page, f"{{ const c = document.getElementById({control!r}); c.value = {value!r}; "
              f"c.dispatchEvent(new Event({event!r})); }}")  # fmt: skip


def act(page: Browser, script: str) -> None:
    """Do ``script`` on the page and wait for the render that follows (an answer to an older
    view never renders: the page drops it)."""
    page.evaluate(f"document.body.dataset.ready = '0'; {script}")
    page.wait_for(READY, f"the page's render after: {script}")


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
    assert time.monotonic() - t0 < 120  # a hang guard only: 50 answers take well under 1 s


def test_a_silent_node_on_the_page_in_the_json_and_the_metrics(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A node whose retained state says online but that has not been heard for longer than
    [hub] silent_after_s (a revoked node: the broker keeps its session and refuses its will) is
    silent on the real service's page (in Chromium), in /api/fleet.json and in /metrics, with
    its last numbers no longer exported; one heard within the configured limit is online.

    The registry is written before the service starts, as the service itself writes it, with
    hub-clock times far enough back (an hour; five minutes against a limit of ten) that no
    machine's speed decides which side of the limit a node is on."""
    port = free_port()
    hub = Hub(tmp_path, "hub-silent", mosquitto, sqlite_table(), extra_hub="silent_after_s = 600.0")
    hub.config.write_text(
        hub.config.read_text() + f'\n[http]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\n'
    )
    hub.state.mkdir(parents=True)
    db = HubDatabase(SqliteEngine(hub.state / "hub.sqlite3"))
    db.open()
    now = time.time()
    try:
        for node, ago in (("pi-revoked", 3600.0), ("pi-quiet", 300.0)):
            outcome = db.write(
                [
                    heard(node, NodeState(online=True), ts=now - 7200, received=now - 7200),
                    heard(node, telemetry_body(40), ts=now - ago, received=now - ago),
                ]
            )
            assert outcome.written == 2
    finally:
        db.close()
    hub.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: len(fleet_json(url)["nodes"]) == 2, "both nodes on /api/fleet.json", timeout=60
        )
        data = fleet_json(url)
        by_node = {n["node"]: n for n in data["nodes"]}
        assert by_node["pi-revoked"]["presence"] == "silent"
        assert by_node["pi-revoked"]["online"] is False
        assert by_node["pi-revoked"]["health"] == "red"
        assert by_node["pi-quiet"]["presence"] == "online"  # 300 s < the config's 600 s
        assert (data["counts"]["online"], data["counts"]["silent"]) == (1, 1)
        assert data["hub"]["silent_after_s"] == 600.0
        assert [n["node"] for n in fleet_json(url, "presence=silent")["nodes"]] == ["pi-revoked"]

        # The database's own table (edge-agent-hub fleet): the same rule and the config's limit.
        def states(*args: str) -> dict[str, str]:
            table = hub.cli("fleet", *args)
            assert table.returncode == 0, table.stderr
            return {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()[1:]}

        assert states() == {"pi-quiet": "online", "pi-revoked": "silent"}
        assert states("--silent-after", "100") == {"pi-quiet": "silent", "pi-revoked": "silent"}
        listed = json.loads(hub.cli("fleet", "--json").stdout)
        assert {r["node"]: r["presence"] for r in listed} == {
            "pi-quiet": "online",
            "pi-revoked": "silent",
        }

        values = samples(get(f"{url}/metrics")[2].decode())
        assert values[("edge_agent_hub_nodes", (("state", "silent"),))] == 1
        assert values[("edge_agent_hub_nodes", (("state", "online"),))] == 1
        assert values[("edge_agent_hub_nodes", (("state", "offline"),))] == 0
        assert values[("edge_agent_hub_node_online", (("node", "pi-revoked"),))] == 0
        assert values[("edge_agent_hub_node_rss_bytes", (("node", "pi-quiet"),))] == 50 * 2**20
        assert ("edge_agent_hub_node_rss_bytes", (("node", "pi-revoked"),)) not in values
        assert ("edge_agent_hub_node_tick_p99_seconds", (("node", "pi-revoked"),)) not in values

        with Browser(tmp_path / "chromium", width=1400, height=900) as page:
            page.open(f"{url}/")
            page.wait_for(READY, "the first render")
            assert page.evaluate(ROWS) == ["pi-quiet", "pi-revoked"]
            counts = page.evaluate("document.getElementById('counts').textContent")
            assert counts.startswith("1 of 2 online1 silent"), counts
            row = "document.querySelector('#nodes tr[data-node=\"pi-revoked\"]')"
            assert page.evaluate(f"{row}.dataset.presence") == "silent"
            assert page.evaluate(f"{row}.querySelector('.presence').textContent") == " silent"
            assert page.evaluate(f"{row}.querySelector('.dot').className") == "dot red"
            title = page.evaluate(f"{row}.querySelector('.presence').title")
            assert title.endswith("nothing came from it for 600 s"), title
            quiet = "document.querySelector('#nodes tr[data-node=\"pi-quiet\"]')"
            assert page.evaluate(f"{quiet}.querySelector('.presence')") is None
            act(page, "document.getElementById('silent-chip').click()")
            assert page.evaluate(ROWS) == ["pi-revoked"]
            assert page.evaluate("location.search") == "?presence=silent"
            assert page.evaluate("document.getElementById('presence').value") == "silent"
            set_control(page, "presence", "online", "change")
            assert page.evaluate(ROWS) == ["pi-quiet"]
            page.screenshot(tmp_path / "fleet-page-silent.png")
        assert png_size(tmp_path / "fleet-page-silent.png") == (1400, 900)
    finally:
        hub.kill()


def thousand_nodes(now: float) -> list[dict[str, Any]]:
    """A snapshot's rows for 1,000 nodes (the shape build_snapshot gives): every 100th failed
    in a halted rollout, every 7th offline (red), sim-0008 being deployed to; sim-0042's outbox
    has an uncommitted window."""
    nodes = []
    for i in range(1000):
        failed = i % 100 == 5
        node: dict[str, Any] = {
            "node": f"sim-{i:04d}", "online": i % 7 != 3, "last_seen": now - 1,
            "telemetry_ts": now - 1, "software_version": "1.0+fleetsim", "profile": "fleetsim",
            "groups": ["grid"], "rss_bytes": (30 + i % 8) * 2**20, "budget_bytes": 48 * 2**20,
            "tick_p50_ms": 1.5, "tick_p99_ms": 2.5, "cpu_temp_c": 40.0 + i % 30,
            "outbox_depth": i % 3,
            "bundles": [{"group": "grid", "bundle": "grid10@1.1.0", "bundle_sha256": "ab" * 32}],
            "deployment": {
                "rollout": "r-1", "rollout_state": "halted", "group": "grid",
                "bundle": "grid10 1.2.0", "bundle_sha256": "cd" * 32, "wave": 1,
                "state": "failed" if failed else "ok",
                "detail": f"failed: health: simulated failure on node {i}" if failed else "",
                "updated": now,
            },
        }  # fmt: skip
        node |= {"outbox_uncommitted_rows": 0, "outbox_uncommitted_s": 0.0}
        node["presence"] = "online" if node["online"] else "offline"
        if i == 42:
            node |= {"outbox_uncommitted_rows": 17, "outbox_uncommitted_s": 0.25}
        if i == 8:  # its wave is being sent to it
            node["deployment"] |= {"state": "pending", "detail": "deploying"}
        node["health"] = condition_of(node, now)
        nodes.append(node)
    return nodes


def test_the_page_at_a_thousand_nodes(tmp_path: Path) -> None:
    """1,000 nodes: 50 rows a page, the counts over all of them, a failed node found at once;
    a node's uncommitted outbox window shown beside its outbox."""
    now = time.time()
    server = WebServer("127.0.0.1", 0)
    rollout = {
        "id": "r-1", "group": "grid", "bundle": "grid10 1.2.0", "bundle_sha256": "cd" * 32,
        "state": "halted", "wave": 1, "waves": 2, "detail": "wave 1: 10 failed (1.0 % > 0 %)",
        "nodes_total": 1000, "nodes_done": 990, "nodes_failed": 10,
        "failed_nodes": [{"node": "sim-0005", "state": "failed",
                          "detail": "failed: health: simulated failure on node 5"}],
    }  # fmt: skip
    server.snapshot = FleetSnapshot(
        taken=now,
        hub={"id": "hub-a", "exposure": {"held": 3, "lost_if_killed": 1, "lost_if_power_cut": 2}},
        nodes=thousand_nodes(now),
        rollouts=[rollout],
    )
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        with Browser(tmp_path / "chromium", width=1400, height=900) as page:
            page.open(f"{url}/")
            page.wait_for(READY, "the first render")
            rows = page.evaluate(ROWS)
            assert rows == [f"sim-{i:04d}" for i in range(50)]
            meta = page.evaluate("document.getElementById('meta').textContent")
            assert "3 held (lost if killed 1, if the power fails 2)" in meta
            assert page.evaluate("document.getElementById('range').textContent") == (
                "1\u201350 of 1,000 nodes"
            )
            chips = page.evaluate(
                "[...document.querySelectorAll('.chip')].map((c) => c.textContent.trim())"
            )
            assert {"143 red", "857 green", "10 failed", "1 pending", "989 ok"} <= set(chips)
            badge = "document.querySelector('#nodes tr[data-node=\"sim-0008\"] .badge')"
            assert page.evaluate(f"{badge}.textContent") == "deploying"
            cell = (
                "document.querySelector('#nodes tr[data-node=\"sim-0042\"]')"
                f".cells[{HEADERS.index('outbox')}]"
            )
            assert page.evaluate(f"{cell}.firstChild.textContent") == "0"  # its depth
            assert page.evaluate(f"{cell}.querySelector('.small').textContent") == (
                "17 uncommitted, 0.3 s"
            )
            other = cell.replace("sim-0042", "sim-0041")
            assert page.evaluate(f"{other}.textContent") == "2"  # no window open: its depth only
            set_control(page, "q", "node 905", "input")  # a failure's reason
            assert page.evaluate(ROWS) == ["sim-0905"]
            set_control(page, "q", "", "input")
            set_control(page, "health", "red", "change")
            assert len(page.evaluate(ROWS)) == 50
            assert page.evaluate("document.getElementById('range').textContent") == (
                "1\u201350 of 143 matching (1,000 nodes)"
            )
            act(page, "document.querySelector('th button[data-sort=\"cpu\"]').click()")
            act(page, "document.querySelector('th button[data-sort=\"cpu\"]').click()")
            assert page.evaluate(ROWS)[:2] == ["sim-0059", "sim-0269"]  # 69 °C and red
            # An address with values the page does not know opens the default view.
            page.open(f"{url}/?health=purple&deploy=x&sort=bogus&order=up&page=-3&size=0")
            page.wait_for(READY, "the page opened from a mangled address")
            assert page.evaluate(ROWS) == rows
            page.screenshot(tmp_path / "fleet-page-1000.png")
        assert png_size(tmp_path / "fleet-page-1000.png") == (1400, 900)
    finally:
        server.stop()


def test_team_tasks_on_the_page_in_the_json_and_the_metrics(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Two coordinating nodes' team counters (their telemetry's coord.*, written before the
    service starts, as it writes them): one line on the page in Chromium (red while a slot is
    vacant), the fleet's figures in /api/fleet.json, per-node gauges in /metrics."""
    port = free_port()
    hub = Hub(tmp_path, "hub-teams", mosquitto, sqlite_table())
    hub.config.write_text(
        hub.config.read_text() + f'\n[http]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\n'
    )
    hub.state.mkdir(parents=True)
    db = HubDatabase(SqliteEngine(hub.state / "hub.sqlite3"))
    db.open()
    now = time.time()
    teams = {"coord.teams_open": 50, "coord.teams_formed": 52, "coord.team_slots_vacant": 2,
             "coord.team_repairs": 9, "coord.team_form_s_max": 0.4,
             "coord.team_repair_s_max": 0.7}  # fmt: skip
    try:
        for node, repairs in (("pi-a", 9), ("pi-b", 7)):
            counters = {**teams, "coord.team_repairs": repairs}
            body = msgspec.structs.replace(telemetry_body(40), counters=counters)
            outcome = db.write(
                [
                    heard(node, NodeState(online=True), ts=now - 60, received=now - 60),
                    heard(node, body, ts=now - 1, received=now - 1),
                ]
            )
            assert outcome.written == 2
    finally:
        db.close()
    hub.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: fleet_json(url).get("teams"), "the teams on /api/fleet.json", 60)
        assert fleet_json(url)["teams"] == {
            "nodes": 2, "teams_open": 50.0, "teams_formed": 52.0, "team_slots_vacant": 2.0,
            "team_repairs": 9.0, "team_form_s_max": 0.4, "team_repair_s_max": 0.7,
        }  # fmt: skip
        values = samples(get(f"{url}/metrics")[2].decode())
        assert values[("edge_agent_hub_node_team_repairs", (("node", "pi-b"),))] == 7
        assert values[("edge_agent_hub_node_team_slots_vacant", (("node", "pi-a"),))] == 2
        with Browser(tmp_path / "chromium", width=1400, height=900) as page:
            page.open(f"{url}/")
            page.wait_for(READY, "the first render")
            line = page.evaluate("document.getElementById('teams').textContent")
            assert line == (
                "teams: 50 open, 52 formed (in \u2264 0.40 s), 2 slot(s) vacant, 9 repaired "
                "(in \u2264 0.70 s)"
            ), line
            assert page.evaluate("document.getElementById('teams').firstChild.className") == (
                "small err"
            )
    finally:
        hub.kill()
