"""Agent I/O over MQTT: observation buffers, routing, action batches (edge_agent.fleet.agent_io)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import ProtocolError
from edge_agent.fleet.agent_io import (
    ActionPublisher,
    ObservationBuffer,
    ObservationRouter,
    decode_actions,
    encode_observations,
)
from edge_agent.fleet.comms.base import Incoming
from edge_agent.fleet.protocol import (
    MAX_BATCH_AGENTS,
    ActionBatch,
    Envelope,
    ObservationBatch,
    decode,
    encode,
)
from edge_agent.fleet.topics import Topics

NUM_OBS = (5, 3)  # two modalities


def batch(
    ids: list[int], values: list[list[int]], group: str = "g", dtype: str = "uint8"
) -> ObservationBatch:
    return ObservationBatch.from_arrays(
        group,
        0,
        np.array(ids, dtype=np.uint32),
        np.array(values, dtype=dtype).reshape(len(ids), -1),
    )


def test_a_group_waits_until_every_agent_was_observed_then_keeps_stale_rows() -> None:
    buf = ObservationBuffer("g", 3, NUM_OBS)
    assert buf.offer(batch([0, 1], [[1, 2], [3, 0]])) == 2
    assert buf.take() is False  # agent 2 never observed: no made-up observation
    assert buf.unobserved == 1
    assert buf.offer(batch([2], [[4, 1]])) == 1
    assert buf.take() is True
    np.testing.assert_array_equal(buf.obs, [[1, 2], [3, 0], [4, 1]])
    assert buf.counters["stale_agent_ticks"] == 2  # agents 0 and 1 had nothing fresh this tick
    # Next tick: only agent 1 is fresh; the others keep their last observation and age.
    buf.offer(batch([1], [[0, 0]]))
    assert buf.take() is True
    np.testing.assert_array_equal(buf.obs, [[1, 2], [0, 0], [4, 1]])
    assert buf.counters["stale_agent_ticks"] == 4
    np.testing.assert_array_equal(buf.age, [2, 0, 1])
    assert buf.stats()["max_age_ticks"] == 2


def test_newest_observation_wins_within_and_across_batches() -> None:
    buf = ObservationBuffer("g", 2, NUM_OBS)
    buf.offer(batch([0, 1], [[1, 1], [1, 1]]))
    buf.offer(batch([0, 0, 1], [[2, 2], [3, 0], [4, 2]]))  # later rows of a batch are newer
    assert buf.take()
    np.testing.assert_array_equal(buf.obs, [[3, 0], [4, 2]])


@pytest.mark.parametrize(
    ("make", "reason", "rows"),
    [
        (lambda: batch([0], [[1, 1]], group="other"), "group", 1),
        (lambda: batch([0], [[1.0, 1.0]], dtype="float32"), "dtype", 1),
        (lambda: batch([0], [[1, 1, 1]]), "width", 1),
        (lambda: batch([0, 9], [[1, 1], [1, 1]]), "agent_id", 2),
    ],
)
def test_malformed_batches_are_dropped_whole_and_counted(make, reason: str, rows: int) -> None:  # type: ignore[no-untyped-def]
    buf = ObservationBuffer("g", 2, NUM_OBS)
    assert buf.offer(make()) == 0
    assert buf.rejected[reason] == 1
    assert buf.counters["batches_rejected"] == 1
    assert buf.counters["rows_rejected"] == rows
    assert buf.take() is False


def test_out_of_range_rows_are_dropped_one_by_one() -> None:
    buf = ObservationBuffer("g", 3, NUM_OBS)
    kept = buf.offer(batch([0, 1, 2], [[4, 2], [5, 0], [0, 3]], dtype="int16"))
    assert kept == 1  # 5 >= 5 outcomes of modality 0; 3 >= 3 of modality 1
    assert buf.rejected["value"] == 2
    assert buf.counters["rows_rejected"] == 2
    negative = buf.offer(batch([1], [[-1, 0]], dtype="int8"))
    assert negative == 0
    assert buf.rejected["value"] == 3


def test_per_agent_topic_must_match_the_ids() -> None:
    buf = ObservationBuffer("g", 4, NUM_OBS)
    assert buf.offer(batch([2], [[1, 1]]), topic_agent="2") == 1
    assert buf.offer(batch([1, 2], [[1, 1], [1, 1]]), topic_agent="2") == 0
    assert buf.offer(batch([2], [[1, 1]]), topic_agent="two") == 0
    assert buf.rejected["agent_topic"] == 2


def test_resize_keeps_the_first_agents() -> None:
    buf = ObservationBuffer("g", 2, NUM_OBS)
    buf.offer(batch([0, 1], [[1, 1], [2, 2]]))
    buf.take()
    buf.resize(3)
    assert buf.unobserved == 1
    np.testing.assert_array_equal(buf.obs[:2], [[1, 1], [2, 2]])
    buf.resize(1)
    assert buf.take() is True
    np.testing.assert_array_equal(buf.obs, [[1, 1]])


def test_router_claims_its_filters_and_routes_by_group() -> None:
    topics = Topics("f")
    a = ObservationBuffer("a", 2, NUM_OBS)
    b = ObservationBuffer("b", 2, NUM_OBS)
    router = ObservationRouter(topics, max_payload_bytes=4096)
    router.bind({"sensors/+": [a, b], topics.obs("n1", "a", None) + "/#": [a]})

    def incoming(topic: str, payload: bytes) -> Incoming:
        return Incoming(topic, payload, 1, False, 1)

    assert not router.handle(incoming("elsewhere/x", b"whatever"))
    payload = encode_observations("sensor", "b", 3, [0, 1], [[1, 1], [2, 2]])
    assert router.handle(incoming("sensors/x", payload))
    assert b.counters["rows"] == 2
    assert a.counters["rows"] == 0
    assert router.handle(incoming("sensors/x", b"\xc1 not msgpack"))
    assert a.rejected["decode"] == 1
    assert router.handle(incoming("sensors/x", b"\x00" * 5000))  # over the payload limit
    assert a.rejected["decode"] == 2
    unknown = encode_observations("sensor", "zzz", 3, [0], [[1, 1]])
    assert router.handle(incoming("sensors/x", unknown))
    assert a.rejected["group"] == 1
    # A per-agent protocol topic: .../obs/a/1 carries only agent 1.
    per_agent = topics.obs("n1", "a", 1)
    assert router.handle(incoming(per_agent, encode_observations("s", "a", 0, [1], [[4, 2]])))
    assert router.handle(incoming(per_agent, encode_observations("s", "a", 0, [0], [[4, 2]])))
    assert a.counters["rows"] == 1
    assert a.rejected["agent_topic"] == 1
    action = ActionBatch.from_arrays("a", 0, [0], np.zeros((1, 1), np.uint8))
    env = Envelope(type="action", node="s", seq=0, bdseq=0, ts=0.0, clock_synced=False, body=action)
    assert router.handle(incoming("sensors/x", encode(env)))
    assert a.rejected["type"] == 1


def test_action_batches_cover_every_agent_and_round_trip() -> None:
    n = 2 * MAX_BATCH_AGENTS + 5
    pub = ActionPublisher("g", "act/g", n, (5, 300))  # 300 controls: int32 values
    actions = np.stack([np.arange(n) % 5, np.arange(n) % 300], axis=1).astype(np.int64)
    bodies = pub.bodies(7, actions)
    assert len(bodies) >= 3
    got_ids, got_vals = [], []
    for body in bodies:
        env = Envelope(
            type="action", node="n", seq=0, bdseq=0, ts=0.0, clock_synced=False, body=body
        )
        payload = encode(env)
        assert len(payload) <= 256 * 1024
        decoded, ids, vals = decode_actions(payload)
        assert decoded.tick == 7
        got_ids.append(ids)
        got_vals.append(vals)
    np.testing.assert_array_equal(np.concatenate(got_ids), np.arange(n))
    np.testing.assert_array_equal(np.concatenate(got_vals), actions)
    small = ActionPublisher("g", "act/g", 3, (4,))
    (one,) = small.bodies(0, np.array([[0], [3], [2]]))
    assert one.dtype == "uint8"
    with pytest.raises(ProtocolError, match="shape"):
        small.bodies(0, np.zeros((2, 1), np.int64))


@settings(max_examples=200, deadline=None)
@given(
    n_agents=st.integers(1, 20),
    ids=st.lists(st.integers(0, 40), max_size=30),
    values=st.lists(st.integers(-200, 200), max_size=60),
    dtype=st.sampled_from(["int8", "uint8", "int16", "int32", "float32"]),
    width=st.integers(1, 3),
    group=st.sampled_from(["g", "h"]),
)
def test_random_batches_never_raise_and_keep_only_valid_rows(
    *, n_agents: int, ids: list[int], values: list[int], dtype: str, width: int, group: str
) -> None:
    buf = ObservationBuffer("g", n_agents, NUM_OBS)
    k = min(len(ids), len(values) // width)
    vals = np.array(values[: k * width], dtype=np.int64).reshape(k, width)
    info = np.iinfo(dtype) if dtype != "float32" else None
    if info is not None:
        vals = np.clip(vals, info.min, info.max)
    body = ObservationBatch.from_arrays(group, 0, np.array(ids[:k], np.uint32), vals.astype(dtype))
    payload = encode(
        Envelope(type="obs", node="s", seq=0, bdseq=0, ts=0.0, clock_synced=False, body=body)
    )
    kept = buf.offer(decode(payload).body)  # type: ignore[arg-type]
    assert 0 <= kept <= k
    buf.take()
    assert (buf.obs >= 0).all()
    assert (buf.obs < np.array(NUM_OBS)).all()
    accounted = kept + buf.counters["rows_rejected"]
    assert accounted <= k  # duplicates of one agent collapse to its newest row
