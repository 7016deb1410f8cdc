"""The drift alarm (edge_agent.core.drift) on synthetic series of a tick's mean excess
surprise: quiet while it averages 0, an alarm soon after it moves up, cleared with hysteresis
once it is back, never for a move down."""

from __future__ import annotations

import math

import numpy as np

from edge_agent.core.drift import CAP, CLEAR, DriftDetector, DriftSettings


def _feed(det: DriftDetector, means: np.ndarray, k: int, sd: float, t0: int = 0) -> list[int]:
    """Tell ``det`` each tick's mean over ``k`` agents of spread ``sd``; the ticks it fired."""
    fired = []
    for t, m in enumerate(means):
        if det.update(float(m), sd * sd, k, now=float(t0 + t)):
            fired.append(t0 + t)
    return fired


def test_a_model_that_fits_does_not_alarm() -> None:
    """20 series of 2,000 ticks whose mean is 0 (64 agents a tick, sd 1): no alarm. The
    statistic's allowance of 0.5 standard errors a tick makes an alarm before the threshold of
    12 rarer than once in about 10^5 ticks (Siegmund's approximation)."""
    rng = np.random.default_rng(0)
    k = 64
    for _ in range(20):
        det = DriftDetector()
        assert _feed(det, rng.normal(0.0, 1 / math.sqrt(k), size=2000), k, 1.0) == []
        assert det.statistic <= det.settings.threshold


def test_an_excess_above_the_tolerance_alarms_once_and_clears_with_hysteresis() -> None:
    rng = np.random.default_rng(1)
    k, sd = 64, 1.0
    se = sd / math.sqrt(k)
    det = DriftDetector()
    s = det.settings
    quiet = rng.normal(0.0, se, size=300)
    shifted = rng.normal(0.5, se, size=300)  # 0.45 nats beyond the tolerance: 3.6 se a tick
    assert _feed(det, quiet, k, sd) == []
    fired = _feed(det, shifted, k, sd, t0=300)
    assert len(fired) == 1  # one event, however long it lasts
    # expected delay: threshold / ((0.5 - tolerance) / se - allowance) = 12 / 3.1, about 4 ticks
    expected = s.threshold / ((0.5 - s.tolerance) / se - s.drift)
    assert 300 <= fired[0] <= 300 + 3 * math.ceil(expected)
    assert det.alarm
    assert det.since == float(fired[0])
    assert det.statistic <= CAP * s.threshold  # capped: clearing takes bounded time
    # back to fitting: it clears once the statistic falls to CLEAR * threshold, not before
    cleared_at = None
    for t in range(600, 900):
        det.update(float(rng.normal(0.0, se)), sd * sd, k, now=float(t))
        if not det.alarm:
            cleared_at = t
            break
    assert cleared_at is not None
    assert det.statistic <= CLEAR * s.threshold
    # CAP * threshold down to CLEAR * threshold at >= drift + tolerance / se a tick
    assert cleared_at - 600 <= (CAP - CLEAR) * s.threshold / s.drift + 1
    assert det.reading().since is None


def test_a_better_fit_than_predicted_is_not_drift() -> None:
    rng = np.random.default_rng(2)
    det = DriftDetector()
    assert _feed(det, rng.normal(-1.0, 0.1, size=500), 64, 0.8) == []
    assert det.statistic == 0.0


def test_the_settings_are_what_the_reading_says() -> None:
    det = DriftDetector(DriftSettings(tolerance=0.1, drift=1.0, threshold=5.0))
    assert det.reading().threshold == 5.0
    # z = 2 a tick (se 0.1), less the allowance of 1: g is about 1, 2, ..., 6 > 5 at the 6th
    assert _feed(det, np.full(10, 0.1 + 2.0 * 0.1), 100, 1.0) == [5]
    # a group of one agent: its spread is learned from its own deviations from 0, so a
    # constant excess is one standard error a tick, half of it beyond the default allowance
    det = DriftDetector()
    fired = _feed(det, np.full(60, 3.0), 1, 0.0)
    assert fired, "a constant excess of 3 nats alarms a group of one agent"
