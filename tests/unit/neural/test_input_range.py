"""Observations outside a neural bundle's calibrated range: counted per agent-step on every
HEALTH_EVERY-th tick, shown, and one event per crossing (``edge_agent.neural.input_range``), on
real groups of real models."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.manifest import ObservationRange
from edge_agent.core.contract import Alerting, GroupEvent
from edge_agent.core.health import HEALTH_EVERY
from edge_agent.errors import ModelError
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import available_backends
from edge_agent.neural.input_range import (
    ALERT_SHARE,
    CLEAR_SHARE,
    INPUT_RANGE_METRICS,
    MARGIN,
    SCRATCH_BYTES,
    SCRATCH_PER_VALUE,
    WINDOW_TICKS,
    RangeWatch,
    count_outside,
)
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.converter.builders import mlp_onnx, sensor_policy
from edge_agent_host.converter.formats.onnx import (
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
)
from tests.unit.neural.test_neural import spec_for

T, F = 8, 8
#: The ticks of a window that are checked (every HEALTH_EVERY-th, the first included).
CHECKED = len(range(0, WINDOW_TICKS, HEALTH_EVERY))


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    if not available_backends()["onnxruntime"]:
        pytest.fail("onnxruntime is not installed: pip install 'edge-agent-runtime[onnx]'")


def bounds(low: list[float], high: list[float], samples: int = 10) -> ObservationRange:
    return ObservationRange(low=tuple(low), high=tuple(high), samples=samples)


def reference(obs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return ((obs < low) | (obs > high)).any(axis=1)


@pytest.mark.parametrize(("n", "features", "block"), [(50, 8, 50), (300, 40, 7), (5, 1, 1)])
@pytest.mark.parametrize("tiled", [False, True])
def test_count_outside_counts_rows_in_blocks(
    n: int, features: int, block: int, tiled: bool
) -> None:
    """Bounds broadcast, or laid out as a block of observations (what a watch passes); a block
    with nothing out leaves no stale row from the tick before."""
    rng = np.random.default_rng(features)
    obs = rng.normal(0, 1.2, (n, features)).astype(np.float32)
    obs[-1, -1] = 9.0  # one out for sure, in the last block
    obs[3 % n, 0] = np.nan  # NaN compares false: in range (the sources drop it first)
    for low, high in (
        (rng.uniform(-2.5, -1.5, features), rng.uniform(1.5, 2.5, features)),
        (np.array([-1.0]), np.array([1.0])),  # one range for every feature
    ):
        low32, high32 = low.astype(np.float32), high.astype(np.float32)
        if tiled:
            low32 = np.broadcast_to(low32, (block, features)).copy()
            high32 = np.broadcast_to(high32, (block, features)).copy()
        rows = np.ones(n, dtype=bool)  # stale: every row set
        count = count_outside(
            obs, low32, high32,
            outside=np.zeros((block, features), bool), above=np.zeros((block, features), bool),
            rows=rows,
        )
        want = reference(np.nan_to_num(obs, nan=0.0), low32[:1] if tiled else low32,
                         high32[:1] if tiled else high32)
        assert count == int(want.sum()) > 0
        assert np.array_equal(rows, want)


def test_the_scratch_is_bounded_whatever_the_frame() -> None:
    watch = RangeWatch(bounds([0.0], [1.0]), 3 * 64 * 64, 500, group="cam")
    assert watch.block_rows(500) == 1  # one frame's bounds and flags are 120 KB
    assert watch.scratch_nbytes(500) == SCRATCH_PER_VALUE * 3 * 64 * 64 <= SCRATCH_BYTES
    small = RangeWatch(bounds([0.0], [1.0]), 8, 5000, group="g")
    assert small.block_rows(5000) == SCRATCH_BYTES // (SCRATCH_PER_VALUE * 8) < 5000
    assert small.scratch_nbytes(5000) <= SCRATCH_BYTES
    assert watch.nbytes_for(500) == watch.scratch_nbytes(500) + 500


def test_the_margin_widens_each_feature_by_a_quarter_of_its_width() -> None:
    """A finite calibration set misses the rarest inputs: a value within 25 % of the feature's
    width beyond it is in range; a feature constant in calibration takes the mean width."""
    watch = RangeWatch(bounds([0.0, -2.0, 5.0], [4.0, 2.0, 5.0]), 3, 4, group="g")
    np.testing.assert_allclose(watch.low, [-1.0, -3.0, 5.0 - 0.25 * 8 / 3], rtol=1e-6)
    np.testing.assert_allclose(watch.high, [5.0, 3.0, 5.0 + 0.25 * 8 / 3], rtol=1e-6)
    obs = np.array([[4.9, 0, 5], [5.1, 0, 5], [0, -3.1, 5], [0, 0, 5.6]], dtype=np.float32)
    watch.observe(obs)
    assert watch.out_of_range == 2  # agents 1 and 2; agent 3's 5.6 is within 5 + 0.67
    for _ in range(HEALTH_EVERY - 1):  # the ticks between two checks count nothing
        watch.observe(obs * 100)
    assert (watch.checked, watch.out_of_range) == (4, 2)
    watch.observe(obs + np.array([0, 0, 0.1], dtype=np.float32))  # 5.7: out
    assert (watch.checked, watch.out_of_range) == (8, 2 + 3)
    assert MARGIN == 0.25


def test_a_range_that_fits_neither_one_value_nor_every_feature_is_refused() -> None:
    with pytest.raises(ModelError, match=r"^the bundle's observation range has 3 values per "
                                         r"bound, the model takes 8 features: one value, or one "
                                         r"per feature$"):
        RangeWatch(bounds([0, 0, 0], [1, 1, 1]), 8, 4, group="g")


def tick(watch: RangeWatch, n: int, out: int) -> None:
    obs = np.zeros((n, 2), dtype=np.float32)
    obs[:out, 1] = 5.0
    watch.observe(obs)


def test_one_event_per_crossing_with_hysteresis() -> None:
    n = 1000
    watch = RangeWatch(bounds([-1, -1], [1, 1]), 2, n, group="pickers")
    assert watch.metrics() == {
        "obs_checked": 0, "obs_out_of_range": 0, "obs_out_of_range_share": 0.0,
        "obs_range_alert": 0,
    }
    # A window at 0.9 %: below the alert.
    for i in range(WINDOW_TICKS):
        tick(watch, n, 9)
        assert watch.alerts() == [], i
    assert watch.share == pytest.approx(0.009)
    # A window at 1 % (ten agents of 1,000 every tick): one event at its end.
    for _ in range(WINDOW_TICKS - 1):
        tick(watch, n, 10)
    assert watch.alerts() == []
    tick(watch, n, 10)
    (event,) = watch.alerts()
    assert isinstance(event, GroupEvent)
    assert (event.kind, event.severity) == ("input_out_of_range", "warning")
    assert event.detail == (
        "group pickers: 1.00 % of agent-steps in the last 100 ticks observed values outside the "
        "range the model was calibrated on (alert at 1 %); agents [0, 1, 2, 3, 4, 5, 6, 7] in "
        "the last tick checked: a faulty or unnormalised sensor?"
    )
    assert event.data == {  # the window's 25 checked ticks
        "share": 0.01, "out_of_range": 10 * CHECKED, "agent_steps": n * CHECKED, "ticks": 100,
        "threshold": ALERT_SHARE, "agents": [0, 1, 2, 3, 4, 5, 6, 7],
    }
    assert watch.alerts() == []  # each event once
    # Still at 0.6 % (under the alert, over the clear): no new event, the alert stands.
    for _ in range(WINDOW_TICKS):
        tick(watch, n, 6)
    assert watch.alerts() == []
    assert watch.alerting
    for _ in range(WINDOW_TICKS):
        tick(watch, n, 100)  # 10 %: the alert stands, still no second event
    assert watch.alerts() == []
    assert watch.alerting
    # Below 0.5 % for a window: cleared (silently); the next crossing raises the next event.
    for _ in range(WINDOW_TICKS):
        tick(watch, n, 4)
    assert watch.alerts() == []
    assert not watch.alerting
    assert watch.share < CLEAR_SHARE
    for _ in range(WINDOW_TICKS):
        tick(watch, n, 1000)  # every agent: a sensor that fails for all
    (again,) = watch.alerts()
    assert again.data["share"] == 1.0
    assert watch.alerts_raised == 2
    checked = 6 * CHECKED * n
    out = (9 + 10 + 6 + 100 + 4 + 1000) * CHECKED
    assert watch.metrics() == {
        "obs_checked": checked, "obs_out_of_range": out, "obs_out_of_range_share": 1.0,
        "obs_range_alert": 1,
    }
    shown = watch.describe()["observation_range"]
    assert shown == {
        "calibrated": True, "features": 2, "samples": 10, "margin": MARGIN, "checked": checked,
        "out_of_range": out, "share": 1.0, "window_ticks": WINDOW_TICKS,
        "alert_share": ALERT_SHARE, "clear_share": CLEAR_SHARE, "alerting": True, "alerts": 2,
    }


def test_without_a_range_nothing_is_counted_and_the_status_says_so() -> None:
    watch = RangeWatch(None, 8, 10, group="g")
    watch.observe(np.full((10, 8), 1e6, dtype=np.float32))
    assert watch.metrics() == {}
    assert watch.describe() == {"observation_range": {"calibrated": False}}
    assert watch.nbytes_for(10) == 0


def test_the_family_totals_the_groups_that_count() -> None:
    groups = [
        {"agents": 5, "obs_checked": 100, "obs_out_of_range": 7, "obs_range_alert": 1},
        {"agents": 3, "obs_checked": 30, "obs_out_of_range": 0, "obs_range_alert": 0},
        {"agents": 9},  # an Active Inference group, or a bundle without a range
    ]
    assert INPUT_RANGE_METRICS.total(groups) == {
        "groups": 2, "checked": 130, "out_of_range": 7, "alerting": 1,
    }
    assert INPUT_RANGE_METRICS.total([{"agents": 9}]) == {}


@pytest.fixture(scope="module")
def policy_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The sensor policy converted as a user converts it; its calibration windows."""
    import onnx

    root = tmp_path_factory.mktemp("range")
    world = SensorWorld(1)
    onnx.save(mlp_onnx(sensor_policy(world.prototypes, world.noise, T), T, F),
              root / "policy.onnx")
    X, _ = world.sample_windows(300, T, seed=1)
    Xh, yh = world.sample_windows(200, T, seed=2)
    np.savez(root / "cal.npz", window=X)
    np.savez(root / "held.npz", window=Xh, labels=yh)
    convert_onnx(
        ConvertOptions(model=root / "policy.onnx", out=root / "bundle", name="p"),
        NeuralOptions(latency_repeats=1, calibration=root / "cal.npz",
                      heldout=root / "held.npz", thresholds=NeuralThresholds(min_top1=0.9)),
    )
    return root / "bundle", X


def test_a_group_counts_agent_steps_out_of_the_calibrated_range(
    policy_bundle: tuple[Path, np.ndarray],
) -> None:
    path, calibration = policy_bundle
    bundle = load_bundle(path, trusted_keys=None, require_signature=False)
    spec = bundle.manifest.neural
    assert spec is not None
    assert spec.observation_range is not None
    # Recorded per feature from the calibration windows.
    kept = calibration.reshape(-1, F)
    assert spec.observation_range.samples == 300
    assert spec.observation_range.low == tuple(float(v) for v in kept.min(axis=0))
    assert spec.observation_range.high == tuple(float(v) for v in kept.max(axis=0))
    n = 50
    group = NeuralAgentGroup.from_bundle(bundle, n)
    assert isinstance(group, Alerting)
    windows = kept.reshape(-1, T, F)[:n]
    checks = len(range(0, T, HEALTH_EVERY))  # of T ticks: the 1st and the 5th
    for t in range(T):  # calibration data: in range by construction
        group.step(np.ascontiguousarray(windows[:, t]))
    assert group.metrics()["obs_out_of_range"] == 0
    assert group.metrics()["obs_checked"] == n * checks
    faulty = windows.copy()
    faulty[0] *= 100  # agent 0's sensor: every feature out (one agent-step per tick)
    bounds = spec.observation_range
    width = bounds.high[3] - bounds.low[3]
    faulty[1, :, 3] = bounds.high[3] + 0.3 * width  # agent 1: one feature out, past the margin
    faulty[2, :, 3] = bounds.high[3] + 0.2 * width  # agent 2: within the margin, in range
    for t in range(T):
        group.step(np.ascontiguousarray(faulty[:, t]))
    assert group.metrics()["obs_out_of_range"] == 2 * checks
    assert group.metrics()["obs_checked"] == 2 * n * checks
    shown = group.describe()["observation_range"]
    assert (shown["calibrated"], shown["features"], shown["out_of_range"]) == (True, F, 2 * checks)
    # 2 of 50 agents is 4 %: the window's end raises the event, once.
    for _ in range(WINDOW_TICKS - 2 * T):
        group.step(np.ascontiguousarray(faulty[:, -1]))
    (event,) = group.alerts()
    assert event.data["share"] == pytest.approx((2 * (CHECKED - checks)) / (n * CHECKED))
    assert event.data["agents"] == [0, 1]
    assert group.alerts() == []
    group.release()


def test_counting_allocates_nothing_per_tick(policy_bundle: tuple[Path, np.ndarray]) -> None:
    bundle = load_bundle(policy_bundle[0], trusted_keys=None, require_signature=False)
    n = 20_000
    group = NeuralAgentGroup.from_bundle(bundle, n)
    obs = np.random.default_rng(0).normal(0, 3, (n, F)).astype(np.float32)
    for _ in range(T + 2):
        group.step(obs)
    assert group.metrics()["obs_out_of_range"] > 0
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(30):
            group.step(obs)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 20_000
    # numpy's ufunc buffer for a broadcast bound (about 33 KB, whatever N) is all a tick may
    # use: not one (N, F) temporary (160 KB here).
    assert peak - before < 2**16 < n * F
    group.release()


def test_bytes_reserved_cover_the_range_check(policy_bundle: tuple[Path, np.ndarray]) -> None:
    bundle = load_bundle(policy_bundle[0], trusted_keys=None, require_signature=False)
    n = 300
    group = NeuralAgentGroup.from_bundle(bundle, n)
    watch = group.range_watch
    plain = NeuralAgentGroup(
        bundle.manifest.neural.model_copy(update={"observation_range": None}),  # type: ignore[union-attr]
        bundle.file_bytes("model.onnx"), n,
    )
    assert group.per_agent_nbytes() == plain.per_agent_nbytes() + 1
    assert group.bytes_for(n) == plain.bytes_for(n) + n + watch.scratch_nbytes(n)
    assert group.nbytes == plain.nbytes + watch.nbytes_for(n)
    group.resize(2 * n)
    assert group.range_watch.nbytes_for(2 * n) == watch.scratch_nbytes(2 * n) + 2 * n
    group.release()
    plain.release()


def test_an_old_bundle_without_a_range_loads_and_counts_nothing() -> None:
    world = SensorWorld(1)
    model = mlp_onnx(sensor_policy(world.prototypes, world.noise, T), T, F)
    spec = spec_for(model, T)
    assert spec.observation_range is None
    group = NeuralAgentGroup(spec, model.SerializeToString(), 4)
    group.step(np.full((4, F), 1e3, dtype=np.float32))
    assert group.metrics() == {}
    assert group.describe()["observation_range"] == {"calibrated": False}
    assert group.alerts() == []
