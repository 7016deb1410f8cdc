"""The daemon runs signed int8 bundles and refuses tampered ones without stopping."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.aif.quant import SCHEME, quantize_model
from edge_agent.aif.settings import AifSettings, settings_to_json
from edge_agent.bundle.signing import load_private_key
from edge_agent.bundle.writer import sign_bundle, write_bundle
from edge_agent.sim.registry import builtin_model
from edge_agent_host.keys import generate_keypair
from tests.integration.daemon.test_daemon import REPO, Daemon, NotifySocket, wait_status

pytestmark = pytest.mark.integration


def make_bundle(out: Path, key: Path | None, *, policy_len: int = 1) -> Path:
    q = quantize_model(builtin_model("grid10"))
    arrays = {f"aif/{name}.npy": arr for name, arr in q.to_arrays().items()}
    write_bundle(
        out,
        name="grid10",
        version="1.0.0",
        kind="aif",
        arrays=arrays,
        aif={
            "num_obs": q.num_obs,
            "num_states": q.num_states,
            "num_controls": q.num_controls,
            "quant_scheme": SCHEME,
            "settings": settings_to_json(AifSettings(policy_len=policy_len)),
            "arrays": {name: f"aif/{name}.npy" for name in q.to_arrays()},
        },
    )
    if key is not None:
        sign_bundle(out, load_private_key(key))
    return out


def config(path: Path, state: Path, bundle: Path, keys: Path) -> None:
    path.write_text(f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
status_file = "{state / "status.json"}"
trusted_keys_dir = "{keys}"
tick_hz = 20

[[groups]]
name = "fleet-grid"
model = {{ type = "bundle", path = "{bundle}" }}
count = 100
source = {{ type = "sim", world = "grid10" }}
sink = {{ type = "sim" }}
""")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    trusted = tmp_path / "trusted"
    pair = generate_keypair(trusted, "fleet")
    return trusted, pair.private_path


def test_signed_bundle_runs_and_tampered_bundle_is_refused_on_reload(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    trusted, private = keys
    good = make_bundle(tmp_path / "good", private)
    state = tmp_path / "state"
    cfg = tmp_path / "cfg.toml"
    config(cfg, state, good, trusted)
    notify = NotifySocket(tmp_path / "n.sock")
    daemon = Daemon(cfg, notify)
    try:
        notify.wait_for("READY=1", 60)
        status = wait_status(state / "status.json", lambda s: s["tick"]["ticks"] >= 3)
        assert status["groups"][0]["model"] == f"bundle {good}"
        assert status["groups"][0]["world"]["goals_reached"] >= 0
        # Tamper with a payload byte of a copy, point the config at it, reload.
        bad = make_bundle(tmp_path / "bad", private, policy_len=2)
        payload = bad / "aif" / "A0.codes.npy"
        data = bytearray(payload.read_bytes())
        data[-1] ^= 0x01
        payload.write_bytes(bytes(data))
        config(cfg, state, bad, trusted)
        daemon.signal(signal.SIGHUP)
        refused = wait_status(state / "status.json", lambda s: s["reloads"]["refused"] == 1)
        assert (
            "sha256" in refused["reloads"]["last_error"]
            or "hash" in refused["reloads"]["last_error"]
        )
        ticks = refused["tick"]["ticks"]
        wait_status(state / "status.json", lambda s: s["tick"]["ticks"] > ticks + 5)
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.kill()
        notify.close()


@pytest.mark.parametrize("problem", ["unsigned", "wrong-key", "tampered"])
def test_bad_bundle_is_refused_at_start(
    tmp_path: Path, keys: tuple[Path, Path], problem: str
) -> None:
    trusted, private = keys
    if problem == "unsigned":
        bundle = make_bundle(tmp_path / "b", None)
        expected = "signature"
    elif problem == "wrong-key":
        other = generate_keypair(tmp_path / "other", "intruder")
        bundle = make_bundle(tmp_path / "b", other.private_path)
        expected = "untrusted"
    else:
        bundle = make_bundle(tmp_path / "b", private)
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["version"] = "9.9.9"
        (bundle / "manifest.json").write_text(
            json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        )
        expected = "signature"
    cfg = tmp_path / "cfg.toml"
    config(cfg, tmp_path / "state", bundle, trusted)
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg), "--duration", "3"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr.lower(), out.stderr
    assert "READY" not in out.stderr


def test_bundle_without_configured_trust_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    _, private = keys
    bundle = make_bundle(tmp_path / "b", private)
    cfg = tmp_path / "cfg.toml"
    config(cfg, tmp_path / "state", bundle, tmp_path / "unused")
    cfg.write_text(
        "\n".join(
            line for line in cfg.read_text().splitlines() if not line.startswith("trusted_keys_dir")
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "check-config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "trusted_keys_dir" in out.stderr
