"""The converter as a real process, and its int8 bundles running 1,000 agents in real sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.core.budget import MemoryBudget, MiB
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import available_backends
from edge_agent.sim.sensors import SensorWorld
from edge_agent.sim.tmaze import tmaze_model
from edge_agent_host.converter.builders import mlp_onnx, sensor_policy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
T, F, N = 16, 8, 1000


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    missing = [name for name, ok in available_backends().items() if not ok]
    if missing:
        pytest.fail(
            f"backends {missing} are not installed: pip install 'edge-agent-runtime[onnx]' "
            "'edge-agent-runtime[tflite]'"
        )


def host(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent_host.cli", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )


def test_convert_sign_verify_and_run_a_thousand_int8_agents(tmp_path: Path) -> None:
    world = SensorWorld(1)
    layers = sensor_policy(world.prototypes, world.noise, T, hidden=64)
    float_model = mlp_onnx(layers, T, F)
    onnx.save(float_model, tmp_path / "policy.onnx")
    X, _ = world.sample_windows(512, T, seed=1)
    np.savez(tmp_path / "calibration.npz", window=X)
    Xh, yh = world.sample_windows(1000, T, seed=2)
    np.savez(tmp_path / "heldout.npz", window=Xh, labels=yh)

    keygen = host("keygen", "--out", str(tmp_path / "keys"), "--name", "release")
    assert keygen.returncode == 0, keygen.stderr
    out = tmp_path / "policy.tar"
    convert = host("convert", "onnx", str(tmp_path / "policy.onnx"), "--out", str(out),
                   "--calibration", str(tmp_path / "calibration.npz"),
                   "--heldout", str(tmp_path / "heldout.npz"),
                   "--sign", str(tmp_path / "keys" / "release.key"), "--signer", "ci", "--json")
    assert convert.returncode == 0, convert.stderr
    report = json.loads(convert.stdout)
    assert report["accuracy"]["top1_agreement"] >= 0.99
    verify = host("verify", str(out), "--trusted", str(tmp_path / "keys"))
    assert verify.returncode == 0
    assert verify.stdout.startswith("OK:")
    assert f"signed by key {report['bundle']['key_id']}" in verify.stdout

    bundle = load_bundle(out, trusted_keys=TrustedKeys.from_dir(tmp_path / "keys"))
    budget = MemoryBudget(64 * MiB, profile_name="test")
    int8_group = NeuralAgentGroup.from_bundle(bundle, N, threads=2, budget=budget)
    spec = bundle.manifest.neural
    assert spec is not None
    float_group = NeuralAgentGroup(spec, float_model.SerializeToString(), N)
    worlds = SensorWorld(N, seed=3)
    obs = worlds.reset()
    agree, rewards = [], []
    for tick in range(40):
        actions = int8_group.step(obs)
        agree.append(np.mean(actions == float_group.step(obs)))
        obs = worlds.step(actions)
        if tick >= T:
            rewards.append(float(worlds.reward.mean()))
    assert np.mean(agree[T:]) >= 0.99  # int8 agents act like the float ones
    assert np.mean(rewards) > 0.93
    # The agents, the range check's scratch (the bundle records its calibrated range) and the
    # health measures' buffers.
    assert int8_group.range_watch.calibrated
    assert budget.by_kind()["agents"] == int8_group.bytes_for(N) == (
        N * int8_group.per_agent_nbytes() + int8_group.session.slide_nbytes(N)
        + int8_group.range_watch.scratch_nbytes(N)
        + int8_group.health.nbytes_for(int8_group.num_actions)
    )


def test_aif_conversion_as_a_process(tmp_path: Path) -> None:
    model = tmaze_model()
    path = tmp_path / "tmaze.json"
    path.write_text(json.dumps({
        "A": [a.tolist() for a in model.A], "B": [b.tolist() for b in model.B],
        "C": [c.tolist() for c in model.C], "D": [d.tolist() for d in model.D],
    }))
    ok = host("convert", "aif", str(path), "--out", str(tmp_path / "tmaze.tar"),
              "--policy-len", "2", "--rollouts", "100", "--steps", "9")
    assert ok.returncode == 0, ok.stderr
    assert "action agreement" in ok.stdout
    assert "100.00 %" in ok.stdout
    refused = host("convert", "aif", str(path), "--out", str(tmp_path / "refused"),
                   "--min-action-agreement", "1", "--max-kl", "-1", "--rollouts", "20",
                   "--steps", "3")
    assert refused.returncode == 1
    assert "belief KL mean" in refused.stdout
    assert "FAILED" in refused.stdout
    assert not (tmp_path / "refused").exists()
    usage = host("convert", "aif", str(path))
    assert usage.returncode == 2
    assert "--out" in usage.stderr
