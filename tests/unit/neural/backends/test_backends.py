"""Inference backends: the registry, lazy imports, ONNX Runtime and LiteRT sessions, int8 I/O."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif import agreement
from edge_agent.errors import BackendUnavailableError, InputError, ModelError
from edge_agent.neural.backends import BACKENDS, available_backends, get_backend
from edge_agent.neural.backends import litert as litert_plugin
from edge_agent.neural.backends import onnxruntime as ort_plugin
from edge_agent.neural.backends.base import dequantize_into, quantize_into
from edge_agent_host.converter.builders import int8_io_onnx, mlp_forward, mlp_onnx, random_mlp

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO / "tests" / "data"))

import make_tflite_fixture as fixture  # noqa: E402

T, F, A = 6, 3, 4


def require_runtimes() -> None:
    """These tests run real runtimes: a machine without them fails, saying how to install."""
    missing = [name for name, ok in available_backends().items() if not ok]
    if missing:
        pytest.fail(
            f"backends {missing} are not installed: pip install 'edge-agent-runtime[onnx]' "
            "'edge-agent-runtime[tflite]'"
        )


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    require_runtimes()


def mlp_bytes(seed: int = 0) -> tuple[bytes, list[tuple[np.ndarray, np.ndarray]]]:
    layers = random_mlp((T * F, 16, A), seed=seed)
    return mlp_onnx(layers, T, F).SerializeToString(), layers


# -- registry and lazy imports ---------------------------------------------------------------------
def test_registry_names_match_the_bundle_schema() -> None:
    from typing import get_args

    from edge_agent.bundle.manifest import NeuralSpec

    backend_field = NeuralSpec.model_fields["backend"].annotation
    assert set(BACKENDS) == set(get_args(backend_field))
    assert BACKENDS["onnxruntime"].extra == "onnx"
    assert BACKENDS["litert"].extra == "tflite"


def test_unknown_backend_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"unknown inference backend 'tensorrt'.*litert"):
        get_backend("tensorrt")


def test_missing_onnxruntime_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    ort_plugin._ort.cache_clear()
    try:
        with pytest.raises(
            BackendUnavailableError, match=r"pip install 'edge-agent-runtime\[onnx\]'"
        ):
            get_backend("onnxruntime")
        assert available_backends()["onnxruntime"] is False
    finally:
        ort_plugin._ort.cache_clear()


def test_missing_litert_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    litert_plugin.interpreter_class.cache_clear()
    try:
        with pytest.raises(
            BackendUnavailableError, match=r"pip install 'edge-agent-runtime\[tflite\]'"
        ):
            get_backend("litert")
    finally:
        litert_plugin.interpreter_class.cache_clear()


def test_litert_falls_back_to_tflite_runtime_only_without_ai_edge_litert(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    class FallbackInterpreter(Interpreter):  # type: ignore[misc]
        pass

    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = FallbackInterpreter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    litert_plugin.interpreter_class.cache_clear()
    try:
        assert litert_plugin.interpreter_class() is Interpreter  # LiteRT present: it wins
        litert_plugin.interpreter_class.cache_clear()
        monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
        assert litert_plugin.interpreter_class() is FallbackInterpreter
        session = get_backend("litert").load(fixture.FLOAT_PATH.read_bytes())
        assert isinstance(session._interp, FallbackInterpreter)
    finally:
        litert_plugin.interpreter_class.cache_clear()


# -- (de)quantization helpers ----------------------------------------------------------------------
def test_quantize_rounds_half_to_even_and_saturates() -> None:
    real = np.array([0.0, 0.05, 0.15, 0.25, -0.05, 100.0, -100.0], dtype=np.float32)
    q = np.zeros(real.shape, dtype=np.int8)
    quantize_into(real, 0.1, 3, q, np.zeros(real.shape, dtype=np.float32))
    # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0; then + zero point 3; then clip to int8.
    assert q.tolist() == [3, 3, 5, 5, 3, 127, -128]
    back = np.zeros(real.shape, dtype=np.float32)
    dequantize_into(q, 0.1, 3, back)
    np.testing.assert_allclose(back[:5], [0.0, 0.0, 0.2, 0.2, 0.0], atol=1e-6)
    assert back[5] == pytest.approx(12.4)
    assert back[6] == pytest.approx(-13.1)


def test_quantize_round_trip_error_is_at_most_half_a_step() -> None:
    rng = np.random.default_rng(0)
    real = rng.uniform(-1.0, 1.0, size=1000).astype(np.float32)
    q = np.zeros(real.shape, dtype=np.int8)
    back = np.zeros(real.shape, dtype=np.float32)
    quantize_into(real, 2.0 / 255, -1, q, np.zeros_like(real))
    dequantize_into(q, 2.0 / 255, -1, back)
    assert np.abs(back - real).max() <= 1.0 / 255 + 1e-6


# -- ONNX Runtime ----------------------------------------------------------------------------------
def test_onnxruntime_session_matches_numpy_at_any_batch() -> None:
    model, layers = mlp_bytes()
    session = get_backend("onnxruntime").load(model, threads=2)
    assert [(t.name, t.shape, t.dtype) for t in session.input_specs] == [
        ("window", (-1, T, F), "float32")
    ]
    assert [(t.name, t.shape) for t in session.output_specs] == [("logits", (-1, A))]
    rng = np.random.default_rng(1)
    for n in (1, 5, 64):
        x = rng.normal(size=(n, T, F))
        session.set_batch(n)
        out = session.run({"window": x})["logits"]
        assert out.shape == (n, A)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, mlp_forward(layers, x), rtol=1e-4, atol=1e-5)


def test_onnxruntime_threads_no_spinning_and_sequential() -> None:
    model, _ = mlp_bytes()
    session = get_backend("onnxruntime").load(model, threads=3)
    options = session._session.get_session_options()
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert "SEQUENTIAL" in str(options.execution_mode)


X86_AVX2_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2
bugs\t\t: spectre_v1
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid asimdrdm lrcpc dcpop asimddp
"""


@pytest.mark.parametrize(
    ("machine", "flags", "needed"),
    [
        ("x86_64", "avx avx2 fma", True),  # AVX2 only: u8 x s8 pairs saturate at 16 bits
        ("x86_64", "avx2 avx512f avx512_vnni", False),
        ("x86_64", "avx2 avx_vnni", False),
        ("AMD64", "avx2 amx_int8 amx_tile", False),
        ("x86_64", "", True),  # flags unknown: keep the exact kernel
        ("aarch64", "fp asimd asimddp", False),
        ("armv7l", "", False),
    ],
)
def test_x64_quant_precision_only_where_the_cpu_saturates(
    machine: str, flags: str, needed: bool
) -> None:
    assert ort_plugin.needs_x64_quant_precision(machine, frozenset(flags.split())) is needed


def test_cpu_flags_reads_x86_and_arm_cpuinfo() -> None:
    assert "avx2" in ort_plugin.cpu_flags(X86_AVX2_CPUINFO)
    assert "spectre_v1" not in ort_plugin.cpu_flags(X86_AVX2_CPUINFO)  # the first flags line only
    assert ort_plugin.cpu_flags(ARM_CPUINFO) >= {"asimd", "asimddp"}
    assert ort_plugin.cpu_flags("processor : 0\n") == frozenset()
    assert ort_plugin.needs_x64_quant_precision("x86_64", ort_plugin.cpu_flags(X86_AVX2_CPUINFO))


def test_onnxruntime_session_sets_x64_precision_as_the_cpu_needs() -> None:
    model, _ = mlp_bytes()

    def entry(session: ort_plugin.OnnxRuntimeSession) -> str | None:
        try:
            value = session._session.get_session_options().get_session_config_entry(
                "session.x64quantprecision"
            )
        except RuntimeError:  # onnxruntime: "does not have configuration with key"
            return None
        return str(value)

    machine = ort_plugin.OnnxRuntimeSession(model)
    assert machine.x64_precision is ort_plugin.x64_quant_precision()
    assert entry(machine) == ("1" if ort_plugin.x64_quant_precision() else None)
    assert entry(ort_plugin.OnnxRuntimeSession(model, x64_precision=True)) == "1"
    assert entry(ort_plugin.OnnxRuntimeSession(model, x64_precision=False)) is None


def test_onnxruntime_threads_spin_only_when_asked() -> None:
    model, layers = mlp_bytes()
    x = np.linspace(-1, 1, 3 * T * F, dtype=np.float32).reshape(3, T, F)

    def spinning(session: ort_plugin.OnnxRuntimeSession) -> str:
        options = session._session.get_session_options()
        return str(options.get_session_config_entry("session.intra_op.allow_spinning"))

    outputs = []
    for asked, expected in ((False, "0"), (True, "1")):
        session = get_backend("onnxruntime").load(model, 2, spinning=asked)
        assert spinning(session) == expected
        session.set_batch(3)
        outputs.append(session.run({"window": x})["logits"].copy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_allclose(outputs[0], mlp_forward(layers, x), rtol=1e-4, atol=1e-5)


def test_run_writes_into_the_same_buffers_and_the_staging_input_skips_a_copy() -> None:
    model, layers = mlp_bytes()
    session = get_backend("onnxruntime").load(model)
    session.set_batch(4)
    staging = session.input_buffer("window")
    assert staging.shape == (4, T, F)
    staging[...] = np.arange(4 * T * F, dtype=np.float32).reshape(4, T, F) / 100
    first = session.run({"window": staging})["logits"]
    np.testing.assert_allclose(first, mlp_forward(layers, staging), rtol=1e-4, atol=1e-5)
    kept = first.copy()
    staging *= -1
    second = session.run({"window": staging})["logits"]
    assert second is first  # the same output buffer every run
    assert not np.allclose(second, kept)


def test_int8_onnx_inputs_and_outputs_use_the_declared_quantization() -> None:
    layers = random_mlp((T * F, 8, A), seed=3)
    model = int8_io_onnx(layers, T, F, input_scale=0.02, input_zero_point=-5, output_scale=0.05,
                         output_zero_point=4).SerializeToString()
    backend = get_backend("onnxruntime")
    with pytest.raises(ModelError, match=r"int8 without a quantization scale"):
        backend.load(model)
    session = backend.load(model, quantization={"q_in": (0.02, -5), "q_out": (0.05, 4)})
    assert session.input_specs[0].scale == pytest.approx(0.02)
    assert session.output_specs[0].zero_point == 4
    rng = np.random.default_rng(2)
    x = rng.uniform(-2.0, 2.0, size=(32, T, F))
    session.set_batch(32)
    out = session.run({"q_in": x})["q_out"]
    # Reference: quantize the input exactly as the session must, run in float, quantize the output.
    xq = np.clip(np.rint(x / 0.02) - 5, -128, 127)
    y = mlp_forward(layers, 0.02 * (xq + 5))
    yq = np.clip(np.rint(y / 0.05) + 4, -128, 127)
    np.testing.assert_allclose(out, 0.05 * (yq - 4), atol=0.05 + 1e-6)
    assert np.mean(np.isclose(out, 0.05 * (yq - 4), atol=1e-5)) > 0.95


def test_quantization_for_a_float_or_unknown_tensor_is_refused() -> None:
    model, _ = mlp_bytes()
    backend = get_backend("onnxruntime")
    with pytest.raises(ModelError, match=r"float32; quantization applies to integer tensors"):
        backend.load(model, quantization={"window": (0.1, 0)})
    with pytest.raises(ModelError, match=r"unknown tensors \['nope'\]"):
        backend.load(model, quantization={"nope": (0.1, 0)})


def test_wrong_inputs_are_clear_errors() -> None:
    model, _ = mlp_bytes()
    session = get_backend("onnxruntime").load(model)
    with pytest.raises(InputError, match=r"call set_batch\(n\) before running"):
        session.run({"window": np.zeros((1, T, F))})
    session.set_batch(8)
    with pytest.raises(
        InputError, match=r"input 'window' has shape \(8, 3, 6\), expected \(8, 6, 3\)"
    ):
        session.run({"window": np.zeros((8, F, T))})
    with pytest.raises(InputError, match=r"expected \(8, 6, 3\) \(batch size 8; call set_batch"):
        session.run({"window": np.zeros((7, T, F))})
    with pytest.raises(InputError, match=r"model inputs are \['window'\], got \['x'\]"):
        session.run({"x": np.zeros((8, T, F))})
    with pytest.raises(InputError, match=r"must be numeric"):
        session.run({"window": np.full((8, T, F), "a")})
    with pytest.raises(InputError, match=r"batch size must be an integer >= 1"):
        session.set_batch(0)
    with pytest.raises(InputError, match=r"no input 'x'"):
        session.input_buffer("x")


def test_a_fixed_batch_model_refuses_other_batch_sizes() -> None:
    import onnx

    model = mlp_onnx(random_mlp((T * F, A)), T, F)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    session = get_backend("onnxruntime").load(model.SerializeToString())
    session.set_batch(1)
    with pytest.raises(InputError, match=r"fixed batch of 1.*cannot run 16 items"):
        session.set_batch(16)
    assert onnx.__version__  # the model above was built with the real onnx package


def test_corrupt_models_are_model_errors() -> None:
    with pytest.raises(ModelError, match=r"onnxruntime cannot load the model"):
        get_backend("onnxruntime").load(b"not an onnx model")
    with pytest.raises(ModelError, match=r"LiteRT cannot load the model"):
        get_backend("litert").load(b"TFL3 but not really a flatbuffer")


# -- LiteRT ----------------------------------------------------------------------------------------
def test_litert_int8_fixture_declares_full_integer_io() -> None:
    session = get_backend("litert").load(fixture.INT8_PATH.read_bytes())
    (inp,), (out,) = session.input_specs, session.output_specs
    assert inp.dtype == "int8"
    assert out.dtype == "int8"
    assert inp.shape == (-1, fixture.WINDOW, 8)
    assert out.shape == (-1, 4)
    assert inp.scale is not None
    assert inp.scale > 0
    assert inp.zero_point is not None
    assert out.scale is not None
    assert out.scale > 0
    assert out.zero_point is not None


def test_litert_float_fixture_matches_numpy() -> None:
    X, _ = fixture.fixture_world().sample_windows(200, fixture.WINDOW, seed=8)
    session = get_backend("litert").load(fixture.FLOAT_PATH.read_bytes())
    session.set_batch(200)
    out = session.run({session.input_specs[0].name: X})[session.output_specs[0].name]
    np.testing.assert_allclose(out, mlp_forward(fixture.fixture_layers(), X), rtol=1e-4, atol=1e-4)


def test_litert_int8_session_dequantizes_like_a_manual_interpreter_run() -> None:
    from ai_edge_litert.interpreter import Interpreter

    X, _ = fixture.fixture_world().sample_windows(50, fixture.WINDOW, seed=9)
    session = get_backend("litert").load(fixture.INT8_PATH.read_bytes(), threads=2)
    session.set_batch(50)
    got = session.run({session.input_specs[0].name: X})[session.output_specs[0].name]
    # Independent: the raw interpreter, quantizing and dequantizing by hand.
    interp = Interpreter(model_content=fixture.INT8_PATH.read_bytes())
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], [50, fixture.WINDOW, 8])
    interp.allocate_tensors()
    scale, zero = inp["quantization"]
    interp.set_tensor(inp["index"], np.clip(np.rint(X / scale) + zero, -128, 127).astype(np.int8))
    interp.invoke()
    oscale, ozero = out["quantization"]
    expected = oscale * (interp.get_tensor(out["index"]).astype(np.float32) - ozero)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    reference = mlp_forward(fixture.fixture_layers(), X)
    # Tie-aware: int8 cannot rank logits closer than one output step (equal codes: argmax takes
    # the first), so its choice agrees when the float model rates it within one step of its best;
    # on >= 98 % of inputs (int8 is not float to rounding). Another choice does not agree.
    step = float(oscale)
    assert step < 0.05 * float(np.ptp(reference))
    assert np.mean(agreement.choice_agrees(reference, got.argmax(axis=1), tol=step)) >= 0.98
    runner_up = np.argsort(got, axis=1)[:, -2]
    assert np.mean(agreement.choice_agrees(reference, runner_up, tol=step)) < 0.1


def test_litert_resizes_once_per_batch_change(monkeypatch: pytest.MonkeyPatch) -> None:
    session = get_backend("litert").load(fixture.INT8_PATH.read_bytes())
    calls: list[list[int]] = []
    real = session._interp.resize_tensor_input

    def counting(index: int, shape: list[int], strict: bool = False) -> None:
        calls.append(list(shape))
        real(index, shape, strict=strict)

    monkeypatch.setattr(session._interp, "resize_tensor_input", counting)
    X = np.zeros((16, fixture.WINDOW, 8), dtype=np.float32)
    name = session.input_specs[0].name
    session.set_batch(16)
    for _ in range(5):
        session.run({name: X})
    session.set_batch(16)
    assert calls == [[16, fixture.WINDOW, 8]]
    session.set_batch(3)
    session.run({name: X[:3]})
    assert calls == [[16, fixture.WINDOW, 8], [3, fixture.WINDOW, 8]]


def test_litert_quantization_argument_must_agree_with_the_model() -> None:
    data = fixture.INT8_PATH.read_bytes()
    probe = get_backend("litert").load(data)
    spec = probe.input_specs[0]
    assert spec.scale is not None
    assert spec.zero_point is not None
    get_backend("litert").load(data, quantization={spec.name: (spec.scale, spec.zero_point)})
    with pytest.raises(ModelError, match=r"the model has scale .* expected 0.5 and 0"):
        get_backend("litert").load(data, quantization={spec.name: (0.5, 0)})


def test_warm_up_runs_zeros() -> None:
    model, layers = mlp_bytes()
    session = get_backend("onnxruntime").load(model)
    with pytest.raises(InputError, match=r"set_batch"):
        session.warm_up()
    session.set_batch(2)
    session.warm_up()
    zeros = np.zeros((2, T, F))
    np.testing.assert_allclose(
        session.run({"window": zeros})["logits"], mlp_forward(layers, zeros), rtol=1e-5, atol=1e-6
    )


# -- sliding inputs --------------------------------------------------------------------------------
def _sliding_sessions() -> list[tuple[str, bytes, dict[str, tuple[float, int]]]]:
    int8 = int8_io_onnx(random_mlp((T * F, 8, A), seed=5), T, F, input_scale=0.02,
                        input_zero_point=-5, output_scale=0.05, output_zero_point=4)
    return [
        ("onnxruntime", mlp_bytes(seed=4)[0], {}),  # float32 input: a slide rebinds the input
        ("onnxruntime", int8.SerializeToString(), {"q_in": (0.02, -5), "q_out": (0.05, 4)}),
        ("litert", fixture.FLOAT_PATH.read_bytes(), {}),
        ("litert", fixture.INT8_PATH.read_bytes(), {}),
    ]


@pytest.mark.parametrize("case", range(4), ids=["ort-float", "ort-int8", "litert-float",
                                                "litert-int8"])
def test_a_sliding_input_runs_as_the_shifted_copy_would(case: int) -> None:
    backend, model, quant = _sliding_sessions()[case]
    session = get_backend(backend).load(model, quantization=quant)
    plain = get_backend(backend).load(model, quantization=quant)
    (spec,), (out_spec,) = session.input_specs, session.output_specs
    n, (t, f) = 8, spec.shape[1:]
    session.enable_slide(spec.name, f)
    session.set_batch(n)
    plain.set_batch(n)
    room = (n * t * f) // (8 * f)  # an eighth of the input: 7 positions for 8 agents, T = 6
    assert session.slide_nbytes(n) == 4 * f * min(room, 64)
    assert len(session.input_views(spec.name)) == min(room, 64) + 1
    rng = np.random.default_rng(case)
    reference = np.zeros(n * t * f, dtype=np.float32)  # the old way: one shifting copy a step
    for step in range(3 * (room + 1) + 2):  # past the copy back to the start, three times
        staging = session.slide_input(spec.name)
        assert session.input_buffer(spec.name) is staging
        newest = rng.uniform(-1.0, 1.0, size=(n, f)).astype(np.float32)
        staging.reshape(n, t, f)[:, -1] = newest
        reference[:-f] = reference[f:].copy()
        reference.reshape(n, t, f)[:, -1] = newest
        np.testing.assert_array_equal(staging.reshape(-1), reference, err_msg=f"step {step}")
        got = session.run({spec.name: staging})[out_spec.name]
        want = plain.run({spec.name: reference.reshape(n, t, f)})[out_spec.name]
        np.testing.assert_array_equal(got, want, err_msg=f"step {step}")


@pytest.mark.parametrize("direct", [True, False], ids=["compiled", "wrappers"])
def test_onnxruntime_runs_and_rebinds_through_its_compiled_objects_or_its_wrappers(
    direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session calls onnxruntime's compiled session and binding directly (its Python
    wrappers check for WebGPU capture on every call); an onnxruntime without them under its
    wrappers (stood for here by an OrtValue lacking ``_ortvalue``) runs through the wrappers,
    with the same results."""
    real = ort_plugin._direct_calls
    if not direct:
        monkeypatch.setattr(
            ort_plugin, "_direct_calls", lambda s, b, v: real(s, b, [*v, object()])
        )
    model = mlp_bytes(seed=4)[0]
    session = get_backend("onnxruntime").load(model)
    plain = get_backend("onnxruntime").load(model)
    session.enable_slide("window", F)
    n = 8
    session.set_batch(n)
    plain.set_batch(n)
    assert isinstance(session, ort_plugin.OnnxRuntimeSession)
    wrapped = session._slide_values["window"][0]
    assert isinstance(wrapped, ort_plugin._ort().OrtValue) is not direct
    rng = np.random.default_rng(7)
    for step in range(70):  # past the copy back to the start
        staging = session.slide_input("window")
        staging[:, -1] = rng.uniform(-1.0, 1.0, size=(n, F)).astype(np.float32)
        got = session.run_staged()["logits"]
        want = plain.run({"window": staging.copy()})["logits"]
        np.testing.assert_array_equal(got, want, err_msg=f"step {step}")


def test_slides_are_set_up_before_the_batch_and_only_for_known_inputs() -> None:
    model, _ = mlp_bytes()
    session = get_backend("onnxruntime").load(model)
    with pytest.raises(InputError, match=r"no input 'nope'"):
        session.enable_slide("nope", F)
    for bad in (0, T * F, True, 1.5):
        with pytest.raises(InputError, match=r"a slide moves 1 to 17 values"):
            session.enable_slide("window", bad)  # type: ignore[arg-type]
    session.set_batch(4)
    with pytest.raises(InputError, match=r"does not slide"):
        session.slide_input("window")
    with pytest.raises(InputError, match=r"before the first set_batch"):
        session.enable_slide("window", F)
    assert session.slide_nbytes(4) == 0
    assert session.input_views("window") == [session.input_buffer("window")]
    tiny = get_backend("onnxruntime").load(model)
    tiny.enable_slide("window", F)
    tiny.set_batch(1)  # 18 values: no room, every slide is the copy
    assert tiny.slide_nbytes(1) == 0
    first = tiny.input_buffer("window")
    first[...] = np.arange(T * F, dtype=np.float32).reshape(1, T, F)
    assert tiny.slide_input("window") is first
    np.testing.assert_array_equal(first.reshape(-1)[:-F], np.arange(F, T * F))


def test_run_staged_runs_what_is_in_the_staging_arrays() -> None:
    model, layers = mlp_bytes()
    session = get_backend("onnxruntime").load(model)
    with pytest.raises(InputError, match=r"set_batch"):
        session.run_staged()
    session.set_batch(3)
    staging = session.input_buffer("window")
    staging[...] = np.linspace(-1.0, 1.0, 3 * T * F, dtype=np.float32).reshape(3, T, F)
    outputs = session.run_staged()
    expected = mlp_forward(layers, staging)
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-5)
    assert outputs["logits"] is session.run({"window": staging})["logits"]  # the same buffers
    with pytest.raises(TypeError):
        outputs["logits"] = np.zeros((3, A), dtype=np.float32)  # type: ignore[index]
