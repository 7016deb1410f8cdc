"""``edge-agent-host`` keygen, sign, verify and inspect, in-process and as a real process."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.manifest import AifSpec
from edge_agent.bundle.signing import TrustedKeys, key_id, load_public_key
from edge_agent.bundle.writer import pack_tar, write_bundle
from edge_agent_host.cli import COMMANDS, build_parser, main


def make_bundle(out: Path) -> Path:
    write_bundle(
        out,
        name="cli-demo",
        version="2.1.0",
        kind="aif",
        arrays={"A.npy": np.eye(3, dtype=np.uint8), "B.npy": np.ones((3, 3, 2), dtype=np.uint8)},
        aif=AifSpec(
            num_obs=[3],
            num_states=[3],
            num_controls=[2],
            quant_scheme="logu8-v1",
            arrays={"A": "A.npy", "B": "B.npy"},
        ),
    )
    return out


def keygen(capsys: pytest.CaptureFixture[str], out: Path, name: str) -> str:
    assert main(["keygen", "--out", str(out), "--name", name]) == 0
    printed = capsys.readouterr().out
    return printed.split("key id:")[1].split()[0]


def test_commands_are_registered_with_parsers() -> None:
    assert {"keygen", "sign", "verify", "inspect"} <= set(COMMANDS)
    parser = build_parser()
    args = parser.parse_args(["inspect", "some.tar", "--json"])
    assert args.command == "inspect"
    assert args.json is True


def test_keygen_writes_a_private_key_only_the_owner_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed_id = keygen(capsys, tmp_path / "keys", "release")
    private = tmp_path / "keys" / "release.key"
    public = tmp_path / "keys" / "release.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert printed_id == key_id(load_public_key(public))
    assert TrustedKeys.from_dir(tmp_path / "keys").key_ids == {printed_id}


def test_keygen_says_where_the_public_key_goes_by_the_key_s_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config keys docs/fleet.md names: a bundle signer's and a hub's go to different
    directories (a leaked CI key cannot command devices)."""
    assert main(["keygen", "--out", str(tmp_path), "--name", "hub"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == (
        f"public key:  {tmp_path / 'hub.pub'}  (copy it to every device: into [daemon] "
        "trusted_keys_dir if it signs bundles (a CI's, a hub's [learning] key_file), [mqtt] "
        "hub_keys_dir if it signs hub commands (a hub's [rollouts] key_file))"
    )
    fleet = (Path(__file__).resolve().parents[3] / "docs" / "fleet.md").read_text()
    assert "[daemon]\ntrusted_keys_dir" in fleet.replace('state_dir = "/var/lib/edge-agent"\n', "")
    assert "hub_keys_dir" in fleet


def test_keygen_refuses_to_overwrite_and_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keygen(capsys, tmp_path, "k")
    before = (tmp_path / "k.key").read_bytes()
    assert main(["keygen", "--out", str(tmp_path), "--name", "k"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "k.key").read_bytes() == before
    with pytest.raises(SystemExit) as excinfo:
        main(["keygen", "--out", str(tmp_path), "--name", "../escape"])
    assert excinfo.value.code == 2


def test_sign_verify_inspect_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kid = keygen(capsys, tmp_path / "keys", "ci")
    bundle = make_bundle(tmp_path / "bundle")

    assert (
        main(["sign", str(bundle), "--key", str(tmp_path / "keys" / "ci.key"), "--signer", "ci"])
        == 0
    )
    assert f"with key {kid}" in capsys.readouterr().out

    assert main(["verify", str(bundle), "--trusted", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    sha256 = load_bundle(bundle, trusted_keys=None, require_signature=False).sha256
    assert out.startswith("OK: ")
    assert f"signed by key {kid}" in out
    assert sha256 in out

    assert main(["inspect", str(bundle), "--trusted", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    assert "cli-demo 2.1.0" in out
    assert f"key {kid} (signer: ci): verified" in out
    assert "A.npy" in out
    assert "uint8[3, 3, 2]" in out
    assert "num_obs=[3]" in out

    assert main(["inspect", str(bundle)]) == 0
    assert "not-checked (pass --trusted DIR to verify)" in capsys.readouterr().out

    assert main(["inspect", str(bundle), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sha256"] == sha256
    assert report["signature"] == {
        "status": "not-checked",
        "detail": "pass --trusted DIR to verify",
        "key_id": kid,
        "signer": "ci",
    }
    assert report["manifest"]["files"]["B.npy"]["shape"] == [3, 3, 2]
    assert report["nbytes"] == sum(e["size"] for e in report["manifest"]["files"].values())


def test_verify_fails_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keygen(capsys, tmp_path / "keys", "ci")
    other_id = keygen(capsys, tmp_path / "other", "other")
    bundle = make_bundle(tmp_path / "bundle")

    assert main(["verify", str(bundle), "--trusted", str(tmp_path / "keys")]) == 1
    err = capsys.readouterr().err  # a failed verification is an error line, on stderr
    assert "FAILED" in err
    assert "bundle is unsigned" in err

    assert main(["sign", str(bundle), "--key", str(tmp_path / "other" / "other.key")]) == 0
    capsys.readouterr()
    assert main(["verify", str(bundle), "--trusted", str(tmp_path / "keys")]) == 1
    assert f"bundle signed by untrusted key {other_id}" in capsys.readouterr().err

    assert main(["inspect", str(bundle), "--trusted", str(tmp_path / "keys"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["signature"]["status"] == "failed"
    assert "untrusted key" in report["signature"]["detail"]

    (bundle / "A.npy").write_bytes(b"\x93NUMPY" + b"\x00" * ((bundle / "A.npy").stat().st_size - 6))
    assert main(["verify", str(bundle), "--trusted", str(tmp_path / "other")]) == 1
    assert "A.npy: sha256 mismatch" in capsys.readouterr().err
    assert main(["inspect", str(bundle)]) == 1
    assert "error: " in capsys.readouterr().err


def test_inspect_unsigned_tar_and_missing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    tar_path = tmp_path / "bundle.tar"
    pack_tar(bundle, tar_path)
    assert main(["inspect", str(tar_path)]) == 0
    assert "signature  unsigned: unsigned" in capsys.readouterr().out
    assert main(["sign", str(tar_path), "--key", str(tmp_path / "nope.key")]) == 1
    assert "cannot read key file" in capsys.readouterr().err


def test_no_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as excinfo:
        main([])
    assert excinfo.value.code == 2


def test_runs_as_a_real_process(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "edge_agent_host.cli"]
    keys = tmp_path / "keys"
    subprocess.run([*command, "keygen", "--out", str(keys)], check=True, capture_output=True)
    bundle = make_bundle(tmp_path / "bundle")
    tar_path = tmp_path / "bundle.tar"
    pack_tar(bundle, tar_path)
    signed = subprocess.run(
        [*command, "-v", "sign", str(tar_path), "--key", str(keys / "edge-agent.key")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert signed.returncode == 0, signed.stderr
    assert "INFO edge_agent.bundle.writer: signed" in signed.stderr
    ok = subprocess.run(
        [*command, "verify", str(tar_path), "--trusted", str(keys)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK: ")
    data = bytearray(tar_path.read_bytes())
    data[-1] = 1
    tar_path.write_bytes(bytes(data))
    bad = subprocess.run(
        [*command, "verify", str(tar_path), "--trusted", str(keys)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "unexpected data after the last valid tar member" in bad.stderr
