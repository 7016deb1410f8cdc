"""A group's history (edge_agent.core.history_recorder): the ring's fields, the bytes an agent's
history takes, the rows staged block by block and appended once, the history in and out of a
snapshot."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from edge_agent.aif.quant import decode_beliefs_u8
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.history import HistoryRing
from edge_agent.core.history_recorder import (
    HistoryRecorder,
    history_bytes_per_agent,
    history_fields,
)
from edge_agent.sim.registry import make_env


def zeros(shape: int | tuple[int, ...], dtype: object) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)  # type: ignore[call-overload]


@pytest.mark.parametrize("beliefs", ["full", "map"])
def test_an_agents_history_bytes_are_what_the_recorder_holds(beliefs: Any) -> None:
    fields = history_fields((3, 300), (4, 2), (2, 3), beliefs)
    assert fields["obs"][1] == np.uint16
    assert fields["action"][1] == np.uint8
    dtype = np.dtype(np.float32)
    n, capacity = 10, 6
    ring, staging = history_bytes_per_agent(fields, capacity, beliefs, dtype)
    assert ring == HistoryRing.bytes_needed(1, capacity, fields, max_window=0)
    recorder = HistoryRecorder(fields, capacity, beliefs, dtype)
    recorder.allocate(n, zeros)
    assert recorder.ring is not None
    assert recorder.ring.nbytes == n * ring
    assert recorder.nbytes == n * (ring + staging) + recorder.times.nbytes
    assert history_bytes_per_agent(fields, 0, beliefs, dtype) == (0, 0)


@pytest.mark.parametrize("beliefs", ["full", "map"])
def test_a_tick_stages_each_block_then_appends_one_row(beliefs: Any) -> None:
    env: Any = make_env("grid10", 50, seed=2)
    group = AifAgentGroup(env.model, 50, block_size=16, history_capacity=4,
                          history_beliefs=beliefs)
    obs = env.reset()
    actions = group.step(obs, now=1.5)
    recorder = group.recorder
    assert recorder is not None
    assert recorder.ring is group.history
    ring = recorder.ring
    assert ring is not None
    assert len(ring) == 1
    np.testing.assert_array_equal(ring.latest("obs"), obs)
    np.testing.assert_array_equal(ring.latest("action"), actions)
    if beliefs == "full":
        np.testing.assert_allclose(decode_beliefs_u8(ring.latest("qs")), group.qs[0], atol=0.01)
    else:
        np.testing.assert_array_equal(ring.latest("qs_map")[:, 0], group.qs[0].argmax(axis=1))
    assert recorder.times.latest("t")[0] == 1.5
    group.step(env.step(actions), record=False)
    assert len(ring) == 1  # not recorded


def test_a_snapshot_of_another_layout_restores_no_history(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env: Any = make_env("grid10", 8, seed=1)
    full = AifAgentGroup(env.model, 8, history_capacity=3)
    full.step(env.reset())
    saved = {k: np.array(v, copy=True) for k, v in full.state_dict().items()}
    assert "history.qs" in saved
    assert "times.t" in saved
    mapped = AifAgentGroup(env.model, 8, history_capacity=3, history_beliefs="map", name="m")
    mapped.step(env.reset())
    caplog.set_level(logging.WARNING, logger="edge_agent.core.history_recorder")
    mapped.load_state_dict(saved)
    assert mapped.history is not None
    assert len(mapped.history) == 0
    assert "group 'm': beliefs restored, history not" in caplog.text
    again = AifAgentGroup(env.model, 8, history_capacity=3)
    again.load_state_dict(saved)
    assert again.history is not None
    assert len(again.history) == 1
