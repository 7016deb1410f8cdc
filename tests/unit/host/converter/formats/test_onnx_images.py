"""Camera frames: a small CNN on ``(N, C, H, W)`` or ``(N, H, W, C)`` images converts, is checked on
the device path before signing, and runs batched in a neural agent group (and as the observation
model of a perception bundle). Real onnxruntime sessions; the CNN is built with ``onnx.helper``
and its head fitted to scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import pytest

from edge_agent.aif.model import GenerativeModel, save_npz
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.manifest import NeuralSpec, TensorSpec
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import InputError, ModelError
from edge_agent.neural.agents import NeuralAgentGroup, frame_shape, window_layout
from edge_agent.neural.backends import available_backends, get_backend
from edge_agent.neural.perception import PerceptionAifGroup
from edge_agent_host.cli import main
from edge_agent_host.converter.builders import (
    ImageCnn,
    conv_features,
    image_cnn_onnx,
    random_image_cnn,
)
from edge_agent_host.converter.formats.onnx import (
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
    device_check,
)
from edge_agent_host.keys import generate_keypair, load_signing_key

FILTERS = 8


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    if not available_backends()["onnxruntime"]:
        pytest.fail("onnxruntime is not installed: pip install 'edge-agent-runtime[onnx]'")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, ImageCnn]:
    """Digits as (n, 1, 8, 8) frames in [0, 1], and a CNN whose head is fitted to them."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        pytest.fail("scikit-learn is not installed: pip install -e '.[dev]'")
    X, y = load_digits(return_X_y=True)
    frames = (X / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    cnn = random_image_cnn(1, 8, 8, 10, filters=FILTERS, seed=0)
    features = conv_features(frames[:1200], cnn.conv_w, cnn.conv_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        head = LogisticRegression(max_iter=500).fit(features, y[:1200])
    fitted = ImageCnn(cnn.conv_w, cnn.conv_b, head.coef_.T.astype(np.float32),
                      head.intercept_.astype(np.float32))
    return frames, y, fitted


def write(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray, ImageCnn],
          layout: Literal["NCHW", "NHWC"]) -> dict[str, Path]:
    frames, y, cnn = digits
    images = frames if layout == "NCHW" else frames.transpose(0, 2, 3, 1)
    onnx.save(image_cnn_onnx(cnn, 1, 8, 8, layout=layout), tmp_path / "cnn.onnx")
    np.savez(tmp_path / "cal.npz", frame=images[:1200])
    np.savez(tmp_path / "held.npz", frame=images[1200:], labels=y[1200:])
    return {"model": tmp_path / "cnn.onnx", "cal": tmp_path / "cal.npz",
            "held": tmp_path / "held.npz"}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_a_camera_classifier_converts_and_runs_batched(
    digits: tuple[np.ndarray, np.ndarray, ImageCnn], tmp_path: Path,
    layout: Literal["NCHW", "NHWC"],
) -> None:
    frames, y, cnn = digits
    paths = write(tmp_path, digits, layout)
    keys = generate_keypair(tmp_path / "keys", "release")
    report = convert_onnx(
        ConvertOptions(
            model=paths["model"], out=tmp_path / "b.tar", name="digits",
            sign_key=load_signing_key(keys.private_path),
        ),
        NeuralOptions(latency_repeats=1, calibration=paths["cal"], heldout=paths["held"]),
    )
    assert report.passed, report.render()
    acc = report.data["accuracy"]
    assert acc["top1_agreement"] >= 0.99
    assert acc["label_accuracy"]["float"] > 0.85
    assert report.data["size"]["ratio"] < 0.9
    assert report.data["device_check"] == {"agents": 8, "ticks": 1}
    bundle = load_bundle(tmp_path / "b.tar", trusted_keys=TrustedKeys.from_dir(tmp_path / "keys"))
    spec = bundle.manifest.neural
    assert spec is not None
    shape = (-1, 1, 8, 8) if layout == "NCHW" else (-1, 8, 8, 1)
    assert [(t.name, t.shape) for t in spec.inputs] == [("frame", shape)]
    assert spec.window == 1
    # The float model computes what numpy computes: the conversion measured the right model.
    reference = conv_features(frames[1200:], cnn.conv_w, cnn.conv_b) @ cnn.head_w + cnn.head_b
    float_session = get_backend("onnxruntime").load(paths["model"].read_bytes())
    held = np.load(paths["held"])["frame"]
    float_session.set_batch(len(held))
    out = float_session.run({"frame": held})["logits"]
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)
    # On the device: 64 cameras, one batched call per tick, frames or flattened frames.
    group = NeuralAgentGroup.from_bundle(bundle, 64)
    batch = held[:64]
    actions = group.step(batch).copy()
    assert np.mean(actions == y[1200:1264]) > 0.85
    np.testing.assert_array_equal(group.step(batch.reshape(64, -1)), actions)
    with pytest.raises(InputError, match=r"obs has shape \(64, 8, 8\), expected \(64, 64\) or "
                       rf"\(64, {', '.join(map(str, shape[1:]))}\)"):
        group.step(batch[:, 0] if layout == "NCHW" else batch[..., 0])


def test_frame_data_and_window_errors_are_one_line(
    digits: tuple[np.ndarray, np.ndarray, ImageCnn], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = write(tmp_path, digits, "NCHW")
    np.savez(tmp_path / "nhwc.npz", frame=np.zeros((20, 8, 8, 1), dtype=np.float32))
    with pytest.raises(InputError, match=r"frame has shape \(20, 8, 8, 1\), expected "
                       r"\(n, 1, 8, 8\)"):
        convert_onnx(
            ConvertOptions(model=paths["model"], out=tmp_path / "x", name="m"),
            NeuralOptions(calibration=tmp_path / "nhwc.npz"),
        )
    code = main(["convert", "onnx", str(paths["model"]), "--out", str(tmp_path / "x"),
                 "--calibration", str(paths["cal"]), "--window", "4"])
    assert code == 1
    assert capsys.readouterr().err == (
        "error: --window 4: the model's input [-1, 1, 8, 8] is a frame (batch, C, H, W) or "
        "(batch, H, W, C), one per step; frames take window 1\n"
    )
    assert not (tmp_path / "x").exists()


def frame_spec(shape: tuple[int, ...], window: int = 1) -> NeuralSpec:
    return NeuralSpec(backend="onnxruntime", model_file="m.onnx",
                      inputs=(TensorSpec(name="frame", shape=shape, dtype="float32"),),
                      outputs=(TensorSpec(name="logits", shape=(-1, 10), dtype="float32"),),
                      window=window, output_kind="discrete")


def test_the_device_reads_frame_inputs_with_fixed_dimensions() -> None:
    assert frame_shape(frame_spec((-1, 3, 32, 32))) == (3, 32, 32)
    assert window_layout(frame_spec((-1, 32, 32, 3))) == ("frame", 3 * 32 * 32)
    assert frame_shape(frame_spec((-1, 8, 4))) is None
    with pytest.raises(ModelError, match=r"a frame input needs fixed channels, height and width"):
        window_layout(frame_spec((-1, 3, -1, -1)))
    with pytest.raises(ModelError, match=r"a frame per observation: window must be 1, got 4"):
        window_layout(frame_spec((-1, 3, 32, 32), window=4))
    with pytest.raises(ModelError, match=r"expected \[-1, T, F\], \[-1, T\*F\] or a frame"):
        window_layout(frame_spec((-1, 2, 3, 32, 32)))


def test_a_camera_perception_bundle_steps_aif_agents(
    digits: tuple[np.ndarray, np.ndarray, ImageCnn], tmp_path: Path
) -> None:
    frames, y, _ = digits
    paths = write(tmp_path, digits, "NCHW")
    K = 10
    A = np.full((K, K), 0.1 / (K - 1))
    np.fill_diagonal(A, 0.9)
    save_npz(GenerativeModel.from_arrays([A], [np.eye(K)[:, :, None]]), tmp_path / "aif.npz")
    from edge_agent_host.converter.aif.options import AifOptions
    from edge_agent_host.converter.aif.source import load_aif_model

    report = convert_onnx(
        ConvertOptions(model=paths["model"], out=tmp_path / "p", name="p"),
        NeuralOptions(
            output_kind="observation", latency_repeats=1, calibration=paths["cal"],
            heldout=paths["held"],
            aif=AifOptions(
            model=load_aif_model(tmp_path / "aif.npz"), rollouts=10, steps=3,
        ),
        ),
    )
    assert report.bundle is not None
    assert report.data["device_check"] == {"agents": 8, "ticks": 1}
    bundle = load_bundle(tmp_path / "p", trusted_keys=None, require_signature=False)
    group = PerceptionAifGroup.from_bundle(bundle, 16)
    assert group.step(frames[1200:1216]).shape == (16, 1)
    evidence = group.perceive(frames[1200:1216])
    assert isinstance(evidence, np.ndarray)
    assert np.mean(evidence[:, 0] == y[1200:1216]) > 0.8


def test_device_check_refuses_a_bundle_that_disagrees_with_the_measured_model(
    digits: tuple[np.ndarray, np.ndarray, ImageCnn], tmp_path: Path
) -> None:
    frames, _, cnn = digits
    paths = write(tmp_path, digits, "NCHW")
    convert_onnx(
        ConvertOptions(model=paths["model"], out=tmp_path / "b", name="m"),
        NeuralOptions(latency_repeats=1, calibration=paths["cal"]),
    )
    bundle = load_bundle(tmp_path / "b", trusted_keys=None, require_signature=False)
    other = ImageCnn(cnn.conv_w, cnn.conv_b, -cnn.head_w, cnn.head_b)
    session = get_backend("onnxruntime").load(
        image_cnn_onnx(other, 1, 8, 8).SerializeToString()
    )
    with pytest.raises(ModelError, match=r"the device's agent group and the measured int8 model "
                       r"disagree on calibration input 0"):
        device_check(bundle, {"frame": frames[:8]}, session)


def test_what_a_device_refuses_is_never_signed(
    digits: tuple[np.ndarray, np.ndarray, ImageCnn], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The converter builds the device's group before signing: if the device would refuse the
    bundle (here: the group's own output check, as for skl2onnx's 1-D label output before the
    converter dropped such outputs), nothing is signed and nothing is left."""
    paths = write(tmp_path, digits, "NCHW")
    keys = generate_keypair(tmp_path / "keys", "release")

    def refuse(self: NeuralAgentGroup) -> tuple[int, ...]:
        raise ModelError("output 'label' has shape [-1]; discrete actions need [-1, A]")

    monkeypatch.setattr(NeuralAgentGroup, "_check_output", refuse)
    code = main(["convert", "onnx", str(paths["model"]), "--out", str(tmp_path / "b.tar"),
                 "--calibration", str(paths["cal"]), "--sign", str(keys.private_path),
                 "--latency-repeats", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err == (
        "error: a device would refuse this bundle: output 'label' has shape [-1]; discrete "
        "actions need [-1, A]\n"
    )
    assert not (tmp_path / "b.tar").exists()
    assert list(tmp_path.glob(".bundle-*")) == []
    with pytest.raises(ModelError):
        convert_onnx(
            ConvertOptions(model=paths["model"], out=tmp_path / "dir", name="m"),
            NeuralOptions(
                latency_repeats=1, calibration=paths["cal"],
                thresholds=NeuralThresholds(min_top1=None),
            ),
        )
    assert not (tmp_path / "dir").exists()
