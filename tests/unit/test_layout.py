"""The tests mirror the source (docs/architecture.md, "Tests: where a test goes").

``tests/unit/<part>/test_<module>.py`` covers ``edge_agent/<part>/<module>.py``;
``tests/unit/host/`` mirrors ``tools/edge_agent_host/``; integration tests sit in one folder per
part of the product the journey runs; helpers shared by tests and benchmarks live in
``tests/support/``. Every folder is a package, so two folders may hold a test of the same name
(``bundle/test_signing.py`` and ``coordination/test_signing.py``) and pytest imports them as two
modules.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
UNIT = TESTS / "unit"
INTEGRATION = TESTS / "integration"

#: Folders of tests/unit that mirror something other than a package of edge_agent/.
MIRRORS = {
    "host": ROOT / "tools" / "edge_agent_host",
    "benchmarks": ROOT / "benchmarks",
    "examples": ROOT / "examples",
    "docs": ROOT / "docs",
    "support": TESTS / "support",
}
#: Tests at the top of tests/unit that hold a rule over the whole tree, not one module.
WHOLE_TREE = frozenset({"test_architecture.py", "test_cli_help.py", "test_layout.py"})
#: Modules of a test folder that are not tests: the package marker and pytest's fixtures.
NOT_TESTS = frozenset({"__init__.py", "conftest.py"})


def folders(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*") if p.is_dir() and p.name != "__pycache__")


def source_of(folder: Path) -> Path:
    """The source folder a folder of tests/unit mirrors."""
    first, *rest = folder.relative_to(UNIT).parts
    if first in MIRRORS:
        return MIRRORS[first].joinpath(*rest)
    return ROOT / "edge_agent" / first / Path(*rest)


def test_every_unit_test_folder_mirrors_a_source_folder() -> None:
    wrong = [
        f"{f.relative_to(ROOT)}: no {source_of(f).relative_to(ROOT)}"
        for f in folders(UNIT)
        if not source_of(f).is_dir()
    ]
    assert not wrong, "unit test folders that mirror nothing:\n" + "\n".join(wrong)


def test_a_unit_test_at_the_top_covers_a_module_of_the_ground_floor() -> None:
    wrong = [
        p.name
        for p in sorted(UNIT.glob("test_*.py"))
        if p.name not in WHOLE_TREE
        and not (ROOT / "edge_agent" / f"{p.stem.removeprefix('test_')}.py").is_file()
    ]
    assert not wrong, (
        "tests/unit/test_<module>.py must name a module edge_agent/<module>.py; move these to "
        f"the folder of what they cover: {wrong}"
    )


def test_integration_tests_sit_in_the_folder_of_their_part() -> None:
    flat = sorted(p.name for p in INTEGRATION.glob("test_*.py"))
    assert not flat, f"tests/integration/<part>/, not tests/integration/: {flat}"


def test_every_test_folder_is_a_package() -> None:
    """Without ``__init__.py`` two test files of the same name would clash on import."""
    missing = [
        str(f.relative_to(ROOT))
        for top in (UNIT, INTEGRATION, TESTS / "support")
        for f in [top, *folders(top)]
        if any(f.glob("*.py")) and not (f / "__init__.py").is_file()
    ]
    assert not missing, f"test folders without __init__.py: {missing}"


def test_helpers_live_in_tests_support() -> None:
    """A module shared by tests (a broker, a harness) is imported from ``tests.support``, not
    from a test folder, so that moving a test never moves what others import."""
    stray = [
        str(p.relative_to(ROOT))
        for top in (UNIT, INTEGRATION)
        for p in sorted(top.rglob("*.py"))
        if not p.name.startswith("test_") and p.name not in NOT_TESTS
    ]
    assert not stray, f"helpers outside tests/support/: {stray}"
