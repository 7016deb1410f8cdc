"""The project's sdist and wheel: the wheel carries the compiled learning tick (setup.py).

From a fresh copy of the checkout, the sdist is built by the project's build backend (setuptools,
as pyproject.toml requires it) and must carry the tick's C sources, headers, recipe and setup.py;
pip then builds the wheel from that sdist, as it would on a device. The wheel is one for this
Python and machine, holds the library and no C source or header; the library exports the kernel
and its layout table, calls glibc's vector log/exp (libmvec: on x86-64, and on aarch64 from glibc
2.38), reports the layout the binding declares (every unit of the recipe was built into it), is
built profile-guided (setup.py: a first build run on the package's own worlds, its counts read by
the second), and loading it in a fresh interpreter leaves its floating point alone: subnormals
stay subnormal (it is linked without -ffast-math, so no crtfastmath.o sets flush-to-zero).
Without a C compiler the wheel still builds, without the library (the extension is optional: its
groups step with numpy). Real builds with the machine's C compiler (scripts/bootstrap.sh installs
gcc), a real ctypes load.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.integration.packaging.test_bootstrap import fresh_copy

# Three builds of the package (the sdist, a wheel without a compiler, the profile-guided wheel:
# two compiles of the tick around its profile run), each minutes of CPU on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

NATIVE = "edge_agent/aif/kernels/native"


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, check=False,
                          env=None if env is None else {**os.environ, **env})
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


def vector_math_expected() -> bool:
    """glibc has vector log/exp for this machine (libmvec): x86-64 since 2.22, aarch64 since
    2.38 (Debian trixie; bookworm's 2.36 has none, and the tick's logs stay scalar there)."""
    if platform.machine() == "x86_64":
        return True
    name, version = platform.libc_ver()
    return name == "glibc" and tuple(map(int, version.split("."))) >= (2, 38)


def test_the_wheel_built_from_the_sdist_carries_the_compiled_tick(tmp_path: Path) -> None:
    for tool in ("git", "cc", "nm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed here: apt-get install git gcc libc6-dev "
                        "(scripts/bootstrap.sh installs the compiler)")
    src = fresh_copy(tmp_path / "src")

    # The sdist, by the build backend pyproject.toml names, with its own requirements.
    requires = tomllib.loads((src / "pyproject.toml").read_text())["build-system"]["requires"]
    backend = tmp_path / "backend"
    run([sys.executable, "-m", "pip", "install", "-q", "--target", str(backend), *requires],
        tmp_path)
    built = run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                 "import setuptools.build_meta as b; print(b.build_sdist(sys.argv[2]))",
                 str(backend), str(tmp_path / "sdist")], src)
    sdist = tmp_path / "sdist" / built.stdout.splitlines()[-1]
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    sources = ("tick.c", "tick_layout.c", "tick_vmath.c", "neural_pass.c", "tick.h",
               "tick_vmath.h", "neural_pass.h", "recipe.py")
    assert {*(f"{NATIVE}/{name}" for name in sources), "setup.py"} <= members

    # Without a C compiler: the wheel, without the library.
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
         str(tmp_path / "no-cc"), str(sdist)], tmp_path, {"CC": str(tmp_path / "no-such-cc")})
    (bare,) = (tmp_path / "no-cc").glob("edge_agent_runtime-*.whl")
    with zipfile.ZipFile(bare) as archive:
        assert not [n for n in archive.namelist() if n.startswith(f"{NATIVE}/_tick")]
        assert {f"{NATIVE}/__init__.py", f"{NATIVE}/binding.py"} <= set(archive.namelist())

    # The wheel from the sdist, as pip builds it for a device: profile-guided (the kernel's
    # units compiled with counters, the package's worlds run, compiled again from the counts).
    log = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w",
               str(tmp_path / "dist"), str(sdist)], tmp_path)
    output = log.stdout + log.stderr
    assert "-fprofile-arcs" in output, output[-3000:]
    assert "-fprofile-use" in output, output[-3000:]
    assert "without a profile" not in output, output[-3000:]
    (wheel,) = (tmp_path / "dist").glob("edge_agent_runtime-*.whl")
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert wheel.name.endswith(f"-{python}-{python}-linux_{platform.machine()}.whl"), wheel.name
    library = f"{NATIVE}/_tick{sysconfig.get_config_var('EXT_SUFFIX')}"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert library in names
        assert not [n for n in names if n.endswith((".c", ".h"))], names
        archive.extract(library, tmp_path / "unpacked")
    path = tmp_path / "unpacked" / library

    symbols = run(["nm", "-D", str(path)], tmp_path).stdout.splitlines()
    defined = {line.split()[-1] for line in symbols if line.split()[-2] in {"T", "i"}}
    assert {"edge_tick", "edge_tick_scratch_doubles", "edge_tick_layout", "edge_neural_observe",
            "edge_neural_argmax"} <= defined, symbols
    vector_logs = [line for line in symbols if "_ZGV" in line and "log" in line]
    assert bool(vector_logs) == vector_math_expected(), symbols

    # Loaded with ctypes in a fresh interpreter: the kernel is there, subnormals survive.
    loaded = run([sys.executable, "-c",
                  "import ctypes, sys; import numpy as np; "
                  "before = np.float64(5e-324) * 1.0 != 0; "
                  "library = ctypes.CDLL(sys.argv[1]); library.edge_tick; "
                  "print(before, np.float64(5e-324) * 1.0 != 0)", str(path)], tmp_path)
    assert loaded.stdout.split() == ["True", "True"], loaded.stdout
    # Loaded by the binding: its layout is the one the binding declares.
    checked = run([sys.executable, "-c",
                   "import sys; from pathlib import Path; "
                   "from edge_agent.aif.kernels.native import binding; "
                   "print(binding.limits(binding.load(Path(sys.argv[1]))) == binding.limits())",
                   str(path)], tmp_path)
    assert checked.stdout.split() == ["True"], checked.stdout
