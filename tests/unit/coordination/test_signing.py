"""The node's task key: kept across restarts, rebuilt when damaged; releases checked by it."""

from __future__ import annotations

import os
from pathlib import Path

from msgspec.structs import replace

from edge_agent.coordination.messages import SIGNATURE_BYTES, Release, ReleaseStatus, TaskSpec
from edge_agent.coordination.signing import (
    KEY_FILE,
    PeerKeys,
    TaskSigner,
    release_bytes,
    sign_specs,
    spec_bytes,
)
from edge_agent.state_faults import StateFaults

REL = Release(
    task="t", epoch=2, node="pi-b", group="g", agent=3, bdseq=4, bseq=5, status=ReleaseStatus.DONE
)


def test_the_key_is_the_same_after_a_restart_and_private_to_the_daemon(tmp_path: Path) -> None:
    first = TaskSigner.load_or_create(tmp_path)
    again = TaskSigner.load_or_create(tmp_path)
    assert first.public == again.public
    assert os.stat(tmp_path / KEY_FILE).st_mode & 0o777 == 0o600


def test_a_damaged_key_file_is_moved_aside_and_a_new_key_made(tmp_path: Path) -> None:
    old = TaskSigner.load_or_create(tmp_path)
    (tmp_path / KEY_FILE).write_bytes(b"short")
    health = StateFaults()
    new = TaskSigner.load_or_create(tmp_path, health)
    assert new.public != old.public
    assert TaskSigner.load_or_create(tmp_path).public == new.public
    assert len(list(tmp_path.glob(f"{KEY_FILE}.corrupt-*"))) == 1


def test_a_release_verifies_only_with_its_node_s_key_fleet_and_fields() -> None:
    signer, other = TaskSigner.generate(), TaskSigner.generate()
    keys = PeerKeys(max_nodes=2)
    assert keys.learn("pi-b", signer.public)
    assert not keys.learn("pi-b", signer.public)  # nothing new
    sig = signer.sign(release_bytes("plant", REL))
    assert keys.verify("pi-b", release_bytes("plant", REL), sig)
    assert not keys.verify("pi-b", release_bytes("plant-2", REL), sig)
    moved = release_bytes("plant", Release(**{**_fields(REL), "epoch": 3}))
    assert not keys.verify("pi-b", moved, sig)
    assert not keys.verify("pi-c", release_bytes("plant", REL), sig)  # no key known
    forged = other.sign(release_bytes("plant", REL))
    assert not keys.verify("pi-b", release_bytes("plant", REL), forged)
    keys.learn("pi-c", other.public)
    keys.learn("pi-d", other.public)  # bounded: pi-b, learned first, is forgotten
    assert len(keys) == 2
    assert not keys.known("pi-b")


def _fields(rel: Release) -> dict[str, object]:
    return {name: getattr(rel, name) for name in rel.__struct_fields__}


SPEC = TaskSpec(
    task="t1",
    epoch=2,
    capability="move",
    goal_factor=1,
    goal_state=5,
    deadline=1_700_000_100.5,
    announced_by="hub",
)


def test_a_spec_verifies_only_with_its_announcer_s_key_fleet_and_every_field() -> None:
    """What a relay could change to take over a task (a new round, another goal, another
    capability or deadline, another announcer) breaks the announcer's signature."""
    hub, node = TaskSigner.generate(), TaskSigner.generate()
    keys = PeerKeys(max_nodes=4)
    keys.learn("hub", hub.public)
    keys.learn("pi-b", node.public)
    sigs = sign_specs(hub.sign, "plant", [SPEC, replace(SPEC, task="t2")])
    assert len(sigs) == 2 * SIGNATURE_BYTES
    sig = sigs[:SIGNATURE_BYTES]
    assert keys.verify("hub", spec_bytes("plant", SPEC), sig)
    assert keys.verify("hub", spec_bytes("plant", replace(SPEC, task="t2")), sigs[SIGNATURE_BYTES:])
    assert not keys.verify("hub", spec_bytes("plant-2", SPEC), sig)
    changed = {
        "task": "t9",
        "epoch": 3,
        "capability": "grab",
        "goal_factor": 0,
        "goal_state": 6,
        "deadline": 0.0,
        "announced_by": "pi-b",
    }
    assert set(changed) == set(TaskSpec.__struct_fields__)  # every field is covered
    for name, value in changed.items():
        forged = replace(SPEC, **{name: value})
        assert not keys.verify(forged.announced_by, spec_bytes("plant", forged), sig), name
    # pi-b signing the hub's spec with its own key is no signature of the hub's
    own = node.sign(spec_bytes("plant", SPEC))
    assert not keys.verify("hub", spec_bytes("plant", SPEC), own)
