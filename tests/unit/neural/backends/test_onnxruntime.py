"""A model onnxruntime cannot read is refused in one line, never with a C++ signature.

onnxruntime's own messages quote the C++ source location and the whole signature of the function
that raised (300 characters for an IR version it does not read); the backend keeps the message
and drops the rest. Real onnxruntime sessions, real files, real processes of the CLI.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_agent.errors import ModelError
from edge_agent.neural.backends import available_backends, get_backend
from edge_agent.neural.backends.onnxruntime import ort_message
from edge_agent_host.cli import main
from edge_agent_host.converter.formats.onnx import (
    ConvertOptions,
    NeuralOptions,
    convert_onnx,
    max_onnxruntime_ir_version,
)

# What onnxruntime 1.31 says when it meets IR 14 (the signature is the noise).
IR_REFUSAL = (
    "[ONNXRuntimeError] : 1 : FAIL : Load model from /tmp/m.onnx failed:/onnxruntime_src/"
    "onnxruntime/core/graph/model.cc:181 onnxruntime::Model::Model(onnx::ModelProto&&, const "
    "PathString&, const IOnnxRuntimeOpSchemaRegistryList*, const onnxruntime::logging::Logger&, "
    "const onnxruntime::ModelOptions&) Unsupported model IR version: 14, max supported IR "
    "version: 13\n"
)


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    if not available_backends()["onnxruntime"]:
        pytest.fail("onnxruntime is not installed: pip install 'edge-agent-runtime[onnx]'")


def relu_model(*, ir_version: int, opset: int) -> onnx.ModelProto:
    """One Relu on a (batch, 8) input, saved with the given IR version and ai.onnx opset."""
    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph([helper.make_node("Relu", ["window"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def test_ort_message_drops_the_location_and_the_signature() -> None:
    assert ort_message(RuntimeError(IR_REFUSAL)) == (
        "[ONNXRuntimeError] : 1 : FAIL : Load model from /tmp/m.onnx failed: Unsupported model "
        "IR version: 14, max supported IR version: 13"
    )
    assert ort_message(RuntimeError("no location (here) stays\nas it was")) == (
        "no location (here) stays as it was"
    )


def test_onnxruntime_refusing_an_ir_version_says_so_in_one_line() -> None:
    newest = max_onnxruntime_ir_version()
    model = relu_model(ir_version=newest + 1, opset=13)
    with pytest.raises(ModelError) as refused:
        get_backend("onnxruntime").load(model.SerializeToString(), 1)
    message = str(refused.value)
    assert f"Unsupported model IR version: {newest + 1}, max supported IR version: {newest}" in (
        message
    )
    assert "\n" not in message
    assert "onnxruntime::" not in message
    assert ".cc:" not in message


def test_a_newer_ir_and_an_opset_onnxruntime_lacks_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The IR label is lowered (one warning), then the opset is what onnxruntime refuses."""
    import onnxruntime

    path = tmp_path / "future.onnx"
    onnx.save(relu_model(ir_version=max_onnxruntime_ir_version() + 1, opset=99), path)
    with pytest.raises(ModelError, match=r"onnxruntime cannot load the model: .*Opset 99") as err:
        convert_onnx(
            ConvertOptions(model=path, out=tmp_path / "b", name="future"),
            NeuralOptions(input_range=(0.0, 1.0)),
        )
    assert "ValidateOpsetForDomain" not in str(err.value)
    assert "\n" not in str(err.value)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code = main(["convert", "onnx", str(path), "--out", str(tmp_path / "c"),
                     "--input-range", "0", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: onnxruntime cannot load the model: ")
    assert len(err.strip().splitlines()) == 1
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        f"ONNX IR version {max_onnxruntime_ir_version() + 1} is newer than onnxruntime "
        f"{onnxruntime.__version__} reads ({max_onnxruntime_ir_version()}); converting it as IR "
        f"{max_onnxruntime_ir_version()}"
    ]
    assert not (tmp_path / "c").exists()


def test_a_file_that_is_no_onnx_model_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match=r"notes\.onnx: not an ONNX model \("):
        convert_onnx(
            ConvertOptions(model=path, out=tmp_path / "b", name="notes"),
            NeuralOptions(input_range=(0.0, 1.0)),
        )
    assert main(["convert", "onnx", str(path), "--out", str(tmp_path / "c"),
                 "--input-range", "0", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not an ONNX model (")
    assert len(err.strip().splitlines()) == 1


def test_an_empty_onnx_file_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """protobuf reads an empty file as an empty model: it used to reach the outputs check,
    'no output of the model is a tensor:' with nothing after it."""
    (tmp_path / "empty.onnx").write_bytes(b"")
    np.savez(tmp_path / "cal.npz", window=np.zeros((32, 8), dtype=np.float32))
    code = main(["convert", "onnx", str(tmp_path / "empty.onnx"), "--out", str(tmp_path / "b"),
                 "--calibration", str(tmp_path / "cal.npz"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == f"error: {tmp_path / 'empty.onnx'}: not an ONNX model (the file is empty)"


@pytest.mark.parametrize("kind", ["npy", "csv"])
def test_calibration_data_in_another_format_says_what_is_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Calibration data that is not .npz is refused in one line: a .npy once gave a TypeError
    traceback, a .csv a message about pickles."""
    onnx.save(relu_model(ir_version=max_onnxruntime_ir_version(), opset=13),
              tmp_path / "m.onnx")
    X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    data = tmp_path / f"calib.{kind}"
    if kind == "npy":
        np.save(data, X)
    else:
        np.savetxt(data, X, delimiter=",")
    code = main(["convert", "onnx", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "b"),
                 "--calibration", str(data), "--output-kind", "continuous", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    what = "one .npy array, not an .npz" if kind == "npy" else "not an .npz file"
    assert err.strip() == (
        f"error: {data}: {what}; calibration and held-out data are an .npz with one array per "
        "model input, keyed by its name: 'window' (n, 8), plus optional integer labels (n,); "
        "write it with numpy.savez('data.npz', window=X)"
    )
