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
    KindModel,
    LogSink,
    SimSource,
    parse_config,
)
from edge_agent.config.group_tables import (
    GROUP_TABLES,
    hook,
    is_known,
    kind_tables,
    table_type,
    table_types,
)
from edge_agent.config.profiles import load_profiles
from edge_agent.errors import ConfigError
from edge_agent.kinds import kind_name
from edge_agent.neural.perception_table import PerceptionTable
from edge_agent.records import Record
from tests.support.kind_tally import TallyTable

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
    assert (
        list(types)
        == list(GROUP_TABLES)
        == ["history_beliefs", "settings", "planning", "learning", "perception", "policy",
            "health"]
    )
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


KIND_GROUP = """[daemon]
profile = "x86-dev"

[[groups]]
name = "t"
model = { type = "kind", module = "tests.support.kind_tally" }
count = 3
source = { type = "sim", world = "tmaze" }
sink = { type = "sim" }

[groups.tally]
modality = MODALITY
"""


def test_a_kind_outside_the_package_brings_its_tables_in_its_module() -> None:
    assert kind_tables("tests.support.kind_tally") == {"tally": TallyTable}
    assert kind_tables("edge_agent.kinds.base") == {}  # a module that lists none
    # A table stands under the key its record names, or one of GROUP_TABLES.
    assert is_known("tally", TallyTable())
    assert not is_known("other", TallyTable())
    assert is_known("learning", LearningTable())
    assert not is_known("nope", LearningTable())
    kind = dataclasses.replace(
        group(),
        model=KindModel(type="kind", module="tests.support.kind_tally"),
        source=SimSource(type="sim", world="tmaze"),
    )
    assert dataclasses.replace(kind, tables=(("tally", TallyTable()),)).table_of(TallyTable)
    with pytest.raises(ValueError, match="other: unknown key"):
        dataclasses.replace(kind, tables=(("other", TallyTable()),))

    (g,) = parse_config(KIND_GROUP.replace("MODALITY", "2"), "c.toml").groups
    assert g.tables == (("tally", TallyTable(modality=2)),)
    table = g.table_of(TallyTable)
    assert table is not None
    assert table.given == {"modality"}
    assert g.document_part("tally") is table
    with pytest.raises(ConfigError) as err:
        parse_config(KIND_GROUP.replace("MODALITY", "64"), "c.toml")
    assert str(err.value) == "c.toml:12: groups[0].tally.modality: must be <= 63, got 64"
    # Only the groups that name the module have its tables; a module that cannot be imported is
    # one line at its name.
    builtin = KIND_GROUP.replace(
        '{ type = "kind", module = "tests.support.kind_tally" }',
        '{ type = "builtin", name = "tmaze" }',
    )
    with pytest.raises(ConfigError, match=r"c.toml:11: groups\[0\].tally: unknown key \(allowed"):
        parse_config(builtin.replace("MODALITY", "1"), "c.toml")
    with pytest.raises(ConfigError) as err:
        parse_config(KIND_GROUP.replace("kind_tally", "no_kind").replace("MODALITY", "1"), "c.toml")
    assert str(err.value) == (
        "c.toml:6: groups[0].model.module: kind 'tests.support.no_kind': module "
        "'tests.support.no_kind' cannot be imported: No module named 'tests.support.no_kind'"
    )
