"""A group's tables that belong to its kind (edge_agent.config.group_tables): the registry, the
tables a group holds, and what their hooks do to the group, in a file and in code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_agent.aif.learning_table import LearningTable
from edge_agent.config.daemon import (
    BuiltinModel,
    BundleModel,
    GroupConfig,
    LogSink,
    SimSource,
    parse_config,
)
from edge_agent.config.group_tables import GROUP_TABLES, hook, table_type, table_types
from edge_agent.config.profiles import load_profiles
from edge_agent.kinds import kind_name
from edge_agent.neural.perception_table import PerceptionTable
from edge_agent.records import Record

ROOT = Path(__file__).resolve().parents[3]


def group(**tables: Record) -> GroupConfig:
    return GroupConfig(
        name="g",
        model=BuiltinModel(type="builtin", name="tmaze"),
        count=3,
        source=SimSource(type="sim"),
        sink=LogSink(type="log"),
        precision="float64",
        tables=tuple(tables.items()),
    )


def test_every_table_is_a_record_found_by_its_key() -> None:
    types = table_types()
    assert list(types) == list(GROUP_TABLES) == [
        "history_beliefs", "settings", "planning", "learning", "perception", "policy"
    ]
    assert types["learning"] is LearningTable is table_type("learning")
    assert types["perception"] is PerceptionTable
    for record in types.values():
        assert issubclass(record, Record)
        assert (record.__doc__ or "").strip()  # its description in the document's schema


def test_a_group_holds_its_tables_and_their_hooks_shape_it() -> None:
    profile = load_profiles(ROOT / "firmware_profiles")["x86-dev"]
    plain = group()
    assert plain.tables == ()
    assert plain.table("learning") is None
    assert plain.table_of(LearningTable) is None
    assert plain.history_capacity_for(profile) == profile.history_capacity
    shared = group(learning=LearningTable(A=(1,)))
    assert shared.table_of(LearningTable) == LearningTable(A=(1,))
    assert shared.workers_for(profile) == 1  # a learning group: its own workers, else one
    assert dataclasses.replace(shared, workers=3).workers_for(profile) == 3
    per_agent = group(learning=LearningTable(A=(1,), scope="per_agent"))
    assert per_agent.history_capacity_for(profile) == 0
    assert per_agent.workers_for(profile) == 1
    # The table checks the group it is in, at the group's keys.
    with pytest.raises(ValueError, match=r"learning\.scope: per-agent counts run float64"):
        dataclasses.replace(per_agent, precision="int8")
    with pytest.raises(ValueError, match="nope: unknown key"):
        group(nope=LearningTable())
    table = per_agent.table_of(LearningTable)
    assert table is not None
    refusal = hook(table, "refusal")
    assert refusal is not None
    assert refusal(object(), "neural") == (
        "[groups.learning] is for Active Inference agents that observe outcome indices; a "
        "neural group does not learn"
    )
    assert hook(table, "status") is None  # a hook a table does not have


def test_a_perception_table_makes_an_active_inference_group_perceive() -> None:
    seeing = group(perception=PerceptionTable(type="bundle", path=Path("/b/p.tar")))
    assert kind_name(group()) == "aif"
    assert kind_name(seeing) == "perception"
    policy = dataclasses.replace(
        seeing,
        model=BundleModel(type="bundle", path=Path("/b/policy.tar")),
        source=SimSource(type="sim", world="sensors"),
    )
    assert kind_name(policy, "aif") == "perception"
    assert kind_name(policy, "neural") == "neural"  # a neural policy refuses it when it loads
    table = seeing.table_of(PerceptionTable)
    assert table is not None
    assert table.problem_keys("/b/p.tar: no such file") == ("perception", "path")
    assert table.problem_keys("/b/other.tar: no such file") is None
    assert table.status() == {"perception": "bundle /b/p.tar"}


def test_tables_in_a_file_are_read_at_their_lines_and_marked_as_given() -> None:
    text = """[daemon]
profile = "x86-dev"

[[groups]]
name = "g"
model = { type = "builtin", name = "tmaze" }
count = 3
source = { type = "sim" }
sink = { type = "sim" }
perception = { type = "bundle", path = "p.tar", evidence = "hard" }

[groups.learning]
A = [1]
lr_pA = 0.5
"""
    (g,) = parse_config(text, "c.toml", base_dir="/etc/ea").groups
    assert [key for key, _ in g.tables] == ["learning", "perception"]
    learning = g.table_of(LearningTable)
    perception = g.table_of(PerceptionTable)
    assert learning is not None
    assert perception is not None
    assert learning.given == {"A", "lr_pA"}
    assert perception.path == Path("/etc/ea/p.tar")  # relative to the file, as every path
    assert perception.evidence == "hard"
    assert g.document_part("learning") is learning
    assert g.document_part("count") == 3
