"""A reporting window's health summaries (edge_agent.core.health_window): exact means and
counts, the 95th percentile of a bounded reservoir, a new window after each close."""

from __future__ import annotations

import math

import numpy as np

from edge_agent.core.health_window import RESERVOIR, DriftReading, HealthWindow


def test_a_short_window_is_summarised_exactly() -> None:
    window = HealthWindow(["surprise", "preference"])
    rng = np.random.default_rng(0)
    values = [rng.normal(size=k) for k in (5, 17, 40)]
    for v in values:
        window.add("surprise", v)
        window.add_steps(100)
    window.add("surprise", np.array([np.nan, np.inf]))  # not finite: left out
    summary = window.close(DriftReading(alarm=False, statistic=1.5, threshold=12.0, since=None))
    every = np.concatenate(values)
    assert summary.agent_steps == 300
    assert set(summary.measures) == {"surprise"}  # a measure without values is left out
    s = summary.measures["surprise"]
    assert s.n == every.size
    assert math.isclose(s.mean, every.mean(), rel_tol=1e-12)
    assert math.isclose(s.std, every.std(), rel_tol=1e-9)
    assert math.isclose(s.p95, float(np.percentile(every, 95)), rel_tol=1e-12)
    assert math.isclose(s.z, every.mean() / (every.std() / math.sqrt(every.size)), rel_tol=1e-9)
    as_dict = summary.as_dict()
    assert as_dict["drift"] == {"alarm": False, "statistic": 1.5, "threshold": 12.0, "since": None}
    # closed: the next window starts empty
    again = window.close()
    assert again.agent_steps == 0
    assert again.measures == {}


def test_a_long_window_keeps_a_bounded_uniform_sample_for_its_percentile() -> None:
    """100,000 values of U(0, 1) in batches: the mean is exact, and the 95th percentile of the
    kept sample of at least RESERVOIR / 2 values is within 5 standard errors of 0.95
    (sqrt(0.95 * 0.05 / (RESERVOIR / 2)) = 0.014)."""
    window = HealthWindow(["score"])
    rng = np.random.default_rng(1)
    total = 0.0
    for _ in range(1000):
        v = rng.random(100)
        total += v.sum()
        window.add("score", v)
    assert RESERVOIR // 2 <= window.kept("score").shape[0] <= RESERVOIR  # bounded
    s = window.close().measures["score"]
    assert s.n == 100_000
    assert math.isclose(s.mean, total / 100_000, rel_tol=1e-12)
    assert abs(s.p95 - 0.95) < 5 * math.sqrt(0.95 * 0.05 / (RESERVOIR // 2))


def test_the_sample_is_uniform_over_the_window_not_its_end() -> None:
    """Values 0 for the first half of a window and 1 for the second: the kept sample holds
    half of each (to one value), so the 95th percentile is 1 and the sample's mean 0.5."""
    window = HealthWindow(["score"])
    for half in (0.0, 1.0):
        for _ in range(50):
            window.add("score", np.full(200, half))
    kept = window.kept("score")
    share = kept.mean()
    assert abs(share - 0.5) <= 1 / len(kept)  # every stride-th value: half of each, to one
    assert window.close().measures["score"].p95 == 1.0


def test_the_sample_is_every_stride_th_value_of_the_window() -> None:
    """Values 0, 1, 2, ... in batches of uneven sizes: the kept ones are exactly the multiples
    of a power of two, from the first value on, at most RESERVOIR of them."""
    window = HealthWindow(["score"])
    rng = np.random.default_rng(2)
    start = 0
    while start < 20_000:
        k = int(rng.integers(1, 300))
        window.add("score", np.arange(start, start + k, dtype=np.float64))
        start += k
    kept = window.kept("score")
    stride = int(kept[1] - kept[0])
    assert stride & (stride - 1) == 0  # a power of two
    np.testing.assert_array_equal(kept, np.arange(0, start, stride)[: len(kept)])
    assert len(kept) == len(range(0, start, stride)) <= RESERVOIR


def test_rows_told_at_once_are_summarised_as_each_told_alone() -> None:
    """``add_rows`` (a measured tick's measures in one call) keeps what ``add`` of each row
    would: the same means, spreads, counts and kept samples, through the sample's stride
    doubling; a row with a non-finite value has it left out, the other rows kept whole."""
    names = ["surprise", "preference", "belief_change"]
    together, apart = HealthWindow(names), HealthWindow(names)
    rng = np.random.default_rng(3)
    for tick in range(400):  # 400 ticks of 5 agents: past the reservoir of 512 values
        values = rng.normal(size=(3, 5))
        if tick == 7:
            values[1, 2] = np.nan
        together.add_rows(names, values)
        for name, row in zip(names, values, strict=True):
            apart.add(name, row)
    for name in names:
        np.testing.assert_array_equal(together.kept(name), apart.kept(name))
    a, b = together.close(), apart.close()
    assert a.measures["preference"].n == 400 * 5 - 1
    for name in names:
        x, y = a.measures[name], b.measures[name]
        assert x.n == y.n
        assert x.p95 == y.p95
        assert math.isclose(x.mean, y.mean, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(x.std, y.std, rel_tol=1e-12)


def test_rows_with_their_sums_are_summarised_as_each_told_alone() -> None:
    """``add_rows_summed`` (the sums worked out by the caller in its own buffers) keeps what
    ``add`` of each row would; a row whose sums are not finite (a NaN or an infinity in it)
    goes through ``add``, which leaves the non-finite values out."""
    names = ["confidence", "low_confidence_share", "output_entropy"]
    summed, apart = HealthWindow(names), HealthWindow(names)
    rng = np.random.default_rng(5)
    for tick in range(300):  # past the reservoir of 512 values
        values = rng.normal(size=(3, 7))
        if tick == 4:
            values[0, 1] = np.nan
        if tick == 9:
            values[2, 3] = np.inf
        with np.errstate(invalid="ignore"):
            totals, squares = values.sum(axis=1), (values * values).sum(axis=1)
        summed.add_rows_summed(names, values, totals, squares)
        for name, row in zip(names, values, strict=True):
            apart.add(name, row)
    for name in names:
        np.testing.assert_array_equal(summed.kept(name), apart.kept(name))
    a, b = summed.close(), apart.close()
    assert a.measures["confidence"].n == a.measures["output_entropy"].n == 300 * 7 - 1
    for name in names:
        x, y = a.measures[name], b.measures[name]
        assert (x.n, x.p95) == (y.n, y.p95)
        assert math.isclose(x.mean, y.mean, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(x.std, y.std, rel_tol=1e-12)


#: A measured tick's block as the pass folds it (edge_agent.core.health's in-tick names), and
#: the window's order of the same measures (AIF_MEASURES, then a learning group's).
BLOCK = ("policy_entropy", "preference", "surprise", "excess_surprise", "free_energy",
         "belief_change")
WINDOW = ("surprise", "excess_surprise", "free_energy", "policy_entropy", "belief_change",
          "preference", "experience")


def _summed(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", over="ignore"):
        return values.sum(axis=1), (values * values).sum(axis=1)


def _same_windows(a: HealthWindow, b: HealthWindow, names: tuple[str, ...]) -> None:
    """The same kept samples (bit for bit), counts, percentiles and sums (to rounding)."""
    for name in names:
        np.testing.assert_array_equal(a.kept(name), b.kept(name))
    x, y = a.close(), b.close()
    assert set(x.measures) == set(y.measures)
    for name, s in x.measures.items():
        t = y.measures[name]
        assert (s.n, s.p95) == (t.n, t.p95), name
        assert math.isclose(s.mean, t.mean, rel_tol=1e-12, abs_tol=1e-15), name
        assert math.isclose(s.std, t.std, rel_tol=1e-12, abs_tol=1e-15), name


def test_a_block_told_together_is_summarised_as_its_rows_with_their_sums() -> None:
    """``add_block`` (a measured tick's six measures, their samples side by side: one slice and
    one copy for all) keeps what ``add_rows_summed`` does: the same samples, value for value,
    through the stride doubling past the reservoir; the block without its first row (a tick
    nobody planned), a measure told apart (the learning's ``experience``, and one of the
    block's), a non-finite value and a close between: each measure as told alone."""
    block, rows = HealthWindow(WINDOW, together=BLOCK), HealthWindow(WINDOW)
    rng = np.random.default_rng(8)
    for tick in range(700):  # ticks of 1 to 64 agents: the reservoir fills and halves often
        k = int(rng.integers(1, 65))
        values = rng.normal(size=(6, k))
        names = BLOCK
        if tick % 11 == 5:  # none planned: the block less the policy entropy's row
            names, values = BLOCK[1:], values[1:]
        if tick == 40:
            values[2, 0] = np.nan
        if tick == 41:
            values[0, -1] = np.inf
        totals, squares = _summed(values)
        block.add_block(names, values, totals, squares)
        rows.add_rows_summed(names, values, totals, squares)
        if tick % 17 == 3:  # told apart: out of step until the next block is
            for window in (block, rows):
                window.add("excess_surprise", np.arange(3.0))
                window.add("experience", np.ones(2))
        if tick == 350:
            _same_windows(block, rows, WINDOW)  # (both closed: new windows)
    _same_windows(block, rows, WINDOW)


def test_a_block_in_step_is_kept_with_one_copy() -> None:
    """The block's measures in step (told together since the window opened) take their
    values from one slice of the block: the first row's sample and the last's are the same
    positions of their rows, each measure's row of the window's samples."""
    window = HealthWindow(WINDOW, together=BLOCK)
    start = 0
    for k in (5, 64, 300, 64, 1, 200):  # past the reservoir: a stride of 2
        values = np.arange(start, start + k, dtype=np.float64) + 1000.0 * np.arange(6)[:, None]
        window.add_block(BLOCK, values, *_summed(values))
        start += k
    entropy, change = window.kept("policy_entropy"), window.kept("belief_change")
    stride = int(entropy[1] - entropy[0])
    assert stride == 2
    np.testing.assert_array_equal(entropy, np.arange(0, start, stride)[: len(entropy)])
    np.testing.assert_array_equal(change, entropy + 5000.0)
