"""The A/B switch's deployment manager: it recovers the state directory when the switch is built,
before any group (a deployment a crash interrupted completed or undone, damage moved aside,
leftovers deleted), and the switch's readers are the manager's; a deployment verifies with the
keys of the config admitted last. The deployments themselves: ``tests/unit/fleet/test_deploy.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
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
from edge_agent.fleet.overlay import OVERLAY_FILE
from edge_agent.state_faults import StateFaults
from edge_agent_host.keys import generate_keypair
from tests.unit.fleet.test_deploy import NONCE, deploy_args

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


JOURNAL = "bundles/deploy.json"

JOURNAL = "bundles/deploy.json"

#: State directories, from one recovery has nothing to do in to ones it acts on.
STATES: dict[str, Callable[[Path], None]] = {
    "nothing": all_of(),
    "an overlay and the bundles it names": all_of(
        overlay_naming(SHA_A, SHA_B), bundle_files(SHA_A, SHA_B)
    ),
    "a finished deployment's journal": all_of(
        overlay_naming(SHA_A), bundle_files(SHA_A), file_at(JOURNAL, journal(Phase.DONE))
    ),
    "a journal of a watched bundle": all_of(
        overlay_naming(SHA_A), bundle_files(SHA_A), file_at(JOURNAL, journal(Phase.WATCHING))
    ),
    "a damaged journal": file_at(JOURNAL, "{not json"),
    "a partial transfer without its journal": file_at(f"bundles/incoming/{SHA_A}.part"),
    "a bundle the overlay does not name": all_of(overlay_naming(SHA_A), bundle_files(SHA_A, SHA_B)),
    "a file where bundles should be": file_at("bundles"),
    "a damaged overlay": file_at(OVERLAY_FILE, '{"version": 1, "groups": 5}'),
    "a directory where the overlay should be": dir_at(OVERLAY_FILE),
}


def make_state(root: Path, name: str, make: Callable[[Path], None]) -> Path:
    state = root / name.replace(" ", "-").replace("'", "")
    state.mkdir(parents=True)
    make(state)
    return state


def tree(root: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every entry under ``root``: its kind and, for a regular file, its bytes (the time in the
    name of what was moved aside left out)."""
    out: dict[str, tuple[str, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            rel = re.sub(r"\.corrupt-\d{8}T\d{6}Z", ".corrupt-STAMP", str(path.relative_to(root)))
            if stat.S_ISREG(mode):
                out[rel] = ("file", path.read_bytes())
            else:
                kind = "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "other"
                out[rel] = (kind, None)
    return out


def recovered(state: Path) -> tuple[DeployManager, StateFaults]:
    faults = StateFaults()
    manager = DeployManager(state, bundle_keys=None, faults=faults)
    manager.recover()
    return manager, faults


def switch(state: Path, faults: StateFaults | None = None) -> tuple[ABSwitch, list[Report]]:
    reports: list[Report] = []
    return ABSwitch(state, report=reports.extend, faults=faults), reports


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


# ------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", STATES)
def test_the_switch_recovers_the_state_directory_as_its_manager_does(
    tmp_path: Path, name: str
) -> None:
    """Built on a state directory, the switch leaves it as a recovered manager leaves the same
    directory, reports and moves aside what that manager does, and its readers say what the
    manager's say (a watched bundle a crash interrupted is rolled back, its overlay entry
    undone); a directory nothing was deployed to (no ``bundles``) gets no ``bundles`` either:
    the switch builds no manager for it (docs/memory.md)."""
    state = make_state(tmp_path, name, STATES[name])
    deployed_to = os.path.lexists(state / "bundles")
    manager, manager_health = recovered(state)
    expected, after = manager_readers(manager), tree(state)
    if not deployed_to:
        assert after.pop("bundles") == ("dir", None)
    reports = [(r.code, r.event, r.detail) for r in manager.take_reports()]
    moved = [n.part for n in manager_health.take_notices()]
    shutil.rmtree(state)  # the same state again, for the switch
    make_state(tmp_path, name, STATES[name])
    faults = StateFaults()
    ab, published = switch(state, faults)
    assert readers(ab) == expected
    assert tree(state) == after
    assert [n.part for n in faults.take_notices()] == moved
    ab.publish_reports()
    assert [(r.code, r.event, r.detail) for r in published] == reports
    if name == "a journal of a watched bundle":
        assert ab.state is Phase.ROLLED_BACK
        assert ab.deployed_bundles() == {}


def test_a_switch_with_no_deployment_builds_its_manager_for_the_first_command(
    tmp_path: Path,
) -> None:
    """A node nothing was deployed to answers the first ``deploy`` command as one whose manager
    was built at start: the manager is built for it, recovers the (empty) directory and takes
    the command, and the readers say what that manager's say."""
    generate_keypair(tmp_path / "keys", "ci")
    fresh, built = tmp_path / "fresh", tmp_path / "built"
    fresh.mkdir()
    (built / "bundles").mkdir(parents=True)
    outcomes, views = [], []
    for state in (fresh, built):
        ab, _ = switch(state)
        config = keys_config(state, tmp_path / "keys")
        ab.bind(SimpleNamespace(config=config, groups=[]))  # type: ignore[arg-type]
        outcomes.append(ab.start(deploy_args(b"z" * 100, SHA_A), NONCE))
        views.append(readers(ab))
    assert outcomes[0].code is ResultCode.BAD_ARGS, outcomes[0].detail  # no such group runs
    assert outcomes[0] == outcomes[1]
    assert views[0] == views[1]
    assert tree(fresh) == tree(built)


def keys_config(tmp_path: Path, keys_dir: Path | None) -> Any:
    line = f'trusted_keys_dir = "{keys_dir}"\n' if keys_dir else ""
    return parse_config(
        f'[daemon]\nprofile = "x86-dev"\nstate_dir = "{tmp_path}"\n{line}\n'
        '[[groups]]\nname = "grid"\nmodel = { type = "builtin", name = "grid10" }\ncount = 2\n'
        'source = { type = "sim" }\nsink = { type = "sim" }\n',
        "unit.toml",
    )


def test_a_deployment_verifies_with_the_keys_admitted_last(tmp_path: Path) -> None:
    """The keys of a reload admitted before a deployment reach its manager: with keys the
    command gets past the key check (refused for its group: the host runs none), without them
    it is refused for the keys."""
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
        outcome = ab.start(deploy_args(data, SHA_A), NONCE)
        assert outcome.code is code, outcome.detail
        if code is ResultCode.FAILED:
            assert "trusted_keys_dir" in outcome.detail
