"""Each test file's time against its budget, and the slowest tests, reported at the end of a run.

pytest's ``--durations`` lists phases (a setup, a call) one by one and says nothing of where a
suite's time goes by file, nor whether a test worked or waited. This plugin (``tests/conftest.py``
registers its hooks) adds up, for each test, its setup, call and teardown as pytest measures them
(``report.duration``, wall seconds) and the CPU seconds spent meanwhile by the process that ran it
and by the children it waited for (the daemons, brokers and command lines a test starts and
stops: ``getrusage``'s self and children), then sums them per file. At the end of the run it
prints the slowest tests (wall and CPU, so that a test that waits shows as one) and every file
whose tests took longer than its budget in ``tests/budgets.toml``, the one place budgets are
declared. It reports; it never fails a run on time: how long a test takes depends on the machine
and on what else runs there, which no test may depend on.

Under pytest-xdist each worker measures its own tests and sends the CPU seconds with the report
(``report.user_properties``); the controller, which prints the terminal summary, adds them up.
A module-scoped fixture's setup and teardown count for the test that ran them, in the same file;
a session-scoped one's for the first test that asked for it.
"""

from __future__ import annotations

import resource
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_agent.config.toml_lines import Problem, TomlDocument

__all__ = [
    "CPU_PROPERTY",
    "Budgets",
    "FileTimes",
    "Ledger",
    "TestTime",
    "TimeBudget",
    "cpu_of",
    "cpu_seconds",
    "read_budgets",
    "summary",
]

#: The key under which a worker's report carries the CPU seconds of its phase.
CPU_PROPERTY = "cpu_s"


def cpu_seconds() -> float:
    """CPU seconds (user and system) of this process and of the children it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class Budgets:
    """Seconds a test file's tests may take together: a file's own budget, else the default of
    the deepest folder above it that has one."""

    files: Mapping[str, float]
    folders: Mapping[str, float]
    #: Where the file names a test file or folder that is not there (``path:line: name``).
    gone: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: Path, root: Path) -> Budgets:
        """``[folders]`` and ``[files]`` tables of ``"path" = seconds`` (paths from ``root``);
        a problem raises ConfigError ``path:line: field: problem``. A budget of a path that is
        not there (a file renamed or merged since) is kept in ``gone``, for the summary."""
        doc = TomlDocument.read(path)
        problems: list[Problem] = []
        tables: dict[str, dict[str, float]] = {"files": {}, "folders": {}}
        for key, value in doc.data.items():
            if key not in tables:
                problems.append(((key,), "unknown table: [files] or [folders]"))
                continue
            if not isinstance(value, dict):
                problems.append(((key,), "a table of \"path\" = seconds"))
                continue
            for name, seconds in value.items():
                number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
                if not number or seconds <= 0:
                    problems.append(((key, name), f"a number of seconds > 0, not {seconds!r}"))
                    continue
                tables[key][name] = float(seconds)
        if not tables["folders"]:
            problems.append((("folders",), "at least one folder's default budget"))
        if problems:
            raise doc.error(problems)
        # A budget of a file or folder since renamed or merged is reported, not fatal.
        gone = [f"{doc.path}:{doc.line_of((key, name))}: {name}"
                for key, test in (("files", Path.is_file), ("folders", Path.is_dir))
                for name in tables[key] if not test(root / name)]  # fmt: skip
        return cls(files=tables["files"], folders=tables["folders"], gone=tuple(gone))

    def of(self, test_file: str) -> float | None:
        """The budget of ``test_file`` (a path from the root), or None when nothing covers it."""
        if test_file in self.files:
            return self.files[test_file]
        parts = Path(test_file).parts
        for depth in range(len(parts) - 1, 0, -1):
            folder = "/".join(parts[:depth])
            if folder in self.folders:
                return self.folders[folder]
        return None


@dataclass
class TestTime:
    """One test's phases added up."""

    __test__ = False  # not a test class, whatever its name

    nodeid: str
    wall: float = 0.0
    cpu: float = 0.0


@dataclass
class FileTimes:
    """One test file's tests added up."""

    path: str
    wall: float = 0.0
    cpu: float = 0.0
    tests: set[str] = field(default_factory=set)


class Ledger:
    """The run's times by test and by file, from the reports of every phase."""

    def __init__(self) -> None:
        self.tests: dict[str, TestTime] = {}

    def add(self, nodeid: str, wall: float, cpu: float) -> None:
        """One phase (setup, call or teardown) of the test ``nodeid``."""
        test = self.tests.setdefault(nodeid, TestTime(nodeid))
        test.wall += wall
        test.cpu += cpu

    def files(self) -> list[FileTimes]:
        """Every file's sums, the longest first."""
        by_file: dict[str, FileTimes] = {}
        for test in self.tests.values():
            path = test.nodeid.split("::", 1)[0]
            times = by_file.setdefault(path, FileTimes(path))
            times.wall += test.wall
            times.cpu += test.cpu
            times.tests.add(test.nodeid)
        return sorted(by_file.values(), key=lambda f: f.wall, reverse=True)

    def slowest(self, count: int) -> list[TestTime]:
        return sorted(self.tests.values(), key=lambda t: t.wall, reverse=True)[:count]

    def over_budget(self, budgets: Budgets) -> Iterator[tuple[FileTimes, float]]:
        """The files whose tests took longer than their budget, with the budget."""
        for times in self.files():
            budget = budgets.of(times.path)
            if budget is not None and times.wall > budget:
                yield times, budget


def cpu_of(properties: Iterable[tuple[str, object]]) -> float:
    """The CPU seconds a worker put in a report's ``user_properties`` (0 when none)."""
    for key, value in properties:
        if key == CPU_PROPERTY and isinstance(value, int | float):
            return float(value)
    return 0.0


def summary(ledger: Ledger, budgets: Budgets, slowest: int) -> list[str]:
    """The lines printed at the end of the run."""
    files = ledger.files()
    if not files:
        return []
    wall = sum(f.wall for f in files)
    cpu = sum(f.cpu for f in files)
    lines = [
        f"{len(ledger.tests)} tests in {len(files)} files: {wall:,.0f} s of test time, "
        f"{cpu:,.0f} s of CPU (the tests' processes and the children they waited for)",
    ]
    if slowest > 0:
        lines.append(f"the {min(slowest, len(ledger.tests))} slowest tests (setup, call and "
                     "teardown; wall s, CPU s):")
        lines += [f"{t.wall:8.1f} {t.cpu:8.1f}  {t.nodeid}" for t in ledger.slowest(slowest)]
    over = list(ledger.over_budget(budgets))
    if over:
        lines.append(f"{len(over)} files over their budget (tests/budgets.toml; wall s, budget s, "
                     "CPU s, tests):")
        lines += [f"{f.wall:8.1f} {b:8.0f} {f.cpu:8.1f} {len(f.tests):5d}  {f.path}"
                  for f, b in over]
    else:
        lines.append("every test file within its budget (tests/budgets.toml)")
    if budgets.gone:
        lines.append("budgets of test files or folders that are not there (renamed or merged?):")
        lines += [f"  {where}" for where in budgets.gone]
    return lines


def read_budgets(root: Path) -> Budgets:
    """tests/budgets.toml, or a ConfigError naming its line."""
    return Budgets.read(root / "tests" / "budgets.toml", root)


#: How many of the slowest tests the summary lists.
SLOWEST = 30

_started = pytest.StashKey[float]()


class TimeBudget:
    """The plugin (module docstring): registered by tests/conftest.py for the whole run."""

    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets
        self.ledger = Ledger()

    def _phase(self, item: pytest.Item) -> Generator[None, object, object]:
        item.stash[_started] = cpu_seconds()
        return (yield)

    pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_phase)
    pytest_runtest_call = pytest.hookimpl(wrapper=True)(_phase)
    pytest_runtest_teardown = pytest.hookimpl(wrapper=True)(_phase)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        started = item.stash.get(_started, None)
        if started is not None:
            report.user_properties.append((CPU_PROPERTY, cpu_seconds() - started))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.ledger.add(report.nodeid, report.duration, cpu_of(report.user_properties))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        lines = summary(self.ledger, self.budgets, SLOWEST)
        if lines:
            terminalreporter.section("test time by file, against tests/budgets.toml")
            for line in lines:
                terminalreporter.write_line(line)
