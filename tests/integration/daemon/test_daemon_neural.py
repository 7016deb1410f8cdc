"""Neural and perception agents in a real daemon: the host tool converts and signs, the daemon
runs the bundle on its sensor world or on feature vectors over a real mosquitto, a hub deploys a
new bundle over the air, and a broken one is rolled back while the old one runs on."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_agent.aif.agreement import choice_agrees
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.bundle.writer import pack_tar, sign_bundle, write_bundle
from edge_agent.fleet.agent_io import encode_observations
from edge_agent.fleet.protocol import ActionBatch, ResultCode
from edge_agent.neural.backends import get_backend
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.converter.builders import mlp_onnx, random_mlp, sensor_policy
from edge_agent_host.keys import generate_keypair, load_signing_key
from tests.integration.fleet.test_fleet_daemon import (
    Listener,
    Node,
    hub_for,
    status_view,
    wait_until,
)
from tests.support.broker import MosquittoBroker
from tests.support.doc_blocks import doc_block
from tests.support.readme_venv import ReadmeVenv
from tests.unit.neural.test_neural import spec_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
WINDOW, FEATURES, CLASSES = 8, 8, 4


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.close()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A trusted directory with the hub's key (commands) and the CI key (bundles)."""
    trusted = tmp_path / "trusted"
    hub = generate_keypair(trusted, "hub")
    ci = generate_keypair(trusted, "ci")
    return trusted, hub.private_path, ci.private_path


def convert(model: Path, out: Path, key: Path, *extra: str, calibration: str = "sensor") -> Path:
    """``edge-agent-host convert onnx`` as a user runs it; the signed bundle."""
    data = {"sensor": ("sensor_calibration", "sensor_heldout")}
    data["perception"] = ("perception_calibration", "perception_heldout")
    cal, held = data[calibration]
    cmd = [
        sys.executable, "-m", "edge_agent_host.cli", "convert", "onnx", str(model),
        "--calibration", str(EXAMPLES / f"{cal}.npz"), "--heldout", str(EXAMPLES / f"{held}.npz"),
        "--out", str(out), "--sign", str(key), "--quiet", *extra,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def groups_toml(policy: Path, perception: Path) -> str:
    return f"""
[[groups]]
name = "pickers"
model = {{ type = "bundle", path = "{policy}" }}
count = 300
source = {{ type = "sim", world = "sensors" }}
sink = {{ type = "sim" }}

[[groups]]
name = "namers"
model = {{ type = "builtin", name = "sensors" }}
perception = {{ type = "bundle", path = "{perception}", evidence = "soft" }}
count = 300
source = {{ type = "sim", world = "sensors" }}
sink = {{ type = "sim" }}
"""


def group_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in status["groups"] if g["name"] == name)


def test_neural_and_perception_groups_run_reload_and_restore(
    mosquitto: MosquittoBroker, tmp_path: Path, keys: Any, nodes: list[Node]
) -> None:
    trusted, _hub, ci = keys
    policy = convert(EXAMPLES / "sensor_policy.onnx", tmp_path / "policy.tar", ci)
    perception = convert(
        EXAMPLES / "sensor_perception.onnx",
        tmp_path / "perception.tar",
        ci,
        "--output-kind",
        "observation",
        calibration="perception",
    )
    node = Node(
        tmp_path, mosquitto, "pi-n1", keys_dir=trusted, groups=groups_toml(policy, perception)
    )
    nodes.append(node)
    node.start()
    status = node.wait_status(
        lambda s: all(g["steps"] >= 60 for g in s["groups"]), "60 steps of both groups"
    )
    pickers, namers = group_of(status, "pickers"), group_of(status, "namers")
    assert pickers["kind"] == "neural"
    assert pickers["window"] == WINDOW
    assert namers["kind"] == "perception"
    assert namers["perception"].endswith("perception.tar")
    # The sensor world's ideal observer names the class ~97 % of the time from a window, ~81 %
    # from one observation; the policy and the perceiving agents (who integrate over time) both
    # do far better than one observation.
    assert pickers["world"]["reward_rate"] > 0.9, pickers
    assert namers["world"]["reward_rate"] > 0.9, namers
    assert status["counters"]["daemon.agents"] == 600
    # SIGHUP: one more picker; the perceiving group keeps its state (same model and size).
    node.config.write_text(node.config.read_text().replace("count = 300", "count = 301", 1))
    node.signal(signal.SIGHUP)
    status = node.wait_status(lambda s: s["reloads"]["ok"] == 1, "the reload")
    assert group_of(status, "pickers")["agents"] == 301
    assert group_of(status, "namers")["agents"] == 300
    assert node.stop() == 0
    node.start()  # a restart restores both groups from the final snapshot
    status = node.wait_status(lambda s: s["tick"]["ticks"] >= 3, "ticks after the restart")
    assert status["snapshots"]["restored_from"] is not None
    assert "restored pickers (301 agents), namers (300 agents)" in node.log()
    assert node.stop() == 0


def nan_beyond(threshold: float, layers: list[tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    """The MLP's logits plus ``log(threshold - max(window))``: the same actions on ordinary
    inputs, NaN as soon as any feature exceeds ``threshold`` (a bundle that passes its health
    check on random inputs and fails on the field's)."""
    base = mlp_onnx(layers, WINDOW, FEATURES)
    graph = base.graph
    out = graph.output[0].name
    graph.output[0].name = "logits_ok"
    for node in graph.node:
        node.output[:] = ["logits_ok" if o == out else o for o in node.output]
    inp = graph.input[0].name
    graph.initializer.append(numpy_helper.from_array(np.array(threshold, np.float32), "limit"))
    graph.node.extend(
        [
            helper.make_node("ReduceMax", [inp], ["peak"], axes=[1, 2], keepdims=0),
            helper.make_node("Unsqueeze", ["peak", "one_axis"], ["peak2"]),
            helper.make_node("Sub", ["limit", "peak2"], ["room"]),
            helper.make_node("Log", ["room"], ["bomb"]),
            helper.make_node("Add", ["logits_ok", "bomb"], [out]),
        ]
    )
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "one_axis"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", CLASSES]))
    onnx.checker.check_model(base)
    return base


def signed_float_bundle(model: onnx.ModelProto, path: Path, key: Path, version: str) -> Path:
    folder = path.with_suffix("")
    files = {"model.onnx": model.SerializeToString()}
    spec = spec_for(model, WINDOW)
    write_bundle(
        folder, name="sensor_policy", version=version, kind="neural", files=files, neural=spec
    )
    pack_tar(folder, path)
    sign_bundle(path, load_signing_key(key), signer="test")
    return path


def actions_after(sniff: Listener, topic: str, since: int, n_agents: int) -> np.ndarray:
    """The first complete set of the group's actions published at a tick after ``since``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows: dict[int, dict[int, int]] = {}
        for env in sniff.on_topic(topic):
            batch = env.body
            assert isinstance(batch, ActionBatch)
            if batch.tick > since:
                ids, values = batch.arrays()
                got = dict(zip(ids.tolist(), values[:, 0].tolist(), strict=True))
                rows.setdefault(batch.tick, {}).update(got)
        for tick in sorted(rows):
            if len(rows[tick]) == n_agents:
                return np.array([rows[tick][i] for i in range(n_agents)])
        time.sleep(0.05)
    pytest.fail(f"no complete action set on {topic} after tick {since}")


def test_a_hub_deploys_a_converted_policy_that_agrees_with_the_float_model_over_mqtt(
    mosquitto: MosquittoBroker, tmp_path: Path, keys: Any, nodes: list[Node]
) -> None:
    trusted, hub_key, ci = keys
    held = np.load(EXAMPLES / "sensor_heldout.npz")["window"]
    n = len(held)  # one agent per held-out input
    # The device starts on some other policy with the same inputs and actions.
    first = tmp_path / "first.onnx"
    onnx.save(
        mlp_onnx(random_mlp((WINDOW * FEATURES, 16, CLASSES), seed=5), WINDOW, FEATURES), first
    )
    v1 = convert(first, tmp_path / "first.tar", ci, "--name", "sensor_policy", "--version", "0.1.0")
    # What the hub deploys: the trained policy, converted and signed by the host tool.
    trained = EXAMPLES / "sensor_policy.onnx"
    v2 = convert(trained, tmp_path / "policy.tar", ci, "--version", "1.0.0")
    sha2 = load_bundle(v2, trusted_keys=TrustedKeys.from_dir(trusted)).sha256
    groups = f"""
[[groups]]
name = "pickers"
model = {{ type = "bundle", path = "{v1}" }}
count = {n}
source = {{ type = "mqtt", topic = "sensors/pickers" }}
sink = {{ type = "mqtt", topic = "actuators/pickers" }}
"""
    node = Node(tmp_path, mosquitto, "pi-n2", keys_dir=trusted, groups=groups)
    nodes.append(node)
    node.start()
    sniff = Listener(mosquitto, extra=("actuators/#",))
    try:
        # Every agent sees its held-out input's last step, and keeps it (newest wins, stale
        # agents reuse their last row): after WINDOW ticks its window is that input, constant.
        rows = held[:, -1, :].astype(np.float32)
        # Sent again until the group steps on them: the broker keeps nothing for a subscriber
        # that is not there yet, and the node subscribes after its connection comes up.
        seq = 0

        def fed(s: dict[str, Any]) -> bool:
            nonlocal seq
            if s["groups"][0]["steps"] > 2:
                return True
            seq += 1
            batch = encode_observations("cam", "pickers", seq, np.arange(n), rows)
            sniff.publish("sensors/pickers", batch)
            return False

        node.wait_status(fed, "the group stepping on the published rows")
        # Malformed input is counted and dropped: a NaN row, and a batch of the wrong width.
        bad = rows[:2].copy()
        bad[0, 3] = np.nan
        sniff.publish(
            "sensors/pickers", encode_observations("cam", "pickers", seq + 1, [0, 1], bad)
        )
        sniff.publish(
            "sensors/pickers", encode_observations("cam", "pickers", seq + 2, [0], rows[:1, :5])
        )
        status = node.wait_status(
            lambda s: s["groups"][0]["io"]["rows_rejected"] >= 2, "the malformed rows counted"
        )
        io = status["groups"][0]["io"]
        assert io["rows_rejected"] >= 2, io
        assert io["rejected"]["width"] == 1, io
        assert io["rejected"]["value"] == 1, io  # dropped here: the group does not rescan
        with hub_for(mosquitto, load_signing_key(hub_key), "pi-n2") as hub:
            result = hub.deploy(v2, "pickers", ["pi-n2"], chunk_size=4096, watch_ticks=10)["pi-n2"]
            assert result.code is ResultCode.OK, result
            status = node.wait_status(
                lambda s: (
                    s["groups"][0]["bundle_sha256"] == sha2 and s["deploy"]["phase"] == "done"
                ),
                "the switch to the trained policy",
            )
            since = status["groups"][0]["steps"] + WINDOW + 1
            node.wait_status(lambda s: s["groups"][0]["steps"] > since, "a full window on it")
            actions = actions_after(sniff, "actuators/pickers", since, n)
            constant = np.repeat(rows[:, None, :], WINDOW, axis=1)
            session = get_backend("onnxruntime").load(trained.read_bytes(), 1)
            session.set_batch(n)
            logits = session.run({session.input_specs[0].name: constant})[
                session.output_specs[0].name
            ]
            agree = choice_agrees(logits, actions, tol=1e-5)
            assert agree.mean() >= 0.99, agree.mean()
            # A broken bundle: healthy on random inputs, NaN on a feature above 6.
            world = SensorWorld(1)
            broken = nan_beyond(6.0, sensor_policy(world.prototypes, world.noise, WINDOW))
            v3 = signed_float_bundle(broken, tmp_path / "broken.tar", ci, "1.0.1")
            outcome: dict[str, Any] = {}
            deploying = threading.Thread(
                target=lambda: outcome.update(
                    hub.deploy(v3, "pickers", ["pi-n2"], chunk_size=4096, watch_ticks=400)
                )
            )
            deploying.start()
            try:
                node.wait_status(
                    lambda s: s["deploy"].get("phase") == "watching", "the broken bundle watched"
                )
                spike = rows.copy()
                spike[:, 0] = 10.0  # what a faulty sensor sends
                payload = encode_observations("cam", "pickers", 9, np.arange(n), spike)
                sniff.publish("sensors/pickers", payload)
                status = node.wait_status(lambda s: s["deploy"]["rolled_back"] == 1, "rollback")
            finally:
                deploying.join(120)
            assert outcome["pi-n2"].code is ResultCode.FAILED, outcome
            assert "rolled back" in outcome["pi-n2"].detail
        assert status["groups"][0]["bundle_sha256"] == sha2  # the trained policy runs on
        assert status["deploy"]["overlay"] == {"pickers": sha2}
        steps = status["groups"][0]["steps"]
        node.wait_status(lambda s: s["groups"][0]["steps"] > steps + 5, "still stepping")
    finally:
        sniff.close()
    assert node.stop() == 0


@pytest.mark.timeout(1800)
def test_the_neural_demo_in_the_docs_runs_as_written(
    tmp_path: Path, readme_venv: ReadmeVenv
) -> None:
    """docs/neural-agents.md "In the daemon": its commands, verbatim, from a copy of the
    checkout's examples and docs/examples, in the venv the page names (the README's, with the
    host extra: :mod:`tests.support.readme_venv`)."""
    text = (REPO / "docs" / "neural-agents.md").read_text()
    section = text.split("## In the daemon", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert code == doc_block("docs/neural-agents.md", 0)
    work = tmp_path / "repo"
    shutil.copytree(REPO / "examples", work / "examples")
    shutil.copytree(REPO / "docs" / "examples", work / "docs" / "examples")
    env = readme_venv.env(TMPDIR=str(tmp_path), EDGE_AGENT_RUNTIME_DIR=str(tmp_path / "run"))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "neural.toml: OK" in out
    rates = {
        group: float(rate)
        for group, rate in re.findall(r"(pickers|namers) .*reward_rate ([0-9.]+)", out)
    }
    assert set(rates) == {"pickers", "namers"}, out[-3000:]
    assert min(rates.values()) > 0.9, rates


def test_a_faulty_sensor_is_counted_shown_and_raises_one_event_per_crossing(
    mosquitto: MosquittoBroker, tmp_path: Path, keys: Any, nodes: list[Node]
) -> None:
    """Observations outside the range the bundle was calibrated on are counted per agent-step
    on every 4th tick (edge_agent.neural.input_range): in the status, its human view, telemetry
    and the Prometheus text file; five agents of 100 sending 100x their values (5 %) raise one
    input_out_of_range event, none more while they stay faulty, and the next only after a
    window back below 0.5 %."""
    trusted, _hub, ci = keys
    policy = convert(EXAMPLES / "sensor_policy.onnx", tmp_path / "policy.tar", ci)
    n = 100
    prom = tmp_path / "edge_agent.prom"
    groups = f"""
[[groups]]
name = "pickers"
model = {{ type = "bundle", path = "{policy}" }}
count = {n}
source = {{ type = "mqtt", topic = "sensors/pickers" }}
sink = {{ type = "mqtt", topic = "actuators/pickers" }}
"""
    node = Node(tmp_path, mosquitto, "pi-n5", keys_dir=trusted, groups=groups)
    node.config.write_text(node.config.read_text().replace(
        'log_level = "info"',
        f'log_level = "info"\nprometheus_textfile = "{prom}"\nprometheus_interval_s = 1',
    ))
    nodes.append(node)
    node.start()
    sniff = Listener(mosquitto)
    held = np.load(EXAMPLES / "sensor_calibration.npz")["window"]
    rows = held[:n, -1, :].astype(np.float32)  # the calibration's own values: in range
    faulty = rows.copy()
    faulty[:5] *= 100.0  # five sensors gone wrong
    seq = [0]

    def send(batch: np.ndarray) -> None:
        seq[0] += 1
        sniff.publish(
            "sensors/pickers", encode_observations("cam", "pickers", seq[0], np.arange(n), batch)
        )

    def until(cond: Any, what: str, batch: np.ndarray) -> dict[str, Any]:
        """Keep sending ``batch`` (the broker keeps nothing for a late subscriber) until the
        status says ``cond``."""

        def check(s: dict[str, Any]) -> bool:
            if cond(s):
                return True
            send(batch)
            return False

        return node.wait_status(check, what)

    def watch(s: dict[str, Any]) -> dict[str, Any]:
        return dict(group_of(s, "pickers")["observation_range"])

    def raised() -> list[Any]:
        return [e for e in sniff.events("pi-n5") if e.data.get("name") == "input_out_of_range"]

    try:
        status = until(lambda s: watch(s)["checked"] >= 300, "300 agent-steps checked", rows)
        assert watch(status)["out_of_range"] == 0
        assert watch(status)["calibrated"] is True
        assert watch(status)["features"] == FEATURES
        status = until(lambda s: watch(s)["alerting"], "the alert", faulty)
        shown = watch(status)
        # A window's 1 % of 100 agents x its 25 ticks checked at least (the fault began in it).
        assert shown["out_of_range"] >= 25
        assert status["counters"]["input_range.out_of_range"] == shown["out_of_range"]
        wait_until(lambda: len(raised()) == 1, "the event over MQTT")
        (event,) = raised()
        assert event.kind.value == "alarm"
        assert event.severity.value == "warning"
        assert event.group == "pickers"
        assert event.data["agents"] == [0, 1, 2, 3, 4]
        assert 0.01 <= event.data["share"] <= 0.05  # five of 100, from some tick of the window
        assert event.detail.startswith("group pickers: ")
        # The status's events: the daemon records the group's alert between two ticks.
        status = until(
            lambda s: any(e["kind"] == "input_out_of_range" for e in s["events"]),
            "the event in the status", faulty,
        )
        view = status_view(node.state)
        assert re.search(
            r"observations out of calibrated range \(\+25 %\): \d+ of \d+ agent-steps, [\d.]+ % in "
            r"the last "
            r"100 ticks ALERT \(from 1 % until below 0\.5 %\)", view
        ), view
        # Two more windows of the same fault: the alert stands, no second event.
        ticks = status["tick"]["ticks"]
        until(lambda s: s["tick"]["ticks"] >= ticks + 200, "two more windows", faulty)
        assert len(raised()) == 1
        wait_until(
            lambda: prom.exists()
            and 'edge_agent_group_obs_range_alert{node="pi-n5",group="pickers"} 1'
            in prom.read_text(),
            "the alert in the Prometheus text file",
        )
        text = prom.read_text()
        assert "# TYPE edge_agent_input_range_out_of_range_total counter" in text
        assert "# TYPE edge_agent_group_obs_out_of_range_total counter" in text
        assert "# TYPE edge_agent_group_obs_out_of_range_share gauge" in text
        # The sensors fixed: a window below 0.5 % clears it; faulty again, the next event.
        until(lambda s: not watch(s)["alerting"], "the alert cleared", rows)
        assert len(raised()) == 1
        until(lambda s: watch(s)["alerting"], "the alert again", faulty)
        wait_until(lambda: len(raised()) == 2, "the second event over MQTT")
        telemetry = sniff.telemetry("pi-n5")[-1]
        assert telemetry.counters["input_range.groups"] == 1
        assert telemetry.counters["input_range.out_of_range"] > shown["out_of_range"]
    finally:
        sniff.close()
    assert node.stop() == 0
