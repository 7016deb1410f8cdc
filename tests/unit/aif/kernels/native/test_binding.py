"""The compiled tick's binding (edge_agent/aif/kernels/native/binding.py) holds the library to
its contract, tick.h: the package's library reports the layout the binding declares (every
struct's size, every field's offset, size and kind, every limit), and the model sizes the pass
takes are the library's own limits (those docs/learning.md states). A library built from
another header (a field of another type, a field or a limit added, no layout table at all) or
one that cannot be loaded is refused with a reason that names the difference, never called;
the package's library refused, a group that would take the pass steps with numpy and says why.
A limit changed in the header is taken from a library built from it; the package's library's
limits are known without loading it (``PACKAGE_LIMITS``, tick.h's values, checked here against
the header and the library: a package library of other limits is refused).

The changed libraries are built from copies of the sources with the recipe
(tests/support/native_builds.py; the C compiler needed: ``apt-get install gcc libc6-dev``)."""

from __future__ import annotations

import ctypes
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.kernels import native
from edge_agent.aif.kernels.native import binding, recipe
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import compiled_nbytes
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model
from tests.support import native_builds
from tests.support.native_tick import Pass, make_world

REPO = Path(__file__).resolve().parents[5]


def test_the_package_library_reports_the_layout_the_binding_declares() -> None:
    assert binding.unavailable() is None, binding.unavailable()
    reported = binding.layout(binding.load())
    assert binding.mismatch(reported) is None
    ours = binding.declared()
    assert reported.keys() == ours.keys()
    for name, (kind, value, size) in ours.items():
        if kind != "l":
            assert reported[name] == (kind, value, size), name
    # Every struct the binding passes and every field of it is in the table.
    assert {"sparse_b", "tick_model", "tick_state", "tick_model.learn",
            "tick_state.next_prior"} <= reported.keys()


def test_the_limits_are_the_library_s_and_the_docs_state_them() -> None:
    limits = binding.limits()
    assert set(limits) == set(native.LIMITS)
    text = " ".join((REPO / "docs" / "learning.md").read_text().split())
    stated = re.search(r"within the pass's sizes \((\d+) factors, (\d+) joint states, (\d+) "
                       r"modalities, (\d+) policies, (\d+) controls a factor\)", text)
    assert stated is not None, "docs/learning.md no longer states the pass's sizes"
    assert tuple(map(int, stated.groups())) == (
        limits["factors"], limits["joint"], limits["modalities"], limits["policies"],
        limits["controls"])


def test_the_package_limits_are_tick_h_s_and_the_library_s() -> None:
    """``PACKAGE_LIMITS`` (what a group is checked against without loading the library) are the
    values tick.h's ``TICK_LIMITS`` gives and the package's library reports."""
    header = (Path(recipe.HERE) / "tick.h").read_text()
    values = dict(re.findall(r"X\((MAX_\w+), (\d+)\)", header))
    assert {size: int(values[limit]) for size, limit in native.LIMITS.items()} == (
        native.PACKAGE_LIMITS)
    assert binding.limits(binding.load()) == native.PACKAGE_LIMITS == binding.limits()


def _changed(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A library of the sources with ``old`` replaced by ``new`` in ``file`` (quick to build:
    the baseline version, unoptimised)."""
    where = tmp_path / "src"
    where.mkdir()
    for source in recipe.sources():
        shutil.copy(source, where / source.name)
    text = (where / file).read_text()
    assert old in text, old
    (where / file).write_text(text.replace(old, new))
    return native_builds.build("plain", extra=(*recipe.BASELINE_ONLY, "-O0"), where=where)


@pytest.mark.parametrize(("file", "old", "new", "why"), [
    ("tick.h", "X(int64_t, num_iter)", "X(double, num_iter)",
     r"tick_model\.num_iter: double at 40 \(8 bytes\) in the library, int64_t at 40 \(8 "
     r"bytes\) here"),
    ("tick.h", "X(const double *, lnQ1)", "X(const double *, lnQ1) X(int64_t, spare)",
     r"tick_model\.spare only in the library; tick_model: 552 bytes in the library, 544 bytes "
     r"here"),
    ("tick.h", "X(MAX_U, 16)", "X(MAX_U, 16) X(MAX_K, 256)", r"MAX_K only in the library"),
    ("tick_layout.c", "int64_t edge_tick_layout(", "int64_t edge_tick_layout_other(",
     r"reports no layout \(built from older sources\)"),
], ids=["a-field-of-another-type", "a-field-added", "a-limit-added", "no-layout-table"])
def test_a_library_of_another_header_is_refused_saying_what_differs(
    file: str, old: str, new: str, why: str, tmp_path: Path
) -> None:
    built = _changed(tmp_path, file, old, new)
    with pytest.raises(RuntimeError, match=why) as refused:
        binding.load(built)
    assert "reinstall edge-agent" in str(refused.value)


def test_a_file_that_is_no_library_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "_tick.so"
    bad.write_bytes(b"not an ELF file")
    with pytest.raises(RuntimeError, match=r"_tick\.so cannot be loaded"):
        binding.load(bad)


def test_a_binding_edited_without_its_header_refuses_the_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Shorter(ctypes.Structure):  # tick_state without its last field
        _fields_ = [(name, ctype) for name, ctype, *_ in binding._State._fields_[:-1]]

    library = binding.load()  # the package's, loaded as it is (before the binding is edited)
    monkeypatch.setitem(binding._STRUCTS, "tick_state", Shorter)
    assert binding.mismatch(binding.layout(library)) == (
        "tick_state.measure_sums only in the library; tick_state: 144 bytes in the library, "
        "136 bytes here")
    path = native.library_path()
    assert path is not None
    with pytest.raises(RuntimeError, match="does not match its binding"):
        binding.load(path)


def test_a_limit_changed_in_the_header_is_the_library_s(tmp_path: Path) -> None:
    built = binding.load(_changed(tmp_path, "tick.h", "X(MAX_S, 128)", "X(MAX_S, 64)"))
    bounds = binding.limits(built)
    assert bounds["joint"] == 64
    model = tmaze_reversal_model()  # 8 joint states
    assert native.too_large(model.num_states, model.num_controls, 2, 4, bounds) is None
    assert native.too_large([4, 4, 4, 2], [2, 2, 2, 2], 1, 16, bounds) == (
        "joint 128 above the compiled tick's 64")
    assert native.too_large([4, 4, 4, 2], [2, 2, 2, 2], 1, 16) is None  # the package's: 128


def _package_library(monkeypatch: pytest.MonkeyPatch, path: Path | None) -> None:
    """The package's library is ``path`` (None: installed without one), not loaded yet."""
    monkeypatch.setattr(native, "library_path", lambda: path)
    monkeypatch.setattr(binding, "_LIBRARY", None)
    monkeypatch.setattr(binding, "_REFUSED", None)


def test_a_package_library_of_other_limits_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package's library reporting limits other than ``PACKAGE_LIMITS`` (built from another
    header) is refused, so that the limits a group is checked against without loading it are
    the library's."""
    built = _changed(tmp_path, "tick.h", "X(MAX_S, 128)", "X(MAX_S, 64)")
    _package_library(monkeypatch, built)
    why = binding.unavailable()
    assert why is not None
    assert "'joint': 64" in why
    assert "the binding's are {'factors': 4, 'joint': 128" in why
    with pytest.raises(RuntimeError, match="reports the limits"):
        binding.load()
    _steps_with_numpy_saying(why)


def _steps_with_numpy_saying(why: str) -> None:
    """A group the pass would step (per-agent float64 ``pA`` learning every tick) steps with
    numpy, its learning's ``stepping`` saying ``why``."""
    model = tmaze_reversal_model()
    spec = LearningSpec(pA={1: model.A[1] * 2.0 + 0.5}, refresh_every=1,
                        settings=LearningSettings(scope="per_agent"))
    group = AifAgentGroup(model, 3, learning=spec, precision="float64")
    assert group.learning is not None
    assert group.learning.describe()["stepping"] == f"numpy: {why}"
    actions = group.step(np.zeros((3, model.num_modalities), dtype=np.int64))
    assert actions.shape == (3, model.num_factors)


def test_installed_without_the_library_a_group_steps_with_numpy_saying_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _package_library(monkeypatch, None)
    why = binding.unavailable()
    assert why == ("edge-agent was installed without its compiled tick (no C compiler then): "
                   "reinstall it with gcc present (apt-get install gcc)")
    with pytest.raises(RuntimeError, match="installed without its compiled tick"):
        binding.load()
    _steps_with_numpy_saying(why)


@pytest.fixture
def package_library_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The package's library replaced by one whose tick_model has a field of another type
    (as if the package were built from another header): the binding's verdict on it."""
    built = _changed(tmp_path, "tick.h", "X(int64_t, num_iter)", "X(double, num_iter)")
    _package_library(monkeypatch, built)
    why = binding.unavailable()
    assert why is not None
    return why


def test_a_group_steps_with_numpy_when_the_package_library_is_refused(
    package_library_refused: str,
) -> None:
    assert package_library_refused.startswith("the compiled tick ")
    assert "tick_model.num_iter: double at 40 (8 bytes) in the library" in (
        package_library_refused)
    with pytest.raises(RuntimeError, match="does not match its binding"):
        binding.load()
    _steps_with_numpy_saying(package_library_refused)
    # A group that does not learn steps numpy too, and reserves the compiled tick's bytes all
    # the same (planned from the model: what a group reserves never depends on loading it).
    frozen = AifAgentGroup(tmaze_reversal_model(), 3, precision="float64")
    assert frozen.stepping == f"numpy: {package_library_refused}"
    assert frozen.memory.compiled_nbytes == compiled_nbytes(frozen.cm, frozen.settings) > 0


def test_arrays_the_pass_would_read_or_write_past_are_refused() -> None:
    """Shapes are checked where they are bound: more agents' outcomes than the arrays hold, a
    factor's beliefs of another size, another number of policies, a table of another size."""
    world = make_world("factors3", Path("unused"))
    tick = Pass(world, 5, "per_agent", binding.load())
    obs = np.zeros((5, len(world.A)), dtype=np.int64)
    start = np.zeros(5, dtype=bool)
    tick.step(obs, start, learn=True)
    kernel = tick.kernel
    state = {"G": tick.G, "q_pi": tick.q_pi}
    with pytest.raises(ValueError, match=r"6 agents' outcomes for arrays of 5 agents"):
        kernel.step(np.zeros((6, len(world.A)), dtype=np.int64), tick.qs, tick.action,
                    tick.has_action, **state)
    wrong = [*tick.qs[:-1], np.zeros((5, tick.qs[-1].shape[1] + 1))]
    with pytest.raises(ValueError, match=r"takes 10 values here, got \(5, 3\)"):
        kernel.step(obs, wrong, tick.action, tick.has_action, **state)
    with pytest.raises(ValueError, match="G of 17 policies for a pass of 18"):
        kernel.step(obs, tick.qs, tick.action, tick.has_action, G=tick.G[:, 1:].copy(),
                    q_pi=tick.q_pi)
    with pytest.raises(ValueError, match=r"takes 72 values here, got \(3, 23\)"):
        kernel.bind_learning(tick.A, tick.counts, [tick.mask[0][:, 1:].copy(), tick.mask[1]],
                             tick.experience)
    kernel.bind_learning([tick.A[0][:4].copy(), tick.A[1]], [tick.counts[0][:4].copy(),
                         tick.counts[1]], tick.mask, tick.experience)
    with pytest.raises(ValueError, match=r"for arrays of 5 agents \(tables of 4\)"):
        kernel.step(obs, tick.qs, tick.action, tick.has_action, **state)


def _state_of(tick: Pass, rows: int) -> dict[str, object]:
    """``tick``'s state arrays of ``rows`` agents (its own, or copies grown by a last agent)."""
    def grown(a: np.ndarray) -> np.ndarray:
        return a if len(a) == rows else np.ascontiguousarray(np.concatenate([a, a[-1:]]))
    return {"qs": [grown(q) for q in tick.qs], "action": grown(tick.action),
            "has_action": grown(tick.has_action), "G": grown(tick.G),
            "q_pi": grown(tick.q_pi), "prior": [grown(p) for p in tick.prior],
            "p_obs": grown(tick.p_obs), "next_prior": [grown(p) for p in tick.next_prior]}


def test_a_run_given_its_last_outcomes_array_again_reads_it_where_it_is_bit_for_bit() -> None:
    """The outcomes array of the last run given again (a group's or a world's, written in
    place each tick) is read where it is; another array is copied and read from the pass's
    own; state arrays of another size bind the pass's own again: each tick's numbers are those
    of a pass given a new copy of the outcomes every tick, to the bit."""
    world = make_world("factors3", Path("unused"))
    n, M = 5, len(world.A)
    copied, given = (Pass(world, n, "per_agent", binding.load()) for _ in range(2))
    rng = np.random.default_rng(3)
    buf = np.zeros((n, M), dtype=np.int64)
    other = np.zeros((n, M), dtype=np.int64)
    # (the array each tick gives the second pass: the same one twice and more, another
    # between; the last tick's state arrays of one agent more, its outcomes the same array)
    schedule = [buf, buf, buf, other, other, buf, buf, buf]
    for t, obs in enumerate(schedule):
        for m, a in enumerate(world.A):  # new outcomes every tick, written in place
            obs[:, m] = rng.integers(0, a.shape[0], size=n)
        rows = n + 1 if t == len(schedule) - 1 else n
        states = []
        for tick, o in ((copied, obs.copy()), (given, obs)):
            state = _state_of(tick, rows)
            tick.kernel.step(o, state["qs"], state["action"], state["has_action"],
                             G=state["G"], q_pi=state["q_pi"], prior=state["prior"],
                             p_obs=state["p_obs"], next_prior=state["next_prior"])
            states.append([*state["qs"], state["G"], state["action"], *tick.counts])
        for a, b in zip(*states, strict=True):
            assert np.array_equal(a[:n], b[:n]), f"tick {t}"
