"""Neural and perception agents in the daemon: ticks, memory, conversion, overhead.

Everything a user would do, in one run, one JSON object per line:

1. ``machine``: CPU, cores, load average, Python, numpy and onnxruntime versions.
2. ``convert``: the bundles made with the host tool as a user makes them (``edge-agent-host
   keygen``, then ``edge-agent-host convert onnx ... --sign ... --quiet --json``), each command's
   wall time (``convert_s``), sizes and held-out agreement from its JSON report:

   * the README's sensor-world policy (``examples/sensor_policy.onnx``: a window of 8 steps of
     8 features, 32 hidden units, 4 actions) with the example calibration and held-out windows,
     converted as the README converts it; or, with ``--window`` or ``--hidden``, a policy of
     that window and width (:func:`edge_agent_host.converter.builders.sensor_policy`,
     :func:`mlp_onnx`), calibrated on 1,024 windows and checked on ``--heldout``
     (``SensorWorld.sample_windows``);
   * the example perception model (``examples/sensor_perception.onnx``,
     ``--output-kind observation``) with the example calibration and held-out windows.

3. ``daemon``: the real daemon (``python -m edge_agent run --config ...``) as a subprocess with a
   bench-owned ``NOTIFY_SOCKET``, profile ``x86-dev``, ``--tick-hz`` on the built-in sensor world,
   for ``--agents`` neural agents (the policy bundle) and ``--agents`` perception -> Active
   Inference agents (the built-in model ``sensors`` with the perception bundle, soft evidence),
   plus, as the same-run baseline, ``--agents`` built-in grid10 agents (as ``bench_daemon.py``
   runs them).
   After READY it runs ``--seconds``, the status file is read (tick p50/p99 over the last 1,024
   ticks, RSS, budget, each group's ``bytes_per_agent`` and ``shared_model_bytes``), then SIGTERM.
   ``tick_vs_grid10`` and ``rss_vs_grid10`` are ratios to the baseline daemon of this run.
4. ``overhead``: in this process, each group as the daemon builds it
   (:func:`edge_agent.daemon.admission.load_group_model` on the same config file and signed
   bundle, :func:`edge_agent.daemon.group_runtime.make_agents` with ``--threads`` intra-op threads,
   :func:`make_runtime`) against a plain ``onnxruntime.InferenceSession`` of the same model file
   with **one intra-op thread and onnxruntime's defaults otherwise** (CPU provider) called as
   ``session.run(None, {input: batch})`` on the same ``(N, T, F)`` float32 batch (a copy of the
   batch the group staged on its last tick). Variants, interleaved in ``--repeats`` rounds of
   ``--calls`` calls each (order rotated every round), per-round medians:

   * ``session_run``: the direct onnxruntime call, one thread, default options (the baseline);
   * ``session_run_default_threads``: the same with no ``SessionOptions`` at all (onnxruntime's
     own thread count, spinning threads);
   * ``session_run_backend_options``: the same call on a plain session built with the backend's
     options (``--threads`` intra-op and 1 inter-op thread, sequential, all graph optimisations,
     no spinning, the x86 int8 precision mode only where the CPU needs it:
     ``x64_quant_precision`` in the row);
   * ``session_run_x64_precision``: the same with ``session.x64quantprecision`` forced on (what
     the backend once set on every x86 CPU: on a VNNI CPU only slower);
   * ``backend_run``: the group's own backend session on its staged batch (IOBinding, no copy);
   * ``neural_step``: the group's neural half, its health measures and out-of-range counting
     on as the daemon runs them (every 4th tick): ``NeuralAgentGroup.step`` (append the
     observations to the ring, stack the windows into the session's input, one run, argmax) or,
     for perception, ``NeuralAgentGroup.forward`` of the group's perception model;
   * ``group_step``: the group's ``step`` as the daemon calls it (perception: forward, soft
     evidence, then the Active Inference step);
   * ``group_tick``: ``GroupRuntime.tick``, the group step plus the simulated world's step;
   * ``copy_transposing`` and ``copy_plain``: numpy alone moving the same batch, from a
     time-major ``(T, N, F)`` array into the ``(N, T, F)`` input (what stacking windows from a
     time-major ring costs), and as one contiguous copy (the floor of any layout that copies).

   ``overhead_ratio`` is the median over rounds of ``neural_step / session_run`` (target
   <= 1.2); ``*_ratio`` the same for every variant. A round's median leaves out the work a
   step does only every few ticks (the range check and the health sample every 4th, the health
   measures every 32nd): ``neural_step_mean_ratio`` is the mean of every call of the step over
   the mean of every call of the session, all rounds (``*_mean_ms``), at the mercy of any call
   the machine delayed; ``neural_step_cadence_ratio`` counts every call robustly: the step
   called ``CYCLE`` (32) x ``--repeats`` / 2 times, alternately with ``session_run``, its median
   at each phase of the cadence (``cadence_phase_ratios``: over the session's median; the phases
   that do the work of every 4th, 8th and 32nd tick stand out) averaged over the phases, over
   the session's median (``*_cadence_ms``). ``paced_*``: ``session_run``,
   ``neural_step`` and ``group_tick`` called in turn once per tick period (``--paced`` calls
   each), so that every call starts cold after a sleep as in the daemon. ``paced_in_tick_*``:
   ``session_run`` and ``neural_step`` paced the same way, each call preceded (untimed) by what
   ``GroupRuntime.tick`` runs between the sleep and the group's step (the world's
   ``episode_start.any()``): the step's cost where the daemon calls it.
5. ``rss_breakdown``: the RSS of a fresh interpreter (``/proc/self/status``) after importing
   numpy, the daemon, onnxruntime, and after loading the policy into a session.

Absolute times drift on a shared machine; compare the ratios, which are measured in one run.

    python benchmarks/bench_neural_daemon.py [--seconds 25] [--agents 1000] [--window W]
        [--hidden H] [--threads 1] [--inference-threads N] [--repeats 300] [--quick]
        [--only daemon,overhead,rss]

``--smoke``: 2 s daemons of 20 agents, 2 rounds of 3 calls, 500 held-out windows: the code path,
for CI (tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))

from edge_agent.config.daemon import load_config  # noqa: E402
from edge_agent.config.profiles import load_profiles  # noqa: E402
from edge_agent.core.health import HEALTH_EVERY  # noqa: E402
from edge_agent.daemon.admission import load_group_model, trusted_keys  # noqa: E402
from edge_agent.daemon.group_runtime import GroupRuntime, make_agents, make_runtime  # noqa: E402
from edge_agent.kinds.neural import net_of  # noqa: E402
from edge_agent.neural.agents import NeuralAgentGroup  # noqa: E402
from edge_agent.neural.health import MAX_HELD_TICKS  # noqa: E402
from edge_agent.neural.perception import PerceptionAifGroup  # noqa: E402
from edge_agent.sim.endpoints import WorldSource  # noqa: E402
from edge_agent.sim.sensors import SensorWorld  # noqa: E402

FEATURES = 8
OVERHEAD_TARGET = 1.2
#: Calls of a whole cadence of a neural group's step: the health sample and the range check every
#: HEALTH_EVERY ticks, held MAX_HELD_TICKS at most (fewer for a wide output) before their measures
#: are taken, the ring written every window length (8 in the README's bundle): CYCLE phases hold
#: every part of the step's work about as often as the daemon's ticks do.
CYCLE = HEALTH_EVERY * MAX_HELD_TICKS
#: The README's policy (``edge-agent-host convert onnx examples/sensor_policy.onnx ...``).
README_POLICY = "README sensor_policy.onnx (window 8, hidden 32)"
README_WINDOW = 8
PERCEPTION_MODEL = "examples/sensor_perception.onnx (window 1, hidden 32)"
PROFILE = "x86-dev"
HOST = Path(sys.executable).with_name("edge-agent-host")


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


# -- machine ------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import onnxruntime

    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
        model = found.group(1).strip() if found else ""
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "bench": "machine",
        "cpu": model,
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


# -- bundles ------------------------------------------------------------------------------------
def host(*args: str | Path) -> tuple[float, str]:
    """Run ``edge-agent-host ARGS``; its wall time and stdout."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(HOST), *map(str, args)], capture_output=True, text=True, check=False, cwd=REPO
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"edge-agent-host {' '.join(map(str, args))} failed:\n{done.stderr}")
    return wall, done.stdout


def convert(
    label: str,
    model: Path,
    *,
    calibration: Path,
    heldout: Path,
    out: Path,
    key: Path,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    wall, stdout = host(
        "convert", "onnx", model, "--calibration", calibration, "--heldout", heldout,
        "--out", out, "--sign", key, "--quiet", "--json", *extra,
    )  # fmt: skip
    report = json.loads(stdout)
    acc, size = report["accuracy"], report["size"]
    return {
        "bench": "convert",
        "model": label,
        "convert_s": round(wall, 3),
        "float_bytes": size["float_bytes"],
        "int8_bytes": size["int8_bytes"],
        "size_ratio": round(size["ratio"], 4),
        "top1_agreement": acc["top1_agreement"],
        "label_accuracy": acc.get("label_accuracy"),
        "max_abs_error": round(acc["max_abs_error"], 4),
        "heldout": acc["heldout_samples"],
        "calibration": report["calibration"]["samples"],
        "mode": report["quantization"]["mode"],
        "bundle_bytes": out.stat().st_size,
        "warnings": report["warnings"],
    }


def make_bundles(tmp: Path, args: argparse.Namespace) -> None:
    """Keys, the window-T policy bundle and the perception bundle in ``tmp``."""
    import onnx

    from edge_agent_host.converter.builders import mlp_onnx, sensor_policy

    keygen_s, _ = host("keygen", "--out", tmp / "keys")
    key = tmp / "keys" / "edge-agent.key"
    if args.window is None and args.hidden is None:  # the README's policy, as it converts it
        row = convert(
            README_POLICY,
            REPO / "examples" / "sensor_policy.onnx",
            calibration=REPO / "examples" / "sensor_calibration.npz",
            heldout=REPO / "examples" / "sensor_heldout.npz",
            out=tmp / "policy.tar",
            key=key,
        )
        emit({**row, "keygen_s": round(keygen_s, 3)})
        args.window, args.model_label = README_WINDOW, README_POLICY
    else:
        args.window = args.window or README_WINDOW
        hidden = args.hidden or 32
        world = SensorWorld(1)
        layers = sensor_policy(world.prototypes, world.noise, args.window, hidden=hidden)
        policy = tmp / f"sensor_policy_w{args.window}.onnx"
        onnx.save(mlp_onnx(layers, args.window, FEATURES), policy)
        X, _ = world.sample_windows(1024, args.window, seed=1)
        np.savez(tmp / "calibration.npz", window=X)
        Xh, _yh = world.sample_windows(args.heldout, args.window, seed=2)
        np.savez(tmp / "heldout.npz", window=Xh, labels=_yh)
        args.model_label = f"sensor policy mlp window={args.window} hidden={hidden}"
        row = convert(
            args.model_label,
            policy,
            calibration=tmp / "calibration.npz",
            heldout=tmp / "heldout.npz",
            out=tmp / "policy.tar",
            key=key,
        )
        emit({**row, "keygen_s": round(keygen_s, 3)})
    emit(
        convert(
            PERCEPTION_MODEL,
            REPO / "examples" / "sensor_perception.onnx",
            calibration=REPO / "examples" / "perception_calibration.npz",
            heldout=REPO / "examples" / "perception_heldout.npz",
            out=tmp / "perception.tar",
            key=key,
            extra=("--output-kind", "observation"),
        )
    )


# -- configs ------------------------------------------------------------------------------------
GROUPS = {
    "grid10": """
[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = {count}
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
""",
    "neural": """
[[groups]]
name = "pickers"
model = {{ type = "bundle", path = "policy.tar" }}
count = {count}
source = {{ type = "sim", world = "sensors" }}
sink = {{ type = "sim" }}
""",
    "perception": """
[[groups]]
name = "namers"
model = {{ type = "builtin", name = "sensors" }}
perception = {{ type = "bundle", path = "perception.tar" }}
count = {count}
source = {{ type = "sim", world = "sensors" }}
sink = {{ type = "sim" }}
""",
}


def write_config(tmp: Path, kind: str, count: int, hz: float) -> Path:
    state = tmp / f"state-{kind}"
    path = tmp / f"{kind}.toml"
    path.write_text(
        f"""[daemon]
profile = "{PROFILE}"
state_dir = "{state}"
status_file = "{state / "status.json"}"
tick_hz = {hz}
log_level = "warning"
trusted_keys_dir = "keys"   # relative to this file
"""
        + GROUPS[kind].format(count=count)
    )
    return path


def profile_overrides(tmp: Path, threads: int | None) -> dict[str, str]:
    """Environment for the daemon: the shipped profiles, and with ``threads`` an operator
    override of the profile's ``inference_threads`` (a copy of it in a profiles.d)."""
    env = {"EDGE_AGENT_PROFILES_DIR": str(REPO / "firmware_profiles")}
    overrides = tmp / "profiles.d"
    overrides.mkdir(exist_ok=True)
    if threads is not None:
        text = (REPO / "firmware_profiles" / f"{PROFILE}.toml").read_text()
        text, n = re.subn(
            r"^inference_threads = \d+$", f"inference_threads = {threads}", text, flags=re.M
        )
        if n != 1:
            raise SystemExit(f"{PROFILE}.toml: no inference_threads line to override")
        (overrides / f"{PROFILE}.toml").write_text(text)
    env["EDGE_AGENT_PROFILES_OVERRIDES"] = str(overrides)
    return env


# -- the daemon ---------------------------------------------------------------------------------
def drain_notify(sock: socket.socket, stop: threading.Event) -> None:
    """Read and drop the daemon's sd_notify datagrams until ``stop`` is set."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return


def run_daemon(cfg: Path, seconds: float, env_extra: dict[str, str]) -> dict[str, Any]:
    """Start the daemon on ``cfg``, wait for READY, run ``seconds``, read the status, SIGTERM."""
    tmp = cfg.parent
    state = tmp / f"state-{cfg.stem}"
    notify = tmp / f"notify-{cfg.stem}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(120)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), **env_extra}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()
    drain = threading.Thread(target=drain_notify, args=(sock, stop), daemon=True)
    try:
        while "READY=1" not in sock.recv(65536).decode():
            pass
        ready_s = time.perf_counter() - start
        # Keep reading as systemd does: a full datagram queue (10 messages) would block the
        # daemon's status notifications, and with them its tick loop, for up to 1 s each.
        drain.start()
        time.sleep(seconds)
        status = json.loads((state / "status.json").read_text())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"daemon on {cfg} exited {proc.returncode}:\n{err.decode()}")
        final = json.loads((state / "status.json").read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
        stop.set()
        if drain.is_alive():
            drain.join()
        sock.close()
    tick = status["tick"]
    groups = [
        {
            "name": g["name"],
            "kind": g["kind"],
            "agents": g["agents"],
            "bytes_per_agent": g["bytes_per_agent"],
            "shared_model_bytes": g["shared_model_bytes"],
            "window": g.get("window"),
            "history_capacity": g["history_capacity"],
            "world": g.get("world"),
        }
        for g in status["groups"]
    ]
    snap = final["snapshots"]["last"] or {}
    return {
        "bench": "daemon",
        "config": cfg.stem,
        "profile": status["profile"],
        "seconds": seconds,
        "ready_s": round(ready_s, 3),
        "ticks": tick["ticks"],
        "missed": tick["missed"],
        "uptime_s": status["uptime_s"],
        "tick_hz": tick["hz"],
        "tick_p50_ms": tick["p50_ms"],
        "tick_p99_ms": tick["p99_ms"],
        "overruns": tick["overruns"],
        "rss_mb": round(status["rss_bytes"] / 2**20, 2),
        "rss_peak_mb": round(status["rss_peak_bytes"] / 2**20, 2),
        "budget_used_mb": round(status["budget"]["used_bytes"] / 2**20, 2),
        "groups": groups,
        "snapshot_bytes": snap.get("bytes"),
        "snapshot_s": snap.get("seconds"),
    }


# -- overhead in process ------------------------------------------------------------------------
def ort_session(
    model: bytes, threads: int | None = None, *, x64: bool | None = None, plain: bool = False
) -> Any:
    """A plain InferenceSession of ``model``: onnxruntime's default options (``threads=None``,
    what a user who never read this project writes) with ``plain`` and one intra-op thread
    (the baseline), or the project backend's options with ``threads`` intra-op threads (1
    inter-op thread, sequential, all graph optimisations, no spinning, and the x86 int8
    precision mode only where the CPU needs it, or as ``x64`` says)."""
    import onnxruntime as ort

    from edge_agent.neural.backends.onnxruntime import x64_quant_precision

    if threads is None:
        if not plain:
            return ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        one = ort.SessionOptions()
        one.intra_op_num_threads = 1
        return ort.InferenceSession(model, sess_options=one, providers=["CPUExecutionProvider"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if x64_quant_precision() if x64 is None else x64:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def build_group(cfg_path: Path, threads: int) -> tuple[GroupRuntime, bytes]:
    """The config's first group as the daemon builds it (signed bundle, profile history)."""
    config = load_config(cfg_path, profiles=load_profiles(REPO / "firmware_profiles"))
    profile = load_profiles(REPO / "firmware_profiles")[config.daemon.profile]
    cfg = config.groups[0]
    loaded = load_group_model(cfg, config, trusted_keys(config))
    agents = make_agents(
        loaded, cfg, cfg.count, history_capacity=cfg.history_capacity_for(profile), threads=threads
    )
    runtime = make_runtime(cfg, agents, loaded)
    net = net_of(loaded)  # a neural or perception group's network
    return runtime, net.model_bytes


def interleave(
    variants: dict[str, Callable[[], object]],
    repeats: int,
    calls: int,
    means: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Per-round median seconds of each variant: ``calls`` calls in a row, order rotated.
    ``means``, when given, gets each variant's per-round mean seconds (which, unlike the median,
    counts the work a step does only every few ticks)."""
    names = list(variants)
    medians: dict[str, list[float]] = {name: [] for name in names}
    times = [0.0] * calls
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = variants[name]
            for i in range(calls):
                start = time.perf_counter()
                fn()
                times[i] = time.perf_counter() - start
            medians[name].append(statistics.median(times))
            if means is not None:
                means.setdefault(name, []).append(statistics.fmean(times))
    return medians


def cadence_medians(
    step: Callable[[], object], session: Callable[[], object], cycles: int, cycle: int
) -> tuple[list[float], float]:
    """Seconds of ``step`` at each phase of its cadence (the median over ``cycles`` of its
    calls at that phase: a call that the machine delayed does not count, a call that does the
    work of every 8th or 32nd tick does, at its phase), and the median seconds of ``session``,
    called alternately with it."""
    phases: list[list[float]] = [[] for _ in range(cycle)]
    base: list[float] = []
    for k in range(cycles * cycle):
        start = time.perf_counter()
        step()
        phases[k % cycle].append(time.perf_counter() - start)
        start = time.perf_counter()
        session()
        base.append(time.perf_counter() - start)
    return [statistics.median(p) for p in phases], statistics.median(base)


def paced(
    variants: dict[str, Callable[[], object]],
    per_variant: int,
    hz: float,
    before: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Median seconds of each variant called once per period of ``hz``, in turn: each call
    starts after the process slept, as a daemon tick does. ``before`` (untimed) runs between
    the sleep and the call: what a tick does before its group steps."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    period = 1.0 / hz
    deadline = time.perf_counter()
    for k in range(per_variant * len(names)):
        deadline += period
        time.sleep(max(0.0, deadline - time.perf_counter()))
        name = names[k % len(names)]
        if before is not None:
            before()
        start = time.perf_counter()
        variants[name]()
        times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def overhead_variants(
    runtime: GroupRuntime, net: NeuralAgentGroup, model: bytes, args: argparse.Namespace
) -> tuple[dict[str, Callable[[], object]], float, np.ndarray]:
    """The variants :func:`overhead` times (the module's docstring), the largest difference
    between the baseline's outputs and the group's own on the same batch, and that batch."""
    agents = runtime.agents
    source = runtime.source
    assert isinstance(source, WorldSource)  # a sim source
    env = source.world
    staged = net.session.input_buffer(net.input_name)
    batch = np.ascontiguousarray(staged, dtype=np.float32).copy()  # (N, T, F) of the last tick
    session = ort_session(model, plain=True)  # one thread, defaults otherwise: the baseline
    default = ort_session(model)  # onnxruntime's defaults, its own thread count
    pinned = ort_session(model, args.threads)  # the backend's options, in a plain session
    exact = ort_session(model, args.threads, x64=True)  # ... with the x86 exact mode forced on
    feed = {session.get_inputs()[0].name: batch}
    ref = session.run(None, feed)[0]
    own = net.session.run({net.input_name: staged})[net.output.name]
    max_diff = float(np.max(np.abs(ref - own)))

    def backend_run() -> None:
        # The session's current input (a window-T group slides it every step: the array
        # staged above is then a view the session no longer reads, and passing it would copy).
        net.session.run({net.input_name: net.session.input_buffer(net.input_name)})

    def tick() -> None:
        runtime.tick(time.monotonic())

    variants: dict[str, Callable[[], object]] = {
        "session_run": lambda: session.run(None, feed),
        "session_run_default_threads": lambda: default.run(None, feed),
        "session_run_backend_options": lambda: pinned.run(None, feed),
        "session_run_x64_precision": lambda: exact.run(None, feed),
        "backend_run": backend_run,
    }
    if isinstance(agents, PerceptionAifGroup):

        def group_step() -> None:
            rest = env.outcomes if agents.perceived < agents.cm.num_modalities else None
            agents.step(source.obs, time.monotonic(), rest)

        variants["neural_step"] = lambda: net.forward(source.obs)
        variants["group_step"] = group_step
    else:
        variants["neural_step"] = lambda: agents.step(source.obs)
    variants["group_tick"] = tick
    # What stacking windows costs in numpy alone, on the same (N, T, F) float32 batch: from a
    # time-major (T, N, F) ring into the (N, T, F) input (32-byte rows), and a plain copy.
    tmajor = np.ascontiguousarray(batch.transpose(1, 0, 2))
    dst = np.empty_like(batch)
    variants["copy_transposing"] = lambda: np.copyto(dst.transpose(1, 0, 2), tmajor)
    variants["copy_plain"] = lambda: np.copyto(dst, batch)
    return variants, max_diff, batch


def overhead(cfg_path: Path, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    runtime, model = build_group(cfg_path, args.threads)
    runtime.warm_up()
    agents = runtime.agents
    source = runtime.source
    assert isinstance(source, WorldSource)  # a sim source
    env = source.world
    for _ in range(2 * args.window):  # fill every window
        runtime.tick(time.monotonic())
    if isinstance(agents, PerceptionAifGroup):
        net: NeuralAgentGroup = agents.perception
    else:
        assert isinstance(agents, NeuralAgentGroup)
        net = agents
    variants, max_diff, batch = overhead_variants(runtime, net, model, args)
    for fn in variants.values():  # warm every path
        fn()
    means: dict[str, list[float]] = {}
    medians = interleave(variants, args.repeats, args.calls, means)
    phases, phase_base = cadence_medians(
        variants["neural_step"], variants["session_run"], max(2, args.repeats // 2), CYCLE
    )
    slow = paced(
        {k: variants[k] for k in ("session_run", "neural_step", "group_tick")},
        args.paced,
        args.tick_hz,
    )

    def tick_preamble() -> None:
        # What GroupRuntime.tick does between the sleep and the group's step: the world's
        # new-episode check (one reduction; its resets are not part of the step timed here).
        env.episode_start.any()

    in_tick = paced(
        {k: variants[k] for k in ("session_run", "neural_step")},
        args.paced,
        args.tick_hz,
        before=tick_preamble,
    )
    base = medians["session_run"]
    base_means = means["session_run"]
    row: dict[str, Any] = {
        "bench": "overhead",
        "kind": kind,
        "agents": net.n_agents,
        "batch_shape": list(batch.shape),
        "threads": args.threads,
        "repeats": args.repeats,
        "calls": args.calls,
        "outputs_max_abs_diff": max_diff,
        "x64_quant_precision": getattr(net.session, "x64_precision", None),
    }
    for name, values in medians.items():
        row[f"{name}_ms"] = round(statistics.median(values) * 1e3, 4)
        if name != "session_run":
            ratios = sorted(v / b for v, b in zip(values, base, strict=True))
            row[f"{name}_ratio"] = round(statistics.median(ratios), 3)
            row[f"{name}_ratio_range"] = [round(ratios[0], 3), round(ratios[-1], 3)]
    # Every call counted: the mean over all rounds, the step's every-4th-tick health and range
    # check and its every-32nd-tick health measures included.
    mean_step, mean_base = statistics.fmean(means["neural_step"]), statistics.fmean(base_means)
    row["neural_step_mean_ms"] = round(mean_step * 1e3, 4)
    row["session_run_mean_ms"] = round(mean_base * 1e3, 4)
    row["neural_step_mean_ratio"] = round(mean_step / mean_base, 3)
    # Every call counted, robustly: the step's median at each phase of its cadence, averaged
    # over the phases (each part of its work as often as in the daemon), over the session's.
    row["cycle_calls"] = CYCLE
    row["cadence_phase_ratios"] = [round(p / phase_base, 2) for p in phases]
    row["neural_step_cadence_ms"] = round(statistics.fmean(phases) * 1e3, 4)
    row["session_run_cadence_ms"] = round(phase_base * 1e3, 4)
    row["neural_step_cadence_ratio"] = round(statistics.fmean(phases) / phase_base, 3)
    for name, value in slow.items():
        row[f"paced_{name}_ms"] = round(value * 1e3, 4)
    row["paced_hz"] = args.tick_hz
    row["paced_calls"] = args.paced
    row["paced_neural_step_ratio"] = round(slow["neural_step"] / slow["session_run"], 3)
    for name, value in in_tick.items():
        row[f"paced_in_tick_{name}_ms"] = round(value * 1e3, 4)
    row["paced_in_tick_neural_step_ratio"] = round(
        in_tick["neural_step"] / in_tick["session_run"], 3
    )
    row["model"] = args.model_label if kind == "neural" else PERCEPTION_MODEL
    row["overhead_ratio"] = row["neural_step_ratio"]
    row["target_overhead<=1.2"] = row["overhead_ratio"] <= OVERHEAD_TARGET
    return row


# -- RSS ----------------------------------------------------------------------------------------
RSS_SCRIPT = """
import json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
out = {"interpreter": rss()}
import numpy
out["numpy"] = rss()
import edge_agent.daemon.service
out["daemon_modules"] = rss()
import onnxruntime
out["onnxruntime"] = rss()
from edge_agent.neural.backends import get_backend
from edge_agent.bundle.loader import load_bundle
bundle = load_bundle(sys.argv[1], trusted_keys=None, require_signature=False)
spec = bundle.manifest.neural
session = get_backend("onnxruntime").load(bundle.file_bytes(spec.model_file), 1)
session.set_batch(int(sys.argv[2]))
session.warm_up()
out["policy_session"] = rss()
print(json.dumps(out))
"""


def rss_breakdown(bundle: Path, agents: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(bundle), str(agents)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    steps = json.loads(done.stdout)
    row: dict[str, Any] = {"bench": "rss_breakdown", "agents": agents}
    last = 0
    for name, value in steps.items():
        row[f"{name}_mb"] = round(value / 2**20, 2)
        row[f"{name}_delta_mb"] = round((value - last) / 2**20, 2)
        last = value
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="daemon run after READY")
    parser.add_argument("--agents", type=int, default=1000, help="agents per group")
    parser.add_argument(
        "--window", type=int, default=None, help="a built policy's window T (default: README's)"
    )
    parser.add_argument(
        "--hidden", type=int, default=None, help="a built policy's hidden units (README's: 32)"
    )
    parser.add_argument("--tick-hz", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, in process")
    parser.add_argument(
        "--inference-threads",
        type=int,
        default=None,
        help="override the profile's inference_threads for the daemons (default: as shipped)",
    )
    parser.add_argument("--heldout", type=int, default=5000, help="held-out windows to convert")
    parser.add_argument("--repeats", type=int, default=300, help="interleaved rounds")
    parser.add_argument(
        "--only", default="daemon,overhead,rss", help="the parts to run (comma-separated)"
    )
    parser.add_argument("--calls", type=int, default=20, help="calls per variant and round")
    parser.add_argument(
        "--paced", type=int, default=20, help="calls per variant at --tick-hz (cold ticks)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the grid10 daemon")
    parser.add_argument("--quick", action="store_true", help="8 s daemons, 10 rounds")
    parser.add_argument("--smoke", action="store_true",
                        help="2 s daemons of 20 agents, 2 rounds of 3 calls: for CI")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeats, args.paced = 8.0, 10, 10
    if args.smoke:
        args.seconds, args.agents, args.repeats, args.calls, args.paced = 2.0, 20, 2, 3, 3
        args.heldout = 500
    emit(machine())
    with tempfile.TemporaryDirectory(prefix="bench-neural-daemon-") as name:
        tmp = Path(name)
        make_bundles(tmp, args)
        env = profile_overrides(tmp, args.inference_threads)
        threads = args.inference_threads
        if threads is None:
            threads = load_profiles(REPO / "firmware_profiles")[PROFILE].inference_threads
        only = set(args.only.split(","))
        kinds = ("neural", "perception") if args.no_baseline else ("grid10", "neural", "perception")
        configs = {k: write_config(tmp, k, args.agents, args.tick_hz) for k in kinds}
        base: dict[str, Any] | None = None
        for kind in kinds if "daemon" in only else ():
            row = run_daemon(configs[kind], args.seconds, env)
            row["inference_threads"] = threads
            if kind == "grid10":
                base = row
            elif base is not None:
                row["tick_p50_vs_grid10"] = round(row["tick_p50_ms"] / base["tick_p50_ms"], 2)
                row["tick_p99_vs_grid10"] = round(row["tick_p99_ms"] / base["tick_p99_ms"], 2)
                row["rss_vs_grid10"] = round(row["rss_mb"] / base["rss_mb"], 2)
            emit(row)
        for kind in ("neural", "perception") if "overhead" in only else ():
            emit(overhead(configs[kind], kind, args))
        if "rss" in only:
            emit(rss_breakdown(tmp / "policy.tar", args.agents))
    return 0


if __name__ == "__main__":
    sys.exit(main())
