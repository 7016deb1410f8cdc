"""The node's task key: kept across restarts, rebuilt when damaged; releases checked by it."""

from __future__ import annotations

import os
from pathlib import Path

from msgspec.structs import replace

from edge_agent.coordination.messages import (
    SIGNATURE_BYTES,
    Release,
    ReleaseStatus,
    Role,
    TaskSpec,
)
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
        "team": 2,  # a one-agent task made a team
        "roles": [Role(capability="move", count=1, goal_state=5)],
    }
    assert set(changed) == set(TaskSpec.__struct_fields__)  # every field is covered
    for name, value in changed.items():
        forged = replace(SPEC, **{name: value})
        assert not keys.verify(forged.announced_by, spec_bytes("plant", forged), sig), name
    # pi-b signing the hub's spec with its own key is no signature of the hub's
    own = node.sign(spec_bytes("plant", SPEC))
    assert not keys.verify("hub", spec_bytes("plant", SPEC), own)


TEAM = replace(SPEC, team=2, roles=[Role(capability="escort", count=1, goal_state=7)])


def test_a_team_spec_verifies_only_with_every_role_as_signed() -> None:
    """A team's size, its roles' capabilities, counts and goals are signed: a relay can neither
    change a team nor pass a team spec off as a one-agent task (or the other way round); a
    one-agent spec signs the bytes it signed before teams existed."""
    hub = TaskSigner.generate()
    keys = PeerKeys(max_nodes=2)
    keys.learn("hub", hub.public)
    sig = hub.sign(spec_bytes("plant", TEAM))
    assert keys.verify("hub", spec_bytes("plant", TEAM), sig)
    role = Role(capability="escort", count=1, goal_state=7)
    for forged in (
        replace(TEAM, team=3),
        replace(TEAM, roles=[replace(role, count=2)]),
        replace(TEAM, roles=[replace(role, goal_state=8)]),
        replace(TEAM, roles=[replace(role, capability="move")]),
        replace(TEAM, roles=[role, role]),
        SPEC,
    ):
        assert not keys.verify("hub", spec_bytes("plant", forged), sig), forged
    assert spec_bytes("plant", SPEC).startswith(b"\x99\xafea-task-spec-v1")  # 9 fields, as before
    # A member's release signs its role too; a one-agent release what it signed before.
    member = Release(**{**_fields(REL), "role": 1})
    signer = TaskSigner.generate()
    keys.learn("pi-b", signer.public)
    member_sig = signer.sign(release_bytes("plant", member))
    assert keys.verify("pi-b", release_bytes("plant", member), member_sig)
    assert not keys.verify("pi-b", release_bytes("plant", REL), member_sig)
    assert release_bytes("plant", REL).startswith(b"\x9a")  # 10 fields, as before
