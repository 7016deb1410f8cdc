"""How the compiled tick is built: its sources, headers and flags, the one place ``setup.py``
(the package's library), the tests (a warnings-as-errors build, a sanitized one, the baseline
version) and the benchmarks take them from.

The standard library only: ``setup.py`` loads this file by its path, before the package (or
numpy) can be imported. Two kinds of unit, each with its flags (tick.c's top comment says why):

- the kernel and its layout table (``tick.c``, ``tick_layout.c``), and a neural group's work
  around its model's run (``neural_pass.c``, bound by :mod:`edge_agent.neural.native_pass`):
  :data:`CFLAGS`, ``-O3 -std=c11`` and no ``-march`` (the baseline instruction set; on x86-64
  ``tick.c`` adds an x86-64-v3 version itself, chosen at load time);
- the team award's assignment (``assignment.c``, bound by
  :mod:`edge_agent.coordination.assignment`): :data:`CFLAGS` too (integers only);
- the logs and exps (``tick_vmath.c``): :data:`VMATH_CFLAGS`, the same plus ``-ffast-math``, so
  that gcc calls glibc's vector log/exp (libmvec). The library is linked without it: gcc then
  does not add crtfastmath.o, which would set flush-to-zero for the whole process that loads it.

:func:`build` compiles them into a shared library with the machine's C compiler (``CC``, ``cc``
by default), with flags added for the tests' builds (:data:`WARNINGS`, :data:`SANITIZE`,
:data:`BASELINE_ONLY`).

**Profile-guided** (the package's library, setup.py; :func:`build` with ``profile``): the units
of :data:`CFLAGS` are compiled first with edge counters (:data:`PROFILE_GENERATE`), the library
runs the package's own worlds (:mod:`edge_agent.core.tick_profile`, with the
build's Python and the sources' package: numpy is a build requirement, pyproject.toml), and the
units are compiled again reading the counts (:data:`PROFILE_USE`): gcc then lays out, unrolls
and inlines the tick for the loops the workload ran and as often as it ran them. No arithmetic
changes (no fast-math; no contraction under ``-std=c11``): the same results to the bit, tested.
The logs' and exps' unit is compiled as without a profile (which values its loops give
libmvec's vector variants and which the scalar ``log`` decides their bits).
``EDGE_AGENT_TICK_PROFILE=0`` builds without a profile; where the compiler cannot (not gcc) or
the workload fails, setup.py says why and builds without one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: Where the sources are.
HERE = Path(__file__).resolve().parent
#: The library's module name (``_tick`` plus the interpreter's extension suffix).
NAME = "edge_agent.aif.kernels.native._tick"
#: The kernel's flags: pymdp's arithmetic up to rounding (no fast-math), -O3 for gcc's
#: vectoriser, the baseline instruction set a package ships (no -march).
CFLAGS = ("-O3", "-std=c11")
#: The logs' and exps' flags: fast-math for glibc's vector variants (tick_vmath.c's comment).
VMATH_CFLAGS = (*CFLAGS, "-ffast-math")
#: Each unit with its flags, in link order.
UNITS = (("tick.c", CFLAGS), ("tick_layout.c", CFLAGS), ("tick_vmath.c", VMATH_CFLAGS),
         ("neural_pass.c", CFLAGS), ("assignment.c", CFLAGS))
#: What the units include (a change rebuilds the library).
HEADERS = ("tick.h", "tick_vmath.h", "neural_pass.h", "assignment.h")
#: Linked with the maths library.
LIBRARIES = ("m",)
#: The first build's flags for the profile (each kernel unit's): gcc's edge counters (not its
#: value profiles: those use thread-local storage, which x86-64's target_clones resolvers reach
#: before it is set up), counted by one thread (the workload's).
PROFILE_GENERATE = ("-fprofile-arcs", "-fprofile-update=single")
#: The second build's: the counts read; code the workload never ran (a kind of model or an
#: option it has not) stays optimised as without a profile (``-fprofile-partial-training``).
PROFILE_USE = ("-fprofile-use", "-fprofile-partial-training")
#: ``0`` in the environment: setup.py builds without a profile.
PROFILE_ENV = "EDGE_AGENT_TICK_PROFILE"
#: The workload the profile is counted on (run as ``python -m PROFILE_WORKLOAD LIBRARY``).
PROFILE_WORKLOAD = "edge_agent.core.tick_profile"
#: The warnings build the suite checks: every warning gcc's -Wall -Wextra gives and the ones
#: that catch what a C tick shared with Python gets wrong (shadowed names, an unprototyped or
#: undeclared function, a variable-length array, a cast dropping const, an undefined macro in
#: #if, an implicit double promotion, a frame above 16 KiB: the stack arrays tick.h's limits
#: size), as errors. Not -Wpedantic: before C23, ISO C rejects passing a ``lane *`` where a
#: function reads a ``const lane *`` (a pointer to an array), which tick.c does throughout.
WARNINGS = (
    "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wstrict-prototypes",
    "-Wmissing-prototypes", "-Wmissing-declarations", "-Wvla", "-Wcast-qual", "-Wundef",
    "-Wdouble-promotion", "-Wpointer-arith", "-Wwrite-strings", "-Wformat=2",
    "-Wframe-larger-than=16384",
)
#: The sanitized build (AddressSanitizer and UndefinedBehaviorSanitizer, every report fatal);
#: the process that loads it needs the ASan runtime first (:func:`asan_runtime`).
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g")
#: The kernel's baseline version alone (on x86-64 the package's library would let a CPU with
#: AVX2 take its x86-64-v3 version).
BASELINE_ONLY = ("-DTICK_BASELINE_ONLY",)


def compiler() -> str:
    """The C compiler the builds use (``CC``, ``cc`` by default); a clear error without one."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"building the compiled tick needs a C compiler ({cc!r} not found): "
                           "apt-get install gcc libc6-dev, or set CC")
    return cc


def sources(where: Path = HERE) -> list[Path]:
    """Every file the library is built from (units and headers), in ``where``."""
    return [where / name for name, _ in UNITS] + [where / name for name in HEADERS]


def build(out: Path, *, extra: Sequence[str] = (), where: Path = HERE,
          profile: bool = False) -> Path:
    """The library of the sources in ``where`` at ``out``: each unit compiled with its flags
    and ``extra`` (added to the link too), linked as a shared library; ``profile``: built
    twice, the second time from the counts of the first on the profile workload (the module
    docstring; ``where`` a package's source tree, the workload runs its package). A compiler
    error, or a workload that fails, raises :class:`RuntimeError` with their output."""
    if not profile:
        _build(out, extra, where, ())
        return out
    with tempfile.TemporaryDirectory(prefix="edge-agent-tick-profile-") as counts:
        _build(out, extra, where, (*PROFILE_GENERATE, f"-fprofile-dir={counts}"),
               link=("-fprofile-arcs",))
        why = run_workload(out, where.parents[3])
        if why is not None:
            raise RuntimeError(why)
        _build(out, extra, where, (*PROFILE_USE, f"-fprofile-dir={counts}"))
    return out


def _build(out: Path, extra: Sequence[str], where: Path, profile: Sequence[str],
           link: Sequence[str] = ()) -> None:
    """:func:`build`'s compile and link: the kernel's units (those of :data:`CFLAGS`) with
    ``profile`` added, the link with ``link``."""
    cc = compiler()
    out.parent.mkdir(parents=True, exist_ok=True)
    objects = [out.with_name(f"{out.name}.{Path(name).stem}.o") for name, _ in UNITS]
    for (name, flags), obj in zip(UNITS, objects, strict=True):
        added = profile if flags == CFLAGS else ()
        _run([cc, *flags, *added, *extra, "-fPIC", "-c", "-o", str(obj), str(where / name)])
    _run([cc, "-shared", *extra, *link, "-o", str(out), *map(str, objects),
          *(f"-l{lib}" for lib in LIBRARIES)])
    for obj in objects:
        obj.unlink()


def profiled() -> bool:
    """Whether setup.py builds the library profile-guided (:data:`PROFILE_ENV` is not ``0``)."""
    return os.environ.get(PROFILE_ENV, "1") != "0"


def run_workload(library: Path, root: Path) -> str | None:
    """Run the profile workload on ``library`` (a build with :data:`PROFILE_GENERATE`: its
    counts are written when the process ends) with this Python and the package at ``root`` (a
    source tree first on the path); None when it ran, else why not (with its output)."""
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run([sys.executable, "-m", PROFILE_WORKLOAD, str(library)],
                              capture_output=True, text=True, check=False, timeout=1800,
                              env={**os.environ, "PYTHONPATH": path}, cwd=root)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the profile workload did not run: {error}"
    if done.returncode != 0:
        return (f"the profile workload failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}".rstrip())
    return None


def asan_runtime() -> Path:
    """The compiler's AddressSanitizer runtime, which a process must load first
    (``LD_PRELOAD``) to load a library built with :data:`SANITIZE`."""
    found = subprocess.run([compiler(), "-print-file-name=libasan.so"], capture_output=True,
                           text=True, check=True, timeout=60).stdout.strip()
    if not Path(found).is_file():
        raise RuntimeError(f"the C compiler has no AddressSanitizer runtime ({found!r}): "
                           "apt-get install gcc (its libasan comes with it)")
    return Path(found)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                           f"{done.stdout}{done.stderr}")
