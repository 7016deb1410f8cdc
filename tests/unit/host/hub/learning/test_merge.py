"""The fleet merge (hub/learning/merge.py): a sum of deltas, forgetting, the cap per column, the
leave-one-out score, and the fraction of poisoned nodes it tolerates."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edge_agent.fleet.protocol import CountsDelta, sparse_counts_delta
from edge_agent_host.hub.learning.merge import MergeSettings, SparseTable, merge_round, merge_sparse
from tests.support.learning_merge_oracle import (
    cap_shares,
    leave_one_out_scores,
    merge_round_dense,
    nanmedian_first_axis,
)

S, U = 4, 2
TICKS = 50  # transitions per column each node saw
LR = 1.0
OFF = MergeSettings(max_share=1.0, mad_k=float("inf"))  # a plain sum: no safeguard


def true_b(seed: int = 0) -> np.ndarray:
    """A random transition table ``(S, S, U)`` (columns sum to 1)."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(S, 0.5), size=(S, U)).transpose(2, 0, 1)


def honest(b: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """``n`` nodes' increments ``(n, S, S, U)``: ``TICKS`` transitions per column drawn from ``b``,
    ``lr`` each (what a node learns with exact state estimates)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, S, S, U))
    for i in range(n):
        for s in range(S):
            for u in range(U):
                out[i, :, s, u] = LR * rng.multinomial(TICKS, b[:, s, u])
    return out


def poisoned(b: np.ndarray, k: int) -> np.ndarray:
    """``k`` nodes that put all of an honest node's mass on each column's least likely state."""
    out = np.zeros((k, S, S, U))
    wrong = np.argmin(b, axis=0)
    for s in range(S):
        for u in range(U):
            out[:, wrong[s, u], s, u] = LR * TICKS
    return out


def worst_tv(a: np.ndarray, b: np.ndarray) -> float:
    """The largest total variation distance between two count tables' normalised columns."""
    pa, pb = a / a.sum(axis=0, keepdims=True), b / b.sum(axis=0, keepdims=True)
    return float(0.5 * np.abs(pa - pb).sum(axis=0).max())


PRIOR = np.full((S, S, U), 0.5)


DEFAULTS = MergeSettings()


def merged(deltas: np.ndarray, settings: MergeSettings = DEFAULTS) -> np.ndarray:
    return merge_round({"B0": PRIOR}, {"B0": PRIOR}, {"B0": deltas}, settings).counts["B0"]


def test_the_fleet_model_is_the_prior_plus_the_sum_never_an_average() -> None:
    d = honest(true_b(), 3)
    result = merge_round({"B0": PRIOR}, {"B0": PRIOR}, {"B0": d}, MergeSettings())
    np.testing.assert_allclose(result.counts["B0"], PRIOR + d.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(result.mass, d.sum(axis=(1, 2, 3)), rtol=1e-12)
    assert not result.refused.any()
    assert not result.capped.any()


def test_forgetting_scales_what_earlier_rounds_merged_not_the_base() -> None:
    base = PRIOR
    current = PRIOR + 8.0
    d = honest(true_b(), 3)
    for f in (0.0, 0.5, 1.0):
        got = merge_round({"B0": base}, {"B0": current}, {"B0": d}, MergeSettings(forgetting=f))
        np.testing.assert_allclose(
            got.counts["B0"], base + f * (current - base) + d.sum(axis=0), rtol=1e-12
        )


def test_a_tables_that_a_node_did_not_learn_keep_their_counts() -> None:
    d = honest(true_b(), 3)
    got = merge_round(
        {"B0": PRIOR, "D0": np.ones(S)}, {"B0": PRIOR, "D0": np.ones(S) * 3}, {"B0": d},
        MergeSettings(forgetting=0.5),
    )
    np.testing.assert_allclose(got.counts["D0"], np.full(S, 2.0))


def test_one_node_is_capped_to_its_share_of_a_column() -> None:
    d = honest(true_b(), 5)
    d[0] *= 20  # an honest node with far more experience than the others, or a loud one
    capped, flags = cap_shares(d.reshape(5, S, -1), 0.25)
    mass = capped.sum(axis=1)
    share = mass[0] / (mass[0] + d.reshape(5, S, -1)[1:].sum(axis=(0, 1)))
    assert flags.tolist() == [True, False, False, False, False]
    assert share.max() == pytest.approx(0.25, rel=1e-9)
    np.testing.assert_array_equal(capped[1:], d.reshape(5, S, -1)[1:])  # the others untouched
    # the hub's merge caps the same way
    no_allowance = MergeSettings(mad_k=1e9, prior_share=0.0)
    result = merge_round({"B0": PRIOR}, {"B0": PRIOR}, {"B0": d}, no_allowance)
    assert result.capped.tolist() == [True, False, False, False, False]
    np.testing.assert_allclose(result.mass, capped.sum(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(result.counts["B0"], PRIOR + capped.sum(axis=0).reshape(S, S, U),
                               rtol=1e-12)  # fmt: skip
    # a column only one node visited is left to the score: it is not capped
    alone = np.zeros((3, S, 1))
    alone[0, 0, 0] = 7.0
    kept, flags = cap_shares(alone, 0.25)
    assert kept[0, 0, 0] == 7.0
    assert not flags.any()


def corners(b: np.ndarray, n: int, ticks: int, lr: float, seed: int) -> np.ndarray:
    """``n`` honest nodes that each walk a corner of the world: ``ticks`` transitions drawn
    from ``b`` in columns weighted by a Dirichlet(0.3) of each node's own, ``lr`` each."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, S, S * U))
    flat = b.reshape(S, -1)
    for i in range(n):
        visits = rng.multinomial(ticks, rng.dirichlet(np.full(S * U, 0.3)))
        for c in np.flatnonzero(visits):
            out[i, :, c] = lr * rng.multinomial(visits[c], flat[:, c])
    return out.reshape(n, S, S, U)


def test_few_honest_nodes_in_their_corners_keep_their_experience() -> None:
    """Five nodes, each in a corner, a round's increments (lr 0.05, 2 units a node) on a line
    whose counts hold 50 a column already: the allowance on the prior keeps everything they sent,
    where the share alone (``prior_share`` 0) scales most of them down in most columns; a loud
    node is still held to its share plus 5 % of the column's prior mass."""
    b = true_b()
    prior = 50.0 * b + 0.5
    d = corners(b, 5, 40, 0.05, seed=3)
    kept = merge_round({"B0": prior}, {"B0": prior}, {"B0": d}, DEFAULTS)
    assert not kept.capped.any()
    assert not kept.refused.any()
    np.testing.assert_allclose(kept.mass, d.sum(axis=(1, 2, 3)), rtol=1e-12)
    share_only = merge_round({"B0": prior}, {"B0": prior}, {"B0": d},
                             MergeSettings(prior_share=0.0))  # fmt: skip
    assert share_only.capped.sum() >= 4
    assert share_only.mass.sum() < 0.9 * d.sum()
    loud = d.copy()
    loud[0] *= 200.0
    held = merge_round({"B0": prior}, {"B0": prior}, {"B0": loud}, MergeSettings(mad_k=1e9))
    assert held.capped[0]
    assert not held.capped[1:].any()
    col_prior = prior.reshape(S, -1).sum(axis=0)
    col_mass = loud.reshape(5, S, -1).sum(axis=1)
    others = col_mass[1:].sum(axis=0)
    visitors = (col_mass > 0).sum(axis=0)
    share = np.maximum(0.25, 1.0 / np.maximum(visitors, 2))  # a column of one is not capped
    bound = np.where(visitors > 1, share / (1 - share) * others + 0.05 * col_prior, np.inf)
    merged_mass = held.counts["B0"].reshape(S, -1).sum(axis=0) - col_prior - others
    assert np.all(merged_mass <= bound * (1 + 1e-9))


def test_the_score_is_the_log_evidence_per_unit_mass_under_the_others() -> None:
    prior = {"B0": np.array([[1.0], [1.0]])}
    d = np.array([[[3.0], [1.0]], [[3.0], [1.0]], [[0.0], [2.0]]])  # (nodes, rows, columns)
    scores = leave_one_out_scores(prior, {"B0": d})
    # the hub's merge scores the same (no cap, no refusal here)
    plain = MergeSettings(max_share=1.0, mad_k=float("inf"))
    np.testing.assert_allclose(
        merge_round(prior, prior, {"B0": d}, plain).scores, scores, rtol=1e-12
    )
    # node 0: others' mass 6 spread as the median of (0.75, 0.25), (0.75, 0.25), (0, 1):
    # (0.75, 0.25) -> model (1 + 4.5, 1 + 1.5) / 8
    p = np.array([5.5, 2.5]) / 8
    assert scores[0] == pytest.approx((3 * np.log(p[0]) + 1 * np.log(p[1])) / 4)
    # node 2: others' mass 8 -> (1 + 6, 1 + 2) / 10
    q = np.array([7.0, 3.0]) / 10
    assert scores[2] == pytest.approx(np.log(q[1]))
    assert scores[2] < scores[0]


@pytest.mark.parametrize("k", [1, 4, 9])
def test_fewer_poisoned_nodes_than_honest_ones_do_not_move_the_fleet_model(k: int) -> None:
    """10 honest nodes learn the true B; k nodes send as much mass on wrong transitions. The
    merged model stays within 0.01 (total variation, worst column) of the honest-only merge,
    every poisoned node refused; a plain sum is pulled far away."""
    b = true_b()
    good = honest(b, 10)
    both = np.concatenate([good, poisoned(b, k)])
    result = merge_round({"B0": PRIOR}, {"B0": PRIOR}, {"B0": both}, MergeSettings())
    assert result.refused.tolist() == [False] * 10 + [True] * k
    assert worst_tv(result.counts["B0"], merged(good)) <= 0.01
    assert worst_tv(merged(both, OFF), merged(good)) > 0.08


def test_as_many_poisoned_nodes_as_honest_ones_break_the_rule() -> None:
    """The stated limit: with 10 against 10 the medians come from the poisoned side."""
    b = true_b()
    good = honest(b, 10)
    both = np.concatenate([good, poisoned(b, 10)])
    assert worst_tv(merged(both), merged(good)) > 0.3


def test_few_nodes_are_not_judged_by_their_score() -> None:
    b = true_b()
    both = np.concatenate([honest(b, 1), poisoned(b, 1)])
    result = merge_round({"B0": PRIOR}, {"B0": PRIOR}, {"B0": both}, MergeSettings())
    assert not result.refused.any()  # 2 < min_scored: the cap is all there is
    assert result.capped.tolist() == [False, False]  # an even split: within max(0.25, 1/2)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"forgetting": 1.5}, "forgetting"),
        ({"max_share": 0.0}, "max_share"),
        ({"prior_share": -0.1}, "prior_share"),
        ({"min_scored": 1}, "min_scored"),
    ],
)
def test_settings_out_of_range_are_refused(settings: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MergeSettings(**settings)  # type: ignore[arg-type]


def test_shapes_that_differ_are_refused() -> None:
    with pytest.raises(ValueError, match="deltas have shape"):
        merge_round({"B0": PRIOR}, {"B0": PRIOR}, {"B0": np.zeros((2, S, S, 1))}, MergeSettings())


@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 7, 20])
def test_the_median_over_nodes_is_numpys_nanmedian(nodes: int) -> None:
    """The merge's one-sort median (nodes that did not visit a column are NaN there)."""
    rng = np.random.default_rng(nodes)
    a = rng.random((nodes, 3, 5))
    a = np.where(rng.random((nodes, 1, 5)) < 0.5, np.nan, a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own warns on all-NaN columns
        expected = np.nanmedian(a, axis=0)
    np.testing.assert_allclose(nanmedian_first_axis(a), expected, rtol=1e-12)


def random_round(
    seed: int, nodes: int, fill: float = 1.0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A prior and ``nodes`` nodes' dense deltas of two tables (``B0: (S, S, U)``, ``A0: (3, S)``)
    that visit a random part of the columns: honest, loud (capped), poisoned, silent nodes;
    ``fill``: the part of a visited column's values kept (the rest 0: sparse columns)."""
    rng = np.random.default_rng(seed)
    b = true_b(seed)
    d = honest(b, nodes, seed) * (rng.random((nodes, 1, S, U)) < 0.6)
    d *= rng.random(d.shape) < fill
    d[rng.random(nodes) < 0.2] *= 15.0  # loud nodes: the cap's work
    bad = rng.random(nodes) < 0.2
    d[bad] = np.roll(d[bad], 1, axis=1)  # mass on the wrong next states: the score's work
    d[rng.random(nodes) < 0.1] = 0.0  # nodes that sent nothing of this table
    a = rng.poisson(2.0, (nodes, 3, S)).astype(float) * (rng.random((nodes, 1, S)) < 0.5)
    prior = {"B0": PRIOR + rng.random((S, S, U)), "A0": np.full((3, S), 1.0)}
    return prior, {"B0": d, "A0": a}


@pytest.mark.parametrize("fill", [1.0, 0.4])
@pytest.mark.parametrize("block_values", [1 << 20, 3])
@pytest.mark.parametrize(("seed", "nodes"), [(0, 1), (1, 2), (2, 3), (3, 7), (4, 30), (5, 60)])
def test_the_merge_over_what_nodes_sent_equals_the_dense_merge(
    seed: int, nodes: int, block_values: int, fill: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts, scores, capped and refused nodes and their mass as the dense reference computes
    them (tests/support/learning_merge_oracle.py), with one block of columns and with many (a block
    of 3 values holds at most one column of these tables: every block boundary is crossed), with
    whole columns and with sparse ones (``fill`` 0.4: most places of a column have fewer values
    than half its visitors, their median is 0, and some columns' medians are all 0)."""
    monkeypatch.setattr("edge_agent_host.hub.learning.merge.BLOCK_VALUES", block_values)
    prior, deltas = random_round(seed, nodes, fill)
    current = {t: 2.0 * p for t, p in prior.items()}
    settings = MergeSettings(forgetting=0.7, max_share=0.05, mad_k=2.0)
    got = merge_round(prior, current, deltas, settings)
    want = merge_round_dense(prior, current, deltas, settings)
    for t in prior:
        np.testing.assert_allclose(got.counts[t], want.counts[t], rtol=1e-10)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(got.mass, want.mass, rtol=1e-10)
    np.testing.assert_array_equal(got.capped, want.capped)
    np.testing.assert_array_equal(got.refused, want.refused)
    if nodes >= 30:  # the random case exercises both safeguards
        assert got.capped.any()
        assert got.refused.any()


def test_a_node_that_sent_a_column_in_two_deltas_counts_their_sum() -> None:
    """What the hub reads: several deltas per node in the protocol's own encodings (the values
    not 0 and their places, or whole columns), float32 as sent, in any order."""
    _, deltas = random_round(3, 7, fill=0.5)
    d = deltas["B0"].reshape(7, S, -1)
    parts, columns = [], []
    for node in range(7):
        cols = np.flatnonzero(d[node].sum(axis=0))
        half = (d[node][:, cols].T / 2.0).astype(np.float32)
        for sent in (
            sparse_counts_delta("B0", (S, S, U), cols.astype(np.uint32), half, experience=1, lr=1),
            CountsDelta(table="B0", shape=(S, S, U), columns=cols.astype("<u4").tobytes(),
                        values=half.astype("<f4").tobytes(), experience=1, lr=1.0),
        ):  # fmt: skip
            parts.append((node, *sent.entries()))
        columns += [(node, cols[::-1], half[::-1]), (node, cols, half)]
    table = SparseTable.of_entries(S, S * U, parts[::-1])
    want = SparseTable.of_dense(d)
    for got in (table, SparseTable.of_parts(S, S * U, columns)):
        np.testing.assert_array_equal(got.node, want.node)
        np.testing.assert_array_equal(got.column, want.column)
        np.testing.assert_array_equal(got.start, want.start)
        np.testing.assert_array_equal(got.row, want.row)
        np.testing.assert_allclose(got.values, want.values, rtol=1e-6)
        np.testing.assert_allclose(got.dense_values(), d[want.node, :, want.column], rtol=1e-6)
    assert table.values.shape[0] == np.count_nonzero(d) < table.pairs * S
    result = merge_sparse({"B0": PRIOR}, {"B0": PRIOR}, {"B0": table}, 7, DEFAULTS)
    np.testing.assert_allclose(
        result.counts["B0"], merge_round({"B0": PRIOR}, {"B0": PRIOR}, deltas_b0(d), DEFAULTS)
        .counts["B0"], rtol=1e-6,
    )  # fmt: skip
    with pytest.raises(ValueError, match="outside"):
        SparseTable.of_parts(S, S * U, [(0, np.array([S * U]), np.ones((1, S)))])
    with pytest.raises(ValueError, match="row is outside"):
        SparseTable.of_entries(S, S * U, [(0, np.array([0]), np.array([S]), np.ones(1))])
    with pytest.raises(ValueError, match=r"node 2: values have shape \(1, 3\), expected \(1, 4\)"):
        SparseTable.of_parts(S, S * U, [(2, np.array([0]), np.ones((1, S - 1)))])


def deltas_b0(d: np.ndarray) -> dict[str, np.ndarray]:
    return {"B0": d.reshape(-1, S, S, U)}
