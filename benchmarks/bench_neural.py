"""Neural agent benchmarks: int8 versus float per backend, all in one process.

For each backend (ONNX Runtime, LiteRT) the same network -- a sensor-world policy over a window of
``--window`` steps of 8 features (:func:`edge_agent_host.converter.builders.sensor_policy`,
``--hidden`` units) -- is converted to int8 by the host tool itself, and the script prints one JSON
object per line and variant:

* ``size_bytes``: the model file; for int8 also ``size_ratio`` (int8 / float);
* ``top1_agreement`` (int8 vs float on held-out windows), ``max_abs_error``, ``mean_abs_error``;
* ``latency_ms`` at batch 1 and 64 (median of repeats) and, for int8, the ratios to float;
* ``agent_steps_per_s``: a :class:`edge_agent.neural.agents.NeuralAgentGroup` of ``--agents`` agents
  stepping through the sensor world (the group's step only is timed: stacking the ``(N, T, F)``
  windows plus the one batched backend call), with ``tick_ms_p50``/``p99``, the reward the agents
  earn, and for int8 the ratio to float;
* ``targets``: int8 size <= 30 % of float, top-1 agreement >= 99 %.

LiteRT needs TensorFlow on the host to convert the network (``tensorflow-cpu``, not a project
dependency); without it the LiteRT lines use the shipped fixture
(``tests/data/sensor_policy_*.tflite``, window 8, hidden 32) and say so in ``model``.

    python benchmarks/bench_neural.py [--agents 1000] [--window 32] [--hidden 256] [--ticks 200]
        [--threads 1] [--backends onnxruntime,litert]

``--smoke``: 10 agents, window 8, 32 hidden units, 5 ticks, 2 repeats, 200 held-out windows: the
code path, for CI (tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "data"))

from edge_agent.bundle.loader import load_bundle  # noqa: E402
from edge_agent.bundle.manifest import NeuralSpec  # noqa: E402
from edge_agent.neural.agents import NeuralAgentGroup  # noqa: E402
from edge_agent.neural.backends import get_backend  # noqa: E402
from edge_agent.sim.sensors import SensorWorld  # noqa: E402
from edge_agent_host.converter.builders import Layers, mlp_onnx, sensor_policy  # noqa: E402
from edge_agent_host.converter.formats.onnx import (  # noqa: E402
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
)

FEATURES = 8
SIZE_TARGET = 0.30
TOP1_TARGET = 0.99


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def run_group(
    spec: NeuralSpec, model: bytes, *, n_agents: int, ticks: int, threads: int, seed: int
) -> dict[str, Any]:
    """Time ``ticks`` steps of one group in the sensor world (the group's step only)."""
    group = NeuralAgentGroup(spec, model, n_agents, threads=threads)
    world = SensorWorld(n_agents, seed=seed)
    obs = world.reset()
    for _ in range(spec.window):  # fill the windows first
        obs = world.step(group.step(obs))
    times = []
    rewards = []
    for _ in range(ticks):
        start = time.perf_counter()
        actions = group.step(obs)
        times.append(time.perf_counter() - start)
        obs = world.step(actions)
        rewards.append(float(world.reward.mean()))
    total = sum(times)
    ordered = sorted(times)
    return {
        "agents": n_agents,
        "window": spec.window,
        "agent_steps_per_s": n_agents * ticks / total,
        "tick_ms_p50": statistics.median(times) * 1e3,
        "tick_ms_p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3,
        "reward": float(np.mean(rewards)),
        "bytes_per_agent": group.per_agent_nbytes(),
    }


def float_spec(int8: NeuralSpec, float_model: bytes, backend: str) -> NeuralSpec:
    """The int8 bundle's spec, with the float model's own tensors."""
    session = get_backend(backend).load(float_model)
    return int8.model_copy(update={"inputs": session.input_specs,
                                   "outputs": session.output_specs})


def records(
    backend: str, model_label: str, float_model: bytes, bundle_dir: Path, *, report: Any,
    args: argparse.Namespace,
) -> None:
    bundle = load_bundle(bundle_dir, trusted_keys=None, require_signature=False)
    spec = bundle.manifest.neural
    if spec is None:
        raise SystemExit(f"{bundle_dir}: not a neural bundle")
    int8_model = bundle.file_bytes(spec.model_file)
    data = report.data
    latency = data["latency_ms"]
    acc = data["accuracy"]
    sizes = {"n_agents": args.agents, "ticks": args.ticks, "threads": args.threads,
             "seed": args.seed}
    runs = {
        "float": run_group(float_spec(spec, float_model, backend), float_model, **sizes),
        "int8": run_group(spec, int8_model, **sizes),
    }
    common = {"bench": "neural", "backend": backend, "model": model_label,
              "threads": args.threads, "heldout": acc["heldout_samples"]}
    emit({**common, "variant": "float", "size_bytes": data["size"]["float_bytes"],
          "latency_ms": latency["float"], **runs["float"]})
    size_ratio = data["size"]["int8_bytes"] / data["size"]["float_bytes"]
    emit({
        **common, "variant": "int8", "size_bytes": data["size"]["int8_bytes"],
        "size_ratio": size_ratio, "top1_agreement": acc["top1_agreement"],
        "max_abs_error": acc["max_abs_error"], "mean_abs_error": acc["mean_abs_error"],
        "latency_ms": latency["int8"],
        "latency_ratio": {b: latency["int8"][b] / latency["float"][b] for b in latency["int8"]},
        **runs["int8"],
        "agent_steps_ratio": runs["int8"]["agent_steps_per_s"] / runs["float"]["agent_steps_per_s"],
        "targets": {
            "size_ratio<=0.30": size_ratio <= SIZE_TARGET,
            "top1_agreement>=0.99": acc["top1_agreement"] >= TOP1_TARGET,
        },
    })


def convert_quietly(convert: Any, *args: Any, **kwargs: Any) -> Any:
    report = convert(*args, **kwargs)
    if report.bundle is None:
        raise SystemExit(f"conversion failed its checks: {[c.describe() for c in report.checks]}")
    return report


def bench_onnxruntime(layers: Layers, data: dict[str, Path], tmp: Path,
                      args: argparse.Namespace) -> None:
    from edge_agent_host.converter.formats.onnx import convert_onnx

    float_model = mlp_onnx(layers, args.window, FEATURES).SerializeToString()
    (tmp / "policy.onnx").write_bytes(float_model)
    report = convert_quietly(
        convert_onnx,
        ConvertOptions(model=tmp / "policy.onnx", out=tmp / "onnx-bundle", name="bench"),
        NeuralOptions(
            threads=args.threads, latency_repeats=args.repeats,
            calibration=data["calibration"], heldout=data["heldout"],
            thresholds=NeuralThresholds(min_top1=None),
        ),
    )
    records("onnxruntime", f"mlp window={args.window} hidden={args.hidden}", float_model,
            tmp / "onnx-bundle", report=report, args=args)


def keras_tflite(layers: Layers, window: int, calibration: Path, tmp: Path) -> tuple[Path, Path]:
    """Float and int8 .tflite of ``layers`` through TensorFlow and the host tool's converter."""
    from edge_agent_host.converter.formats.tflite import (
        _tensorflow,
        float_tflite_from_tensorflow,
        tflite_from_tensorflow,
    )

    keras = _tensorflow().keras
    (W1, b1), (W2, b2) = layers
    model = keras.Sequential([
        keras.Input((window, FEATURES), name="window"), keras.layers.Flatten(),
        keras.layers.Dense(W1.shape[1], activation="relu"), keras.layers.Dense(W2.shape[1]),
    ])
    model.layers[1].set_weights([W1, b1])
    model.layers[2].set_weights([W2, b2])
    model.export(str(tmp / "saved_model"), verbose=False)
    float_path, int8_path = tmp / "policy_float.tflite", tmp / "policy_int8.tflite"
    float_path.write_bytes(float_tflite_from_tensorflow(tmp / "saved_model"))
    samples = dict(np.load(calibration))
    int8_path.write_bytes(tflite_from_tensorflow(tmp / "saved_model", samples))
    return float_path, int8_path


def bench_litert(layers: Layers, data: dict[str, Path], tmp: Path,
                 args: argparse.Namespace) -> None:
    from edge_agent_host.converter.formats.tflite import convert_tflite

    if importlib.util.find_spec("tensorflow") is not None:
        float_path, int8_path = keras_tflite(layers, args.window, data["calibration"], tmp)
        label = f"mlp window={args.window} hidden={args.hidden}"
        heldout = data["heldout"]
    else:
        import make_tflite_fixture as fixture

        float_path, int8_path = fixture.FLOAT_PATH, fixture.INT8_PATH
        label = (f"fixture window={fixture.WINDOW} hidden={fixture.HIDDEN} "
                 "(TensorFlow not installed)")
        X, y = fixture.fixture_world().sample_windows(2000, fixture.WINDOW, seed=args.seed + 2)
        heldout = tmp / "fixture_heldout.npz"
        np.savez(heldout, window=X, labels=y)
    report = convert_quietly(
        convert_tflite,
        ConvertOptions(model=float_path, out=tmp / "litert-bundle", name="bench"),
        NeuralOptions(
            threads=args.threads, latency_repeats=args.repeats, heldout=heldout,
            thresholds=NeuralThresholds(min_top1=None),
        ),
        int8_path=int8_path,
    )
    records("litert", label, float_path.read_bytes(), tmp / "litert-bundle", report=report,
            args=args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per latency")
    parser.add_argument("--heldout", type=int, default=5000, help="held-out windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default="onnxruntime,litert")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and runs: for CI")
    args = parser.parse_args()
    if args.smoke:
        args.agents, args.window, args.hidden, args.ticks = 10, 8, 32, 5
        args.repeats, args.heldout = 2, 200
    world = SensorWorld(1)
    layers = sensor_policy(world.prototypes, world.noise, args.window, hidden=args.hidden)
    with tempfile.TemporaryDirectory(prefix="bench-neural-") as name:
        tmp = Path(name)
        X, _ = world.sample_windows(1024, args.window, seed=args.seed + 1)
        np.savez(tmp / "calibration.npz", window=X)
        Xh, yh = world.sample_windows(args.heldout, args.window, seed=args.seed + 2)
        np.savez(tmp / "heldout.npz", window=Xh, labels=yh)
        data = {"calibration": tmp / "calibration.npz", "heldout": tmp / "heldout.npz"}
        for backend in args.backends.split(","):
            if backend == "onnxruntime":
                bench_onnxruntime(layers, data, tmp, args)
            elif backend == "litert":
                bench_litert(layers, data, tmp, args)
            else:
                raise SystemExit(f"unknown backend {backend!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
