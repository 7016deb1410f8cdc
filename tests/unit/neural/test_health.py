"""A neural group's health (edge_agent.neural.health): the output kernels against a direct
computation, the window's measures of a real group's outputs, the out-of-range share."""

from __future__ import annotations

import math

import numpy as np

from edge_agent.core.health import HEALTH_EVERY
from edge_agent.neural.health import (
    NEURAL_MEASURES,
    NeuralHealth,
    confidence,
    output_entropy,
    output_probabilities,
)
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.converter.builders import mlp_onnx, sensor_policy
from tests.unit.neural.test_neural import group_for


def test_the_output_kernels_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(9, 5)).astype(np.float32)
    for temperature in (1.0, 0.5):
        p = output_probabilities(logits, temperature)
        top, ent = confidence(p), output_entropy(p)
        for r in range(9):
            e = [math.exp(float(x) / temperature) for x in logits[r]]
            want = [x / sum(e) for x in e]
            np.testing.assert_allclose(p[r], want, rtol=1e-12)
            assert math.isclose(top[r], max(want), rel_tol=1e-12)
            assert math.isclose(ent[r], -sum(x * math.log(x) for x in want), rel_tol=1e-10)
    # a certain output: confidence 1, entropy 0 (0 ln 0 = 0)
    sure = output_probabilities(np.array([[0.0, -1e4, -1e4]]))
    assert confidence(sure)[0] == 1.0
    assert output_entropy(sure)[0] == 0.0


def test_a_window_of_outputs_and_the_out_of_range_share() -> None:
    health = NeuralHealth(discrete=True, threshold=0.6)
    sure = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # p_top 0.965 and 1/3
    for _ in range(4 * HEALTH_EVERY):
        health.observe(sure, 2)
    s = health.close(checked=800, out_of_range=8)
    top = math.exp(4) / (math.exp(4) + 2)
    assert s.agent_steps == 2 * 4 * HEALTH_EVERY
    assert s.measures["confidence"].n == 2 * 4  # every HEALTH_EVERY-th tick, both agents
    assert math.isclose(s.measures["confidence"].mean, (top + 1 / 3) / 2, rel_tol=1e-12)
    assert s.measures["low_confidence_share"].mean == 0.5
    assert math.isclose(s.measures["output_entropy"].mean,
                        (output_entropy(output_probabilities(sure)).sum()) / 2, rel_tol=1e-12)
    oor = s.measures["out_of_range_share"]
    assert (oor.mean, oor.n) == (0.01, 800)
    # the next window: only what the counts grew by since
    s = health.close(checked=1000, out_of_range=8)
    assert (s.measures["out_of_range_share"].mean, s.measures["out_of_range_share"].n) == (0, 200)
    assert "confidence" not in s.measures
    continuous = NeuralHealth(discrete=False)
    continuous.observe(sure, 2)
    assert continuous.close(0, 0).measures == {}


def test_a_group_reports_its_policys_confidence() -> None:
    T, F, N = 4, 8, 200
    world = SensorWorld(N, seed=3)
    group = group_for(mlp_onnx(sensor_policy(world.prototypes, world.noise, T), T, F), T, N)
    obs = world.reset()
    for _ in range(8 * HEALTH_EVERY):
        obs = world.step(group.step(obs))
    s = group.health_summary()
    assert set(s.measures) == set(NEURAL_MEASURES)  # no calibrated range: no share
    assert s.agent_steps == 8 * HEALTH_EVERY * N
    c = s.measures["confidence"]
    assert 1 / 4 <= c.mean <= 1.0  # four classes: the top output has at least 1/4
    assert c.p95 <= 1.0
    assert 0.0 <= s.measures["output_entropy"].mean <= math.log(4)
