"""The A/B switch before a deployment (issue 31, memory): no deployment manager until one is needed.

``ABSwitch`` builds :class:`~edge_agent.fleet.deploy.DeployManager` at start only when
:func:`~edge_agent.fleet.overlay.needs_recovery` finds something in the state directory for its
recovery to act on; else on the first deployment command or overlay change. Checked here on real
state directories against a real manager:

- every state the check passes is one where ``recover()`` changes nothing on disk (beyond the
  empty ``bundles`` directory) and reports nothing, and the switch's readers without a manager
  answer exactly what that recovered manager answers;
- every state it refuses is one where ``recover()`` acts (a file moved aside or deleted, a
  journal loaded), except the few listed as in doubt, where the manager is built anyway;
- the writers build the manager, with the keys of the config admitted last.

The daemon's imports (no ``edge_agent.fleet.deploy`` without a deployment, and with a journal to
recover): ``tests/unit/test_architecture.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge_agent.bundle.signing import TrustedKeys
from edge_agent.config.daemon import parse_config
from edge_agent.daemon.ab_switch import ABSwitch
from edge_agent.fleet.deploy import DeployManager, JournalRecord, Phase, Report
from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.overlay import OVERLAY_FILE, needs_recovery
from edge_agent.fleet.protocol import BundleChunk
from edge_agent.state_health import StateHealth
from edge_agent_host.keys import generate_keypair
from tests.unit.fleet.test_deploy import (
    NONCE,
    bundle_sha,
    bundle_tar,
    daemon,
    deploy_args,
    switch_daemon,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


# --------------------------------------------------------------------- the state directories
def overlay_doc(state: Path, *shas: str, file: str = "{sha}.tar") -> str:
    groups = {
        f"g{i}": {
            "path": str(state / "bundles" / file.format(sha=sha)),
            "sha256": sha,
            "name": "grid10",
            "version": "1.0.0",
            "config_model": "{}",
            "deployed_at": 1.0,
        }
        for i, sha in enumerate(shas)
    }
    return json.dumps({"version": 1, "groups": groups})


def journal(phase: Phase, previous: dict[str, Any] | None = None) -> str:
    rec = JournalRecord(
        group="g0",
        sha256=SHA_A,
        file_sha256=SHA_A,
        size=100,
        chunk_size=64,
        watch_ticks=3,
        health_steps=2,
        health_timeout_s=10.0,
        transfer_timeout_s=60.0,
        nonce=NONCE.hex(),
        phase=phase,
        started_at=1.0,
        updated_at=2.0,
    )
    doc = dataclasses.asdict(rec)
    doc["previous"] = previous
    return json.dumps(doc)


def put(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def overlay_naming(*shas: str, file: str = "{sha}.tar") -> Callable[[Path], None]:
    def make(state: Path) -> None:
        put(state / OVERLAY_FILE, overlay_doc(state, *shas, file=file))

    return make


def bundle_files(*shas: str) -> Callable[[Path], None]:
    def make(state: Path) -> None:
        for sha in shas:
            put(state / "bundles" / f"{sha}.tar", f"bundle {sha[0]}")

    return make


def all_of(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(state: Path) -> None:
        for m in makers:
            m(state)

    return make


def file_at(rel: str, text: str = "x") -> Callable[[Path], None]:
    return lambda state: put(state / rel, text)


def dir_at(rel: str) -> Callable[[Path], None]:
    return lambda state: (state / rel).mkdir(parents=True)


def fifo_at(rel: str) -> Callable[[Path], None]:
    return lambda state: os.mkfifo(state / rel)


def dangling_link_at(rel: str) -> Callable[[Path], None]:
    return lambda state: (state / rel).symlink_to(state / "nowhere")


JOURNAL = "bundles/deploy.json"

#: States recover() has nothing to act on in: the switch builds no manager.
CLEAN: dict[str, Callable[[Path], None]] = {
    "nothing": all_of(),
    "an empty bundles directory": dir_at("bundles"),
    "an empty overlay": file_at(OVERLAY_FILE, '{"version": 1, "groups": {}}'),
    "an overlay and the bundles it names": all_of(
        overlay_naming(SHA_A, SHA_B), bundle_files(SHA_A, SHA_B)
    ),
    "an overlay whose bundle file is gone": overlay_naming(SHA_A),
}

#: States recover() acts on: the switch builds the manager at start.
RECOVERED: dict[str, Callable[[Path], None]] = {
    "a finished deployment's journal": all_of(
        overlay_naming(SHA_A), bundle_files(SHA_A), file_at(JOURNAL, journal(Phase.DONE))
    ),
    "a journal of a watched bundle": all_of(
        overlay_naming(SHA_A), bundle_files(SHA_A), file_at(JOURNAL, journal(Phase.WATCHING))
    ),
    "a damaged journal": file_at(JOURNAL, "{not json"),
    "a directory where the journal should be": dir_at(JOURNAL),
    "a partial transfer without its journal": file_at(f"bundles/incoming/{SHA_A}.part"),
    "a temporary file": file_at("bundles/deploy.json.tmp"),
    "a temporary file the overlay names": all_of(
        overlay_naming(SHA_A, file="{sha}.tmp"), file_at(f"bundles/{SHA_A}.tmp")
    ),
    "a bundle the overlay does not name": all_of(overlay_naming(SHA_A), bundle_files(SHA_A, SHA_B)),
    "a bundle and no overlay": bundle_files(SHA_A),
    "a file where bundles should be": file_at("bundles"),
    "a damaged overlay": file_at(OVERLAY_FILE, '{"version": 1, "groups": 5}'),
    "a damaged overlay beside its bundles": all_of(
        bundle_files(SHA_A), file_at(OVERLAY_FILE, "[]")
    ),
    "a directory where the overlay should be": dir_at(OVERLAY_FILE),
    "a FIFO where the overlay should be": fifo_at(OVERLAY_FILE),
    "a dangling link where the overlay should be": dangling_link_at(OVERLAY_FILE),
}

#: States where recover() acts on nothing, but the check cannot tell at a glance: it builds the
#: manager (when in doubt, build).
IN_DOUBT: dict[str, Callable[[Path], None]] = {
    "an empty incoming directory": dir_at("bundles/incoming"),
    "a journal moved aside before": file_at("bundles/deploy.json.corrupt-20260101T000000Z"),
}


def make_state(root: Path, name: str, make: Callable[[Path], None]) -> Path:
    state = root / name.replace(" ", "-").replace("'", "")
    state.mkdir(parents=True)
    make(state)
    return state


def tree(root: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every entry under ``root``: its kind and, for a regular file, its bytes."""
    out: dict[str, tuple[str, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                out[str(path.relative_to(root))] = ("file", path.read_bytes())
            else:
                kind = "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "other"
                out[str(path.relative_to(root))] = (kind, None)
    return out


def recovered(state: Path) -> tuple[DeployManager, StateHealth]:
    health = StateHealth()
    manager = DeployManager(state, bundle_keys=None, health=health)
    manager.recover()
    return manager, health


def switch(state: Path, health: StateHealth | None = None) -> tuple[ABSwitch, list[Report]]:
    reports: list[Report] = []
    return ABSwitch(state, report=reports.extend, health=health), reports


def readers(ab: ABSwitch) -> dict[str, Any]:
    """What the rest of the daemon reads of the switch, in order (the status file keeps it)."""
    return {
        "state": ab.state,
        "watching": ab.watching,
        "broadcast_bundle": ab.broadcast_bundle,
        "deployed_bundles": ab.deployed_bundles(),
        "stats": list(ab.stats().items()),
        "counters": list(ab.counters().items()),
    }


def manager_readers(m: DeployManager) -> dict[str, Any]:
    """The same, asked of a manager (no group is watched: the switch holds no old group)."""
    return {
        "state": m.phase,
        "watching": None,
        "broadcast_bundle": m.broadcast_bundle,
        "deployed_bundles": m.deployed_bundles(),
        "stats": list(m.stats().items()),
        "counters": list(m.counters.items()),
    }


# ---------------------------------------------------------------------------------- the check
@pytest.mark.parametrize("name", CLEAN)
def test_without_a_deployment_the_readers_are_a_fresh_managers_and_no_manager_is_built(
    tmp_path: Path, name: str
) -> None:
    state = make_state(tmp_path, name, CLEAN[name])
    before = tree(state)
    assert not needs_recovery(state)
    health = StateHealth()
    ab, reports = switch(state, health)
    assert ab._manager is None
    assert tree(state) == before  # the switch only read
    seen = readers(ab)
    ab.before_tick()
    ab.publish_reports()
    assert not ab.defer_reload()
    assert not ab.take_deferred_reload()
    ab.close()
    assert reports == []
    assert ab._manager is None  # no reader built it
    manager, manager_health = recovered(state)
    assert seen == manager_readers(manager)
    assert manager.take_reports() == []
    assert health.take_notices() == manager_health.take_notices() == []
    after = tree(state)
    assert after.pop("bundles") == ("dir", None)  # the one thing recovery adds
    before.pop("bundles", None)
    assert after == before  # recovery moved, deleted and wrote nothing


@pytest.mark.parametrize("name", RECOVERED)
def test_a_state_directory_recovery_acts_on_builds_the_manager_at_start(
    tmp_path: Path, name: str
) -> None:
    state = make_state(tmp_path, name, RECOVERED[name])
    assert needs_recovery(state)
    before = tree(state)
    manager, manager_health = recovered(state)
    after = tree(state)
    after.pop("bundles")
    before.pop("bundles", None)
    moved = manager_health.take_notices()
    assert after != before or moved or manager.journal is not None  # recovery did something
    expected = manager_readers(manager)
    reports = [(r.code, r.event, r.detail) for r in manager.take_reports()]
    shutil.rmtree(state)  # the same state again, for the switch
    make_state(tmp_path, name, RECOVERED[name])
    health = StateHealth()
    ab, published = switch(state, health)
    assert ab._manager is not None
    assert readers(ab) == expected
    assert [n.part for n in health.take_notices()] == [n.part for n in moved]
    ab.publish_reports()
    assert [(r.code, r.event, r.detail) for r in published] == reports


@pytest.mark.parametrize("name", IN_DOUBT)
def test_in_doubt_the_manager_is_built(tmp_path: Path, name: str) -> None:
    state = make_state(tmp_path, name, IN_DOUBT[name])
    assert needs_recovery(state)
    ab, _ = switch(state)
    assert ab._manager is not None
    expected = readers(ab)
    shutil.rmtree(state)
    make_state(tmp_path, name, IN_DOUBT[name])
    manager, _ = recovered(state)
    assert expected == manager_readers(manager)


# -------------------------------------------------------------------------------- the writers
def test_forget_builds_the_manager_only_to_write_the_overlay(tmp_path: Path) -> None:
    state = make_state(
        tmp_path, "state", all_of(overlay_naming(SHA_A, SHA_B), bundle_files(SHA_A, SHA_B))
    )
    ab, _ = switch(state)
    ab.forget("other")  # no entry: nothing to write
    assert ab._manager is None
    ab.forget("g0")
    assert ab._manager is not None
    assert list(ab.deployed_bundles()) == ["g1"]
    assert list(json.loads((state / OVERLAY_FILE).read_text())["groups"]) == ["g1"]


def test_a_broadcast_chunk_builds_the_manager_and_counts_what_a_fresh_one_counts(
    tmp_path: Path,
) -> None:
    piece = BundleChunk(sha256=SHA_A, index=0, data=b"x")
    ab, _ = switch(make_state(tmp_path, "switch", CLEAN["nothing"]))
    manager, _ = recovered(make_state(tmp_path, "manager", CLEAN["nothing"]))
    assert ab.broadcast_chunk(piece) == manager.broadcast_chunk(piece)
    assert ab._manager is not None
    assert ab.counters() == manager.counters
    assert ab.counters()["chunks_ignored"] == 1


def keys_config(tmp_path: Path, keys_dir: Path | None) -> Any:
    line = f'trusted_keys_dir = "{keys_dir}"\n' if keys_dir else ""
    return parse_config(
        f'[daemon]\nprofile = "x86-dev"\nstate_dir = "{tmp_path}"\n{line}\n'
        '[[groups]]\nname = "grid"\nmodel = { type = "builtin", name = "grid10" }\ncount = 2\n'
        'source = { type = "sim" }\nsink = { type = "sim" }\n',
        "unit.toml",
    )


def test_the_manager_built_later_verifies_with_the_keys_admitted_last(tmp_path: Path) -> None:
    """The keys of a reload admitted before the first deployment reach the manager built for it:
    with keys the command gets past the key check (refused for its group: the host runs none),
    without them it is refused for the keys."""
    generate_keypair(tmp_path / "keys", "ci")
    assert TrustedKeys.from_dir(tmp_path / "keys")
    with_keys, without = keys_config(tmp_path, tmp_path / "keys"), keys_config(tmp_path, None)
    data = b"z" * 100
    for first, reloaded, code in (
        (without, with_keys, ResultCode.BAD_ARGS),
        (with_keys, without, ResultCode.FAILED),
    ):
        ab, _ = switch(tmp_path / f"state-{code}")
        ab.bind(SimpleNamespace(config=first, groups=[]))  # type: ignore[arg-type]
        ab.configured(reloaded)
        assert ab._manager is None
        outcome = ab.start(deploy_args(data, SHA_A), NONCE)
        assert ab._manager is not None
        assert outcome.code is code, outcome.detail
        if code is ResultCode.FAILED:
            assert "trusted_keys_dir" in outcome.detail


def test_a_daemon_builds_the_manager_at_its_first_deployment(tmp_path: Path) -> None:
    """A daemon started on an empty state directory holds no manager and shows a fresh one's
    status; the hub's deploy command builds it, and the deployment runs to its end."""
    pair = generate_keypair(tmp_path / "keys", "ci")
    tar = bundle_tar(tmp_path, pair.private_path)
    sha = bundle_sha(tar, TrustedKeys.from_dir(tmp_path / "keys"))
    d = daemon(tmp_path, tmp_path / "keys")
    try:
        assert d.ab_switch._manager is None
        fresh, _ = recovered(tmp_path / "fresh")
        assert d.status()["deploy"] == fresh.stats()
        assert not (tmp_path / "state" / "bundles").exists()
        switch_daemon(d, tar, sha, watch_ticks=1)  # the deploy command, chunks, check, switch
        assert d.ab_switch._manager is not None
        d._tick(time.monotonic())
        assert d.ab_switch.state is Phase.DONE
        assert d.ab_switch.deployed_bundles()["grid"].sha256 == sha
    finally:
        d.shutdown()
