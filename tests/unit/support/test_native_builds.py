"""The tests' builds of the compiled tick (tests/support/native_builds.py): where they are kept
and that each is made once per key, ahead of the tests or by the first test that asks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import native_builds


def test_the_builds_are_kept_where_edge_agent_native_builds_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGE_AGENT_BENCH_CACHE", str(tmp_path / "bench"))
    monkeypatch.delenv("EDGE_AGENT_NATIVE_BUILDS", raising=False)
    assert native_builds.cache_dir() == tmp_path / "bench" / "native-builds"
    monkeypatch.setenv("EDGE_AGENT_NATIVE_BUILDS", str(tmp_path / "kept"))
    assert native_builds.cache_dir() == tmp_path / "kept"


def test_build_all_makes_each_build_once_and_the_tests_find_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[tuple[str, ...]] = []

    def fake_build(out: Path, *, extra: tuple[str, ...], where: Path, **_: Any) -> None:
        made.append(tuple(extra))
        out.write_bytes(b"library")

    monkeypatch.setenv("EDGE_AGENT_NATIVE_BUILDS", str(tmp_path / "kept"))
    monkeypatch.setattr(native_builds.recipe, "build", fake_build)
    first = native_builds.build_all()
    assert sorted(made) == sorted(native_builds.BUILDS.values())
    assert all(path.parent == tmp_path / "kept" and path.is_file() for path in first)
    # What a test asks for later in the run: the same libraries, none built again.
    assert [native_builds.build(name) for name in native_builds.BUILDS] == first
    assert native_builds.build_all() == first
    assert len(made) == len(native_builds.BUILDS)
