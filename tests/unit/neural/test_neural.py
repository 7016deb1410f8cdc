"""Neural agent groups, perception for Active Inference, and the sensor world."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_agent.aif import agreement
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import quantize_model
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.manifest import NeuralSpec, TensorSpec
from edge_agent.bundle.writer import write_bundle
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget, MiB
from edge_agent.errors import BudgetError, BundleError, InputError, ModelError
from edge_agent.neural.agents import NeuralAgentGroup, window_layout
from edge_agent.neural.backends import available_backends
from edge_agent.neural.perception import PerceptionAifGroup
from edge_agent.sim.sensors import SensorWorld, sensor_prototypes
from edge_agent_host.converter.aif.bundle import aif_bundle_arrays, aif_spec
from edge_agent_host.converter.builders import (
    constant_onnx,
    flatten_onnx,
    mlp_forward,
    mlp_onnx,
    sensor_policy,
)

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "data"))

import make_tflite_fixture as fixture  # noqa: E402


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    missing = [name for name, ok in available_backends().items() if not ok]
    if missing:
        pytest.fail(
            f"backends {missing} are not installed: pip install 'edge-agent-runtime[onnx]' "
            "'edge-agent-runtime[tflite]'"
        )


def spec_for(
    model: onnx.ModelProto,
    window: int,
    kind: str = "discrete",
    *,
    low: tuple[float, ...] | None = None,
    high: tuple[float, ...] | None = None,
) -> NeuralSpec:
    def tensor(value: onnx.ValueInfoProto) -> TensorSpec:
        dims = [d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim]
        return TensorSpec(name=value.name, shape=tuple(dims), dtype="float32")

    return NeuralSpec(
        backend="onnxruntime", model_file="model.onnx",
        inputs=[tensor(v) for v in model.graph.input],
        outputs=[tensor(v) for v in model.graph.output],
        window=window, output_kind=kind, action_low=low, action_high=high,  # type: ignore[arg-type]
    )


def group_for(model: onnx.ModelProto, window: int, n: int, kind: str = "discrete",
              **kwargs: object) -> NeuralAgentGroup:
    spec = spec_for(model, window, kind, low=kwargs.pop("low", None),  # type: ignore[arg-type]
                    high=kwargs.pop("high", None))  # type: ignore[arg-type]
    return NeuralAgentGroup(spec, model.SerializeToString(), n, **kwargs)  # type: ignore[arg-type]


def expected_windows(history: list[np.ndarray], filled: np.ndarray, T: int) -> np.ndarray:
    """What each agent's window must hold: its last ``filled`` observations, zeros before."""
    n, F = history[-1].shape
    out = np.zeros((n, T, F), dtype=np.float32)
    for i in range(n):
        k = int(filled[i])
        for j in range(k):
            out[i, T - k + j] = history[len(history) - k + j][i]
    return out


# -- windows ---------------------------------------------------------------------------------------
def test_windows_are_stacked_oldest_first_with_zero_padding_and_resets() -> None:
    T, F, N = 4, 3, 5
    group = group_for(flatten_onnx(T, F), T, N, "observation")
    rng = np.random.default_rng(0)
    history: list[np.ndarray] = []
    filled = np.zeros(N, dtype=np.int64)
    for tick in range(11):  # the ring (capacity T) wraps several times
        if tick == 6:
            mask = np.array([True, False, True, False, False])
            group.reset(mask)
            filled[mask] = 0
        obs = rng.normal(size=(N, F)).astype(np.float32)
        history.append(obs)
        filled = np.minimum(filled + 1, T)
        out = group.forward(obs)["flat"]
        np.testing.assert_array_equal(out.reshape(N, T, F), expected_windows(history, filled, T))
    assert group.ticks == 11


def test_windows_stay_exact_across_many_slides_resets_resizes_and_snapshots() -> None:
    T, F, N = 4, 3, 40  # 480 input values: 20 slides of room, so ~100 ticks copy back 4 times
    group = group_for(flatten_onnx(T, F), T, N, "observation")
    assert len(group.session.input_views("window")) == 21
    rng = np.random.default_rng(7)
    history: list[np.ndarray] = []
    filled = np.zeros(N, dtype=np.int64)
    for tick in range(100):
        if tick % 17 == 16:
            mask = rng.random(N) < 0.3
            group.reset(mask)
            filled[mask] = 0
        if tick == 60:  # a snapshot taken mid-room comes back in a fresh group (at position 0)
            state = {k: v.copy() for k, v in group.state_dict().items()}
            group = group_for(flatten_onnx(T, F), T, N, "observation", history_capacity=T)
            group.load_state_dict(state)
        obs = rng.normal(size=(N, F)).astype(np.float32)
        given: np.ndarray = obs
        if tick % 10 == 3:  # float64 and non-contiguous observations take the casting copy
            given = obs.astype(np.float64)
        elif tick % 10 == 5:
            given = np.asfortranarray(obs)
        history.append(obs)
        filled = np.minimum(filled + 1, T)
        out = group.forward(given)["flat"]
        np.testing.assert_array_equal(
            out.reshape(N, T, F), expected_windows(history, filled, T), err_msg=f"tick {tick}"
        )
    group.resize(N + 5)  # the kept agents' windows survive a new batch size
    obs = rng.normal(size=(N + 5, F)).astype(np.float32)
    out = group.forward(obs)["flat"].reshape(N + 5, T, F)
    expected = expected_windows([*(h for h in history), obs[:N]], np.minimum(filled + 1, T), T)
    np.testing.assert_array_equal(out[:N], expected)
    np.testing.assert_array_equal(out[N:, :-1], 0.0)


def test_a_ring_no_longer_than_the_window_is_written_when_read() -> None:
    # With history_capacity <= T the ring is not written every tick but from the windows when
    # read: it must hold what a ring written every tick holds, through resets (which zero the
    # windows), resizes, a change of capacity and snapshots.
    T, F, N = 4, 3, 6
    lazy = group_for(flatten_onnx(T, F), T, N, "observation")
    live = group_for(flatten_onnx(T, F), T, N, "observation", history_capacity=3 * T)
    assert lazy.history_capacity == T
    rng = np.random.default_rng(11)

    def same_recent() -> None:
        rows = min(len(lazy.history), T)
        assert rows == min(len(live.history), T)
        np.testing.assert_array_equal(lazy.history.window("obs", rows),
                                      live.history.window("obs", rows))

    for tick in range(40):
        if tick % 7 == 3:
            mask = rng.random(lazy.n_agents) < 0.5
            lazy.reset(mask)
            live.reset(mask)
        if tick == 9:
            same_recent()
        if tick == 20:
            lazy.resize(N + 2)
            live.resize(N + 2)
        if tick == 26:
            lazy.resize_history(2 * T)  # now written every tick ...
        if tick == 31:
            lazy.resize_history(T)  # ... and from the windows again
        obs = rng.normal(size=(lazy.n_agents, F)).astype(np.float32)
        np.testing.assert_array_equal(lazy.forward(obs)["flat"], live.forward(obs)["flat"])
        if tick in (5, 16, 29, 37):  # 16 and 37: more steps than the window since a read
            same_recent()
    clone = group_for(flatten_onnx(T, F), T, N + 2, "observation", history_capacity=3 * T)
    clone.load_state_dict(lazy.state_dict())  # a snapshot of the windows' ring restores them
    obs = rng.normal(size=(N + 2, F)).astype(np.float32)
    np.testing.assert_array_equal(clone.forward(obs)["flat"], live.forward(obs)["flat"])


def test_a_ring_longer_than_the_window_holds_every_observation_in_order() -> None:
    """A group that keeps more history than its window writes the ring from the windows every
    ``T`` ticks (and when the ring is read): whenever it is read, at any tick between two of
    those and more than ``T`` ticks after the last read, through resets (which zero the
    windows) and a snapshot, it holds each tick's observations as they came, oldest first."""
    T, F, N, cap = 4, 3, 6, 11
    group = group_for(flatten_onnx(T, F), T, N, "observation", history_capacity=cap)
    rng = np.random.default_rng(5)
    seen: list[np.ndarray] = []
    for tick in range(37):
        if tick % 9 == 4:
            group.reset(rng.random(N) < 0.5)  # what was observed stays observed
        if tick == 23:  # a snapshot mid-way between two writes, into a fresh group
            state = {k: v.copy() for k, v in group.state_dict().items()}
            group = group_for(flatten_onnx(T, F), T, N, "observation", history_capacity=cap)
            group.load_state_dict(state)
        obs = rng.normal(size=(N, F)).astype(np.float32)
        seen.append(obs)
        group.forward(obs)
        if tick in (1, 2, 9, 17, 18, 30, 36):  # at any offset from the writes, most far apart
            rows = min(len(seen), cap)
            assert len(group.history) == rows
            np.testing.assert_array_equal(
                group.history.window("obs", rows), np.stack(seen[-rows:]), err_msg=f"tick {tick}"
            )


def test_flat_model_inputs_take_the_same_windows() -> None:
    T, F = 3, 2
    # A (batch, T*F) input: the window is the same memory, flattened.
    model = flatten_onnx(T, F)
    spec = spec_for(model, T, "observation")
    flat_spec = spec.model_copy(update={"inputs": (
        TensorSpec(name="window", shape=(-1, T * F), dtype="float32"),)})
    assert window_layout(flat_spec) == ("window", F)
    with pytest.raises(ModelError, match=r"not a multiple of window 4"):
        window_layout(flat_spec.model_copy(update={"window": 4}))
    with pytest.raises(ModelError, match=r"expected \[-1, 5, F\] for window 5"):
        window_layout(spec.model_copy(update={"window": 5}))


def test_the_group_allocates_nothing_per_tick() -> None:
    T, F, N = 8, 8, 8000
    world = SensorWorld(N, seed=1)
    layers = sensor_policy(world.prototypes, world.noise, T)
    group = group_for(mlp_onnx(layers, T, F), T, N, selection="sample")
    obs = world.reset()
    for _ in range(T + 2):  # past the first fill and the first wrap of the ring
        obs = world.step(group.step(obs))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(30):
            obs = world.step(group.step(obs))
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    window_bytes = N * T * F * 4  # one (N, T, F) float32 tensor: 2 MB
    assert after - before < 20_000
    # numpy's casting buffers (a bounded 64 KiB or so) are all a tick may use, not O(N) arrays.
    assert peak - before < window_bytes // 10


# -- actions ---------------------------------------------------------------------------------------
def test_argmax_actions_match_the_float_policy_and_solve_the_sensor_world() -> None:
    T, F, N = 8, 8, 1000
    world = SensorWorld(N, seed=2)
    layers = sensor_policy(world.prototypes, world.noise, T)
    group = group_for(mlp_onnx(layers, T, F), T, N)
    obs = world.reset()
    history = []
    rewards = []
    for tick in range(40):
        history.append(obs.copy())
        actions = group.step(obs)
        if tick >= T - 1:
            window = np.stack(history[-T:], axis=1)
            # onnxruntime and numpy sum in another order: the action is optimal to rounding.
            logits = mlp_forward(layers, window)
            tol = 1e-5 * max(1.0, float(np.abs(logits).max()))
            assert agreement.choice_agrees(logits, actions, tol=tol).all()
        obs = world.step(actions)
        if tick >= T:
            rewards.append(float(world.reward.mean()))
    assert actions.dtype == np.int64
    assert actions.shape == (N,)
    assert np.mean(rewards) > 0.93


def test_sampled_actions_follow_the_softmax_and_a_seed_fixes_them() -> None:
    logits = [2.0, 0.0, 1.0, -1.0]
    T, F, N = 2, 3, 40_000
    model = constant_onnx(T, F, logits)
    obs = np.zeros((N, F), dtype=np.float32)
    for temperature in (1.0, 2.0):
        group = group_for(model, T, N, selection="sample", temperature=temperature, seed=5)
        actions = group.step(obs).copy()
        expected = np.exp(np.array(logits) / temperature)
        expected /= expected.sum()
        freq = np.bincount(actions, minlength=4) / N
        np.testing.assert_allclose(freq, expected, atol=0.01)
        again = group_for(model, T, N, selection="sample", temperature=temperature, seed=5)
        np.testing.assert_array_equal(again.step(obs), actions)
    argmax = group_for(model, T, N)
    assert set(argmax.step(obs).tolist()) == {0}


def test_continuous_actions_are_clipped_to_the_declared_bounds() -> None:
    T, F, N = 2, 2, 3
    model = constant_onnx(T, F, [5.0, -0.25, -9.0])
    group = group_for(model, T, N, "continuous", low=(-1.0, -1.0, -2.0), high=(1.0, 0.5, 2.0))
    actions = group.step(np.ones((N, F)))
    assert actions.dtype == np.float32
    assert actions.shape == (N, 3)
    np.testing.assert_allclose(actions, np.tile([1.0, -0.25, -2.0], (N, 1)))
    with pytest.raises(ModelError, match=r"3 values per agent, the action bounds have 2"):
        group_for(model, T, N, "continuous", low=(-1.0, -1.0), high=(1.0, 1.0))


def test_observation_models_do_not_act() -> None:
    group = group_for(flatten_onnx(2, 2), 2, 3, "observation")
    with pytest.raises(InputError, match=r"use forward\(\), or PerceptionAifGroup"):
        group.step(np.zeros((3, 2)))


def test_bad_observations_are_input_errors() -> None:
    group = group_for(flatten_onnx(2, 3), 2, 4, "observation")
    with pytest.raises(InputError, match=r"obs has shape \(4, 2\), expected \(4, 3\)"):
        group.forward(np.zeros((4, 2)))
    bad = np.zeros((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match=r"obs\[2, 1\] is nan: observations must be finite"):
        group.forward(bad)
    for dtype in (np.float16, np.float32, np.float64):
        for value in (np.inf, -np.inf, np.nan):
            bad = np.ones((4, 3), dtype=dtype)
            bad[3, 0] = value
            with pytest.raises(InputError, match=r"obs\[3, 0\] is .*: observations must be fin"):
                group.forward(bad)
        # Finite values whose squares overflow (float32) are not refused.
        big = min(float(np.finfo(dtype).max), float(np.finfo(np.float32).max))
        group.forward(np.full((4, 3), big, dtype=dtype))
    with pytest.raises(InputError, match=r"must be real numbers"):
        group.forward(np.zeros((4, 3), dtype=bool))
    with pytest.raises(InputError, match=r"n_agents must be an integer >= 1"):
        group_for(flatten_onnx(2, 3), 2, 0, "observation")


def test_a_group_whose_source_checks_values_still_checks_shapes() -> None:
    # The daemon's groups: its sources drop non-finite values where they arrive, so the group
    # does not scan every observation again; a wrong shape or dtype is still refused.
    group = group_for(flatten_onnx(2, 3), 2, 4, "observation", check_finite=False)
    with pytest.raises(InputError, match=r"obs has shape \(4, 2\), expected \(4, 3\)"):
        group.forward(np.zeros((4, 2)))
    with pytest.raises(InputError, match=r"must be real numbers"):
        group.forward(np.zeros((4, 3), dtype=bool))
    bad = np.zeros((4, 3), dtype=np.float32)
    bad[2, 1] = np.inf
    assert group.check_obs(bad) is bad  # not scanned: the caller vouches for the values


# -- memory ----------------------------------------------------------------------------------------
def _allocated(group: NeuralAgentGroup) -> int:
    """The group's arrays and its session's buffers (a sliding input's whole buffer)."""
    session = group.session
    staging = [b if b.base is None else b.base for b in session._staging.values()]
    return group.nbytes + sum(b.nbytes for b in (*staging, *session._outputs.values()))


def test_per_agent_bytes_are_what_is_allocated() -> None:
    T, F, N = 8, 8, 100
    world = SensorWorld(1)
    model = mlp_onnx(sensor_policy(world.prototypes, world.noise, T), T, F)
    for selection in ("argmax", "sample"):
        group = group_for(model, T, N, selection=selection, history_capacity=20)
        assert group.history.capacity == 20
        # The sliding window input's room: 64 steps of 8 float32 (100 agents x 8 steps / 8 > 64).
        assert group.session.slide_nbytes(N) == 64 * F * 4
        assert _allocated(group) == group.bytes_for(N) == N * group.per_agent_nbytes() + 64 * F * 4
    for kind, out_model, extra in (
        ("continuous", constant_onnx(T, F, [0.0, 1.0, 2.0]), {"low": (0, 0, 0), "high": (1, 1, 1)}),
        ("observation", flatten_onnx(T, F), {}),
    ):
        group = group_for(out_model, T, N, kind, **extra)
        assert _allocated(group) == group.bytes_for(N), kind
    single = group_for(constant_onnx(1, F, [0.0, 1.0]), 1, N)  # window 1: nothing slides
    assert _allocated(single) == single.bytes_for(N) == N * single.per_agent_nbytes()


def test_budget_reserves_before_allocating_and_shares_the_model() -> None:
    T, F = 4, 3
    model = constant_onnx(T, F, [0.0, 1.0])
    budget = MemoryBudget(4 * MiB)
    first = group_for(model, T, 100, budget=budget, name="a")
    used_one = budget.used
    model_bytes = budget.by_kind()["model"]
    assert model_bytes == 2 * len(model.SerializeToString())
    second = group_for(model, T, 100, budget=budget, name="b")
    assert budget.used == used_one + (used_one - model_bytes)  # the model is counted once
    with pytest.raises(BudgetError, match=r"memory budget refused agents for 'huge'"):
        group_for(model, T, 1_000_000, budget=budget, name="huge")
    assert budget.used == used_one + (used_one - model_bytes)  # the refusal kept nothing
    first.resize(200)
    assert first.n_agents == 200
    assert first.step(np.zeros((200, F))).shape == (200,)
    with pytest.raises(BudgetError, match=r"to grow"):
        first.resize(1_000_000)
    first.release()
    second.release()
    assert budget.used == 0


def test_resize_keeps_the_windows_of_the_agents_kept() -> None:
    T, F = 3, 2
    group = group_for(flatten_onnx(T, F), T, 3, "observation")
    group.forward(np.ones((3, F)))
    group.forward(2 * np.ones((3, F)))
    group.resize(5)
    out = group.forward(3 * np.ones((5, F)))["flat"].reshape(5, T, F)
    np.testing.assert_array_equal(out[:3, :, 0], [[1, 2, 3]] * 3)
    np.testing.assert_array_equal(out[3:, :, 0], [[0, 0, 3]] * 2)
    group.resize(2)
    assert group.forward(np.zeros((2, F)))["flat"].shape == (2, T * F)


def test_state_dict_restores_windows_exactly() -> None:
    T, F, N = 4, 8, 50
    world = SensorWorld(N, seed=3)
    layers = sensor_policy(world.prototypes, world.noise, T)
    model = mlp_onnx(layers, T, F)
    group = group_for(model, T, N)
    obs = world.reset()
    for _ in range(6):
        obs = world.step(group.step(obs))
    group.reset(np.arange(N) < 5)
    state = {k: v.copy() for k, v in group.state_dict().items()}
    clone = group_for(model, T, N)
    clone.load_state_dict(state)
    for _ in range(3):
        expected = group.step(obs).copy()
        np.testing.assert_array_equal(clone.step(obs), expected)
        obs = world.step(expected)
    with pytest.raises(InputError, match=r"snapshot 'filled' has shape \(50,\), expected \(7,\)"):
        group_for(model, T, 7).load_state_dict(state)


# -- bundles ---------------------------------------------------------------------------------------
def write_neural_bundle(path: Path, model: onnx.ModelProto, spec: NeuralSpec) -> Path:
    write_bundle(path, name="policy", version="1.0.0", kind="neural",
                 files={"model.onnx": model.SerializeToString()}, neural=spec)
    return path


def test_from_bundle_runs_the_bundled_model(tmp_path: Path) -> None:
    T, F = 8, 8
    world = SensorWorld(300, seed=4)
    layers = sensor_policy(world.prototypes, world.noise, T)
    model = mlp_onnx(layers, T, F)
    path = write_neural_bundle(tmp_path / "b", model, spec_for(model, T))
    bundle = load_bundle(path, trusted_keys=None, require_signature=False)
    group = NeuralAgentGroup.from_bundle(bundle, 300)
    obs = world.reset()
    for _ in range(T):
        obs = world.step(group.step(obs))
    assert np.mean(group.actions == world.true_class) > 0.8
    # Threads that spin between calls (a program's back-to-back loop) act the same: each
    # action is optimal under the other group's logits (up to rounding: two threads).
    spinning = NeuralAgentGroup.from_bundle(bundle, 300, threads=2, spinning=True)
    options = spinning.session._session.get_session_options()  # type: ignore[attr-defined]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    group.reset()
    obs = world.reset()
    rows = np.arange(300)
    for _ in range(T):
        actions = group.step(obs).copy()
        logits = group._last_output
        chosen = spinning.step(obs)
        assert np.all(logits[rows, chosen] >= logits.max(axis=1) - 1e-5)
        obs = world.step(actions)


def test_a_manifest_that_does_not_match_the_model_is_refused(tmp_path: Path) -> None:
    T, F = 4, 3
    model = constant_onnx(T, F, [0.0, 1.0])
    spec = spec_for(model, T)
    wrong_shape = spec.model_copy(update={"inputs": (
        TensorSpec(name="window", shape=(-1, T, F + 1), dtype="float32"),)})
    path = write_neural_bundle(tmp_path / "shape", model, wrong_shape)
    bundle = load_bundle(path, trusted_keys=None, require_signature=False)
    with pytest.raises(ModelError, match=r"input 'window': the manifest says float32\[-1, 4, 4\], "
                       r"the model has float32\[-1, 4, 3\]"):
        NeuralAgentGroup.from_bundle(bundle, 2)
    wrong_name = spec.model_copy(update={"outputs": (
        TensorSpec(name="actions", shape=(-1, 2), dtype="float32"),)})
    path = write_neural_bundle(tmp_path / "name", model, wrong_name)
    with pytest.raises(ModelError, match=r"declares outputs \['actions'\], the model has "):
        NeuralAgentGroup.from_bundle(load_bundle(path, trusted_keys=None,
                                                 require_signature=False), 2)
    wrong_quant = spec.model_copy(update={"outputs": (
        TensorSpec(name="logits", shape=(-1, 2), dtype="float32", scale=0.1, zero_point=0),)})
    path = write_neural_bundle(tmp_path / "quant", model, wrong_quant)
    with pytest.raises(ModelError, match=r"quantization applies to integer tensors"):
        NeuralAgentGroup.from_bundle(load_bundle(path, trusted_keys=None,
                                                 require_signature=False), 2)


def test_from_bundle_refuses_other_kinds(tmp_path: Path) -> None:
    model = flatten_onnx(2, 2)
    path = write_neural_bundle(tmp_path / "obs", model, spec_for(model, 2, "observation"))
    bundle = load_bundle(path, trusted_keys=None, require_signature=False)
    with pytest.raises(BundleError, match=r"outputs observations, not actions"):
        NeuralAgentGroup.from_bundle(bundle, 2)
    with pytest.raises(BundleError, match=r"needs a bundle of kind 'aif\+perception'"):
        PerceptionAifGroup.from_bundle(bundle, 2)


def test_litert_bundle_runs_int8_agents(tmp_path: Path) -> None:
    from edge_agent.neural.backends import get_backend

    data = fixture.INT8_PATH.read_bytes()
    session = get_backend("litert").load(data)
    spec = NeuralSpec(backend="litert", model_file="model.tflite", inputs=session.input_specs,
                      outputs=session.output_specs, window=fixture.WINDOW,
                      output_kind="discrete")
    write_bundle(tmp_path / "b", name="policy", version="1.0.0", kind="neural",
                 files={"model.tflite": data}, neural=spec)
    bundle = load_bundle(tmp_path / "b", trusted_keys=None, require_signature=False)
    N = 500
    group = NeuralAgentGroup.from_bundle(bundle, N, threads=2)
    world = fixture.fixture_world(N, seed=6)
    obs = world.reset()
    rewards = []
    for tick in range(30):
        obs = world.step(group.step(obs))
        if tick >= fixture.WINDOW:
            rewards.append(float(world.reward.mean()))
    assert np.mean(rewards) > 0.9
    # int8 per agent: the staging float32 window, the int8 copy and its rounding scratch.
    assert group.session.nbytes_per_item() == fixture.WINDOW * 8 * (4 + 1 + 4) + 4 * (4 + 1)


# -- perception ------------------------------------------------------------------------------------
def sensor_aif_model(world: SensorWorld, hit: float = 0.8) -> GenerativeModel:
    K = world.num_classes
    A = np.full((K, K), (1 - hit) / (K - 1))
    np.fill_diagonal(A, hit)
    B = np.full((K, K), world.switch_prob / K) + np.eye(K) * (1 - world.switch_prob)
    return GenerativeModel.from_arrays([A], [B[:, :, None]])


def perception_bundle(path: Path, world: SensorWorld, aif: GenerativeModel) -> Path:
    layers = sensor_policy(world.prototypes, world.noise, 1)
    model = mlp_onnx(layers, 1, world.num_features)
    quantized = quantize_model(aif)
    arrays, names = aif_bundle_arrays(quantized)
    from edge_agent.aif.settings import AifSettings

    write_bundle(path, name="perception", version="1.0.0", kind="aif+perception",
                 arrays=arrays, files={"model.onnx": model.SerializeToString()},
                 neural=spec_for(model, 1, "observation"),
                 aif=aif_spec(quantized, AifSettings(), names))
    return path


def test_hard_evidence_is_the_classifier_argmax(tmp_path: Path) -> None:
    N = 400
    world = SensorWorld(N, seed=7)
    aif = sensor_aif_model(world)
    bundle = load_bundle(perception_bundle(tmp_path / "p", world, aif), trusted_keys=None,
                         require_signature=False)
    group = PerceptionAifGroup.from_bundle(bundle, N, evidence="hard")
    layers = sensor_policy(world.prototypes, world.noise, 1)
    direct = AifAgentGroup(quantize_model(aif), N, precision="int8")
    obs = world.reset()
    correct = []
    for tick in range(40):
        # group.step is perceive, then the AIF step: taken apart to see the outcomes it used.
        outcomes = np.asarray(group.perceive(obs)).copy()
        # onnxruntime (float32) and numpy (float64) sum in another order: each outcome is the
        # classifier's best to rounding (a near-tie may go either way).
        logits = mlp_forward(layers, obs[:, None, :])
        tol = 1e-5 * max(1.0, float(np.abs(logits).max()))
        assert agreement.choice_agrees(logits, outcomes[:, 0], tol=tol).all()
        actions = group.aif.step(outcomes)
        direct.step(outcomes)
        assert actions.shape == (N, 1)
        np.testing.assert_allclose(group.aif.qs[0], direct.qs[0], rtol=1e-6, atol=1e-7)
        if tick >= 10:
            correct.append(np.mean(group.aif.qs[0].argmax(axis=1) == world.true_class))
        obs = world.step(np.zeros(N, dtype=np.int64))
    single_shot = np.mean(mlp_forward(layers, obs[:, None, :]).argmax(axis=1) == world.true_class)
    assert np.mean(correct) > 0.93 > single_shot  # beliefs integrate evidence over time


def test_soft_evidence_weighs_the_likelihood_with_the_classifier_probabilities(
    tmp_path: Path,
) -> None:
    N = 64
    world = SensorWorld(N, seed=8)
    aif = sensor_aif_model(world)
    bundle = load_bundle(perception_bundle(tmp_path / "p", world, aif), trusted_keys=None,
                         require_signature=False)
    group = PerceptionAifGroup.from_bundle(bundle, N, evidence="soft", precision="float64")
    layers = sensor_policy(world.prototypes, world.noise, 1)
    obs = world.reset()
    evidence = group.perceive(obs)
    assert isinstance(evidence, list)
    assert len(evidence) == 1
    logits = mlp_forward(layers, obs[:, None, :])
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(evidence[0], probs, rtol=0.05, atol=0.02)
    group.reset()
    group.step(obs)
    # One factor, first step: q(s) ~ (sum_o p(o) A[o, s]) D(s), with the tables the agent uses
    # (the bundle's int8 tables, decoded).
    decoded = quantize_model(aif).dequantize()
    A, D = decoded.A[0], decoded.D[0]
    expected = (evidence[0] @ A) * D
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(group.aif.qs[0], expected, rtol=1e-3, atol=1e-6)


def test_perception_checks_the_models_fit_together(tmp_path: Path) -> None:
    world = SensorWorld(4)
    three = GenerativeModel.from_arrays([np.full((3, 3), 1 / 3)], [np.eye(3)[:, :, None]])
    bundle = load_bundle(perception_bundle(tmp_path / "p", world, sensor_aif_model(world)),
                         trusted_keys=None, require_signature=False)
    perception = PerceptionAifGroup.from_bundle(bundle, 4).perception
    with pytest.raises(ModelError, match=r"modality 0 has 3 outcomes: expected \[-1, 3\]"):
        PerceptionAifGroup(perception, AifAgentGroup(three, 4))
    with pytest.raises(InputError, match=r"runs 4 agents, the Active Inference group 5"):
        PerceptionAifGroup(perception, AifAgentGroup(sensor_aif_model(world), 5))
    with pytest.raises(InputError, match=r"evidence must be 'hard' or 'soft'"):
        PerceptionAifGroup(perception, AifAgentGroup(sensor_aif_model(world), 4),
                           evidence="fuzzy")  # type: ignore[arg-type]


def test_perception_state_and_resize(tmp_path: Path) -> None:
    world = SensorWorld(10, seed=9)
    bundle = load_bundle(perception_bundle(tmp_path / "p", world, sensor_aif_model(world)),
                         trusted_keys=None, require_signature=False)
    budget = MemoryBudget(16 * MiB)
    group = PerceptionAifGroup.from_bundle(bundle, 10, budget=budget)
    obs = world.reset()
    group.step(obs)
    state = {k: v.copy() for k, v in group.state_dict().items()}
    assert {k.split(".")[0] for k in state} == {"perception", "aif"}
    clone = PerceptionAifGroup.from_bundle(bundle, 10)
    clone.load_state_dict(state)
    obs = world.step(np.zeros(10, dtype=np.int64))
    np.testing.assert_array_equal(clone.step(obs), group.step(obs))
    np.testing.assert_allclose(clone.aif.qs[0], group.aif.qs[0])
    group.resize(20)
    assert group.step(np.zeros((20, world.num_features))).shape == (20, 1)
    assert group.per_agent_nbytes() > group.perception.per_agent_nbytes()
    group.release()
    assert budget.used == 0


# -- the sensor world ------------------------------------------------------------------------------
def test_sensor_world_is_seeded_and_rewards_the_class() -> None:
    a, b = SensorWorld(100, seed=1), SensorWorld(100, seed=1)
    np.testing.assert_array_equal(a.reset(), b.reset())
    actions = a.true_class.copy()
    a.step(actions)
    np.testing.assert_array_equal(a.reward, np.ones(100))
    b.step((actions + 1) % 4)
    np.testing.assert_array_equal(b.reward, np.zeros(100))
    np.testing.assert_array_equal(a.obs, b.obs)  # same noise draws, same switches
    with pytest.raises(ValueError, match="read-only"):
        a.obs[0, 0] = 1.0


def test_sensor_world_statistics() -> None:
    world = SensorWorld(20_000, switch_prob=0.1, noise=0.5, seed=2)
    world.reset()
    before = world.true_class.copy()
    obs = world.step(np.zeros(20_000, dtype=np.int64))
    switched = np.mean(before != world.true_class)
    assert switched == pytest.approx(0.1 * 3 / 4, abs=0.01)  # a switch may redraw the same class
    residual = obs - world.prototypes[world.true_class]
    assert residual.std() == pytest.approx(0.5, rel=0.02)
    assert np.bincount(world.true_class, minlength=4) / 20_000 == pytest.approx([0.25] * 4,
                                                                                 abs=0.02)
    np.testing.assert_allclose(np.linalg.norm(world.prototypes, axis=1), 2.0)


def test_sensor_world_reset_mask_resize_and_errors() -> None:
    world = SensorWorld(6, seed=3)
    obs = world.reset().copy()
    mask = np.array([True, False, True, False, False, False])
    new = world.reset(mask)
    np.testing.assert_array_equal(new[~mask], obs[~mask])
    assert not np.allclose(new[mask], obs[mask])
    world.resize(8)
    assert world.obs.shape == (8, 8)
    np.testing.assert_array_equal(world.obs[:6], new)
    with pytest.raises(InputError, match=r"actions must be in \[0, 4\)"):
        world.step(np.full(8, 4))
    with pytest.raises(InputError, match=r"actions has shape \(3,\), expected \(8,\)"):
        world.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(InputError, match=r">= 2 classes"):
        sensor_prototypes(1, 4, 1.0, 0)
    X, y = world.sample_windows(5, 7, seed=1)
    assert X.shape == (5, 7, 8)
    assert X.dtype == np.float32
    assert y.shape == (5,)


def test_a_bundle_quantized_per_batch_is_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bundle an older convert onnx --mode dynamic wrote (scheme onnx-dynamic-u8s8: one
    activation scale per call over the batch) still runs, with a warning saying what it does
    and what to do; today's schemes get none."""
    T, F = 2, 3
    model = constant_onnx(T, F, [0.0, 1.0])
    for scheme, warned in (("onnx-dynamic-u8s8", True), ("onnx-dynamic-row-u8s8", False),
                           ("onnx-qdq-s8s8", False)):
        path = tmp_path / scheme
        write_bundle(path, name="policy", version="1.0.0", kind="neural",
                     files={"model.onnx": model.SerializeToString()}, neural=spec_for(model, T),
                     quantization={"scheme": scheme})
        bundle = load_bundle(path, trusted_keys=None, require_signature=False)
        caplog.clear()
        with caplog.at_level("WARNING", logger="edge_agent.neural.agents"):
            NeuralAgentGroup.from_bundle(bundle, 2, name="pickers")
        lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert lines == ([
            "group pickers: bundle policy 1.0.0 is quantized with one activation scale per call "
            "over the whole batch (onnx-dynamic-u8s8): one agent's unusual input changes the "
            "other agents' actions; convert the model again (convert onnx now scales each "
            "agent's row on its own)"
        ] if warned else []), scheme
