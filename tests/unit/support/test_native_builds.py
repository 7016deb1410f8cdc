"""The tests' builds of the compiled tick (tests/support/native_builds.py): where they are kept
and that each is made once per key, ahead of the tests or by the first test that asks."""

from __future__ import annotations

import os
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


def test_a_new_build_removes_all_but_the_newest_of_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    monkeypatch.setenv("EDGE_AGENT_NATIVE_BUILDS", str(kept))
    # six older libraries of "plain" (oldest first) and one of another build name
    old = [kept / f"tick-plain-{i:016x}.so" for i in range(6)]
    for age, path in enumerate(old):
        path.write_bytes(b"old")
        path.with_suffix(".lock").write_bytes(b"")
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    other = kept / "tick-baseline-0000000000000000.so"
    other.write_bytes(b"other")

    monkeypatch.setattr(native_builds.recipe, "build",
                        lambda out, **_: out.write_bytes(b"new"))
    new = native_builds.build("plain")
    left = sorted(path.name for path in kept.glob("tick-plain-*.so"))
    assert len(left) == native_builds.KEPT_PER_BUILD
    assert new.name in left
    assert {path.name for path in old[-(native_builds.KEPT_PER_BUILD - 1):]} <= set(left)
    assert not old[0].exists()
    assert not old[0].with_suffix(".lock").exists()
    assert other.exists()
