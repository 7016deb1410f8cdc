"""Camera frames over MQTT into a neural group: raw and JPEG, NCHW and NHWC models, batched on a
real onnxruntime session; frames that do not fit are counted and dropped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_agent.fleet.agent_io import FeatureBuffer, ObservationRouter, encode_frame
from edge_agent.fleet.comms.base import Incoming
from edge_agent.fleet.topics import Topics
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import get_backend
from edge_agent_host.converter.builders import image_cnn_onnx, random_image_cnn
from tests.unit.neural.test_neural import spec_for

C, H, W, K, N = 3, 12, 10, 4, 6
TOPIC = "cameras/dock"


def group_for(layout: str) -> tuple[NeuralAgentGroup, bytes]:
    cnn = random_image_cnn(C, H, W, K, seed=3)
    model = image_cnn_onnx(cnn, C, H, W, layout=layout)  # type: ignore[arg-type]
    data = model.SerializeToString()
    return NeuralAgentGroup(spec_for(model, 1), data, N, name="dock"), data


def wire(group: NeuralAgentGroup) -> tuple[FeatureBuffer, ObservationRouter]:
    buf = FeatureBuffer("dock", N, group.num_features, group.frame)
    router = ObservationRouter(Topics("f"))
    router.bind({TOPIC: [buf]})
    return buf, router


def send(router: ObservationRouter, payload: bytes) -> None:
    assert router.handle(Incoming(TOPIC, payload, 1, False, 0))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_raw_and_jpeg_frames_step_the_group_as_a_direct_session_call(layout: str) -> None:
    group, data = group_for(layout)
    assert group.frame == ((C, H, W) if layout == "NCHW" else (H, W, C))
    buf, router = wire(group)
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, size=(N, H, W, C), dtype=np.uint8)  # as a camera gives them
    for agent in range(N):
        quality = 90 if agent % 2 else None  # half raw, half JPEG
        send(router, encode_frame("cam", "dock", 1, agent, pictures[agent], jpeg_quality=quality))
    assert buf.take()
    assert buf.counters["rows"] == N
    actions = group.step(buf.obs).copy()
    # What the device saw: the raw pixels, or the JPEG as Pillow decodes it.
    seen = pictures.astype(np.float32)
    for agent in range(1, N, 2):
        jpeg = io.BytesIO()
        Image.fromarray(pictures[agent]).save(jpeg, format="JPEG", quality=90)
        seen[agent] = np.asarray(Image.open(io.BytesIO(jpeg.getvalue())).convert("RGB"))
    batch = seen.transpose(0, 3, 1, 2) if layout == "NCHW" else seen
    session = get_backend("onnxruntime").load(data, 1)
    session.set_batch(N)
    logits = session.run({session.input_specs[0].name: np.ascontiguousarray(batch)})
    np.testing.assert_array_equal(actions, np.argmax(next(iter(logits.values())), axis=1))


def test_frames_that_do_not_fit_are_counted_and_dropped() -> None:
    group, _ = group_for("NCHW")
    buf, router = wire(group)
    good = np.zeros((H, W, C), dtype=np.uint8)
    send(router, encode_frame("cam", "dock", 1, 0, np.zeros((H + 1, W, C), dtype=np.uint8)))
    send(router, encode_frame("cam", "dock", 1, N, good))  # no such agent
    send(router, encode_frame("cam", "other", 1, 0, good))  # another group
    bad = np.full((C, H, W), np.nan, dtype=np.float32)
    send(router, encode_frame("cam", "dock", 1, 1, bad))
    payload = encode_frame("cam", "dock", 1, 2, good, jpeg_quality=80)
    send(router, payload.replace(b"JFIF", b"JUNK")[:-40])  # a damaged JPEG
    assert buf.rejected["width"] == 1
    assert buf.rejected["agent_id"] == 1
    assert buf.rejected["group"] == 1
    assert buf.rejected["value"] == 1
    assert buf.rejected["decode"] == 1
    assert buf.counters["rows"] == 0
    assert not buf.take()  # nobody has a frame yet: the group waits


def test_a_frame_for_a_feature_or_outcome_group_is_refused() -> None:
    features = FeatureBuffer("dock", N, 8)
    router = ObservationRouter(Topics("f"))
    router.bind({TOPIC: [features]})
    send(router, encode_frame("cam", "dock", 1, 0, np.zeros((2, 4), dtype=np.uint8)))
    assert features.rejected["type"] == 1
