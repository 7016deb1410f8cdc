"""The daemon's learning reports (edge_agent/daemon/learning_reports.py): real learning groups
admitted from a config, a real snapshot store and state directory; only the uplink is a
recording port (each delta encoded and decoded as the hub would)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config.daemon import read_config
from edge_agent.config.profiles import FirmwareProfile, load_profiles
from edge_agent.daemon.admission import admit
from edge_agent.daemon.group_runtime import GroupRuntime
from edge_agent.daemon.learning_reports import STATE_FILE, LearningReporter, model_of
from edge_agent.daemon.snapshots.groups import restore_groups, save_groups
from edge_agent.daemon.snapshots.store import SnapshotStore
from edge_agent.fleet.protocol import LearningDelta, decode, encode
from edge_agent.sim.endpoints import WorldSource
from edge_agent.state_faults import StateFaults
from tests.unit.fleet.test_protocol import envelope

ROOT = Path(__file__).resolve().parents[3]

CONFIG = """
[daemon]
profile = "x86-dev"
state_dir = "{state}"

[mqtt]
enabled = true
host = "127.0.0.1"
node_id = "pi-01"

[[groups]]
name = "maze"
model = {{ type = "builtin", name = "tmaze-reversal" }}
count = 12
source = {{ type = "sim" }}
sink = {{ type = "sim" }}

[groups.learning]
A = [1]
lr_pA = 0.5
forgetting = 0.2
report_every_s = 30
"""


class Port:
    """The uplink as the reporter sees it: each delta goes over the wire format."""

    max_payload_bytes = 256 * 1024

    def __init__(self) -> None:
        self.sent: list[LearningDelta] = []

    def publish_learning(self, body: LearningDelta) -> bool:
        got = decode(encode(envelope(body))).body
        assert isinstance(got, LearningDelta)
        self.sent.append(got)
        return True


@pytest.fixture(scope="module")
def profiles() -> dict[str, FirmwareProfile]:
    return load_profiles(ROOT / "firmware_profiles")


def maze(tmp_path: Path, profiles: dict[str, FirmwareProfile]) -> GroupRuntime:
    path = tmp_path / "daemon.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    _, _, (g,) = admit(read_config(path, profiles=profiles))
    world = WorldSource("tmaze-reversal", 12, seed=2, reverse_every=3)
    g.source, g.sink = world, world.sink
    return g


def tick(g: GroupRuntime, n: int) -> None:
    for t in range(n):
        assert g.tick(float(t))


def test_reports_come_at_the_cadence_numbered_from_1_with_the_model_and_agent_ticks(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    g = maze(tmp_path, profiles)
    port = Port()
    reporter = LearningReporter(tmp_path, port, StateFaults())
    reporter.report_due([g], now=100.0)  # the first report is one period away
    tick(g, 4)
    reporter.report_due([g], now=129.0)
    assert port.sent == []
    reporter.report_due([g], now=130.0)
    tick(g, 3)
    reporter.report_due([g], now=150.0)  # not due again before 160
    reporter.report_due([g], now=160.0)
    assert [d.seq for d in port.sent] == [1, 2]
    model, sha = model_of(g)
    assert model.startswith("tmaze-reversal@edge-agent-")
    for d, ticks in zip(port.sent, (4, 3), strict=True):
        assert (d.group, d.model, d.model_sha256) == ("maze", model, sha)
        (table,) = d.tables
        assert (table.table, table.experience, table.lr) == ("A1", ticks * 12, 0.5)
        # forgetting 0.2 decays the counts, not what is reported: lr per agent-tick
        assert table.arrays()[1].sum() == pytest.approx(ticks * 12 * 0.5, rel=1e-5)
    assert json.loads((tmp_path / STATE_FILE).read_text())["groups"] == {"maze": 2}
    reporter.report_due([g], now=190.0)  # nothing learned since: nothing sent, no number used
    assert len(port.sent) == 2


def test_numbers_go_on_across_a_restart_from_a_real_snapshot_and_are_never_reused(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    store = SnapshotStore(tmp_path / "state", max_writes_per_hour=10)
    g = maze(tmp_path, profiles)
    port = Port()
    reporter = LearningReporter(tmp_path / "state", port, StateFaults())
    tick(g, 3)
    reporter.report(g)
    save_groups(store, [g], "test")  # the snapshot: counts as they were after report 1
    tick(g, 2)
    reporter.report(g)  # report 2 is sent after the snapshot: a crash now loses the snapshot's
    assert [d.seq for d in port.sent] == [1, 2]

    # The node restarts: a new group restored from the snapshot, a new reporter.
    g2 = maze(tmp_path, profiles)
    assert restore_groups(store, [g2], lambda *_: None) is not None
    assert g2.agents.learning.counts_origin == "snapshot"
    again = LearningReporter(tmp_path / "state", port, StateFaults())
    assert again.last_seq("maze") == 2
    assert g2.learning is not None
    assert g2.learning.take_increments() == []
    tick(g2, 1)
    again.report(g2)
    assert [d.seq for d in port.sent] == [1, 2, 3]
    assert port.sent[-1].tables[0].experience == 12


def test_a_damaged_number_file_is_moved_aside_and_numbering_goes_on_above_any_used(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    (tmp_path / STATE_FILE).write_text('{"groups": {"maze": "seven"}}')
    health = StateFaults()
    port = Port()
    reporter = LearningReporter(tmp_path, port, health, wall=lambda: 1_800_000_000.0)
    assert health.moved["learning_reports"] == 1
    assert not (tmp_path / STATE_FILE).exists()
    g = maze(tmp_path, profiles)
    tick(g, 1)
    reporter.report(g)
    assert port.sent[0].seq == 1_800_000_000_000 + 1


def test_a_replaced_group_reports_what_it_learned_against_its_model_then_starts_anew(
    tmp_path: Path, profiles: dict[str, FirmwareProfile]
) -> None:
    old = maze(tmp_path, profiles)
    port = Port()
    reporter = LearningReporter(tmp_path, port, StateFaults())
    reporter.report_due([old], now=0.0)
    tick(old, 2)
    new = maze(tmp_path, profiles)  # a deployment's group: the same name, its own agents
    new.bundle_name, new.bundle_sha256 = "maze@7", "cd" * 32
    tick(new, 1)
    reporter.report_due([new], now=1.0)  # not due: the old group's last report all the same
    assert [(d.seq, d.model, d.tables[0].experience) for d in port.sent] == [
        (1, model_of(old)[0], 24)
    ]
    reporter.report_due([new], now=30.0)
    assert [(d.seq, d.model, d.model_sha256) for d in port.sent[1:]] == [(2, "maze@7", "cd" * 32)]
    assert port.sent[1].tables[0].experience == 12
    tick(new, 1)
    reporter.report_all([new])  # the daemon stops
    assert [d.seq for d in port.sent] == [1, 2, 3]
    assert np.isclose(port.sent[2].tables[0].arrays()[1].sum(), 12 * 0.5, rtol=1e-5)
