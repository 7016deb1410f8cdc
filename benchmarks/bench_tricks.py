"""What each memory trick of the daemon saves: what it keeps out, let into the daemon's process.

A trick stays only where it saves at least 1 % of the smallest profile's agent budget
(``pi-zero-2w``: 96 MB, so 0.96 MB; docs/memory.md "Memory tricks"). Each probe is a
fresh interpreter that runs the daemon of ``benchmarks/bench_memory.py`` (1,000 grid10 agents at
10 Hz, as ``edge-agent run`` does; MQTT off, or on against a mosquitto this script starts) for
``--seconds``, keeps it (its groups, arrays and modules) once it has stopped, and then does what
the trick avoids (imports what it keeps out, makes what it lets go): ``mb`` is the process's RSS
(``VmRSS``) after, minus before (each after ``gc.collect()`` and ``malloc_trim``), the median of
``--repeats`` probes; ``modules`` the modules it added. What a trick saved that was not an
import (``malloc_trim``, ``PYTHONOPTIMIZE=2``: both under 1 %, gone) was measured by
``bench_memory.py`` on two trees.

    python benchmarks/bench_tricks.py [--repeats 3] [--seconds 5] [--only NAME ...]

``--smoke``: 50 agents, two probes without MQTT, one round: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import CONFIG, MQTT, REPO, start_mosquitto

#: 1 % of pi-zero-2w's memory_budget_mb (firmware_profiles/pi-zero-2w.toml).
THRESHOLD_MB = 0.96


class Trick(NamedTuple):
    """What the daemon would do without the trick: ``setup`` (not counted) then ``action``;
    ``rule``: not a trick but a rule of the house (a part imported when a config names it, a
    layering), measured for what it keeps out, with no 1 % test."""

    mqtt: bool
    action: str
    setup: str = ""
    rule: bool = False


#: The tricks docs/memory.md lists as kept, and two rules. The tricks that measured under 1 %
#: were removed (their rows, measured by this script at commit f2e0ff7, are in docs/memory.md).
TRICKS: dict[str, Trick] = {
    # the config validated in a child process (config/isolated.py): pydantic and the validators
    "pydantic_config": Trick(False, "read_config(CONFIG_PATH)",
                             "from edge_agent.config.daemon import read_config"),
    # footprint.use_builtin_digests: hashlib's OpenSSL implementations
    "openssl_digests": Trick(False, "sys.modules.pop('_hashlib', None); import _hashlib"),
    # footprint.defer_module('ssl'): paho imports ssl
    "ssl": Trick(True, "import ssl; ssl.SSLContext"),
    # footprint.defer_module('urllib.request'): paho imports it for proxy settings
    "urllib_request": Trick(True, "import urllib.request; urllib.request.getproxies"),
    # both stand-ins and the builtin digests at once (OpenSSL is mapped once)
    "openssl_all": Trick(
        True,
        "sys.modules.pop('_hashlib', None); import _hashlib, ssl, urllib.request; "
        "ssl.SSLContext; urllib.request.getproxies",
    ),
    # distribution.py: the clash check without importlib.metadata
    "importlib_metadata": Trick(
        False,
        "import importlib.metadata as md\n"
        "try:\n    md.distribution('edge-agent')\nexcept md.PackageNotFoundError:\n    pass",
    ),
    # arrays.py: distinct() and percentiles() where np.unique and np.percentile ask numpy.ma
    "numpy_ma": Trick(False, "import numpy.ma; numpy.ma.is_masked(numpy.zeros(3))"),
    "numpy_ma_mqtt": Trick(True, "import numpy.ma; numpy.ma.is_masked(numpy.zeros(3))"),
    # snapshots/format.py: the header as JSON, msgspec only to read format v2 or v1
    "msgspec": Trick(False, "import msgspec.msgpack"),
    # sim/uniforms.py, block_maths: numpy.random only for stochastic action selection
    "numpy_random": Trick(False, "import numpy.random; numpy.random.default_rng(0).random(8)"),
    # rule (STYLE 21): cli/, a module per command, the named one imported
    "cli_commands": Trick(
        False, "build_parser()", "from edge_agent.cli import build_parser", rule=True
    ),
    # rule (layering): the kernels take pymdp's constants from aif/constants.py, not the oracle
    "aif_reference": Trick(False, "import edge_agent.aif.reference", rule=True),
}

PROBE = r"""
import ctypes, gc, json, re, sys, time
CONFIG_PATH, SECONDS, AGENTS = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
SETUP, ACTION = sys.argv[4], sys.argv[5]

# What `edge-agent run --config CONFIG_PATH` does (edge_agent/cli/run.py), keeping the daemon.
from edge_agent.daemon.heap import tune_allocator
tune_allocator()
from edge_agent.daemon.footprint import keep_unused_modules_out
keep_unused_modules_out()
import numpy
import edge_agent.cli.run
from edge_agent.config.isolated import read_config_isolated
from edge_agent.daemon.service import Daemon
from edge_agent.service.logs import configure_logging
source = read_config_isolated(CONFIG_PATH)
configure_logging("WARNING")
daemon = Daemon.from_file(source, CONFIG_PATH)
assert daemon.run(duration_s=SECONDS) == 0
# The daemon has stopped (its groups, arrays and modules still held): nothing else runs now.

def rss_mb():
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)  # glibc's free pages back: what is held, not what was
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024

scope = {"sys": sys, "numpy": numpy, "CONFIG_PATH": CONFIG_PATH, "AGENTS": AGENTS}
exec(SETUP, scope)
before, modules = rss_mb(), set(sys.modules)
exec(ACTION, scope)
after = rss_mb()
added = sorted(set(sys.modules) - modules)
print(json.dumps({"mb": after - before, "modules": len(added), "added": added[:12],
                  "mqtt_stack": "edge_agent.fleet.link" in modules}), flush=True)
"""


def probe(name: str, trick: Trick, config: Path, agents: int, seconds: float) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(REPO), EDGE_AGENT_RUNTIME_DIR=str(config.parent / "run"))
    env.pop("NOTIFY_SOCKET", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(config), str(seconds), str(agents), trick.setup,
         trick.action],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120 + seconds, check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"probe {name} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="probes per trick (the median)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the daemon runs")
    parser.add_argument("--agents", type=int, default=1000, help="grid10 agents")
    parser.add_argument("--only", nargs="+", choices=sorted(TRICKS), help="these tricks alone")
    parser.add_argument("--smoke", action="store_true", help="50 agents, two probes: for CI")
    args = parser.parse_args()
    names = args.only or list(TRICKS)
    if args.smoke:
        args.agents, args.repeats, args.seconds = 50, 1, 1.0
        names = ["msgspec", "numpy_random"]
    with tempfile.TemporaryDirectory(prefix="bench-tricks-") as tmp:
        work = Path(tmp)
        needs_broker = any(TRICKS[name].mqtt for name in names)
        broker, port = start_mosquitto(work) if needs_broker else (None, None)
        try:
            configs = {}
            for mqtt in (False, True):
                text = CONFIG.format(state=work / f"state-{mqtt}", agents=args.agents)
                if mqtt:
                    text += MQTT.format(port=port)
                configs[mqtt] = work / f"config-{'mqtt' if mqtt else 'plain'}.toml"
                configs[mqtt].write_text(text)
            for name in names:
                trick = TRICKS[name]
                runs = [
                    probe(name, trick, configs[trick.mqtt], args.agents, args.seconds)
                    for _ in range(args.repeats)
                ]
                mb = statistics.median(float(r["mb"]) for r in runs)  # type: ignore[arg-type]
                print(json.dumps({
                    "bench": "tricks",
                    "trick": name,
                    "mqtt": trick.mqtt,
                    "agents": args.agents,
                    "repeats": args.repeats,
                    "mb": round(mb, 2),
                    "runs_mb": [round(float(r["mb"]), 2) for r in runs],  # type: ignore[arg-type]
                    "modules": runs[0]["modules"],
                    "mqtt_stack": runs[0]["mqtt_stack"],
                    "first_modules": runs[0]["added"],
                    "rule": trick.rule,
                    "at_least_1pct": None if trick.rule else mb >= THRESHOLD_MB,
                }), flush=True)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(10)


if __name__ == "__main__":
    main()
