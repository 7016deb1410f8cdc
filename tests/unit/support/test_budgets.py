"""tests/support/budgets.py: each test file's time against its budget, and the slowest tests.

The budgets file's problems are reported as ``path:line: field: problem``; a test's phases add up
to the test, its tests to the file, the deepest folder's default covers a file without a budget
of its own; and the plugin does it under pytest-xdist too, where each worker measures its tests'
CPU seconds and the controller prints the sums (a real pytest run in a subprocess, pytester's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from tests.support.budgets import Budgets, Ledger, cpu_of, summary

pytest_plugins = ("pytester",)


def layout(root: Path, budgets: str) -> Path:
    (root / "tests" / "unit" / "core").mkdir(parents=True)
    (root / "tests" / "integration").mkdir(parents=True)
    (root / "tests" / "unit" / "core" / "test_a.py").write_text("")
    path = root / "tests" / "budgets.toml"
    path.write_text(budgets)
    return path


def test_a_file_s_own_budget_else_its_deepest_folder_s(tmp_path: Path) -> None:
    path = layout(
        tmp_path,
        '[folders]\n"tests" = 100\n"tests/unit" = 5\n\n'
        '[files]\n"tests/unit/core/test_a.py" = 12.5\n',
    )
    budgets = Budgets.read(path, tmp_path)
    assert budgets.of("tests/unit/core/test_a.py") == 12.5
    assert budgets.of("tests/unit/core/test_b.py") == 5.0  # tests/unit, not tests
    assert budgets.of("tests/integration/x/test_c.py") == 100.0
    assert budgets.of("elsewhere/test_d.py") is None
    assert budgets.gone == ()


def test_a_budget_of_a_file_that_is_gone_is_reported_not_fatal(tmp_path: Path) -> None:
    path = layout(tmp_path, '[folders]\n"tests" = 10\n[files]\n"tests/unit/test_gone.py" = 3\n')
    budgets = Budgets.read(path, tmp_path)
    assert budgets.gone == (f"{path}:4: tests/unit/test_gone.py",)
    ledger = Ledger()
    ledger.add("tests/unit/core/test_a.py::test_x", 1.0, 1.0)
    assert summary(ledger, budgets, slowest=0)[-2:] == [
        "budgets of test files or folders that are not there (renamed or merged?):",
        f"  {path}:4: tests/unit/test_gone.py",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[folders]\n"tests" = 10\n"tests/unit" = 0\n',
         ':3: folders."tests/unit": a number of seconds > 0, not 0'),
        ('[folders]\n"tests" = true\n', ':2: folders.tests: a number of seconds > 0, not True'),
        ('[folders]\n"tests" = 10\n[budget]\n"x" = 1\n',
         ":3: budget: unknown table: [files] or [folders]"),
        ('[files]\n"tests/unit/core/test_a.py" = 3\n',
         ":1: folders: at least one folder's default budget"),
        ("[folders\n", ":1: syntax:"),
    ],
    ids=["zero", "not a number", "unknown table", "no default", "syntax"],
)
def test_a_bad_budget_is_one_line_naming_where(tmp_path: Path, text: str, problem: str) -> None:
    path = layout(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        Budgets.read(path, tmp_path)
    assert str(raised.value).startswith(str(path) + problem.split(":", 2)[0] + ":"), raised.value
    assert problem in str(raised.value), raised.value


def test_phases_add_up_to_tests_and_tests_to_files(tmp_path: Path) -> None:
    ledger = Ledger()
    for nodeid, wall, cpu in [
        ("tests/a/test_x.py::test_one", 0.5, 0.1),  # setup
        ("tests/a/test_x.py::test_one", 30.0, 2.0),  # call
        ("tests/a/test_x.py::test_one", 1.5, 0.4),  # teardown
        ("tests/a/test_x.py::test_two[p]", 4.0, 4.0),
        ("tests/b/test_y.py::test_three", 50.0, 1.0),
    ]:
        ledger.add(nodeid, wall, cpu)
    files = {f.path: f for f in ledger.files()}
    assert (files["tests/a/test_x.py"].wall, files["tests/a/test_x.py"].cpu) == (36.0, 6.5)
    assert len(files["tests/a/test_x.py"].tests) == 2
    assert [f.path for f in ledger.files()] == ["tests/b/test_y.py", "tests/a/test_x.py"]
    assert [(t.nodeid, t.wall) for t in ledger.slowest(2)] == [
        ("tests/b/test_y.py::test_three", 50.0), ("tests/a/test_x.py::test_one", 32.0),
    ]  # fmt: skip
    budgets = Budgets(files={"tests/b/test_y.py": 60.0}, folders={"tests": 30.0})
    assert [(f.path, b) for f, b in ledger.over_budget(budgets)] == [("tests/a/test_x.py", 30.0)]
    lines = summary(ledger, budgets, slowest=1)
    assert lines[0].startswith("3 tests in 2 files: 86 s of test time, 8 s of CPU")
    assert lines[2] == "    50.0      1.0  tests/b/test_y.py::test_three"
    assert lines[3].startswith("1 files over their budget")
    assert lines[4] == "    36.0       30      6.5     2  tests/a/test_x.py"
    within = Budgets(files={}, folders={"tests": 100.0})
    assert summary(ledger, within, slowest=0)[-1].startswith("every test file within its budget")


def test_a_report_without_the_cpu_property_counts_none() -> None:
    assert cpu_of([("other", 3.0), ("cpu_s", 1.25)]) == 1.25
    assert cpu_of([("cpu_s", "not a number")]) == 0.0
    assert cpu_of([]) == 0.0


def test_the_plugin_sums_what_each_worker_measured(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run on two xdist workers: a test that burns CPU and one that sleeps; the summary
    shows both, the sleeper with wall time and next to no CPU, and the file over its budget."""
    pytester.makeconftest(
        "from tests.support.budgets import Budgets, TimeBudget\n"
        "def pytest_configure(config):\n"
        "    budgets = Budgets(files={'test_work.py': 0.2}, folders={})\n"
        "    config.pluginmanager.register(TimeBudget(budgets), 'time-budget')\n"
    )
    pytester.makepyfile(
        test_work="import time\n"
        "def test_burns():\n"
        "    end = time.process_time() + 0.3\n"
        "    while time.process_time() < end:\n"
        "        pass\n"
        "def test_sleeps():\n"
        "    time.sleep(0.3)\n"
    )
    root = Path(__file__).resolve().parents[3]
    monkeypatch.setenv("PYTHONPATH", str(root))  # tests.support, in the run's processes
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    assert "2 tests in 1 files" in text, text
    rows = {line.split()[-1]: line.split()[:2] for line in result.stdout.lines
            if line.strip().startswith(tuple("0123456789")) and "::" in line}  # fmt: skip
    burns, sleeps = rows["test_work.py::test_burns"], rows["test_work.py::test_sleeps"]
    assert float(burns[1]) >= 0.25, text  # the worker's CPU seconds reached the summary
    assert float(sleeps[0]) >= 0.25, text
    assert float(sleeps[1]) < 0.2, text
    assert "1 files over their budget" in text, text
