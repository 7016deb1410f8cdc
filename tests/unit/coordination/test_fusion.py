"""Belief fusion kernels and the BeliefSharer, without a network (the engine tests add one)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif.reference import EPS
from edge_agent.coordination import fusion
from edge_agent.coordination.beliefs import BeliefSharer, SharingSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError
from edge_agent.fleet.protocol import BeliefBatch
from tests.support.coordination_harness import static_world_model

R = fusion.WIRE_RANGE_NATS


def test_wire_code_round_trip_error_is_bounded() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 6, size=(500, 7)).astype(np.float32) + 3.0  # any offset
    codes = np.empty(x.shape, np.uint8)
    scratch = np.empty_like(x)
    col = np.empty((500, 1), np.float32)
    fusion.encode_message(x, codes, scratch, col)
    back = fusion.decode_message(codes, np.empty_like(x))
    centered = np.maximum(x - x.max(axis=1, keepdims=True), -R)
    assert np.abs(back - centered).max() <= R / 510 + 1e-5
    assert back.max(axis=1).tolist() == [0.0] * 500  # the maximum is code 0, exactly
    assert (back >= -R).all()
    assert (codes[(x - x.max(axis=1, keepdims=True)) < -R] == 255).all()


def test_fused_evidence_is_tempered_centered_and_clipped_per_peer() -> None:
    pending = np.array(
        [[[0.0, -1.0, -30.0]], [[5.0, 5.0, 2.0]], [[9.0, 9.0, 9.0]]], dtype=np.float64
    )  # (P=3, N=1, S=3)
    has = np.array([[True], [True], [False]])
    weights = np.array([0.5, 0.25, 1.0])
    out = np.empty((1, 3))
    fusion.fused_evidence(
        pending, has, weights, 4.0, out=out, scratch=np.empty((1, 3)), col=np.empty((1, 1))
    )
    expected = 0.5 * np.array([0.0, -1.0, -4.0]) + 0.25 * np.array([0.0, 0.0, -3.0])
    np.testing.assert_allclose(out[0], expected)


def test_fuse_prior_leaves_other_rows_untouched() -> None:
    prior = np.array([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]])
    before = prior.copy()
    evidence = np.array([[0.0, -np.log(2), 0.0], [0.0, -5.0, 0.0]])
    rows = np.array([True, False])
    fusion.fuse_prior(prior, evidence, rows, np.empty_like(prior), np.empty((2, 1)))
    np.testing.assert_allclose(prior[0], np.array([0.25, 0.125, 0.5]) / 0.875)
    assert np.array_equal(prior[1], before[1])


def test_age_weight() -> None:
    assert fusion.age_weight(0.0, 10.0, 30.0) == 1.0
    assert fusion.age_weight(10.0, 10.0, 30.0) == pytest.approx(np.exp(-1))
    assert fusion.age_weight(30.1, 10.0, 30.0) == 0.0
    assert fusion.age_weight(float("nan"), 10.0, 30.0) == 0.0


# --------------------------------------------------------------------------------------------
# two groups exchanging messages directly


class Pair:
    """Two groups watching the same static states through independent sensors."""

    def __init__(
        self,
        settings: SharingSettings,
        *,
        n: int = 40,
        S: int = 6,
        accuracy: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.model = static_world_model(S, accuracy)
        self.groups = [
            AifAgentGroup(self.model, n, precision="float64", name="w", seed=i) for i in (0, 1)
        ]
        self.sharers = [
            BeliefSharer("w", g.cm.num_states, n, settings, node_id=f"n{i}", dtype=np.float64)
            for i, g in enumerate(self.groups)
        ]
        rng = np.random.default_rng(seed)
        self.truth = rng.integers(0, S, n)
        self.rng = rng
        self.A = self.groups[0].cm.A_rows[0]  # the decoded likelihood both groups use
        self.seq = [0, 0]
        self.tick = 0
        self.n = n

    def observe(self) -> list[np.ndarray]:
        cdf = np.cumsum(self.A[:, self.truth], axis=0).T
        out = []
        for _ in range(2):
            u = self.rng.random((self.n, 1))
            out.append(np.minimum((cdf < u).sum(axis=1), self.A.shape[0] - 1)[:, None])
        return out

    def step(self, *, duplicate: bool = False) -> tuple[list[np.ndarray], list[list[BeliefBatch]]]:
        obs = self.observe()
        sent: list[list[BeliefBatch]] = []
        for g, s, o in zip(self.groups, self.sharers, obs, strict=True):
            s.fuse(g.prior)
            g.step(o)
            s.observe(g.qs)
            sent.append(s.publish(self.tick, self.tick * 0.1))
        for i, batches in enumerate(sent):
            for b in batches:
                for _ in range(2 if duplicate else 1):
                    self.sharers[1 - i].receive(f"n{i}", 0, self.seq[i], b)
                self.seq[i] += 1
        self.tick += 1
        return obs, sent


@pytest.mark.parametrize("duplicate", [False, True])
def test_exchanging_likelihood_messages_is_exact_bayes_without_double_counting(
    duplicate: bool,
) -> None:
    """With trust 1 and no clipping in play, each group's posterior equals the centralised
    posterior over its own observations and the peer's observations up to the previous tick,
    however long they exchange (and whether messages arrive twice)."""
    settings = SharingSettings(
        factors=(0,),
        trust=1.0,
        bound_nats=R,
        min_evidence_nats=0.0,
        bytes_per_agent_s=1e6,
        tau_s=1e6,
        max_age_s=1e6,
    )
    pair = Pair(settings)
    lnA = np.log(pair.A)
    own = [np.zeros((pair.n, 6)), np.zeros((pair.n, 6))]
    worst = 0.0
    for _ in range(25):
        before = [o.copy() for o in own]
        obs, _ = pair.step(duplicate=duplicate)
        for i in range(2):
            own[i] += lnA[obs[i][:, 0]]
        for i in range(2):
            log_ref = own[i] + before[1 - i]  # the peer's evidence arrives one tick later
            ref = np.exp(log_ref - log_ref.max(axis=1, keepdims=True))
            ref /= ref.sum(axis=1, keepdims=True)
            q = pair.groups[i].qs[0]
            # Where pymdp's 1e-16 floor does not dominate (it is part of inference anyway).
            big = ref > 1e-8
            worst = max(worst, float(np.abs(np.log(q[big]) - np.log(ref[big])).max()))
            assert np.abs(q - ref).max() < 1e-6 + 2 * R / 510
    # One message's rounding (error feedback keeps the rest for the next message), twice.
    assert worst <= 2 * R / 510 + 1e-6
    dropped = pair.sharers[0].counters["dropped_duplicate"]
    assert dropped == (25 if duplicate else 0)


def test_echo_is_not_sent_back() -> None:
    """What a group fused from a peer never goes back out: its message divides out the prior
    its inference used, the fused one. (Dividing out the prior from before fusion would echo.)"""
    settings = SharingSettings(
        factors=(0,), trust=1.0, min_evidence_nats=0.01, bytes_per_agent_s=1e6
    )
    pair = Pair(settings, n=10)
    pair.step()  # group 0's first evidence is now waiting at group 1
    listener, g = pair.sharers[1], pair.groups[1]
    before = g.prior[0].copy()
    listener.fuse(g.prior)
    assert np.ptp(np.log(g.prior[0]) - np.log(before), axis=1).max() > 0.5  # it arrived
    g.qs[0][...] = g.prior[0]  # an observation that carries no information
    listener.evidence[...] = 0
    listener.observe(g.qs)
    assert np.abs(listener.evidence).max() < 1e-12
    assert listener.publish(5, 1.0) == []
    echo = np.log(g.qs[0] + EPS) - np.log(before + EPS)
    assert np.ptp(echo, axis=1).max() > 0.5


def test_spamming_peer_is_bounded_by_trust_and_rate() -> None:
    """A peer claiming a wrong state with maximal certainty, ten times a tick, moves a log-odds
    by at most trust * bound per tick; an agent with a fair sensor still finds the truth; the
    same spam without the bound takes the agent over."""
    S, n = 4, 200

    def run(trust: float, bound: float, per_tick: int) -> tuple[AifAgentGroup, float]:
        model = static_world_model(S, 0.7)
        group = AifAgentGroup(model, n, precision="float64", seed=3)
        sharer = BeliefSharer(
            "w",
            group.cm.num_states,
            n,
            SharingSettings(
                factors=(0,),
                trust=trust,
                bound_nats=bound,
                bytes_per_agent_s=1e6,
            ),
            dtype=np.float64,
        )
        rng = np.random.default_rng(5)
        cdf = np.cumsum(group.cm.A_rows[0][:, 0])  # the truth is state 0 for every agent
        spam = np.zeros((n, S), dtype=np.uint8) + 255
        spam[:, 3] = 0  # "certainly state 3": -16 nats on every other state
        seq = 0
        worst_shift = 0.0
        for tick in range(40):
            for _ in range(per_tick):
                batch = BeliefBatch.from_arrays("w", tick, np.arange(n), spam)
                assert sharer.receive("spammer", 0, seq, batch)
                seq += 1
            before = np.log(group.prior[0] + EPS)  # inference reads ln(prior + 1e-16)
            sharer.fuse(group.prior)
            after = np.log(group.prior[0])
            shift = (after[:, 3] - after[:, :3].T).T - (before[:, 3] - before[:, :3].T).T
            worst_shift = max(worst_shift, float(shift.max()))
            obs = np.minimum((cdf[None, :] < rng.random((n, 1))).sum(1), S - 1)[:, None]
            group.step(obs)
            sharer.observe(group.qs)
        return group, worst_shift

    group, shift = run(trust=0.2, bound=4.0, per_tick=10)
    assert shift <= 0.2 * 4.0 + 1e-9
    assert shift >= 0.2 * 4.0 - 1e-6  # the bound is reached, not just respected
    assert np.median(group.qs[0][:, 0]) >= 0.95
    _, shift_once = run(trust=0.2, bound=4.0, per_tick=1)
    assert shift == pytest.approx(shift_once)  # ten messages a tick weigh what one does
    unbounded, _ = run(trust=1.0, bound=R, per_tick=1)
    assert np.median(unbounded.qs[0][:, 3]) >= 0.99


def test_token_bucket_bounds_bytes_per_agent() -> None:
    budget = 40.0
    settings = SharingSettings(
        factors=(0,), min_evidence_nats=0.0, bytes_per_agent_s=budget, burst_s=1.0
    )
    pair = Pair(settings, n=30)
    for _ in range(200):
        pair.step()
    elapsed = 200 * 0.1
    s = pair.sharers[0]
    per_agent = s.counters["bytes_sent"] / s.n_agents
    assert per_agent <= budget * elapsed + budget * 1.0 + s.row_bytes + s.overhead_bytes / 30
    assert per_agent >= 0.8 * budget * elapsed  # the budget is used, not wasted
    assert s.counters["rows_deferred_budget"] > 0
    stats = s.stats(elapsed)
    assert stats["bytes_per_agent_s"] == pytest.approx(s.counters["bytes_sent"] / 30 / elapsed)


def test_weak_evidence_waits_and_is_sent_whole_later() -> None:
    settings = SharingSettings(
        factors=(0,), min_evidence_nats=1.0, every_ticks=3, bytes_per_agent_s=1e6
    )
    s = BeliefSharer("w", (4,), 2, settings, dtype=np.float64)
    prior = [np.full((2, 4), 0.25)]
    s.fuse(prior)
    like = np.array([[0.3, 0.2, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]])
    q = [prior[0] * like / (prior[0] * like).sum(1, keepdims=True)]
    step = np.log(like[0] / 0.25)  # 0.41 nats of log-odds range for agent 0, none for agent 1
    for tick in (0, 1):
        s.observe(q)
        assert s.publish(tick, tick * 0.1) == []  # 0.41, then 0.81 nats: below 1.0
    s.observe(q)
    batches = s.publish(2, 0.2)  # 1.22 nats
    assert len(batches) == 1
    ids, codes = batches[0].arrays()
    assert ids.tolist() == [0]
    sent = fusion.decode_message(codes, np.empty((1, 4)))[0]
    np.testing.assert_allclose(sent, 3 * step - 3 * step.max(), atol=R / 510)
    s.observe(q)
    assert s.publish(3, 0.3) == []  # one tick after the last message: not due yet
    for _ in (4, 5):
        s.observe(q)
    assert s.publish(5, 0.5)[0].n_agents == 1  # three ticks after the last one, 1.22 nats


def test_stale_unknown_and_overflowing_peers_are_dropped_and_counted() -> None:
    settings = SharingSettings(factors=(0,), max_peers=2, tau_s=10.0, max_age_s=30.0)
    s = BeliefSharer("w", (3,), 4, settings, channels=np.array([10, 11, 12, 13]), dtype=np.float64)
    codes = np.array([[0, 255, 255]], dtype=np.uint8)
    batch = BeliefBatch.from_arrays("w", 5, [11], codes)
    assert s.receive("a", 0, 1, batch, transit_s=10.0)
    np.testing.assert_allclose(s.pending[s._slots["a"], 1], np.exp(-1) * np.array([0, -R, -R]))
    assert not s.receive("a", 0, 1, batch)  # same seq: a duplicate
    assert not s.receive("a", 0, 0, batch)  # older: late
    assert not s.receive("b", 0, 1, batch, transit_s=31.0)
    assert s.counters["dropped_stale"] == 1
    assert not s.receive("c", 0, 1, batch)
    assert s.counters["peer_overflow"] == 1
    s.forget_peer("b")
    assert s.receive("c", 0, 1, BeliefBatch.from_arrays("w", 5, [99, 12], np.vstack([codes] * 2)))
    assert s.counters["dropped_unknown_channel"] == 1
    assert not s.receive("c", 0, 2, BeliefBatch.from_arrays("x", 5, [12], codes))
    assert not s.receive("c", 0, 3, BeliefBatch.from_arrays("w", 5, [12], codes[:, :2]))
    assert s.counters["dropped_mismatch"] == 2
    assert s.receive("a", 1, 0, batch)  # a new session of "a" (bdseq 1) starts over


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InputError, match="factor 2"):
        BeliefSharer("w", (3, 3), 4, SharingSettings(factors=(2,)))
    with pytest.raises(InputError, match="unique"):
        BeliefSharer("w", (3,), 2, SharingSettings(factors=(0,)), channels=np.array([1, 1]))
    s = BeliefSharer("w", (3,), 2, SharingSettings(factors=(0,)))
    with pytest.raises(InputError, match="trust"):
        s.set_trust({"a": 1.5})
