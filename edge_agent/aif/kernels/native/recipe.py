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
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


def build(out: Path, *, extra: Sequence[str] = (), where: Path = HERE) -> Path:
    """The library of the sources in ``where`` at ``out``: each unit compiled with its flags
    and ``extra`` (added to the link too), linked as a shared library. A compiler error raises
    :class:`RuntimeError` with the compiler's output."""
    cc = compiler()
    out.parent.mkdir(parents=True, exist_ok=True)
    objects = [out.with_name(f"{out.name}.{Path(name).stem}.o") for name, _ in UNITS]
    for (name, flags), obj in zip(UNITS, objects, strict=True):
        _run([cc, *flags, *extra, "-fPIC", "-c", "-o", str(obj), str(where / name)])
    _run([cc, "-shared", *extra, "-o", str(out), *map(str, objects),
          *(f"-l{lib}" for lib in LIBRARIES)])
    for obj in objects:
        obj.unlink()
    return out


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
