"""A neural group on the digits models against a plain onnxruntime session.

The digits MLP (skl2onnx ``MLPClassifier``, 128 units) and the small digits CNN of
``bench_convert.py`` (frames ``(N, 1, 8, 8)``, stepped as flattened ``(N, 64)`` observations) are
converted by the host tool (static int8, as ``--mode static`` writes them), and for each bundle a
:class:`edge_agent.neural.agents.NeuralAgentGroup` of ``--agents`` agents (``--threads`` intra-op
threads, 1 by default; the ``x86-dev`` daemon gives its groups 2) is
timed against plain ``onnxruntime.InferenceSession`` objects of the same int8 model file, called
as ``session.run(None, {input: batch})`` on the same batch, interleaved in ``--repeats`` rounds
of ``--calls`` calls (order rotated each round), per-round medians:

* ``session_default``: onnxruntime's default options (no ``SessionOptions``): the baseline;
* ``session_exact``: the default options plus ``session.x64quantprecision`` (what the backend
  once set on every x86 CPU);
* ``group_step``: ``NeuralAgentGroup.step`` (observation check, the window, one backend run,
  argmax) of a group as ``NeuralAgentGroup.from_bundle`` builds it (the finite check on, a ring
  as long as the window; the daemon's groups skip the check and keep the profile's history),
  with the backend's choice of that option for this CPU;
* ``session_backend``: a plain session with the backend's options (``--threads`` intra-op
  threads, 1 inter-op, sequential, idle threads do not spin);
* ``group_step_fresh`` against ``session_default_fresh``: the same two, each call on the next
  of 8 distinct batches (every agent's digit moved by one more place), as observations change
  from tick to tick; ``group_step_fresh_ratio`` is over ``session_default_fresh`` (the
  session's input is then no longer the one array it read the call before);
* ``session_spinning``: the same on the default session's threads (one per physical core) that
  spin (``session.intra_op.allow_spinning`` 1, as onnxruntime's default), and
  ``session_spinning_stop`` with ``session.force_spinning_stop`` as well (the threads spin during
  a run and stop when it returns);
* ``group_step_spinning``: a group built with ``spinning=True`` on those threads (what a program
  calling the group back to back can choose; the daemon's threads never spin), and
  ``group_step_spinning_fresh`` the same on the 8 batches (over ``session_default_fresh``);
* ``group_job`` against ``session_default_job``: the whole job a tick does, both ways: the
  tick's observations written into the caller's buffer (the next of the 8 batches), then the
  spinning group's step, or the default session's run and an argmax per agent (what a program
  without the group must do to act); ``group_job_ratio`` is over ``session_default_job``.

One JSON line per model: medians in ms, ``*_ratio`` the median over rounds of each variant over
``session_default`` (or the baseline named above; the target, <= 1.2, is read on
``group_job``: the same job on the same threads), whether the two sessions' argmax agree on
every held-out digit, and ``x64_quant_precision`` (the backend's choice here).

Then what spinning costs when idle (``bench: spinning``): each of ``backend_1`` (1 thread),
``backend_2`` (2 threads, no spinning), ``spinning_2`` and ``spinning_stop_2`` called once per
period at 10 Hz and 50 Hz for ``--spin-seconds`` each, with the process's CPU time (user +
system, every thread) per call (``cpu_ms_per_call``), its share of one core over the wall time
(``cpu_share_of_core``) and the call's median (``call_p50_ms``, a cold call after a sleep).

    python benchmarks/bench_neural_digits.py [--agents 1000] [--repeats 30] [--calls 20]
        [--threads 1] [--spin-seconds 10]

``--smoke``: 20 agents, 2 rounds of 3 calls, 0.1 s paced, the models fitted in a few iterations:
the code path, for CI; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_convert import cnn_model, quiet, sklearn_model  # noqa: E402
from bench_neural_daemon import interleave  # noqa: E402

from edge_agent.bundle.loader import load_bundle  # noqa: E402
from edge_agent.neural.agents import NeuralAgentGroup  # noqa: E402
from edge_agent.neural.backends.onnxruntime import x64_quant_precision  # noqa: E402
from edge_agent_host.converter.formats.onnx import (  # noqa: E402
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
)

TARGET = 1.2
#: Distinct observation batches the ``*_fresh`` variants take in turn.
FRESH = 8


def plain(model: bytes, *, exact: bool) -> Any:
    import onnxruntime as ort

    if not exact:
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def backend_like(model: bytes, threads: int, *, spinning: bool, stop: bool = False) -> Any:
    """A plain session with the device backend's options (``threads`` intra-op threads, 1
    inter-op, sequential, all graph optimisations), its threads spinning or not."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if stop:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    if x64_quant_precision():
        opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime


def idle_cost(family: str, model: bytes, feed: dict[str, np.ndarray], seconds: float) -> None:
    """One ``spinning`` line per session kind and rate (module docstring)."""
    kinds = {
        "backend_1": (1, False, False),
        "backend_2": (2, False, False),
        "spinning_2": (2, True, False),
        "spinning_stop_2": (2, True, True),
    }
    for hz in (10.0, 50.0):
        for kind, (threads, spinning, stop) in kinds.items():
            session = backend_like(model, threads, spinning=spinning, stop=stop)
            for _ in range(5):
                session.run(None, feed)
            calls = max(2, int(seconds * hz))
            took = []
            time.sleep(min(0.5, seconds))  # the warm-up's spinning ends before the count
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            deadline = wall0
            for _ in range(calls):
                deadline += 1.0 / hz
                time.sleep(max(0.0, deadline - time.perf_counter()))
                start = time.perf_counter()
                session.run(None, feed)
                took.append(time.perf_counter() - start)
            cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
            print(json.dumps({
                "bench": "spinning", "model": family, "session": kind, "hz": hz,
                "threads": threads, "spinning": spinning, "force_spinning_stop": stop,
                "calls": calls, "cpu_ms_per_call": round(cpu / calls * 1e3, 4),
                "cpu_share_of_core": round(cpu / wall, 4),
                "call_p50_ms": round(statistics.median(took) * 1e3, 4),
            }, sort_keys=True), flush=True)
            del session


def fresh_calls(
    obs: np.ndarray, *, shape: tuple[int, ...], name: str, default: Any, group: Any,
    spinning: Any,
) -> dict[str, Any]:
    """The variants on observations that change every call (as a tick's do): ``FRESH``
    batches of the same digits, each agent's row moved by k, taken in turn by each variant;
    and the whole job as a program without the group would do it each tick (the tick's
    observations written into its buffer, the model run, an action per agent picked)."""
    fresh = [np.ascontiguousarray(np.roll(obs, k, axis=0)) for k in range(FRESH)]
    feeds = [{name: f.reshape(shape)} for f in fresh]
    tick_obs = np.empty_like(obs)
    tick_feed = {name: tick_obs.reshape(shape)}
    turn = dict.fromkeys(("session", "group", "spinning", "job", "group_job"), 0)

    def next_turn(key: str) -> int:
        turn[key] = (turn[key] + 1) % FRESH
        return turn[key]

    def session_job() -> object:
        np.copyto(tick_obs, fresh[next_turn("job")])
        return default.run(None, tick_feed)[0].argmax(axis=1)

    def group_job() -> object:
        np.copyto(tick_obs, fresh[next_turn("group_job")])
        return spinning.step(tick_obs)

    return {
        "session_default_fresh": lambda: default.run(None, feeds[next_turn("session")]),
        "group_step_fresh": lambda: group.step(fresh[next_turn("group")]),
        "group_step_spinning_fresh": lambda: spinning.step(fresh[next_turn("spinning")]),
        "session_default_job": session_job,
        "group_job": group_job,
    }


def measure(family: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    # A smoke run fits the models in a few iterations, as bench_convert's does (the training was
    # two thirds of its time, and its numbers mean nothing).
    smoke = args.smoke
    spec = sklearn_model("mlp", tmp, smoke) if family == "mlp" else cnn_model(tmp, smoke)
    np.savez(tmp / f"{family}.cal.npz", x=spec["calibration"])
    np.savez(tmp / f"{family}.held.npz", x=spec["heldout"], labels=spec["labels"])
    with quiet():
        convert_onnx(
            ConvertOptions(model=spec["path"], out=tmp / family, name=family),
            NeuralOptions(
                mode="static", latency_repeats=1, calibration=tmp / f"{family}.cal.npz",
                heldout=tmp / f"{family}.held.npz", thresholds=NeuralThresholds(min_top1=None),
            ),
        )
    bundle = load_bundle(tmp / family, trusted_keys=None, require_signature=False)
    neural = bundle.manifest.neural
    assert neural is not None
    model = bundle.file_bytes(neural.model_file)
    group = NeuralAgentGroup.from_bundle(bundle, args.agents, threads=args.threads)
    spin_threads = psutil.cpu_count(logical=False) or 1  # onnxruntime's default intra-op threads
    spinning = {"group": NeuralAgentGroup.from_bundle(bundle, args.agents, threads=spin_threads,
                                                      spinning=True)}
    held = spec["heldout"]
    obs = np.resize(held.reshape(len(held), -1), (args.agents, 64)).astype(np.float32)
    batch = obs.reshape((args.agents, *held.shape[1:]))
    default, exact = plain(model, exact=False), plain(model, exact=True)
    sessions = {  # dropped before the idle cost is measured, their threads with them
        "own": backend_like(model, args.threads, spinning=False),
        "spin": backend_like(model, spin_threads, spinning=True),
        "spin_stop": backend_like(model, spin_threads, spinning=True, stop=True),
    }
    name = default.get_inputs()[0].name
    feed = {name: batch}
    digits = {name: held.astype(np.float32)}
    agree = bool(np.array_equal(default.run(None, digits)[0].argmax(1),
                                exact.run(None, digits)[0].argmax(1)))
    group_actions = group.step(obs)
    logits = default.run(None, feed)[0]
    same = bool(np.array_equal(group_actions, logits.argmax(1)))
    # Optimal under the default session's logits (two threads may round differently).
    rows = np.arange(args.agents)
    spin_optimal = bool(np.all(logits[rows, spinning["group"].step(obs)] >= logits.max(1) - 1e-5))
    fresh = fresh_calls(obs, shape=batch.shape, name=name, default=default, group=group,
                        spinning=spinning["group"])
    medians = interleave(
        {
            **fresh,
            "session_default": lambda: default.run(None, feed),
            "session_exact": lambda: exact.run(None, feed),
            "group_step": lambda: group.step(obs),
            "group_step_spinning": lambda: spinning["group"].step(obs),
            "session_backend": lambda: sessions["own"].run(None, feed),
            "session_spinning": lambda: sessions["spin"].run(None, feed),
            "session_spinning_stop": lambda: sessions["spin_stop"].run(None, feed),
        },
        args.repeats,
        args.calls,
    )
    base = medians["session_default"]
    fresh_base = medians["session_default_fresh"]
    bases = {"group_step_fresh": fresh_base, "group_step_spinning_fresh": fresh_base,
             "session_default_fresh": base, "group_job": medians["session_default_job"]}
    row: dict[str, Any] = {
        "bench": "digits_group", "model": family, "agents": args.agents,
        "batch_shape": list(batch.shape), "x64_quant_precision": x64_quant_precision(),
        "argmax_default_equals_exact": agree, "group_actions_equal_default": same,
        "heldout_digits": len(held), "threads": args.threads,
        "spinning_threads": spin_threads, "group_spinning_actions_optimal": spin_optimal,
    }
    for key, values in medians.items():
        row[f"{key}_ms"] = round(float(np.median(values)) * 1e3, 4)
        if key != "session_default":
            own = bases.get(key, base)
            ratios = sorted(v / b for v, b in zip(values, own, strict=True))
            row[f"{key}_ratio"] = round(float(np.median(ratios)), 3)
            row[f"{key}_ratio_range"] = [round(ratios[0], 3), round(ratios[-1], 3)]
    row[f"target_group<={TARGET}"] = row["group_step_ratio"] <= TARGET
    row[f"target_group_fresh<={TARGET}"] = row["group_step_fresh_ratio"] <= TARGET
    row[f"target_group_spinning<={TARGET}"] = row["group_step_spinning_ratio"] <= TARGET
    row[f"target_group_spinning_fresh<={TARGET}"] = row["group_step_spinning_fresh_ratio"] <= TARGET
    row[f"target_group_job<={TARGET}"] = row["group_job_ratio"] <= TARGET
    print(json.dumps(row, sort_keys=True), flush=True)
    sessions.clear()
    spinning.clear()  # its threads with it, before the idle cost is measured
    if args.spin_seconds > 0:
        idle_cost(family, model, feed, args.spin_seconds)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=20, help="calls per variant and round")
    parser.add_argument("--threads", type=int, default=1,
                        help="the group's intra-op threads (the daemon's inference_threads)")
    parser.add_argument("--spin-seconds", type=float, default=10.0,
                        help="paced seconds per session kind and rate for the idle cost (0: skip)")
    parser.add_argument("--smoke", action="store_true", help="20 agents, 2 rounds of 3 calls")
    args = parser.parse_args()
    if args.smoke:
        args.agents, args.repeats, args.calls, args.spin_seconds = 20, 2, 3, 0.1
    with tempfile.TemporaryDirectory(prefix="bench-neural-digits-") as name:
        for family in ("mlp", "cnn"):
            measure(family, Path(name), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
