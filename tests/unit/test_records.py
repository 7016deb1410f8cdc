"""Records (edge_agent.records): rules checked without pydantic, the keys a document set, the
daemon's own files read strictly, and the config read in a child process so that the daemon
never loads pydantic."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import pytest

from edge_agent.aif.settings import AifSettings, settings_from_json, settings_to_json
from edge_agent.config.daemon import GroupConfig, parse_config, read_config
from edge_agent.config.isolated import read_config_isolated
from edge_agent.config.toml_lines import TomlDocument, validate_toml
from edge_agent.errors import ConfigError
from edge_agent.fleet.deploy import JournalRecord, Phase
from edge_agent.fleet.overlay import OverlayEntry
from edge_agent.records import Record, RecordError, Rule, ValueRecord, from_json

SHA = "ab" * 32
CONFIG = """\
[daemon]
profile = "x86-dev"
state_dir = "state"

[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 10
source = { type = "sim" }
sink = { type = "sim" }
[groups.settings]
policy_len = 1
"""


class Box(Record):
    size: Annotated[int, Rule(ge=1, le=9)]
    label: Annotated[str, Rule(pattern=r"^[a-z]+$")] = "box"
    tags: Annotated[tuple[str, ...], Rule(max_length=2)] = ()


def test_rules_are_checked_when_records_are_built_in_code() -> None:
    assert Box(size=3).label == "box"
    with pytest.raises(RecordError, match=r"size: must be <= 9, got 10"):
        Box(size=10)
    with pytest.raises(RecordError, match=r"label: must match"):
        Box(size=1, label="Box")
    with pytest.raises(RecordError, match=r"tags: must have at most 2 items, got 3"):
        Box(size=1, tags=("a", "b", "c"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Box(size=1).size = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Box(3)  # type: ignore[misc]  # keyword-only


class Level(ValueRecord):
    """A level of 1 to 3, written as the number itself."""

    value: Annotated[int, Rule(ge=1, le=3)] = 1


class Dial(Record):
    level: Annotated[Level | None, Rule(description="The dial's level.")] = None


def test_a_value_record_is_written_as_its_value() -> None:
    document = TomlDocument.parse("level = 2\n", "d.toml")
    assert validate_toml(Dial, document).level == Level(value=2)
    assert validate_toml(Dial, TomlDocument.parse("", "d.toml")).level is None
    for text, problem in (
        ("level = 4\n", "must be <= 3, got 4"),
        ('level = "2"\n', "expected an integer, got string '2'"),
        ("level = 2.5\n", "expected an integer, got float 2.5"),
    ):
        with pytest.raises(ConfigError) as err:
            validate_toml(Dial, TomlDocument.parse(text, "d.toml"))
        assert str(err.value) == f"d.toml:1: level: {problem}"
    # Built in code it is a record like any other: its rules, its default.
    assert Level().value == 1
    with pytest.raises(RecordError, match="value: must be <= 3, got 5"):
        Level(value=5)


def test_given_names_what_the_document_set() -> None:
    config = parse_config(CONFIG, base_dir="/etc/edge-agent")
    assert config.groups[0].table_or_default(AifSettings).given == frozenset({"policy_len"})
    assert config.groups[0].given >= {"name", "model", "count", "source", "sink", "settings"}
    # Built in code: the fields that differ from their defaults.
    assert AifSettings(gamma=8.0).given == frozenset({"gamma"})
    assert AifSettings().given == frozenset()


def test_settings_from_files_are_validated_strictly() -> None:
    settings = AifSettings(policy_len=2, control_fac_idx=(0, 1))
    assert settings_from_json(json.loads(json.dumps(settings_to_json(settings)))) == settings
    with pytest.raises(ValueError, match="policy_len"):
        settings_from_json({"policy_len": "2"})
    with pytest.raises(ValueError, match="gama"):
        settings_from_json({"gama": 1.0})
    with pytest.raises(ValueError, match="policy_len: Input should be greater than or equal to 1"):
        settings_from_json({"policy_len": 0})


def _journal(**changes: object) -> dict[str, object]:
    record = JournalRecord(
        group="grid",
        sha256=SHA,
        file_sha256=SHA,
        size=10,
        chunk_size=4,
        watch_ticks=3,
        health_steps=2,
        health_timeout_s=1.0,
        transfer_timeout_s=5.0,
        nonce="00",
        phase=Phase.WATCHING,
        started_at=1.0,
        updated_at=2.0,
        previous=OverlayEntry(path="b.tar", sha256=SHA, config_model="{}"),
    )
    raw = json.loads(json.dumps(dataclasses.asdict(record)))
    raw.update(changes)
    return raw  # type: ignore[no-any-return]


def test_the_daemons_own_files_are_read_back_exactly() -> None:
    raw = _journal()
    record = from_json(JournalRecord, raw)
    assert record.phase is Phase.WATCHING
    assert record.previous == OverlayEntry(path="b.tar", sha256=SHA, config_model="{}")
    assert json.loads(json.dumps(dataclasses.asdict(record))) == raw


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"size": "10"}, r"size: expected an integer, got str"),
        ({"size": True}, r"size: expected an integer, got bool"),
        ({"broadcast": 1}, r"broadcast: expected true or false, got int"),
        ({"phase": "lost"}, r"phase: must be one of"),
        ({"extra": 1}, r"extra: unknown key"),
        (
            {"previous": {"path": "b", "sha256": "x", "config_model": ""}},
            r"previous.sha256: must match",
        ),
        ({"previous": {"path": "b"}}, r"previous.sha256: required key is missing"),
        ({"health_timeout_s": [1]}, r"health_timeout_s: expected a number, got list"),
    ],
)
def test_damaged_files_are_refused_with_the_place(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(RecordError, match=problem):
        from_json(JournalRecord, _journal(**changes))
    del_key = _journal()
    del del_key["group"]
    with pytest.raises(RecordError, match=r"group: required key is missing"):
        from_json(JournalRecord, del_key)


def test_the_config_read_in_a_child_equals_the_one_read_here(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    here = read_config(path)
    there = read_config_isolated(path)
    assert there.config == here.config
    assert there.document.data == here.document.data
    assert there.profiles == here.profiles
    assert there.config.groups[0].table_or_default(AifSettings).given == frozenset({"policy_len"})
    assert there.config.daemon.state_dir == tmp_path / "state"
    embedded = read_config_isolated(None)
    assert embedded.config == read_config(None).config


def test_problems_found_in_the_child_are_reported_as_here(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("count = 10", "count = 0"))
    with pytest.raises(ConfigError) as here:
        read_config(path)
    with pytest.raises(ConfigError) as there:
        read_config_isolated(path)
    assert str(there.value) == str(here.value)
    assert (
        there.value.problems
        == here.value.problems
        == [f"{path}:8: groups[0].count: must be >= 1, got 0"]
    )
    assert there.value.path == str(path)


def test_a_child_that_cannot_run_leaves_the_config_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with caplog.at_level(logging.WARNING):
        source = read_config_isolated(path)
    assert source.config == read_config(path).config
    assert "reading it here" in caplog.text


def test_replace_checks_the_record_again() -> None:
    group = parse_config(CONFIG).groups[0]
    assert isinstance(group, GroupConfig)
    with pytest.raises(RecordError, match="count: must be >= 1"):
        dataclasses.replace(group, count=0)


class _Point(Record):
    x: int
    y: tuple[int, ...] = ()
    note: str = dataclasses.field(default="", compare=False)
    secret: str = dataclasses.field(default="", repr=False)


class _OtherPoint(Record):
    x: int
    y: tuple[int, ...] = ()
    note: str = dataclasses.field(default="", compare=False)
    secret: str = dataclasses.field(default="", repr=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _PlainPoint:
    """What ``dataclasses`` generates for the same fields: the record's methods must agree."""

    x: int
    y: tuple[int, ...] = ()
    note: str = dataclasses.field(default="", compare=False)
    secret: str = dataclasses.field(default="", repr=False)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": 1, "y": (2,)}, {"x": 1, "y": (2,)}),
        ({"x": 1, "note": "a"}, {"x": 1, "note": "b"}),  # not compared
        ({"x": 1, "secret": "a"}, {"x": 1, "secret": "b"}),  # compared, not shown
        ({"x": 1}, {"x": 2}),
        ({"x": 1, "y": (2, 3)}, {"x": 1, "y": (3, 2)}),
    ],
)
def test_a_records_equality_hash_and_repr_are_what_dataclasses_would_generate(
    a: dict[str, object], b: dict[str, object]
) -> None:
    """Records share one ``__eq__``, ``__hash__`` and ``__repr__`` (not three generated per class,
    a few kB of code each in the daemon): they behave as the generated ones would."""
    mine, theirs = (_Point(**a), _Point(**b)), (_PlainPoint(**a), _PlainPoint(**b))  # type: ignore[arg-type]
    assert (mine[0] == mine[1]) == (theirs[0] == theirs[1])
    assert (mine[0] != mine[1]) == (theirs[0] != theirs[1])
    assert (hash(mine[0]) == hash(mine[1])) == (hash(theirs[0]) == hash(theirs[1]))
    for record, plain in zip(mine, theirs, strict=True):
        assert repr(record) == repr(plain).replace("_PlainPoint", "_Point")
    assert _Point(**a) != _OtherPoint(**a)  # type: ignore[arg-type]  # another class, same fields
    assert len({mine[0], mine[1]}) == len({theirs[0], theirs[1]})


def test_a_config_compares_and_hashes_by_value() -> None:
    """The daemon compares configs on a reload (what changed) and keys by records."""
    one, two = parse_config(CONFIG), parse_config(CONFIG)
    assert one == two
    assert hash(one.groups[0]) == hash(two.groups[0])
    assert one.groups[0] != dataclasses.replace(one.groups[0], count=11)
    assert "GroupConfig(name='grid'" in repr(one.groups[0])
