"""A neural group's compiled pass (``edge_agent.neural.native_pass``, ``neural_pass.c`` in the
compiled tick's library) against its numpy twins: the same windows, ring rows, range flags and
counts, and argmax actions (ties: the first; NaN: the first NaN), at batch 1 and 1,000; a group
stepping with it equals one stepping with numpy, tick by tick, and allocates nothing per tick."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.kernels.native import recipe
from edge_agent.bundle.loader import load_bundle
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.errors import InputError
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.native_pass import (
    SYMBOLS,
    NeuralPass,
    argmax_numpy,
    observe_numpy,
    unavailable,
)
from tests.support import native_builds
from tests.unit.neural.test_input_range import T, policy_bundle  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def compiled() -> NeuralPass:
    why = unavailable()
    if why is not None:
        pytest.fail(f"the compiled pass is not available ({why}): scripts/bootstrap.sh builds it")
    return NeuralPass()


def _at(a: np.ndarray) -> int:
    return int(a.ctypes.data)


def observe_both(
    neural: NeuralPass, obs: np.ndarray, window: int, *, ring: bool, low: np.ndarray | None,
    high: np.ndarray,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, int], ...]:
    """The pass and its twin on the same observations, each into buffers of its own (the
    window's input ``(N, T, F)`` and a ring row filled with a marker first): what each wrote."""
    n, f = obs.shape
    results = []
    for use_c in (True, False):
        inputs = np.full((n, window, f), 7.0, dtype=np.float32)
        row = np.full((n, f), 5.0, dtype=np.float32)
        rows = np.full(n, True)
        if use_c:
            out = neural.observe(
                _at(obs), n, f, _at(inputs[:, -1]), window * f, _at(row) if ring else None,
                None if low is None else _at(low), _at(high), _at(rows))
        else:
            out = observe_numpy(obs, inputs[:, -1], row if ring else None, low=low, high=high,
                                rows=rows)
        results.append((inputs, row, rows, out))
    return tuple(results)


@pytest.mark.parametrize("n", [1, 1000])
@pytest.mark.parametrize("f", [1, 3, 8, 13])
def test_observe_writes_and_counts_what_numpy_does(compiled: NeuralPass, n: int, f: int) -> None:
    rng = np.random.default_rng(n * 100 + f)
    obs = rng.normal(0, 1, (n, f)).astype(np.float32)
    obs[::7, 0] = 9.0  # above high
    obs[3::11, f - 1] = -9.0  # below low
    obs[5::13, f // 2] = np.nan  # in range (NaN compares false: the sources drop it)
    obs[1::17] = 2.5  # exactly at the bounds: in range
    obs[2::17] = -2.5
    low = np.full(f, -2.5, dtype=np.float32)
    high = np.full(f, 2.5, dtype=np.float32)
    expected = ((obs < low) | (obs > high)).any(axis=1)
    for ring in (True, False):
        (c_in, c_row, c_rows, c_out), (np_in, np_row, np_rows, np_out) = observe_both(
            compiled, obs, 4, ring=ring, low=low, high=high)
        np.testing.assert_array_equal(c_in, np_in)  # NaN where the observations have it
        np.testing.assert_array_equal(c_in[:, -1], obs)
        assert (c_in[:, :-1] == 7.0).all()  # the older steps are left as they were
        np.testing.assert_array_equal(c_row, np_row)
        np.testing.assert_array_equal(c_row, obs if ring else np.full((n, f), 5.0))
        np.testing.assert_array_equal(c_rows, expected)
        np.testing.assert_array_equal(np_rows, expected)
        assert c_out == np_out == int(expected.sum())
    # Unchecked: nothing counted, the flags untouched.
    (_, _, c_rows, c_out), (_, _, np_rows, np_out) = observe_both(
        compiled, obs, 1, ring=True, low=None, high=high)
    assert c_out == np_out == 0
    assert c_rows.all()
    assert np_rows.all()


@pytest.mark.parametrize("n", [1, 1000])
@pytest.mark.parametrize("f", [1, 3, 8, 13])
def test_gather_copies_one_step_of_every_window_into_a_ring_row(
    compiled: NeuralPass, n: int, f: int
) -> None:
    T = 5
    inputs = np.random.default_rng(f).normal(0, 1, (n, T, f)).astype(np.float32)
    for step in range(T):
        row = np.full((n, f), 3.0, dtype=np.float32)
        compiled.gather(_at(inputs[:, step]), n, f, T * f, _at(row))
        np.testing.assert_array_equal(row, inputs[:, step])
    # A row that does not start on 16 bytes (the streaming stores' alignment): the same.
    buffer = np.full(n * f + 1, 3.0, dtype=np.float32)
    compiled.gather(_at(inputs[:, 2]), n, f, T * f, _at(buffer[1:]))
    np.testing.assert_array_equal(buffer[1:].reshape(n, f), inputs[:, 2])
    assert buffer[0] == 3.0


@pytest.mark.parametrize("n", [1, 7, 1000])
@pytest.mark.parametrize("a", [1, 2, 4, 7, 9])
def test_argmax_is_numpy_s_with_ties_and_nans(compiled: NeuralPass, n: int, a: int) -> None:
    rng = np.random.default_rng(n * 10 + a)
    # Small integers: many rows have two or more equal largest values (the first wins).
    logits = rng.integers(-2, 3, (n, a)).astype(np.float32)
    logits[::5] = 1.0  # every value tied
    if a > 1:
        logits[1::6, a - 1] = np.nan  # a NaN after the largest: the NaN's index
        logits[2::6, 0] = np.nan  # a NaN first
        logits[3::6, 1:] = np.nan  # every value NaN but the first
        logits[4::6, a // 2] = np.inf
        logits[4::6, a - 1] = np.inf  # two infinities: the first
        logits[::9] = -np.inf
    actions = np.full(n, -1, dtype=np.int64)
    compiled.argmax(_at(logits), n, a, _at(actions))
    twin = np.full(n, -1, dtype=np.int64)
    argmax_numpy(logits, twin)
    np.testing.assert_array_equal(actions, twin)
    np.testing.assert_array_equal(actions, logits.argmax(axis=1))


def _daemon_group(bundle_path: Path, n: int, *, compiled: bool) -> NeuralAgentGroup:
    """The policy as the daemon builds it: a 64-step ring (longer than the window), the
    calibrated range counted, health on, the finite scan off."""
    bundle = load_bundle(bundle_path, trusted_keys=None, require_signature=False)
    spec = bundle.manifest.neural
    assert spec is not None
    assert spec.observation_range is not None
    return NeuralAgentGroup(spec, bundle.file_bytes(spec.model_file), n, history_capacity=64,
                            check_finite=False, compiled=compiled)


@pytest.mark.parametrize("n", [1, 1000])
def test_a_group_steps_the_same_with_the_pass_and_with_numpy(
    policy_bundle: tuple[Path, np.ndarray], n: int  # noqa: F811 - the fixture
) -> None:
    fast = _daemon_group(policy_bundle[0], n, compiled=True)
    slow = _daemon_group(policy_bundle[0], n, compiled=False)
    assert fast.compiled_missing == ""
    assert slow.compiled_missing == "compiled=False"
    rng = np.random.default_rng(n)
    for tick in range(150):  # past the ring's 64 rows, the slide's room and a range window
        obs = rng.normal(0, 1.5 if tick % 3 else 4.0, (n, 8)).astype(np.float32)
        if tick % 10 == 9:
            obs = obs[:, ::-1].copy()[:, ::-1]  # not C-contiguous: the numpy branch, both
        np.testing.assert_array_equal(fast.step(obs), slow.step(obs))
        np.testing.assert_array_equal(fast.session.input_buffer(fast.input_name),
                                      slow.session.input_buffer(slow.input_name))
        if tick % 7 == 3:  # read between two of the pass's ring writes: the steps pending too
            np.testing.assert_array_equal(fast.history.window("obs"), slow.history.window("obs"))
    np.testing.assert_array_equal(fast.history.window("obs"), slow.history.window("obs"))
    assert fast.history.total_appended == slow.history.total_appended == 150
    assert fast.metrics() == slow.metrics()
    assert fast.metrics()["obs_out_of_range"] > 0
    assert fast.describe() == slow.describe()
    assert fast.health_summary() == slow.health_summary()
    fast.alerts(), slow.alerts()
    # A resize and a snapshot: the pass's addresses follow the new buffers.
    for group in (fast, slow):
        group.resize(n + 3)
    state = slow.state_dict()
    fast.load_state_dict(state)
    slow.load_state_dict(state)
    for _ in range(5):
        obs = rng.normal(0, 3, (n + 3, 8)).astype(np.float32)
        np.testing.assert_array_equal(fast.step(obs), slow.step(obs))
    np.testing.assert_array_equal(fast.history.window("obs"), slow.history.window("obs"))
    assert fast.metrics() == slow.metrics()
    fast.release()
    slow.release()


def test_the_pass_allocates_nothing_per_tick(
    policy_bundle: tuple[Path, np.ndarray],  # noqa: F811 - the fixture
) -> None:
    n = 20_000
    group = _daemon_group(policy_bundle[0], n, compiled=True)
    obs = np.random.default_rng(0).normal(0, 3, (n, 8)).astype(np.float32)
    for _ in range(T + 2):
        group.step(obs)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(64):
            group.step(obs)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 20_000
    assert peak - before < 2**16 < n * 8 * 4  # not one (N, F) float32 temporary
    assert group.metrics()["obs_out_of_range"] > 0
    group.release()


def test_without_the_pass_a_group_says_why_and_uses_numpy(
    policy_bundle: tuple[Path, np.ndarray],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(NATIVE_ENV, "0")
    assert unavailable() == f"{NATIVE_ENV}=0 in the environment"
    group = _daemon_group(policy_bundle[0], 4, compiled=False)
    assert group.compiled_missing == "compiled=False"
    group.release()
    bundle = load_bundle(policy_bundle[0], trusted_keys=None, require_signature=False)
    default = NeuralAgentGroup.from_bundle(bundle, 4)
    assert default.compiled_missing == f"{NATIVE_ENV}=0 in the environment"
    default.step(np.zeros((4, 8), dtype=np.float32))
    default.release()
    spec = bundle.manifest.neural
    assert spec is not None
    with pytest.raises(InputError, match=f"no compiled pass: {NATIVE_ENV}=0"):
        NeuralAgentGroup(spec, bundle.file_bytes(spec.model_file), 4, compiled=True)


def test_a_library_without_the_pass_is_named() -> None:
    class Older:  # a library built before neural_pass.c: the tick's functions only
        edge_tick = edge_tick_layout = object()

    why = unavailable(Older())  # type: ignore[arg-type]
    assert why is not None
    assert all(name in why for name in SYMBOLS)
    assert "reinstall" in why


SANITIZED_SCRIPT = """
import ctypes, sys
import numpy as np
from edge_agent.aif.kernels.native import binding
from edge_agent.neural.native_pass import NeuralPass, argmax_numpy, observe_numpy
neural = NeuralPass(binding.load(sys.argv[1]))
at = lambda a: int(a.ctypes.data)
rng = np.random.default_rng(0)
for n in (1, 7, 1000):
    for f in (1, 3, 8, 13):
        T = 3
        obs = rng.normal(0, 2, (n, f)).astype(np.float32)
        inputs = np.zeros((n, T, f), np.float32)
        ring = np.zeros((n, f), np.float32)
        low, high = np.full(f, -2, np.float32), np.full(f, 2, np.float32)
        rows = np.zeros(n, bool)
        out = neural.observe(at(obs), n, f, at(inputs[:, -1]), T * f, at(ring), at(low),
                             at(high), at(rows))
        twin = np.zeros(n, bool)
        row = np.zeros((n, f), np.float32)
        neural.gather(at(inputs[:, 1]), n, f, T * f, at(row))
        assert (row == inputs[:, 1]).all()
        assert out == observe_numpy(obs, np.zeros((n, f), np.float32), None, low=low, high=high,
                                    rows=twin)
    for a in (1, 2, 4, 9):
        logits = rng.normal(0, 1, (n, a)).astype(np.float32)
        actions = np.zeros(n, np.int64)
        neural.argmax(at(logits), n, a, at(actions))
        assert (actions == logits.argmax(axis=1)).all()
print("clean")
"""


# The sanitized build is a minute or more of one core's CPU; on a loaded machine, more.
@pytest.mark.timeout(1800)
def test_the_pass_runs_clean_under_address_and_undefined_behaviour_sanitizers() -> None:
    """Every width's case of both functions on arrays exactly their size (the ends of numpy's
    buffers are the allocator's, which AddressSanitizer guards), in the sanitized build of
    the recipe, in a process that loads the sanitizer's runtime first."""
    library = native_builds.build("sanitized")
    env = {**os.environ, "LD_PRELOAD": str(recipe.asan_runtime()),
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=97",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}
    done = subprocess.run([sys.executable, "-c", SANITIZED_SCRIPT, str(library)], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.strip() == "clean"
    assert "Sanitizer" not in done.stderr
