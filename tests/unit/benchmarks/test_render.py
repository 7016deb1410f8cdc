"""benchmarks/render.py: docs/performance.md is what it renders from the stored results, and
how a table picks its rows (the newest run per machine and row, pivots, rows not measured)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

import render  # noqa: E402
import result_store  # noqa: E402
from render import Column, Table  # noqa: E402


def test_the_performance_page_is_what_the_stored_results_render() -> None:
    rendered = render.render(result_store.read_all())
    page = render.PAGE.read_text() if render.PAGE.is_file() else ""
    assert page == rendered, (
        "docs/performance.md is not what benchmarks/results/ renders: run "
        "`python benchmarks/render.py` (and commit the page with the results)"
    )


def test_every_table_of_the_page_has_a_row_or_says_what_to_run() -> None:
    page = render.render(result_store.read_all())
    for table in render.TABLES:
        assert f'<a id="{table.id}"></a>' in page
    assert len({t.id for t in render.TABLES}) == len(render.TABLES)


def line(result: dict[str, Any], *, machine: str = "m1", date: str = "2026-01-02T10:00:00Z",
         commit: str = "a" * 40, benchmark: str = "bench_x.py", dirty: bool = False,
         command: str = "python benchmarks/bench_x.py") -> dict[str, Any]:
    return {
        "machine": machine, "cpu": "Cortex-A72", "arch": "aarch64", "cores": 4,
        "python": "3.11.2", "numpy": "2.2.0", "commit": commit, "dirty": dirty, "date": date,
        "run": date, "load1": 0.5, "benchmark": benchmark, "command": command, "result": result,
    }


TABLE = Table(
    id="t", title="A question", scope="What the rows measure.", benchmark="bench_x.py",
    command="python benchmarks/record.py bench_x.py -- --size {size}",
    where={"bench": "x"}, key=("size",),
    expect=({"size": 1}, {"size": 10}, {"size": 100}),
    columns=(Column("size", "size", ",d"), Column("rate", "rate", ",.0f", suffix="/s")),
)


def body(lines: list[str]) -> list[str]:
    """The rows of the table in ``lines``, without its header."""
    start = next(i for i, text in enumerate(lines) if text.startswith("|---")) + 1
    rows = []
    for text in lines[start:]:
        if not text.startswith("| "):
            break
        rows.append(text)
    return rows


def test_the_newest_run_of_a_row_is_shown_and_the_older_ones_counted() -> None:
    lines = [
        line({"bench": "x", "size": 10, "rate": 1000}, date="2026-01-02T10:00:00Z"),
        line({"bench": "x", "size": 10, "rate": 2500}, date="2026-01-03T10:00:00Z",
             commit="b" * 40, dirty=True),
        line({"bench": "x", "size": 10, "rate": 1500}, date="2026-01-01T10:00:00Z"),
    ]
    out = render.render_table(TABLE, lines)
    rows = body(out)
    measured = [r for r in rows if "not measured" not in r]
    assert measured == [
        "| 10 | 2,500/s | m1 | Cortex-A72 (4 cores) | `bbbbbbbbb` (dirty) | 2026-01-03 | 0.5 | "
        "`python benchmarks/bench_x.py` |"
    ]
    assert "(2 older runs of these rows stored)" in "\n".join(out)


def test_each_machine_has_its_own_row() -> None:
    lines = [
        line({"bench": "x", "size": 10, "rate": 1000}, machine="pi4"),
        line({"bench": "x", "size": 10, "rate": 9000}, machine="x86"),
    ]
    rows = [r for r in body(render.render_table(TABLE, lines)) if "not measured" not in r]
    assert [r.split(" | ")[:3] for r in rows] == [["| 10", "1,000/s", "pi4"],
                                                    ["| 10", "9,000/s", "x86"]]


def test_an_expected_row_without_a_run_says_not_measured_yet_with_its_command() -> None:
    lines = [line({"bench": "x", "size": 10, "rate": 1000})]
    rows = body(render.render_table(TABLE, lines))
    assert rows[0].startswith("| 10 | 1,000/s |")
    assert rows[1:] == [
        "| 1 | **not measured yet** |  |  |  |  |  | "
        "`python benchmarks/record.py bench_x.py -- --size 1` |",
        "| 100 | **not measured yet** |  |  |  |  |  | "
        "`python benchmarks/record.py bench_x.py -- --size 100` |",
    ]
    text = " ".join(render.render_table(TABLE, lines))  # its paragraphs' lines joined
    assert "`python benchmarks/record.py bench_x.py -- --size SIZE` stores a run" in text


def test_other_benchmarks_and_records_the_filter_leaves_out_are_not_rows() -> None:
    lines = [
        line({"bench": "x", "size": 1, "rate": 5}, benchmark="bench_y.py"),
        line({"bench": "machine", "size": 1, "rate": 5}),
        line({"bench": "x", "rate": 5}),  # no key
    ]
    rows = body(render.render_table(TABLE, lines))
    assert all("not measured yet" in r for r in rows)
    assert len(rows) == 3


def test_a_pivot_puts_the_records_of_one_run_side_by_side_with_their_ratio() -> None:
    table = Table(
        id="p", title="Against a peer", scope="Like for like.", benchmark="bench_x.py",
        command="python benchmarks/record.py bench_x.py", key=("n",), pivot="impl",
        columns=(
            Column("agents", "n", ",d"),
            Column("ours", "rate", ",.0f", of="ours"),
            Column("peer", "rate", ",.0f", of="peer"),
            Column("ours / peer", render.ratio(("ours", "rate"), ("peer", "rate")), ".2f",
                   suffix="x"),
        ),
    )
    lines = [
        line({"n": 1000, "impl": "ours", "rate": 3000.0}),
        line({"n": 1000, "impl": "peer", "rate": 1200.0}),
        line({"n": 10, "impl": "ours", "rate": 50.0}),  # the peer did not run
    ]
    rows = body(render.render_table(table, lines))
    assert [r.split(" | ")[:4] for r in rows] == [
        ["| 10", "50", "-", "-"],
        ["| 1,000", "3,000", "1,200", "2.50x"],
    ]


def test_a_headline_is_the_row_it_names_on_each_machine_with_both_ends_of_its_table() -> None:
    lines = [
        line({"bench": "memory_summary", "venv": "device", "mqtt": "off", "this_rss_mb": 40.04},
             benchmark="bench_memory.py", machine="pi4"),
        line({"bench": "memory_summary", "venv": "device", "mqtt": "on", "this_rss_mb": 46.0},
             benchmark="bench_memory.py", machine="pi4"),
        line({"bench": "memory_summary", "venv": "extras", "mqtt": "on", "this_rss_mb": 46.5},
             benchmark="bench_memory.py", machine="pi4"),
        line({"bench": "memory_summary", "venv": "extras", "mqtt": "on", "this_rss_mb": 30.0},
             benchmark="bench_memory.py", machine="other"),  # another machine's: not an end
    ]
    headline = [r for r in render.headline_table(lines) if r.startswith("| Daemon RSS")]
    assert headline[0] == (
        "| Daemon RSS, 1,000 grid10 agents, the device's venv (targets 40 / 45 MB) | 40.0 MB "
        "without MQTT, 46.0 MB with | weakest 46.5 MB (extras, MQTT), best 46.0 MB (device, "
        "MQTT) | [Daemon RSS with and without MQTT, in the device's venv and with every "
        "extra](#daemon-rss) | pi4 | Cortex-A72 (4 cores) | `aaaaaaaaa` | 2026-01-02 |"
    )
    assert len(headline) == 1  # the other machine measured no device venv
    missing = [r for r in render.headline_table(lines) if r.startswith("| The hub at 1,000")]
    assert len(missing) == 1
    assert "**not measured yet**" in missing[0]


def test_the_ends_of_a_comparison_are_its_weakest_and_best_rows() -> None:
    def row(name: str, value: float | None) -> render.Row:
        return render.Row(key={"name": name}, records={None: {"v": value}}, lines=())

    rows = [row("a", 2.0), row("b", 7.5), row("c", None), row("d", 0.5)]
    higher = render.Ends(lambda r: r.get("v"), lambda r: str(r.get("name")))
    assert higher.text(rows) == "weakest 0.50x (d), best 7.50x (b)"
    lower = render.Ends(lambda r: r.get("v"), lambda r: str(r.get("name")), fmt=".1f",
                        suffix=" ms", higher_is_better=False)
    assert lower.text(rows) == "weakest 7.5 ms (b), best 0.5 ms (d)"
    assert higher.text(rows[:1]) is None  # one row has no two ends


def test_cells() -> None:
    assert render.cell(None) == "-"
    assert render.cell(True) == "yes"
    assert render.cell(1234.5, ",.0f", " MB") == "1,234 MB"
    assert render.cell("a|b") == "a\\|b"
    assert render.cell([1, "x"]) == "1, x"
