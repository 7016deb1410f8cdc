"""One agent's input never changes another agent's output, for every kind of group and backend.

A group steps all its agents in one batched call. The property, checked over random batches by
hypothesis on real sessions of real converted models: an agent's outputs are the same whether it
is stepped alone (a group of one) or in a batch whose other rows hold extreme, NaN-free inputs
far out of the range the model was calibrated on (x100 to x10,000 a real observation, one
feature at +-1e6, constants at +-1e5), wherever it sits in the batch and however large the
batch is. Same means, per backend (measured; the reasons beside):

=====================================  ========================================================
neural, onnxruntime, ``--mode static``  identical: QDQ int8 with scales fixed at conversion, and
                                        every op computes a row from that row alone (int32 sums)
neural, onnxruntime, ``--mode dynamic`` identical for MatMul/Gemm models: each row quantized on
                                        its own range (``row_scales``); an LSTM's outputs within
                                        1e-5 (its weights dequantized, the LSTM in float32: a
                                        batch of one sums in another order, 2e-6 measured)
neural, LiteRT full-integer, dynamic-   identical: TFLite's kernels (its hybrid dynamic-range
range, float16 and float fixtures       ones too) quantize and compute per row
perception -> Active Inference          the classifier identical (static int8), the beliefs and
                                        policy posteriors within 1e-4, actions optimal under the
                                        other's posterior within 1e-4 (as below)
Active Inference, int8 tables           beliefs and policy posteriors within 1e-4 (float32
                                        kernels: a block of one takes another fast path, and
                                        gamma = 16 scales the expected free energy's rounding
                                        into the posterior: 1.1e-5 seen), actions optimal under
                                        the other's posterior within 1e-4
Active Inference, float64               within 1e-12; actions as above (an agent whose tie
                                        was broken the other way is compared no further: its
                                        next prior follows the action it took)
Active Inference on two processes       as in one: the batch's blocks stepped by a forked worker
=====================================  ========================================================

onnxruntime's own dynamic mode fails this (one activation scale per call over the whole batch),
which is why the converter quantizes activations per row: ``benchmarks/bench_neural_coupling.py``
measures what the per-batch mode cost.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.aif import agreement
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.settings import AifSettings
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.manifest import NeuralSpec
from edge_agent.bundle.writer import write_bundle
from edge_agent.core.agents import AifAgentGroup
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import available_backends, get_backend
from edge_agent.neural.perception import PerceptionAifGroup
from edge_agent.sim.registry import make_env
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.converter.aif.options import AifOptions
from edge_agent_host.converter.builders import recurrent_onnx
from edge_agent_host.converter.formats.onnx import (
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "data"))
import make_tflite_fixture as tflite

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
MAX_AGENTS = 40
#: Float32 kernels that sum in another order for a batch of one (module docstring).
FLOAT_TOL = 1e-5
#: The Active Inference kernels in float32: their rounding, scaled by gamma (module docstring).
AIF_TOL = 1e-4
PROPERTY = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module", autouse=True)
def _runtimes() -> None:
    missing = [name for name, ok in available_backends().items() if not ok]
    if missing:
        pytest.fail(
            f"backends {missing} are not installed: pip install 'edge-agent-runtime[onnx]' "
            "'edge-agent-runtime[tflite]'"
        )


# -- the models, converted as a user converts them ------------------------------------------------
def converted(
    model: Path, out: Path, calibration: Path, heldout: Path, mode: str, **extra: Any
) -> Path:
    report = convert_onnx(
        ConvertOptions(model=model, out=out, name="policy", force=extra.pop("force", False)),
        NeuralOptions(mode=mode, latency_repeats=1, calibration=calibration, heldout=heldout,
                      thresholds=NeuralThresholds(min_top1=None), **extra),
    )
    assert report.bundle is not None
    return out


def litert_bundle(path: Path, model: Path) -> Path:
    data = model.read_bytes()
    session = get_backend("litert").load(data)
    spec = NeuralSpec(backend="litert", model_file="model.tflite", inputs=session.input_specs,
                      outputs=session.output_specs, window=tflite.WINDOW, output_kind="discrete")
    write_bundle(path, name="policy", version="1.0.0", kind="neural",
                 files={"model.tflite": data}, neural=spec)
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """Each neural case: its bundle and real observation windows ``(n, T, F)``."""
    root = tmp_path_factory.mktemp("independence")
    cal, held = EXAMPLES / "sensor_calibration.npz", EXAMPLES / "sensor_heldout.npz"
    windows = np.load(held)["window"].astype(np.float32)
    out: dict[str, tuple[Path, np.ndarray]] = {}
    policy = EXAMPLES / "sensor_policy.onnx"
    for mode in ("static", "dynamic"):
        out[f"onnx-{mode}"] = (converted(policy, root / mode, cal, held, mode), windows)
    world = SensorWorld(1)
    onnx.save(recurrent_onnx("LSTM", 8, world.num_features, 32, world.num_classes, seed=3),
              root / "lstm.onnx")
    # dynamic: int8 weights in front of a float LSTM, the head per row; static: the head only,
    # bundled anyway (--force) to step its QDQ head.
    out["onnx-dynamic-lstm"] = (
        converted(root / "lstm.onnx", root / "lstm-dynamic", cal, held, "dynamic"), windows
    )
    out["onnx-static-lstm"] = (
        converted(root / "lstm.onnx", root / "lstm-static", cal, held, "static", force=True),
        windows,
    )
    litert_windows = tflite.calibration_windows().astype(np.float32)
    for name, path in (
        ("litert-int8", tflite.INT8_PATH),
        ("litert-dynamic-range", tflite.DYNAMIC_RANGE_PATH),
        ("litert-float16", tflite.FLOAT16_PATH),
        ("litert-float", tflite.FLOAT_PATH),
    ):
        out[name] = (litert_bundle(root / name, path), litert_windows)
    return out


#: The cases whose outputs are identical, and those within FLOAT_TOL (module docstring).
EXACT = ("onnx-static", "onnx-dynamic", "litert-int8", "litert-dynamic-range",
         "litert-float16", "litert-float")
FLOAT_KERNEL = ("onnx-dynamic-lstm", "onnx-static-lstm")


# -- batches ---------------------------------------------------------------------------------------
@st.composite
def outlier(draw: st.DrawFn, window: np.ndarray) -> np.ndarray:
    """One other agent's window ``(T, F)``: a real one scaled far out, one with a feature at
    +-1e6, a constant +-1e5 (or 0), or a real one (a batch is not all outliers)."""
    kind = draw(st.sampled_from(("scaled", "feature", "constant", "real")))
    if kind == "scaled":
        return window * np.float32(draw(st.sampled_from((-1e4, -1e3, -300.0, 100.0, 1e3, 1e4))))
    if kind == "feature":
        out = window.copy()
        out[:, draw(st.integers(0, window.shape[1] - 1))] = draw(st.sampled_from((-1e6, 1e6)))
        return out
    if kind == "constant":
        return np.full_like(window, draw(st.sampled_from((-1e5, 0.0, 1e5))))
    return window


@st.composite
def batches(draw: st.DrawFn, windows: np.ndarray) -> tuple[np.ndarray, int]:
    """``(batch (n, T, F), where the tracked agent sits)``: its real window among others, the
    first of them always an outlier scaled by 1,000."""
    n = draw(st.integers(2, MAX_AGENTS), label="agents")
    me = draw(st.integers(0, n - 1), label="position")
    pick = st.integers(0, len(windows) - 1)
    others = [windows[draw(pick)] * np.float32(1e3)]
    others += [draw(outlier(windows[draw(pick)])) for _ in range(n - 2)]
    rows = [*others[:me], windows[draw(pick, label="tracked")], *others[me:]]
    return np.stack(rows).astype(np.float32), me


def last_outputs(group: NeuralAgentGroup, batch: np.ndarray) -> np.ndarray:
    """The first output after stepping ``batch`` ``(n, T, F)`` from empty windows."""
    if group.n_agents != len(batch):
        group.resize(len(batch))
    group.reset()
    out: Any = None
    for t in range(batch.shape[1]):
        out = group.forward(np.ascontiguousarray(batch[:, t]))[group.output.name]
    return np.array(out, copy=True)


@pytest.fixture(scope="module")
def groups(
    bundles: dict[str, tuple[Path, np.ndarray]],
) -> Iterator[dict[str, tuple[NeuralAgentGroup, NeuralAgentGroup, np.ndarray]]]:
    """Per case: the batch's group, the group of one, the windows."""
    made = {}
    for name, (path, windows) in bundles.items():
        bundle = load_bundle(path, trusted_keys=None, require_signature=False)
        made[name] = (
            NeuralAgentGroup.from_bundle(bundle, MAX_AGENTS),
            NeuralAgentGroup.from_bundle(bundle, 1),
            windows,
        )
    yield made
    for batch_group, alone, _ in made.values():
        batch_group.release()
        alone.release()


@pytest.mark.parametrize("case", EXACT + FLOAT_KERNEL)
def test_a_neural_agents_outputs_do_not_depend_on_its_batch(
    case: str, groups: dict[str, tuple[NeuralAgentGroup, NeuralAgentGroup, np.ndarray]]
) -> None:
    batch_group, alone, windows = groups[case]

    @PROPERTY
    @given(drawn=batches(windows))
    def check(drawn: tuple[np.ndarray, int]) -> None:
        batch, me = drawn
        mine = last_outputs(batch_group, batch)[me]
        by_itself = last_outputs(alone, batch[me : me + 1])[0]
        if case in EXACT:
            np.testing.assert_array_equal(mine, by_itself)
        else:
            np.testing.assert_allclose(mine, by_itself, rtol=0, atol=FLOAT_TOL)
        # The action: optimal under the other path's scores (a tie is not a disagreement).
        assert agreement.choice_agrees(
            by_itself[None], np.array([mine.argmax()]), tol=FLOAT_TOL
        ).all()

    check()
    # The out-of-range rows were seen as such: the group counted them.
    assert batch_group.metrics().get("obs_out_of_range", 1) > 0


# -- perception in front of Active Inference ------------------------------------------------------
def sensor_aif_model(world: SensorWorld, hit: float = 0.8) -> GenerativeModel:
    K = world.num_classes
    A = np.full((K, K), (1 - hit) / (K - 1))
    np.fill_diagonal(A, hit)
    B = np.full((K, K), world.switch_prob / K) + np.eye(K) * (1 - world.switch_prob)
    return GenerativeModel.from_arrays([A], [B[:, :, None]])


@pytest.fixture(scope="module")
def perception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example classifier and a generative model of the sensor world, static int8 (forced:
    the classifier is small enough that int8 does not pay, and int8 is what is checked)."""
    root = tmp_path_factory.mktemp("perception")
    world = SensorWorld(1)
    return converted(
        EXAMPLES / "sensor_perception.onnx", root / "bundle",
        EXAMPLES / "perception_calibration.npz", EXAMPLES / "perception_heldout.npz", "static",
        force=True, output_kind="observation",
        aif=AifOptions(model=sensor_aif_model(world), rollouts=10, steps=3),
    )


def first_actions(policies: np.ndarray, num_controls: Sequence[int]) -> list[np.ndarray]:
    """Per factor, which first action each policy takes: ``(P, U_f)`` one-hot."""
    return [np.eye(u)[policies[:, 0, f]] for f, u in enumerate(num_controls)]


def assert_same_agent(
    mine: Any, alone: Any, me: int, tol: float, onehot: list[np.ndarray]
) -> bool:
    """Agent ``me`` of ``mine`` against the one agent of ``alone``: beliefs and the policy
    posterior within ``tol``, each one's action optimal under the other's posterior
    (``onehot``: the policies' first actions). Whether the two took the same action: after a
    tie broken the other way (an agent in a corner of the grid: moving into the wall or
    staying), their next priors differ by what each did, not by the batch, and the caller
    stops comparing."""
    for a, b in zip(mine.qs, alone.qs, strict=True):
        np.testing.assert_allclose(a[me], b[0], rtol=0, atol=tol)
    np.testing.assert_allclose(mine.q_pi[me], alone.q_pi[0], rtol=0, atol=tol)
    mine_action = np.asarray(mine.action)[me : me + 1]
    alone_action = np.asarray(alone.action)[:1]
    assert agreement.actions_agree(alone.q_pi[:1], onehot, mine_action, tol=max(tol, 1e-9)).all()
    assert agreement.actions_agree(mine.q_pi[me : me + 1], onehot, alone_action,
                                   tol=max(tol, 1e-9)).all()
    return bool(np.array_equal(mine_action, alone_action))


@pytest.mark.parametrize("evidence", ["hard", "soft"])
def test_a_perceiving_agents_beliefs_do_not_depend_on_its_batch(
    perception: Path, evidence: str
) -> None:
    bundle = load_bundle(perception, trusted_keys=None, require_signature=False)
    batch_group = PerceptionAifGroup.from_bundle(bundle, MAX_AGENTS, evidence=evidence)
    alone = PerceptionAifGroup.from_bundle(bundle, 1, evidence=evidence)
    num_controls = tuple(bundle.manifest.aif.num_controls)  # type: ignore[union-attr]
    onehot = first_actions(construct_policies(num_controls, 1), num_controls)  # its settings'
    sequences = SensorWorld(1).sample_windows(400, 6, seed=9)[0].astype(np.float32)

    @PROPERTY
    @given(drawn=batches(sequences))
    def check(drawn: tuple[np.ndarray, int]) -> None:
        batch, me = drawn
        if batch_group.n_agents != len(batch):
            batch_group.resize(len(batch))
        batch_group.reset()
        alone.reset()
        for t in range(batch.shape[1]):  # six ticks, one observation each
            batch_group.step(np.ascontiguousarray(batch[:, t]))
            alone.step(np.ascontiguousarray(batch[me : me + 1, t]))
            if not assert_same_agent(batch_group, alone, me, AIF_TOL, onehot):
                break

    try:
        check()
    finally:
        batch_group.release()
        alone.release()


# -- Active Inference ------------------------------------------------------------------------------
@st.composite
def outcome_runs(
    draw: st.DrawFn, num_obs: tuple[int, ...], ticks: int
) -> tuple[np.ndarray, int]:
    """``(outcomes (ticks, MAX_AGENTS, M), the tracked agent)``: the tracked agent's outcomes
    drawn at random, the others' at the extremes the model allows: uniformly random every tick
    (most of them impossible under its beliefs), always the first or the last outcome, or
    alternating. (The neural cases vary the batch's size too.)"""
    n = MAX_AGENTS
    me = draw(st.integers(0, n - 1), label="position")
    seed = draw(st.integers(0, 2**31 - 1), label="seed")
    rng = np.random.default_rng(seed)
    out = np.stack([rng.integers(0, o, size=(ticks, n)) for o in num_obs], axis=2)
    last = np.array(num_obs) - 1
    for agent in range(n):
        if agent == me:
            continue
        kind = draw(st.sampled_from(("random", "first", "last", "alternate")))
        if kind == "first":
            out[:, agent] = 0
        elif kind == "last":
            out[:, agent] = last
        elif kind == "alternate":
            out[0::2, agent] = 0
            out[1::2, agent] = last
    return out, me


@pytest.mark.parametrize(
    ("workload", "precision", "workers", "tol"),
    [
        ("grid10", "int8", 1, AIF_TOL),
        ("tmaze", "int8", 1, AIF_TOL),
        ("grid10", "float64", 1, 1e-12),
        ("grid10", "int8", 2, AIF_TOL),  # the batch's blocks on two processes
    ],
)
def test_an_active_inference_agent_does_not_depend_on_its_batch(
    workload: str, precision: str, workers: int, tol: float
) -> None:
    model = make_env(workload, 1, seed=1).model
    agent_settings = AifSettings(action_selection="deterministic")
    policies = construct_policies(model.num_controls, agent_settings.policy_len)
    onehot = first_actions(policies, model.num_controls)
    kw: Any = {"settings": agent_settings, "precision": precision, "block_size": 8,
               "policies": policies}
    batch_group = AifAgentGroup(model, MAX_AGENTS, **kw)
    alone = AifAgentGroup(model, 1, **kw)
    if workers > 1:
        assert batch_group.start_workers(workers) == workers
    ticks = 8

    @PROPERTY
    @given(drawn=outcome_runs(tuple(model.num_obs), ticks))
    def check(drawn: tuple[np.ndarray, int]) -> None:
        outcomes, me = drawn
        batch_group.reset()
        alone.reset()
        for t in range(ticks):
            batch_group.step(outcomes[t])
            alone.step(outcomes[t, me : me + 1])
            if not assert_same_agent(batch_group, alone, me, tol, onehot):
                break

    try:
        check()
    finally:
        batch_group.release()
        alone.release()


def test_onnxruntimes_own_dynamic_quantization_fails_the_property(
    groups: dict[str, tuple[NeuralAgentGroup, NeuralAgentGroup, np.ndarray]], tmp_path: Path
) -> None:
    """What the property catches: the same policy quantized by onnxruntime's quantize_dynamic
    as older converters bundled it (one activation scale per call over the whole
    batch) gives an agent other outputs beside one whose input is 1,000 times its own."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    per_batch = tmp_path / "per-batch.onnx"
    quantize_dynamic(str(EXAMPLES / "sensor_policy.onnx"), str(per_batch), per_channel=True,
                     weight_type=QuantType.QInt8)
    row_group, _, windows = groups["onnx-dynamic"]
    spec = row_group.spec
    coupled = NeuralAgentGroup(spec, per_batch.read_bytes(), 2)
    alone = NeuralAgentGroup(spec, per_batch.read_bytes(), 1)
    batch = np.stack([windows[0], windows[1] * np.float32(1e3)])
    mine = last_outputs(coupled, batch)[0]
    assert np.abs(mine - last_outputs(alone, batch[:1])[0]).max() > 0.1
    # The converter's dynamic bundle of the same policy, on the same batch: identical.
    np.testing.assert_array_equal(
        last_outputs(row_group, batch)[0], last_outputs(groups["onnx-dynamic"][1], batch[:1])[0]
    )
