"""Command blocks of docs/host-tool.md, docs/bundle-format.md and docs/coordination.md, run as
written in the README's venv (the host tool's, with its ``host`` extra:
:mod:`tests.support.readme_venv`), in a directory holding the files they name.

A transcript (``$ command`` lines and their output) is checked line by line for its shape
(tests/support/transcripts.py): the same lines, words and units, with numbers, ids and hashes free.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.coordination.test_coordination_daemons import GRID_GROUP, auction, start_all
from tests.integration.fleet.test_fleet_daemon import FLEET, Node
from tests.support.broker import MosquittoBroker
from tests.support.doc_blocks import doc_block
from tests.support.readme_venv import ReadmeVenv
from tests.support.transcripts import matches, steps

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[3]


def environment(venv: ReadmeVenv, tmp: Path, **extra: str) -> dict[str, str]:
    """A shell with the README's venv activated, its runtime directory in ``tmp``."""
    return venv.env(EDGE_AGENT_RUNTIME_DIR=str(tmp / "run"), **extra)


def host(cwd: Path, *args: str) -> None:
    """A setup step (not part of a block): ``edge-agent-host ARGS`` in ``cwd``."""
    subprocess.run(
        [Path(sys.executable).parent / "edge-agent-host", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=300,
    )


def run_transcript(
    venv: ReadmeVenv,
    block: str,
    cwd: Path,
    *,
    failing: tuple[str, ...] = (),
    host_lines: dict[str, str] | None = None,
) -> None:
    """Each command of ``block`` in ``cwd``: it exits 0 (non-zero for those in ``failing``) and
    prints (stdout and stderr, in order) what the doc shows, in shape. ``host_lines``: output
    lines that depend on this machine's CPU, each as the doc shows it -> the other form the doc
    names beside the transcript; the other form is read as the shown one."""
    env = environment(venv, cwd)
    for step in steps(block):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", step.command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
            check=False,
        )
        if step.command in failing:
            assert done.returncode != 0, f"$ {step.command}\n{done.stdout}"
        else:
            assert done.returncode == 0, f"$ {step.command}\n{done.stdout}"
        output = done.stdout
        for shown, other in (host_lines or {}).items():
            output = output.replace(other, shown)
        problem = matches(step.output, output)
        assert problem is None, f"$ {step.command}\n{problem}"


def test_host_tool_convert_aif_transcript(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    shutil.copy(REPO / "examples" / "tmaze.npz", tmp_path / "tmaze.npz")
    host(tmp_path, "keygen", "--out", "keys", "--name", "release")
    run_transcript(readme_venv, doc_block("docs/host-tool.md", 0), tmp_path)
    assert (tmp_path / "out" / "tmaze.tar").is_file()


def test_host_tool_convert_onnx_transcript(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    """The doc's policy: bench_neural.py's sensor-world MLP, window 32, 256 hidden units; 4,000
    calibration windows and 5,000 held-out ones with labels."""
    import onnx

    from edge_agent.sim.sensors import SensorWorld
    from edge_agent_host.converter.builders import mlp_onnx, sensor_policy

    world = SensorWorld(1)
    layers = sensor_policy(world.prototypes, world.noise, 32, hidden=256)
    onnx.save(mlp_onnx(layers, 32, world.num_features), tmp_path / "policy.onnx")
    X, _ = world.sample_windows(4000, 32, seed=1)
    np.savez(tmp_path / "cal.npz", window=X)
    Xh, yh = world.sample_windows(5000, 32, seed=2)
    np.savez(tmp_path / "held.npz", window=Xh, labels=yh)
    host(tmp_path, "keygen", "--out", "keys", "--name", "release")
    # The int8 kernels line is the CPU's (docs/host-tool.md names both forms): on a host without
    # VNNI it reads the exact mode's.
    exact = (
        "onnxruntime's x86 exact mode (this CPU has no VNNI; a device with VNNI or an ARM "
        "CPU runs faster int8 kernels)"
    )
    native = "native (this CPU's int8 dot products do not saturate: no x86 exact mode needed)"
    run_transcript(
        readme_venv, doc_block("docs/host-tool.md", 1), tmp_path, host_lines={native: exact}
    )
    assert (tmp_path / "out" / "policy.tar").is_file()


def test_bundle_format_command_line_transcript(tmp_path: Path, readme_venv: ReadmeVenv) -> None:
    """``out/grid10.tar`` as "Writing bundles from Python" writes it (A and B of the int8
    grid10 model), unsigned; ``other-keys`` holds another key."""
    from edge_agent.aif.quant import quantize_model
    from edge_agent.bundle.manifest import AifSpec
    from edge_agent.bundle.writer import pack_tar, write_bundle
    from edge_agent.sim.registry import builtin_model

    arrays = quantize_model(builtin_model("grid10")).to_arrays()
    out = tmp_path / "out"
    write_bundle(
        out / "grid10",
        name="grid10",
        version="1.0.0",
        kind="aif",
        arrays={"A.npy": arrays["A0.codes"], "B.npy": arrays["B0.index"]},
        aif=AifSpec(
            num_obs=[100],
            num_states=[100],
            num_controls=[5],
            quant_scheme="logu8-v1",
            arrays={"A": "A.npy", "B": "B.npy"},
        ),
        quantization={"scheme": "logu8-v1", "max_rel_error": 0.011},
    )
    pack_tar(out / "grid10", out / "grid10.tar")
    host(tmp_path, "keygen", "--out", "other-keys", "--name", "other")
    block = doc_block("docs/bundle-format.md", 0)
    run_transcript(
        readme_venv,
        block,
        tmp_path,
        failing=("edge-agent-host verify out/grid10.tar --trusted other-keys",),
    )


@pytest.fixture
def plant3(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[list[Node]]:
    """Two daemons of 100 grid10 agents that bid for "grid" tasks, in the fleet "plant-3"."""
    nodes = [
        Node(tmp_path, mosquitto, f"rover{i}", groups=GRID_GROUP + auction(0.5), telemetry_s=1.0)
        for i in range(2)
    ]
    for node in nodes:  # the doc's fleet instead of the harness's
        text = node.config.read_text()
        assert f'fleet = "{FLEET}"' in text
        node.config.write_text(text.replace(f'fleet = "{FLEET}"', 'fleet = "plant-3"'))
    try:
        start_all(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.close()


def test_coordination_announce_and_list(
    tmp_path: Path, mosquitto: MosquittoBroker, plant3: list[Node], readme_venv: ReadmeVenv
) -> None:
    host(tmp_path, "keygen", "--out", "keys", "--name", "hub")
    env = environment(
        readme_venv,
        tmp_path,
        BROKER="127.0.0.1",
        PORT=str(mosquitto.port),
        K=str(tmp_path / "keys" / "hub.key"),
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", doc_block("docs/coordination.md", 0)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.match(r"announced 2 task\(s\) in \d+ message\(s\)\n", out), out
    # announce --wait: every wave3- task is held, by an agent of one of the two nodes.
    held = set(re.findall(r"^\s*(wave3-\S+)\s.*\b(rover[01])\b", out, flags=re.M))
    assert len({task for task, _ in held}) == 100, out
    # list: both nodes, their ledgers agree, and t1, t2 are held too.
    assert "ledgers agree" in out, out
    assert re.search(r"^\s*t1\s", out, flags=re.M), out
    assert re.search(r"^\s*t2\s", out, flags=re.M), out
    assert "DUPLICATE" not in out


def test_coordination_team_announce_and_list(
    tmp_path: Path, mosquitto: MosquittoBroker, plant3: list[Node], readme_venv: ReadmeVenv
) -> None:
    """docs/coordination.md's team block: a team of three in two roles, six random teams of 2-4
    waited for, and the list with each team's slots and no vacant one."""
    host(tmp_path, "keygen", "--out", "keys", "--name", "hub")
    env = environment(
        readme_venv,
        tmp_path,
        BROKER="127.0.0.1",
        PORT=str(mosquitto.port),
        K=str(tmp_path / "keys" / "hub.key"),
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", doc_block("docs/coordination.md", 1)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.match(r"announced 1 task\(s\) in 1 message\(s\)\n", out), out
    # announce --wait: every slot of the six squad- teams is claimed, with its role.
    claimed = re.findall(
        r"^\s*(squad-\d+)\s+\d+\s+(rover[01])\s+grid\s+\d+\s+role (\d)", out, flags=re.M
    )
    assert {task for task, _, _ in claimed} == {f"squad-{i:04d}" for i in range(6)}, out
    # list: the teams with their slots, all filled; T1's three members in its two roles.
    teams = dict(re.findall(r"^(T1|squad-\d+)\s+\d+\s+(\d+)\s+\d+\s+0 0$", out, flags=re.M))
    assert teams.get("T1") == "3", out
    assert len(teams) == 7, out
    roles = sorted(
        r
        for t, _, r in re.findall(
            r"^\s*(T1)\s+\d+\s+(rover[01])\s+grid\s+\d+\s+"
            r"role (\d)",
            out,
            flags=re.M,
        )
    )
    assert roles == ["0", "0", "1"], out
    assert "ledgers agree" in out, out
    assert "DUPLICATE" not in out
