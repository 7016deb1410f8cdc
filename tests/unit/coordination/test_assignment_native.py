"""The compiled assignment (edge_agent/aif/kernels/native/assignment.c) against its Python twin
(edge_agent/coordination/assignment.py), on the same operations: the same rows matched to the
same columns with the same potentials, to the bit, after every row, role and team; a team that
cannot be formed whole taken back the same way. In test_recipe.py's sanitized subprocess the
compiled one is the AddressSanitizer + UBSan build (``sanitized`` in every test's name, so that
subprocess selects them all)."""

from __future__ import annotations

import copy
import ctypes
import os
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.kernels.native import binding
from edge_agent.coordination.assignment import Assignment, Edges, edges_of, unavailable
from edge_agent.core.native_pass import NATIVE_ENV
from tests.support.native_tick import SANITIZED_ENV


@pytest.fixture
def library() -> ctypes.CDLL:
    """The sanitized build in test_recipe.py's subprocess, else the package's library."""
    where = os.environ.get(SANITIZED_ENV)
    if where is not None:
        return binding.load(Path(where))
    assert unavailable() is None, unavailable()
    return binding.load()


def instance(
    rng: np.random.Generator, n_lists: int, n_cols: int, density: float, spread: int
) -> Edges:
    """Edge lists with costs in ``[-spread/4, spread)`` (many ties when ``spread`` is small),
    each of a random part of the columns (a list may have none: its rows have no path)."""
    costs = rng.integers(-spread // 4, spread, (n_lists, n_cols))
    mask = rng.random((n_lists, n_cols)) < density
    lists, cols = np.nonzero(mask)
    # Each list's columns in a random order (the order the bids came in).
    order = rng.permutation(lists.size)
    return edges_of(lists[order], cols[order], costs[lists[order], cols[order]], n_lists)


def both(edges: Edges, n_cols: int, capacity: int, library: ctypes.CDLL) -> tuple[Assignment,
                                                                                   Assignment]:
    compiled = Assignment(edges, n_cols, capacity, native=True, library=library)
    twin = Assignment(edges, n_cols, capacity, native=False)
    assert compiled.native
    assert not twin.native
    return compiled, twin


def same(compiled: Assignment, twin: Assignment) -> None:
    n = twin.rows
    assert compiled.rows == n
    assert np.array_equal(compiled.row_list[:n], twin.row_list[:n])
    assert np.array_equal(compiled.col4row[:n], twin.col4row[:n])
    assert np.array_equal(compiled.u[:n], twin.u[:n])
    assert np.array_equal(compiled.row4col, twin.row4col)
    assert np.array_equal(compiled.v, twin.v)
    assert (compiled._spc == 1 << 62).all()  # every column back to unseen after a search


def random_sizes(rng: np.random.Generator) -> tuple[int, int, float, int]:
    n_lists, n_cols = int(rng.integers(1, 40)), int(rng.integers(1, 90))
    return n_lists, n_cols, float(rng.uniform(0.02, 0.8)), int(rng.choice([2, 3, 50, 10**6]))


@pytest.mark.parametrize("seed", range(150))
def test_rows_added_one_by_one_sanitized(seed: int, library: ctypes.CDLL) -> None:
    """Rows of random lists (repeated: a role's slots share a list), one :meth:`add` at a
    time, past the capacity and past what can be matched (rows with no path)."""
    rows_one_by_one(seed, library)


def rows_one_by_one(seed: int, library: ctypes.CDLL) -> int:
    rng = np.random.default_rng(seed)
    n_lists, n_cols, density, spread = random_sizes(rng)
    edges = instance(rng, n_lists, n_cols, density, spread)
    capacity = int(rng.integers(1, 60))
    compiled, twin = both(edges, n_cols, capacity, library)
    refused = 0
    for g in rng.integers(0, n_lists, int(rng.integers(1, 80))).tolist():
        got = compiled.add(g)
        assert got == twin.add(g)
        refused += got < 0
        same(compiled, twin)
    assert compiled.columns().tolist() == twin.columns().tolist()
    assert compiled.unique() == twin.unique()
    return refused


@pytest.mark.parametrize("seed", range(150))
def test_roles_slots_added_at_once_sanitized(seed: int, library: ctypes.CDLL) -> None:
    """:meth:`add_slots` (the twin's step without a search for the slots that need none, the
    compiled one searching each): the same count, columns and potentials after every role."""
    rng = np.random.default_rng(1000 + seed)
    n_lists, n_cols, density, spread = random_sizes(rng)
    edges = instance(rng, n_lists, n_cols, density, spread)
    slots = rng.integers(1, 6, n_lists)
    capacity = int(rng.integers(1, slots.sum() + 2))
    compiled, twin = both(edges, n_cols, capacity, library)
    for g in rng.permutation(n_lists).tolist():
        assert compiled.add_slots(g, int(slots[g])) == twin.add_slots(g, int(slots[g]))
        same(compiled, twin)
    assert compiled.unique() == twin.unique()


@pytest.mark.parametrize("seed", range(100))
def test_teams_formed_whole_or_taken_back_sanitized(seed: int, library: ctypes.CDLL) -> None:
    """The fill's use (team_award.fill): each team's roles added with save/restore, a team
    that cannot be formed whole restored to before it; scarce columns, so that some cannot."""
    teams_whole_or_back(seed, library)


def teams_whole_or_back(seed: int, library: ctypes.CDLL) -> tuple[int, int]:
    rng = np.random.default_rng(5000 + seed)
    n_lists, n_cols = int(rng.integers(2, 40)), int(rng.integers(2, 40))
    edges = instance(rng, n_lists, n_cols, float(rng.uniform(0.05, 0.7)),
                     int(rng.choice([3, 40, 10**6])))
    slots = rng.integers(1, 5, n_lists)
    compiled, twin = both(edges, n_cols, int(slots.sum()), library)
    teams = np.split(rng.permutation(n_lists), np.sort(rng.choice(
        np.arange(1, n_lists), int(rng.integers(0, n_lists - 1)), replace=False)))
    formed = 0
    for team in teams:
        saved = compiled.save(), twin.save()
        whole = True
        for g in team.tolist():
            got = compiled.add_slots(g, int(slots[g]))
            assert got == twin.add_slots(g, int(slots[g]))
            same(compiled, twin)
            if got < slots[g]:
                whole = False
                break
        if not whole:
            compiled.restore(saved[0])
            twin.restore(saved[1])
        formed += whole
        same(compiled, twin)
        assert compiled.unique() == twin.unique()
    assert compiled.columns().tolist() == twin.columns().tolist()
    return formed, len(teams)


def test_the_instances_have_rows_with_no_path_and_teams_taken_back(
    library: ctypes.CDLL,
) -> None:
    """The cases above are not all easy: rows no path reaches and teams taken back happen,
    and so do teams formed."""
    refused = [rows_one_by_one(seed, library) for seed in range(40)]
    formed = [teams_whole_or_back(seed, library) for seed in range(40)]
    assert sum(r > 0 for r in refused) >= 10
    assert sum(f < n for f, n in formed) >= 10
    assert sum(f for f, _ in formed) >= 40


@pytest.mark.parametrize("seed", range(4))
def test_a_formation_s_size_with_wide_ties_sanitized(seed: int, library: ctypes.CDLL) -> None:
    """About a 20 x 500 formation's fill: 10,000 columns, 150 roles of 1-4 slots, each with
    its own few hundred bidders at a handful of costs (ties many columns wide)."""
    rng = np.random.default_rng(9000 + seed)
    n_lists, n_cols = 150, 10_000
    lists = np.repeat(np.arange(n_lists), 300)
    cols = np.concatenate([rng.choice(n_cols, 300, replace=False) for _ in range(n_lists)])
    costs = rng.integers(0, 4, lists.size) * (1 << 26) + rng.integers(0, 2, lists.size)
    edges = edges_of(lists, cols, costs, n_lists)
    slots = rng.integers(1, 5, n_lists)
    compiled, twin = both(edges, n_cols, int(slots.sum()), library)
    for g in range(n_lists):
        assert compiled.add_slots(g, int(slots[g])) == twin.add_slots(g, int(slots[g]))
    same(compiled, twin)
    assert compiled.rows == slots.sum()


def test_the_path_is_chosen_when_the_assignment_is_made(
    library: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch
) -> None:
    edges = edges_of(np.array([0]), np.array([0]), np.array([1]), 1)
    assert Assignment(edges, 1, 1, library=library).native
    monkeypatch.setenv(NATIVE_ENV, "0")
    assert unavailable(library) == f"{NATIVE_ENV}=0 in the environment"
    assert not Assignment(edges, 1, 1, library=library).native
    monkeypatch.delenv(NATIVE_ENV)
    without = ctypes.CDLL(None)  # this process's own symbols: no assignment among them
    assert "exports no edge_assign_add_slots" in str(unavailable(without))
    assert not Assignment(edges, 1, 1, library=without).native
    with pytest.raises(RuntimeError, match="no compiled assignment"):
        Assignment(edges, 1, 1, native=True, library=without)


def test_a_copy_searches_its_own_arrays_sanitized(library: ctypes.CDLL) -> None:
    """``copy.deepcopy`` (the harness copies boards holding a fill's record): the copy adds
    rows to its own arrays, the original stays as it was."""
    rng = np.random.default_rng(77)
    edges = instance(rng, 12, 30, 0.4, 50)
    compiled, twin = both(edges, 30, 30, library)
    for g in range(6):
        assert compiled.add_slots(g, 2) == twin.add_slots(g, 2)
    before = compiled.save()
    copied = copy.deepcopy(compiled)
    assert copied.native
    for g in range(6, 12):
        assert copied.add_slots(g, 2) == twin.add_slots(g, 2)
    same(copied, twin)
    assert compiled.rows == before.rows
    assert np.array_equal(compiled.v, before.v)
    assert np.array_equal(compiled.row4col, before.row4col)
