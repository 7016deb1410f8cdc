"""ONNX models whose weights live in an external data file, as ``torch.onnx.export`` writes them.

torch's default exporter (dynamo, since torch 2.9) saves ``model.onnx`` and ``model.onnx.data``
side by side. The converter reads the weights (onnx checks each location stays in the model's
directory), puts them into the model and bundles one self-contained file; the files here are
written by onnx's own ``save_as_external_data``, the format torch uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.external_data_helper import uses_external_data

from edge_agent.bundle.loader import load_bundle
from edge_agent.errors import InputError
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.converter.builders import mlp_onnx, sensor_policy
from edge_agent_host.converter.formats.onnx import ConvertOptions, NeuralOptions, convert_onnx
from edge_agent_host.converter.report import ConversionReport

T, F = 4, 8


@pytest.fixture
def model(tmp_path: Path) -> onnx.ModelProto:
    world = SensorWorld(1)
    X, _ = world.sample_windows(300, T, seed=1)
    np.savez(tmp_path / "calibration.npz", window=X)
    Xh, yh = world.sample_windows(300, T, seed=2)
    np.savez(tmp_path / "heldout.npz", window=Xh, labels=yh)
    return mlp_onnx(sensor_policy(world.prototypes, world.noise, T), T, F)


def save_external(model: onnx.ModelProto, path: Path, location: str) -> None:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # saving as external data rewrites the tensors it is given
    onnx.save_model(copy, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)


def convert(tmp_path: Path, path: Path, out: str) -> ConversionReport:
    return convert_onnx(
        ConvertOptions(model=path, out=tmp_path / out, name="policy"),
        NeuralOptions(
            latency_repeats=1, calibration=tmp_path / "calibration.npz",
            heldout=tmp_path / "heldout.npz",
        ),
    )


def test_weights_in_an_external_file_are_put_into_the_bundled_model(
    tmp_path: Path, model: onnx.ModelProto
) -> None:
    (tmp_path / "exported").mkdir()
    external = tmp_path / "exported" / "policy.onnx"
    save_external(model, external, "policy.onnx.data")
    assert (tmp_path / "exported" / "policy.onnx.data").stat().st_size > 0
    assert any(uses_external_data(t) for t in onnx.load(str(external), load_external_data=False)
               .graph.initializer)
    onnx.save(model, tmp_path / "inline.onnx")

    report = convert(tmp_path, external, "external.tar")
    inline = convert(tmp_path, tmp_path / "inline.onnx", "inline.tar")
    tensors = sum(1 for _ in model.graph.initializer)
    assert report.warnings == [
        f"{tensors} weight tensor(s) read from the external data file policy.onnx.data and put "
        "into the model: the bundle carries one self-contained file"
    ]
    assert inline.warnings == []
    # The same model either way: same bytes, same agreement with the float model.
    for key in ("size", "accuracy"):
        assert report.data[key] == inline.data[key]
    inline_bytes = (tmp_path / "inline.onnx").stat().st_size
    assert report.data["size"]["float_bytes"] == inline_bytes
    bundle = load_bundle(tmp_path / "external.tar", trusted_keys=None, require_signature=False)
    spec = bundle.manifest.neural
    assert spec is not None
    bundled = onnx.load_from_string(bundle.file_bytes(spec.model_file))
    assert not any(uses_external_data(t) for t in bundled.graph.initializer)


def test_a_missing_data_file_is_refused_in_one_line(
    tmp_path: Path, model: onnx.ModelProto
) -> None:
    save_external(model, tmp_path / "policy.onnx", "policy.onnx.data")
    (tmp_path / "policy.onnx.data").unlink()
    with pytest.raises(InputError) as caught:
        convert(tmp_path, tmp_path / "policy.onnx", "b.tar")
    message = str(caught.value)
    assert "\n" not in message
    assert "external data (policy.onnx.data) that cannot be read" in message
    assert message.endswith("keep the .onnx file and its data file together, as the exporter "
                            "wrote them")
    assert not (tmp_path / "b.tar").exists()


def test_a_data_location_outside_the_model_directory_is_refused(
    tmp_path: Path, model: onnx.ModelProto
) -> None:
    (tmp_path / "exported").mkdir()
    save_external(model, tmp_path / "exported" / "policy.onnx", "policy.onnx.data")
    # Point every tensor at a file one directory up, where a copy of the weights lies.
    moved = onnx.load(str(tmp_path / "exported" / "policy.onnx"), load_external_data=False)
    for tensor in moved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../policy.onnx.data"
    (tmp_path / "policy.onnx.data").write_bytes(
        (tmp_path / "exported" / "policy.onnx.data").read_bytes()
    )
    (tmp_path / "exported" / "policy.onnx").write_bytes(moved.SerializeToString())
    with pytest.raises(InputError, match=r"external data \(\.\./policy\.onnx\.data\) that cannot"):
        convert(tmp_path, tmp_path / "exported" / "policy.onnx", "b.tar")
