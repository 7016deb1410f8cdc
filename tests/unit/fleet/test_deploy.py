"""Deployments: transfer, verification, staging, journal recovery, overlay, rollback."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from msgspec.structs import replace

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import SCHEME, quantize_model
from edge_agent.aif.settings import AifSettings, settings_to_json
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys, load_private_key
from edge_agent.bundle.writer import pack_tar, sign_bundle, write_bundle
from edge_agent.config.daemon import BuiltinModel, parse_config, read_config
from edge_agent.daemon import ab_switch
from edge_agent.daemon.group_runtime import io_signature
from edge_agent.daemon.handlers import CommandHandlers
from edge_agent.daemon.service import Daemon
from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.commands import ChunkArgs, DeployArgs, ResizeArgs
from edge_agent.fleet.deploy import DeployManager, Phase, ReadyToSwitch, Report
from edge_agent.fleet.overlay import Overlay
from edge_agent.fleet.protocol import BundleChunk, ResultCode
from edge_agent.sim.registry import builtin_model
from edge_agent.sim.tmaze import tmaze_model
from edge_agent_host.keys import generate_keypair

CHUNK = 2048
NONCE = b"n" * 16


def bundle_tar(
    tmp: Path,
    key: Path,
    *,
    world: str = "grid10",
    policy_len: int = 2,
    model: GenerativeModel | None = None,
) -> Path:
    """A signed bundle of a built-in world's model (or ``model``), packed as a tar
    (``{world}-{policy_len}``)."""
    q = quantize_model(builtin_model(world) if model is None else model)
    out = tmp / f"{world}-{policy_len}"
    write_bundle(
        out,
        name=world,
        version=f"1.{policy_len}.0",
        kind="aif",
        arrays={f"aif/{k}.npy": v for k, v in q.to_arrays().items()},
        aif={
            "num_obs": q.num_obs,
            "num_states": q.num_states,
            "num_controls": q.num_controls,
            "quant_scheme": SCHEME,
            "settings": settings_to_json(AifSettings(policy_len=policy_len)),
            "arrays": {k: f"aif/{k}.npy" for k in q.to_arrays()},
        },
    )
    sign_bundle(out, load_private_key(key))
    tar = tmp / f"{world}-{policy_len}.tar"
    pack_tar(out, tar)
    return tar


def deploy_args(data: bytes, sha256: str, **extra: Any) -> DeployArgs:
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    return DeployArgs(
        group="grid",
        sha256=sha256,
        file_sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        chunk_size=CHUNK,
        chunk_hashes=b"".join(hashlib.sha256(c).digest() for c in chunks),
        **extra,
    )


def chunk(data: bytes, sha256: str, index: int) -> ChunkArgs:
    return ChunkArgs(sha256=sha256, index=index, data=data[index * CHUNK : (index + 1) * CHUNK])


def bundle_sha(tar: Path, keys: TrustedKeys) -> str:
    return load_bundle(tar, trusted_keys=keys, require_signature=True).sha256


@pytest.fixture
def keys(tmp_path: Path) -> tuple[TrustedKeys, Path, Path]:
    pair = generate_keypair(tmp_path / "keys", "ci")
    return TrustedKeys.from_dir(tmp_path / "keys"), pair.private_path, tmp_path / "keys"


def manager(state: Path, trusted: TrustedKeys, health: Any = None) -> DeployManager:
    m = DeployManager(state, bundle_keys=trusted)
    m.recover()
    m.bind(
        health or (lambda group: lambda path, steps, timeout: ("payload", group, path.name)),
        current_sha=lambda _g: None,
        group_exists=lambda g: g == "grid",
    )
    return m


def wait_ready(m: DeployManager, timeout: float = 30.0) -> ReadyToSwitch | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = m.poll()
        if ready is not None or m.journal is None or m.journal.phase is not Phase.VERIFYING:
            return ready
        time.sleep(0.01)
    raise AssertionError("the verification worker did not finish")


def codes(m: DeployManager) -> list[tuple[str | None, str | None]]:
    return [(r.code.value if r.code else None, r.event) for r in m.take_reports()]


def transitions(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The deployment's changes of phase, as logged (``before -> after``)."""
    return [
        r.getMessage().rpartition(": ")[2]
        for r in caplog.records
        if r.name == "edge_agent.fleet.deploy" and " -> " in r.getMessage()
    ]


def test_transfer_verify_stage_switch_and_watch(
    tmp_path: Path, keys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.fleet.deploy")
    trusted, private, _ = keys
    tar = bundle_tar(tmp_path, private)
    data, sha = tar.read_bytes(), bundle_sha(tar, trusted)
    state = tmp_path / "state"
    m = manager(state, trusted)
    args = deploy_args(data, sha, watch_ticks=3)
    started = m.start(args, NONCE)
    assert started.code is ResultCode.ACCEPTED
    assert started.data["have"] == bytes(len(started.data["have"]))
    assert started.data["total"] == args.chunks >= 3
    bad = replace(chunk(data, sha, 1), data=b"x" * CHUNK)
    assert m.chunk(bad).code is ResultCode.BAD_ARGS
    short = replace(chunk(data, sha, 0), data=b"x")
    assert m.chunk(short).code is ResultCode.BAD_ARGS
    assert m.chunk(chunk(data, "0" * 64, 0)).code is ResultCode.BAD_ARGS
    for i in reversed(range(args.chunks)):  # any order
        assert m.chunk(chunk(data, sha, i)).code is ResultCode.OK
    assert m.chunk(chunk(data, sha, 0)).code is ResultCode.OK  # late duplicate: harmless
    assert m.counters["chunks_rejected"] == 3
    ready = wait_ready(m)
    assert ready is not None
    assert ready.payload == ("payload", "grid", f"{sha}.tar")
    staged = state / "bundles" / f"{sha}.tar"
    assert staged.read_bytes() == data
    assert not any((state / "bundles" / "incoming").iterdir())
    m.switched(ready, '{"model": "old"}')
    assert m.watching_group == "grid"
    entry = Overlay(state)
    entry.load()
    assert entry.get("grid") is not None
    assert [m.watch_tick() for _ in range(3)] == [False, False, True]
    assert m.journal is not None
    assert m.journal.phase is Phase.DONE
    reports = m.take_reports()
    final = [r for r in reports if r.code is not None]
    assert [(r.code, r.nonce) for r in final] == [(ResultCode.OK, NONCE)]
    assert transitions(caplog) == [
        "idle -> receiving",
        "receiving -> verifying",
        "verifying -> watching",
        "watching -> done",
    ]
    assert staged.exists()  # the overlay names it


@pytest.mark.parametrize("problem", ["tampered", "wrong-identity", "unhealthy"])
def test_refused_bundles_never_replace_the_group(tmp_path: Path, keys: Any, problem: str) -> None:
    trusted, private, _ = keys
    tar = bundle_tar(tmp_path, private)
    sha = bundle_sha(tar, trusted)
    data = tar.read_bytes()
    health = None
    if problem == "tampered":
        # Flip one byte of a payload file inside the tar: the tar is still a tar.
        with tarfile.open(tar) as t:
            member = next(x for x in t.getmembers() if x.name.endswith(".npy"))
            offset = member.offset_data + member.size - 1
        raw = bytearray(data)
        raw[offset] ^= 0x01
        data = bytes(raw)
    elif problem == "wrong-identity":
        sha = "f" * 64
    else:

        def health(_group: str) -> Any:
            def check(*_a: Any) -> Any:
                raise EdgeAgentError("non-finite beliefs after step 3")

            return check

    state = tmp_path / "state"
    m = manager(state, trusted, health)
    args = deploy_args(data, sha)
    assert m.start(args, NONCE).code is ResultCode.ACCEPTED
    for i in range(args.chunks):
        assert m.chunk(chunk(data, sha, i)).code is ResultCode.OK
    assert wait_ready(m) is None
    assert m.journal is not None
    assert m.journal.phase is Phase.FAILED
    stage = "health" if problem == "unhealthy" else "verify"
    assert m.journal.detail.startswith(stage), m.journal.detail
    assert codes(m)[-1] == ("failed", "deploy")
    assert list((state / "bundles").glob("*.tar")) == []  # nothing staged, or removed again
    assert not any((state / "bundles" / "incoming").iterdir())
    assert Overlay(state).entries == {}


def test_restart_mid_transfer_resumes_from_the_chunks_held(tmp_path: Path, keys: Any) -> None:
    trusted, private, _ = keys
    tar = bundle_tar(tmp_path, private)
    data, sha = tar.read_bytes(), bundle_sha(tar, trusted)
    state = tmp_path / "state"
    m = manager(state, trusted)
    args = deploy_args(data, sha, watch_ticks=1)
    m.start(args, NONCE)
    for i in (0, 2):
        m.chunk(chunk(data, sha, i))
    m.close()  # the daemon dies here
    again = manager(state, trusted)
    assert again.journal is not None
    assert again.journal.phase is Phase.RECEIVING
    # Found again by hashing what the file holds: the chunks written, and any chunk of the tar
    # that is all zeros (end-of-archive blocks), which the preallocated file already holds.
    held = {0, 2} | {i for i in range(args.chunks) if not any(chunk(data, sha, i).data)}
    assert again.stats()["received"] == len(held)
    assert codes(again) == [(None, "deploy")]  # "transfer ... resumes"
    resumed = again.start(args, b"m" * 16)
    assert resumed.code is ResultCode.ACCEPTED
    have = resumed.data["have"]
    assert {i for i in range(args.chunks) if have[i // 8] >> (i % 8) & 1} == held
    for i in range(args.chunks):
        again.chunk(chunk(data, sha, i))
    ready = wait_ready(again)
    assert ready is not None
    assert again.counters["chunks_duplicate"] == len(held)
    again.switched(ready, "{}")
    assert again.watch_tick()
    final = [r for r in again.take_reports() if r.code is not None]
    assert [(r.code, r.nonce) for r in final] == [(ResultCode.OK, b"m" * 16)]


def test_restart_after_an_idle_transfer_discards_it(tmp_path: Path, keys: Any) -> None:
    trusted, private, _ = keys
    tar = bundle_tar(tmp_path, private)
    data, sha = tar.read_bytes(), bundle_sha(tar, trusted)
    state = tmp_path / "state"
    m = manager(state, trusted)
    m.start(deploy_args(data, sha, transfer_timeout_s=60), NONCE)
    m.chunk(chunk(data, sha, 0))
    m.close()
    part = state / "bundles" / "incoming" / f"{sha}.part"
    old = time.time() - 120
    os.utime(part, (old, old))
    again = manager(state, trusted)
    assert again.journal is not None
    assert again.journal.phase is Phase.FAILED
    assert "idle" in again.journal.detail
    assert again.counters["discarded"] == 1
    reports = again.take_reports()
    assert [(r.code, r.nonce) for r in reports] == [(ResultCode.FAILED, NONCE)]
    assert not part.exists()


def test_restart_while_watching_rolls_the_overlay_back(tmp_path: Path, keys: Any) -> None:
    trusted, private, _ = keys
    state = tmp_path / "state"
    shas = []
    for policy_len in (1, 2):  # deploy A and finish; then B, and die while B is watched
        tar = bundle_tar(tmp_path, private, policy_len=policy_len)
        data, sha = tar.read_bytes(), bundle_sha(tar, trusted)
        shas.append(sha)
        m = manager(state, trusted)
        args = deploy_args(data, sha, watch_ticks=1)
        m.start(args, NONCE)
        for i in range(args.chunks):
            m.chunk(chunk(data, sha, i))
        ready = wait_ready(m)
        assert ready is not None
        m.switched(ready, "{}")
        if policy_len == 1:
            assert m.watch_tick()
        m.close()
    overlay = Overlay(state)
    overlay.load()
    assert overlay.entries["grid"].sha256 == shas[1]
    again = manager(state, trusted)
    assert again.journal is not None
    assert again.journal.phase is Phase.ROLLED_BACK
    assert again.overlay.entries["grid"].sha256 == shas[0]
    assert codes(again) == [("failed", "rollback")]
    assert sorted(p.name for p in (state / "bundles").glob("*.tar")) == [f"{shas[0]}.tar"]


def test_one_deployment_at_a_time(tmp_path: Path, keys: Any) -> None:
    trusted, private, _ = keys
    tar = bundle_tar(tmp_path, private)
    data, sha = tar.read_bytes(), bundle_sha(tar, trusted)
    m = manager(tmp_path / "state", trusted)
    assert m.start(deploy_args(data, sha), NONCE).code is ResultCode.ACCEPTED
    other = deploy_args(data + b"\0" * 512, sha)
    assert m.start(other, b"o" * 16).code is ResultCode.BUSY
    assert m.start(replace(deploy_args(data, sha), group="x"), NONCE).code is ResultCode.BAD_ARGS
    no_keys = DeployManager(tmp_path / "other", bundle_keys=None)
    no_keys.recover()
    assert no_keys.start(deploy_args(data, sha), NONCE).code is ResultCode.FAILED


# ---------------------------------------------------------------------- the daemon's side
def daemon(tmp_path: Path, keys_dir: Path, model: str = "grid10", count: int = 16) -> Daemon:
    """An in-process daemon (no MQTT) with one group of 16 agents on a built-in model."""
    config = parse_config(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{tmp_path / "state"}"
trusted_keys_dir = "{keys_dir}"

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "{model}" }}
count = {count}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
""",
        "unit.toml",
    )
    return Daemon.from_config(config, None)


def switch_daemon(d: Daemon, tar: Path, sha: str, watch_ticks: int) -> None:
    data = tar.read_bytes()
    args = deploy_args(data, sha, watch_ticks=watch_ticks)
    assert CommandHandlers(d).deploy(args, _FakeCommand()).code is ResultCode.ACCEPTED  # type: ignore[arg-type]
    for i in range(args.chunks):
        CommandHandlers(d).deploy_chunk(chunk(data, sha, i), _FakeCommand())  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while d.ab_switch.watching is None:
        assert time.monotonic() < deadline, d.ab_switch.stats()
        d._fleet_before_tick()
        time.sleep(0.01)


class _FakeCommand:
    nonce = NONCE


@pytest.mark.parametrize("failure", ["exception", "nan"])
def test_daemon_rolls_back_a_group_that_fails_after_the_switch(
    tmp_path: Path, keys: Any, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.fleet.deploy")
    trusted, private, keys_dir = keys
    tar = bundle_tar(tmp_path, private)
    sha = bundle_sha(tar, trusted)
    d = daemon(tmp_path, keys_dir)
    try:
        old = d.find_group("grid")
        assert old is not None
        used_before = d.budget.used
        switch_daemon(d, tar, sha, watch_ticks=10)
        new = d.find_group("grid")
        assert new is not None
        assert new is not old
        assert new.bundle_sha256 == sha
        assert d.budget.used > used_before  # old and new are both held while watched
        d._tick(time.monotonic())  # one good tick
        if failure == "exception":

            def step(*_a: Any, **_k: Any) -> Any:
                raise FloatingPointError("boom")

            new.agents.step = step  # type: ignore[method-assign]
        else:
            real = new.agents.step

            def step(obs: Any, now: Any = None) -> Any:
                out = real(obs, now)
                new.agents.qs[0][0, :] = np.nan
                return out

            new.agents.step = step  # type: ignore[method-assign]
        d._tick(time.monotonic())
        assert d.find_group("grid") is old
        assert d.ab_switch.watching is None
        assert d.budget.used == used_before
        assert d.ab_switch.state is Phase.ROLLED_BACK
        assert transitions(caplog)[-2:] == ["verifying -> watching", "watching -> rolled_back"]
        assert d.ab_switch.deployed_bundles() == {}
        kinds = [e["kind"] for e in d.events]
        assert "rollback" in kinds
        d._tick(time.monotonic())  # the old group ticks on
    finally:
        d.shutdown()


def start_shadowed(d: Daemon, tar: Path, sha: str, shadow_s: float) -> None:
    """Send the deployment with a shadow of ``shadow_s`` and tick until it is checked."""
    data = tar.read_bytes()
    args = deploy_args(data, sha, watch_ticks=2, shadow_s=shadow_s)
    handlers = CommandHandlers(d)
    assert handlers.deploy(args, _FakeCommand()).code is ResultCode.ACCEPTED  # type: ignore[arg-type]
    for i in range(args.chunks):
        handlers.deploy_chunk(chunk(data, sha, i), _FakeCommand())  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while d.ab_switch.state is Phase.VERIFYING and d.ab_switch.shadowing is None:
        assert time.monotonic() < deadline, d.ab_switch.stats()
        d._fleet_before_tick()
        time.sleep(0.01)


def test_daemon_runs_a_shadow_before_the_switch_and_reports_the_paired_result(
    tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: list[Report] = []
    monkeypatch.setattr(Daemon, "_publish_deploy_reports", lambda _d, r: reports.extend(r))
    trusted, private, keys_dir = keys
    swapped = tmaze_model(reward_probs=(0.02, 0.98))
    tar = bundle_tar(tmp_path, private, world="tmaze", model=swapped)
    sha = bundle_sha(tar, trusted)
    d = daemon(tmp_path, keys_dir, model="tmaze")
    try:
        old = d.find_group("grid")
        assert old is not None
        used_before = d.budget.used
        start_shadowed(d, tar, sha, shadow_s=0.3)
        assert d.ab_switch.shadowing == "grid"
        assert d.budget.used > used_before  # the shadow is admitted like any group
        assert (
            CommandHandlers(d)
            .resize_group(
                ResizeArgs(group="grid", agents=8),
                _FakeCommand(),  # type: ignore[arg-type]
            )
            .code
            is ResultCode.BUSY
        )
        deadline = time.monotonic() + 30
        while d.ab_switch.watching is None:
            assert time.monotonic() < deadline, d.ab_switch.stats()
            assert d.find_group("grid") is old  # not switched while the shadow runs
            d._tick(time.monotonic())
            d._fleet_before_tick()
        assert d.ab_switch.shadowing is None
        for _ in range(2):
            d._tick(time.monotonic())
        assert d.ab_switch.state is Phase.DONE
        (shadow,) = [r for r in reports if r.code is None and "shadow_pairs" in r.data]
        assert shadow.event == "deploy"
        assert shadow.detail.startswith("group 'grid': shadow of tmaze 1.2.0 for 0.3 s: ")
        (final,) = [r for r in reports if r.code is ResultCode.OK]
        assert final.data["phase"] == "done"
        assert {k: final.data[k] for k in shadow.data} == shadow.data  # the result carries it
        ticks, pairs = shadow.data["shadow_ticks"], shadow.data["shadow_pairs"]
        assert ticks >= 1
        assert pairs == -(-ticks // 4)  # every 4th tick is measured
        assert len(shadow.data["shadow_diffs"]) == shadow.data["shadow_windows"] == -(-pairs // 4)
        assert d.budget.used != used_before  # the candidate's shadow agents were released
    finally:
        d.shutdown()


def test_a_shadow_that_does_not_fit_the_budget_fails_the_deployment_in_one_line(
    tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: list[Report] = []
    monkeypatch.setattr(Daemon, "_publish_deploy_reports", lambda _d, r: reports.extend(r))
    trusted, private, keys_dir = keys
    tar = bundle_tar(tmp_path, private, world="tmaze", model=tmaze_model(reward=2.0))
    sha = bundle_sha(tar, trusted)
    d = daemon(tmp_path, keys_dir, model="tmaze", count=4096)
    try:
        old = d.find_group("grid")
        filler = d.budget.reserve("test", "scratch", d.budget.available - 64 * 1024)
        used = d.budget.used
        start_shadowed(d, tar, sha, shadow_s=60.0)
        assert d.ab_switch.state is Phase.FAILED
        assert d.ab_switch.shadowing is None
        assert d.find_group("grid") is old
        assert d.budget.used == used
        (final,) = [r for r in reports if r.code is ResultCode.FAILED]
        assert final.detail.startswith(
            "shadow: group 'grid': the candidate's shadow of 4096 agents does not fit the "
            "memory budget beside the group: "
        )
        assert "\n" not in final.detail
        filler.release()
    finally:
        d.shutdown()


def test_daemon_keeps_a_bundle_that_passes_its_watch_and_after_a_restart(
    tmp_path: Path, keys: Any
) -> None:
    trusted, private, keys_dir = keys
    tar = bundle_tar(tmp_path, private)
    sha = bundle_sha(tar, trusted)
    d = daemon(tmp_path, keys_dir)
    try:
        used_before = d.budget.used
        switch_daemon(d, tar, sha, watch_ticks=3)
        for _ in range(3):
            d._tick(time.monotonic())
        assert d.ab_switch.watching is None
        assert d.ab_switch.state is Phase.DONE
        assert d.budget.used != used_before  # policy_len 2: a different model, old released
        assert d._birth().groups["grid"].bundle_sha256 == sha
    finally:
        d.shutdown()
    again = daemon(tmp_path, keys_dir)  # the config still names the built-in model
    try:
        g = again.find_group("grid")
        assert g is not None
        assert g.bundle_sha256 == sha
        assert again.status()["groups"][0]["bundle_sha256"] == sha
    finally:
        again.shutdown()


def test_a_config_change_supersedes_the_deployment(tmp_path: Path, keys: Any) -> None:
    trusted, private, keys_dir = keys
    tar = bundle_tar(tmp_path, private)
    sha = bundle_sha(tar, trusted)
    d = daemon(tmp_path, keys_dir)
    try:
        switch_daemon(d, tar, sha, watch_ticks=1)
        d._tick(time.monotonic())
    finally:
        d.shutdown()
    changed = daemon(tmp_path, keys_dir, model="tmaze")
    try:
        g = changed.find_group("grid")
        assert g is not None
        assert g.bundle_sha256 is None
        assert "config's model changed" in changed.status()["overlay_problems"][0]
        assert changed.ab_switch.deployed_bundles() == {}
    finally:
        changed.shutdown()


# ------------------------------------------------- the health check works on a snapshot
def write_config(path: Path, state: Path, keys_dir: Path, *, model: str, tick_hz: int) -> None:
    path.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{state}"
trusted_keys_dir = "{keys_dir}"
tick_hz = {tick_hz}

[[groups]]
name = "grid"
model = {{ type = "builtin", name = "{model}" }}
count = 16
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
"""
    )


class HeldCheck:
    """The deployment's health check (:func:`ab_switch.check_bundle`, the real one) held at its
    start until released, keeping the snapshot it was given: what it sees is that snapshot."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seen: list[ab_switch.CheckSnapshot] = []
        real = ab_switch.check_bundle

        def held(
            snapshot: ab_switch.CheckSnapshot, path: Path, steps: int, timeout_s: float
        ) -> Any:
            self.seen.append(snapshot)
            self.entered.set()
            if not self.release.wait(120):
                raise EdgeAgentError("the test never released the health check")
            return real(snapshot, path, steps, timeout_s)

        monkeypatch.setattr(ab_switch, "check_bundle", held)


def start_held_deployment(d: Daemon, tar: Path, sha: str, held: HeldCheck) -> None:
    """Deploy ``tar`` to group grid; return once its health check has started (and is held)."""
    data = tar.read_bytes()
    args = deploy_args(data, sha, watch_ticks=2)
    assert CommandHandlers(d).deploy(args, _FakeCommand()).code is ResultCode.ACCEPTED  # type: ignore[arg-type]
    for i in range(args.chunks):
        CommandHandlers(d).deploy_chunk(chunk(data, sha, i), _FakeCommand())  # type: ignore[arg-type]
    assert held.entered.wait(60), d.ab_switch.stats()


def sighup_reload(d: Daemon) -> None:
    """A real SIGHUP to this process, applied by the daemon's loop between two ticks."""
    reloads = d.reloads_ok
    os.kill(os.getpid(), signal.SIGHUP)
    assert d._next_tick()
    assert d.reloads_ok == reloads + 1, d.last_reload_error


def until_checked(d: Daemon) -> None:
    """Run the between-ticks step until the health check's verdict is taken."""
    deadline = time.monotonic() + 60
    while d.ab_switch.state is Phase.VERIFYING:
        assert time.monotonic() < deadline, d.ab_switch.stats()
        d._fleet_before_tick()
        time.sleep(0.01)


@pytest.fixture
def sighup_daemon(tmp_path: Path, keys: Any) -> Any:
    """A daemon on a config file, with its signal handlers installed (restored afterwards)."""
    _, _, keys_dir = keys
    config = tmp_path / "edge.toml"
    write_config(config, tmp_path / "state", keys_dir, model="grid10", tick_hz=50)
    before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    d = Daemon.from_file(read_config(config), config)
    d.install_signal_handlers()
    try:
        yield d, config
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        d.shutdown()


def test_a_resize_and_a_reload_during_the_health_check_leave_what_it_checks_alone(
    tmp_path: Path, keys: Any, sighup_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted, private, keys_dir = keys
    d, config = sighup_daemon
    tar = bundle_tar(tmp_path, private)
    sha = bundle_sha(tar, trusted)
    held = HeldCheck(monkeypatch)
    start_held_deployment(d, tar, sha, held)
    # While the check runs on the worker thread: a SIGHUP reloads a config that changes the
    # daemon (its tick rate) but not the group, then a hub command resizes the group.
    write_config(config, tmp_path / "state", keys_dir, model="grid10", tick_hz=40)
    sighup_reload(d)
    assert d.config.daemon.tick_hz == 40
    resize = ResizeArgs(group="grid", agents=8)
    assert CommandHandlers(d).resize_group(resize, _FakeCommand()).code is ResultCode.OK  # type: ignore[arg-type]
    held.release.set()
    until_checked(d)
    (seen,) = held.seen
    assert seen.n_agents == 16  # the group as it was when the check started
    assert seen.config.daemon.tick_hz == 50
    assert d.ab_switch.watching == "grid", d.ab_switch.stats()
    g = d.find_group("grid")
    assert g is not None
    assert g.bundle_sha256 == sha
    assert g.agents.n_agents == 8  # the switch builds the group at its size then
    for _ in range(2):
        d._tick(time.monotonic())
    assert d.ab_switch.state is Phase.DONE


def test_a_reload_that_changes_the_group_during_the_health_check_refuses_the_switch(
    tmp_path: Path, keys: Any, sighup_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted, private, keys_dir = keys
    d, config = sighup_daemon
    tar = bundle_tar(tmp_path, private)
    sha = bundle_sha(tar, trusted)
    held = HeldCheck(monkeypatch)
    start_held_deployment(d, tar, sha, held)
    # The reload makes group grid a T-maze: agents whose inputs and actions the grid bundle does
    # not have. A check that read the live group would refuse the bundle for that; this one
    # checks it against the grid the deployment started on, and the switch sees the change.
    write_config(config, tmp_path / "state", keys_dir, model="tmaze", tick_hz=50)
    sighup_reload(d)
    held.release.set()
    until_checked(d)
    (seen,) = held.seen
    assert seen.group.model == BuiltinModel(type="builtin", name="grid10")
    stats = d.ab_switch.stats()
    assert d.ab_switch.state is Phase.FAILED
    assert stats["detail"].startswith("switch: group 'grid' was reconfigured"), stats["detail"]
    g = d.find_group("grid")
    assert g is not None
    assert g.bundle_sha256 is None
    assert seen.signature is not None
    assert seen.signature != io_signature(g.agents)  # the T-maze the reload made runs on
    assert d.ab_switch.deployed_bundles() == {}


def test_broadcast_chunks_are_taken_only_while_receiving_that_bundle(
    tmp_path: Path, keys: Any
) -> None:
    trusted, private, _ = keys
    tar = bundle_tar(tmp_path, private)
    data, sha = tar.read_bytes(), bundle_sha(tar, trusted)
    state = tmp_path / "state"
    m = manager(state, trusted)

    def heard(index: int, payload: bytes | None = None, bundle: str = sha) -> BundleChunk:
        part = data[index * CHUNK : (index + 1) * CHUNK] if payload is None else payload
        return BundleChunk(sha256=bundle, index=index, data=part)

    assert m.broadcast_bundle is None
    assert m.broadcast_chunk(heard(0)).code is ResultCode.OK  # nobody asked: ignored
    assert m.counters["chunks_ignored"] == 1
    args = deploy_args(data, sha, watch_ticks=1, broadcast=True)
    assert m.start(args, NONCE).code is ResultCode.ACCEPTED
    assert m.broadcast_bundle == sha  # the uplink subscribes to Topics.bundle(sha)
    assert m.broadcast_chunk(heard(0, bundle="0" * 64)).code is ResultCode.OK  # another bundle
    assert m.broadcast_chunk(heard(1, b"x" * CHUNK)).code is ResultCode.BAD_ARGS  # forged
    m.broadcast_chunk(heard(0))
    m.close()  # the node reboots mid-transfer: it listens again after recovery
    again = manager(state, trusted)
    assert again.broadcast_bundle == sha
    resumed = again.start(args, b"m" * 16)
    assert resumed.code is ResultCode.ACCEPTED
    have = resumed.data["have"]
    assert have[0] & 1  # chunk 0 is held: the hub will not send it again
    missing = [i for i in range(args.chunks) if not have[i // 8] >> (i % 8) & 1]
    for i in missing:
        again.broadcast_chunk(heard(i))
    assert again.broadcast_bundle is None  # verifying: unsubscribed
    ready = wait_ready(again)
    assert ready is not None
    assert (state / "bundles" / f"{sha}.tar").read_bytes() == data
    assert again.counters["chunks_broadcast"] == len(missing)
    assert m.counters["chunks_rejected"] == 1


def test_a_unicast_resume_of_a_broadcast_transfer_stops_listening(
    tmp_path: Path, keys: Any
) -> None:
    trusted, private, _ = keys
    tar = bundle_tar(tmp_path, private)
    data, sha = tar.read_bytes(), bundle_sha(tar, trusted)
    m = manager(tmp_path / "state", trusted)
    m.start(deploy_args(data, sha, broadcast=True), NONCE)
    assert m.broadcast_bundle == sha
    assert m.start(deploy_args(data, sha), b"n" * 16).code is ResultCode.ACCEPTED
    assert m.broadcast_bundle is None
