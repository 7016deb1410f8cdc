"""The stored benchmark results (benchmarks/result_store.py): every line names what it was
measured on, and a line that is not a JSON object is named by file and line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

import result_store  # noqa: E402


def test_every_stored_line_names_its_machine_cpu_commit_and_date() -> None:
    lines = result_store.read_all()
    assert lines, "benchmarks/results/ holds no stored run: docs/performance.md renders them"
    lacking = [
        f"{line['source']}: lacks {result_store.missing_fields(line)}"
        for line in lines
        if result_store.missing_fields(line)
    ]
    assert lacking == []
    for line in lines:
        assert re.fullmatch(r"[0-9a-f]{40}", line["commit"]), line["source"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line["date"]), line["source"]
        assert isinstance(line["dirty"], bool), line["source"]
        assert isinstance(line["result"], dict), line["source"]
        # The file is the day and the machine of its lines.
        name = Path(line["source"].rsplit(":", 1)[0]).name
        assert name == f"{line['date'][:10]}-{line['machine']}.jsonl", line["source"]


def test_append_then_read_all_gives_the_lines_back_with_their_source(tmp_path: Path) -> None:
    path = result_store.file_for("2026-01-02", "pi4-lab", tmp_path)
    assert path.name == "2026-01-02-pi4-lab.jsonl"
    assert result_store.append(path, [{"a": 1}, {"b": [2, 3]}]) == 2
    assert result_store.append(path, [{"c": None}]) == 1
    lines = result_store.read_all(tmp_path)
    assert [{k: v for k, v in line.items() if k != "source"} for line in lines] == [
        {"a": 1}, {"b": [2, 3]}, {"c": None},
    ]
    assert lines[2]["source"].endswith("2026-01-02-pi4-lab.jsonl:3")
    assert result_store.missing_fields(lines[0]) == list(result_store.REQUIRED)


def test_a_line_that_is_not_a_json_object_is_named(tmp_path: Path) -> None:
    (tmp_path / "2026-01-02-x.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"2026-01-02-x\.jsonl:2: not a JSON object"):
        result_store.read_all(tmp_path)
    (tmp_path / "2026-01-02-x.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"2026-01-02-x\.jsonl:2: not JSON"):
        result_store.read_all(tmp_path)
