"""One agent's input against the other agents' outputs: the coupling table.

A neural group steps all its agents in one backend call. onnxruntime's own dynamic quantization
(what older ``convert onnx`` bundles hold) computes one activation scale per call over the whole
batch: one agent's faulty or unnormalised input changes the others' actions. This measures it
for three models, each converted by the host tool and loaded as the daemon loads a bundle
(signed, ``load_bundle`` with the trusted key, ``NeuralAgentGroup.from_bundle``):

* ``sensor-policy``: ``examples/sensor_policy.onnx`` converted as the README converts it
  (``--calibration examples/sensor_calibration.npz --heldout examples/sensor_heldout.npz``),
  stepped on the held-out windows (8 steps of 8 sensor features, labels: the true class);
* ``digits-mlp``: scikit-learn's ``MLPClassifier`` (128 units) on the digits, exported by
  skl2onnx (``bench_convert.sklearn_model``), one digit per step;
* ``digits-lstm``: an ``LSTM`` (64 units, seeded weights) reading a digit as 8 rows of 8 pixels,
  its linear head fitted to the digits here (a reservoir: about 79 % accuracy, the float model's
  own; what is measured is the int8 models against it and against each other).

Variants, each a group of ``--agents`` agents on the same inputs:

* ``before``: onnxruntime's ``quantize_dynamic`` output as older converters bundled it
  (per-channel int8 weights, every op type onnxruntime's dynamic mode quantizes), in a group
  of the dynamic bundle's spec;
* ``static``, ``dynamic``: the converter's ``--mode static`` and ``--mode dynamic`` bundles
  (dynamic's activation scales are per row); the line of the mode ``auto`` keeps
  says so (``auto: true``);
* ``float``: the float model in the same group.

Per variant, one JSON line: ``changed_xF``, how many of the other ``N - 1`` agents take another
action than in the same batch without the outlier when agent 0's observations are multiplied by
F (100, 300, 1,000) for one window; ``accuracy`` of the other agents (against the labels) and
``accuracy_lost_xF`` in points; ``twice_changed``: agents whose action differs when the same
inputs are stepped again (0: the runtime is deterministic); ``alone_max_abs_diff``: the largest
difference of any output value between ``--alone`` agents stepped in a group of their own and
the same agents in the batch with agent 0 x1,000; ``out_of_range_share``: the share of agent-steps
the group counted outside the bundle's calibrated range in the x1,000 window (agent 0's: 1/N);
``tick_ms``: the group's step at N agents (median over ``--repeats`` interleaved rounds of
``--calls`` calls), ``tick_ratio``: over ``static`` in the same rounds. ``split_ms``: the
``before`` model run once per agent (a batch of 1 each: what "split the batch" would cost, the
alternative to per-row scales not taken).

    python benchmarks/bench_neural_coupling.py [--agents 1000] [--repeats 15] [--calls 10]

``--smoke``: 40 agents, 2 rounds of 2 calls, the sensor policy and the MLP: the code path, for
CI (tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_convert import digits, quiet, sklearn_model  # noqa: E402
from bench_neural_daemon import interleave  # noqa: E402

from edge_agent.bundle.loader import Bundle, load_bundle  # noqa: E402
from edge_agent.bundle.signing import TrustedKeys, load_public_key  # noqa: E402
from edge_agent.neural.agents import NeuralAgentGroup  # noqa: E402
from edge_agent_host.converter.formats.onnx import (  # noqa: E402
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
)
from edge_agent_host.converter.neural.outputs import keep_outputs  # noqa: E402
from edge_agent_host.keys import generate_keypair, load_signing_key  # noqa: E402

MODELS = ("sensor-policy", "digits-mlp", "digits-lstm")
FACTORS = (100, 300, 1000)
VARIANTS = ("before", "static", "dynamic", "float")


def digits_lstm(tmp: Path) -> dict[str, Any]:
    """An LSTM (64 units) over a digit's 8 rows of 8 pixels; its head fitted here."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    from sklearn.linear_model import LogisticRegression

    from edge_agent_host.converter.builders import recurrent_onnx

    X, y = digits()
    rows = X.reshape(-1, 8, 8)
    model = recurrent_onnx("LSTM", 8, 8, 64, 10, seed=3)
    weights = {init.name: init for init in model.graph.initializer}
    # Inputs in [0, 1] against weights of +-1/8: six times the input weights reach the gates'
    # curved part (79 % accuracy against 58 %).
    W = numpy_helper.to_array(weights["W"]) * 6
    weights["W"].CopyFrom(numpy_helper.from_array(W.astype(np.float32), "W"))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(
        helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, ["batch", 64])
    )
    hidden = ort.InferenceSession(probe.SerializeToString()).run(["h"], {"window": rows})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = LogisticRegression(max_iter=5000, C=10).fit(hidden[:1400], y[:1400])
    weights["out_w"].CopyFrom(numpy_helper.from_array(head.coef_.T.astype(np.float32), "out_w"))
    weights["out_b"].CopyFrom(
        numpy_helper.from_array(head.intercept_.astype(np.float32), "out_b")
    )
    path = tmp / "digits-lstm.onnx"
    onnx.save(model, path)
    return {"path": path, "calibration": rows[:1400], "heldout": rows[1400:], "labels": y[1400:]}


def model_spec(name: str, tmp: Path, smoke: bool) -> dict[str, Any]:
    """The float model, its calibration and held-out data as the model takes them, and the
    held-out data as steps ``(n, T, F)``."""
    if name == "sensor-policy":
        examples = REPO / "examples"
        with np.load(examples / "sensor_calibration.npz") as cal:
            calibration = cal["window"]
        with np.load(examples / "sensor_heldout.npz") as held:
            heldout, labels = held["window"], held["labels"]
        spec = {"path": examples / "sensor_policy.onnx", "calibration": calibration,
                "heldout": heldout, "labels": labels}
    elif name == "digits-mlp":
        spec = sklearn_model("mlp", tmp, smoke)
    else:
        spec = digits_lstm(tmp)
    held = spec["heldout"]
    spec["steps"] = held if held.ndim == 3 else held[:, None, :]  # one digit per step
    return spec


def convert(spec: dict[str, Any], tmp: Path, mode: str, key: Path) -> dict[str, Any]:
    cal, held = tmp / "cal.npz", tmp / "held.npz"
    np.savez(cal, x=spec["calibration"])
    np.savez(held, x=spec["heldout"], labels=spec["labels"])
    out = tmp / f"bundle-{mode}"
    with quiet():
        report = convert_onnx(
            ConvertOptions(model=spec["path"], out=out, name="coupling",
                           sign_key=load_signing_key(key)),
            NeuralOptions(mode=mode, latency_repeats=1, calibration=cal, heldout=held,
                          thresholds=NeuralThresholds(min_top1=None)),
        )
    return {"path": out, "report": report.data}


def before_model(spec: dict[str, Any], tmp: Path) -> bytes:
    """onnxruntime's dynamic quantization as older ``convert onnx --mode dynamic`` bundled it:
    per-channel int8 weights, every op type of its dynamic mode, one activation scale
    per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = tmp / "before.onnx"
    with quiet():
        quantize_dynamic(str(spec["path"]), str(out), per_channel=True,
                         weight_type=QuantType.QInt8)
    return out.read_bytes()


def window_of(seq: np.ndarray, group: NeuralAgentGroup) -> np.ndarray:
    """Step ``seq`` ``(N, T, F)`` through ``group`` from empty windows; the last outputs."""
    group.reset()
    out: Any = None
    for t in range(seq.shape[1]):
        out = group.forward(np.ascontiguousarray(seq[:, t]))[group.output.name]
    return np.array(out, copy=True)


def measure_variant(group: NeuralAgentGroup, alone: NeuralAgentGroup, seq: np.ndarray,
                    labels: np.ndarray, n_alone: int) -> dict[str, Any]:
    base = window_of(seq, group).argmax(axis=1)
    twice = window_of(seq, group).argmax(axis=1)
    row: dict[str, Any] = {"twice_changed": int(np.count_nonzero(base != twice))}
    others = slice(1, None)
    row["accuracy"] = round(float(np.mean(base[others] == labels[others])), 4)
    outlier: np.ndarray | None = None
    for factor in FACTORS:
        faulty = seq.copy()
        faulty[0] *= factor
        before = group.metrics().get("obs_out_of_range", 0)
        outlier = window_of(faulty, group)
        actions = outlier.argmax(axis=1)
        row[f"changed_x{factor}"] = int(np.count_nonzero(actions[others] != base[others]))
        lost = np.mean(base[others] == labels[others]) - np.mean(actions[others] == labels[others])
        row[f"accuracy_lost_x{factor}"] = round(float(100 * lost), 2)
        counted = group.metrics().get("obs_out_of_range")
        if counted is not None:
            share = (int(counted) - int(before)) / (seq.shape[0] * seq.shape[1])
            row["out_of_range_share"] = round(share, 6)
    assert outlier is not None
    worst = 0.0
    for i in range(1, n_alone + 1):
        mine = window_of(seq[i : i + 1], alone)
        worst = max(worst, float(np.abs(mine[0] - outlier[i]).max()))
    row["alone_max_abs_diff"] = worst
    return row


def trusted(key_dir: Path) -> TrustedKeys:
    return TrustedKeys([load_public_key(p) for p in sorted(key_dir.glob("*.pub"))])


def measure(name: str, tmp: Path, args: argparse.Namespace, key_dir: Path) -> None:
    spec = model_spec(name, tmp, args.smoke)
    key = key_dir / "bench.key"
    bundles: dict[str, Bundle] = {}
    reports: dict[str, dict[str, Any]] = {}
    for mode in ("static", "dynamic", "auto"):
        done = convert(spec, tmp, mode, key)
        reports[mode] = done["report"]
        bundles[mode] = load_bundle(done["path"], trusted_keys=trusted(key_dir))
    auto_mode = reports["auto"]["quantization"]["mode"]
    dynamic = bundles["dynamic"]
    spec_dyn = dynamic.manifest.neural
    assert spec_dyn is not None
    # The float model with the outputs the bundle keeps (skl2onnx's label output dropped).
    float_bytes = keep_outputs(Path(spec["path"]).read_bytes(),
                               [t.name for t in spec_dyn.outputs])
    spec["path"] = tmp / "float.onnx"
    spec["path"].write_bytes(float_bytes)
    models = {
        "before": (spec_dyn, before_model(spec, tmp)),
        "float": (spec_dyn, float_bytes),
    }
    groups: dict[str, NeuralAgentGroup] = {}
    alone: dict[str, NeuralAgentGroup] = {}
    sizes: dict[str, int] = {}
    for variant in VARIANTS:
        if variant in models:
            neural, blob = models[variant]
            groups[variant] = NeuralAgentGroup(neural, blob, args.agents)
            alone[variant] = NeuralAgentGroup(neural, blob, 1)
            sizes[variant] = len(blob)
        else:
            bundle = bundles[variant]
            groups[variant] = NeuralAgentGroup.from_bundle(bundle, args.agents)
            alone[variant] = NeuralAgentGroup.from_bundle(bundle, 1)
            neural = bundle.manifest.neural
            assert neural is not None
            sizes[variant] = len(bundle.file_bytes(neural.model_file))
    held, labels = spec["steps"], spec["labels"]
    pick = np.random.default_rng(0).integers(0, len(held), size=args.agents)
    seq = held[pick].astype(np.float32)
    obs = np.ascontiguousarray(seq[:, -1])
    ticks = interleave({v: (lambda g=g: g.step(obs)) for v, g in groups.items()},
                       args.repeats, args.calls)
    split = split_cost(models["before"][1], seq, args)
    for variant in VARIANTS:
        row: dict[str, Any] = {
            "bench": "neural_coupling", "model": name, "variant": variant,
            "agents": args.agents, "window": int(seq.shape[1]), "model_bytes": sizes[variant],
            "auto": variant == auto_mode,
        }
        if variant in reports:
            row["scheme"] = reports[variant]["scheme"]
            row["top1_agreement"] = reports[variant]["accuracy"]["top1_agreement"]
        row.update(measure_variant(groups[variant], alone[variant], seq, labels[pick],
                                   args.alone))
        row["tick_ms"] = round(float(np.median(ticks[variant])) * 1e3, 4)
        ratios = sorted(v / s for v, s in zip(ticks[variant], ticks["static"], strict=True))
        row["tick_ratio"] = round(float(np.median(ratios)), 3)
        if variant == "before":
            row["split_ms"] = split
        if variant == auto_mode:
            row["auto_reason"] = reports["auto"]["quantization"]["mode_reason"]
        print(json.dumps(row, sort_keys=True), flush=True)
    for group in (*groups.values(), *alone.values()):
        group.release()


def split_cost(model: bytes, seq: np.ndarray, args: argparse.Namespace) -> float:
    """Median ms of one window step run as one batch-1 call per agent (the batch split)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = session.get_inputs()[0].shape
    item = seq.shape[1:] if len(shape) == 3 else (-1,)
    rows = [np.ascontiguousarray(seq[i : i + 1].reshape(1, *item)) for i in range(len(seq))]
    times = []
    for _ in range(max(2, args.repeats // 3)):
        start = time.perf_counter()
        for row in rows:
            session.run(None, {name: row})
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=10, help="calls per variant and round")
    parser.add_argument("--alone", type=int, default=20,
                        help="agents also stepped in a group of their own")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--smoke", action="store_true",
                        help="40 agents, 2 rounds of 2 calls, two models")
    args = parser.parse_args()
    models = args.models.split(",")
    if args.smoke:
        args.agents, args.repeats, args.calls, args.alone = 40, 2, 2, 3
        models = ["sensor-policy", "digits-mlp"]
    with tempfile.TemporaryDirectory(prefix="bench-neural-coupling-") as name:
        tmp = Path(name)
        keys = tmp / "keys"
        generate_keypair(keys, "bench")
        for model in models:
            work = tmp / model
            work.mkdir()
            measure(model, work, args, keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
