"""benchmarks/record.py runs a benchmark and stores what it printed with its provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

import record  # noqa: E402
import result_store  # noqa: E402


def test_a_run_is_stored_line_by_line_with_machine_cpu_commit_and_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--models", "3", "--repeats", "1"]
    code = record.main(
        ["--store", str(tmp_path), "--machine", "lab-1", "bench_validators.py", "--", *args]
    )
    assert code == 0
    printed = record.json_objects(capsys.readouterr().out)
    stored = result_store.read_all(tmp_path)
    assert len(stored) == len(printed) >= 3  # pydantic, msgspec, their ratio
    assert [line["result"] for line in stored] == printed
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    for line in stored:
        assert result_store.missing_fields(line) == []
        assert line["machine"] == "lab-1"
        assert line["commit"] == head
        assert line["benchmark"] == "bench_validators.py"
        assert line["command"] == "python benchmarks/bench_validators.py --models 3 --repeats 1"
        assert line["cores"] >= 1
        assert line["run"] == stored[0]["run"]
        assert Path(line["source"].rsplit(":", 1)[0]).name == f"{line['date'][:10]}-lab-1.jsonl"


def test_a_failed_run_stores_nothing(tmp_path: Path) -> None:
    code = record.main(
        ["--store", str(tmp_path), "--machine", "lab-1", "bench_validators.py", "--",
         "--models", "many"]
    )
    assert code != 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench_core.py", "--", "--smoke"], "a --smoke run's numbers mean nothing"),
        (["bench_nothing.py"], "no benchmark of that name"),
        (["render.py"], "no benchmark of that name"),
        (["--machine", "a/b", "bench_core.py"], "give a plain name"),
    ],
)
def test_what_is_not_a_run_to_store_is_refused_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        record.main(["--store", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_only_json_objects_are_taken_from_what_a_benchmark_prints() -> None:
    out = "\n".join([
        json.dumps({"bench": "a", "x": 1}),
        "| a markdown | table |",
        "{not json",
        "[1, 2]",
        json.dumps({"bench": "b"}),
    ])
    assert record.json_objects(out) == [{"bench": "a", "x": 1}, {"bench": "b"}]


def test_the_cpu_is_named() -> None:
    assert record.cpu_model().strip()
