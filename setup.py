"""What pyproject.toml cannot declare: the compiled learning tick, built with the C compiler.

``edge_agent.aif.kernels.native._tick`` is a plain shared library that the package loads with
ctypes: no ``PyInit__tick``, no Python.h, so no python3-dev is needed; the wheel is still one per
Python and architecture (``cp313-cp313-linux_aarch64``), as any wheel with a compiled part. Two
units, each with its own flags (tick.c's top comment says why):

- ``tick.c``, the kernel: ``-O3 -std=c11`` and no ``-march`` (the baseline instruction set; on
  x86-64 the file adds an x86-64-v3 version itself, chosen at load time);
- ``tick_vmath.c``, its logs and exps: the same plus ``-ffast-math``, so that gcc calls glibc's
  vector log/exp (libmvec). The library is linked without ``-ffast-math``: gcc then does not add
  crtfastmath.o, which would set flush-to-zero for the whole process that loads it.

The extension is optional: where there is no C compiler the package still installs (and steps
its agents with numpy). Every environment this repository builds has one (scripts/bootstrap.sh,
the Debian roots of scripts/arm64/rootfs.sh, Dockerfile.arm64's builder stage).
"""

from __future__ import annotations

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

NATIVE = "edge_agent/aif/kernels/native"
TICK = "edge_agent.aif.kernels.native._tick"
CFLAGS = ["-O3", "-std=c11"]
VMATH_SOURCE = f"{NATIVE}/tick_vmath.c"
VMATH_CFLAGS = [*CFLAGS, "-ffast-math"]


class BuildTick(build_ext):
    """build_ext, with tick_vmath.c compiled as a unit of its own (its flags) and linked into
    ``_tick``. Inside build_extension, so that a failure there is an optional extension's
    failure too: a warning, and the package without the library."""

    def build_extension(self, ext: Extension) -> None:
        # As build_ext decides whether the library is out of date (its sources and depends).
        stale = self.force or newer_group([*ext.sources, *ext.depends],
                                          self.get_ext_fullpath(ext.name), "newer")
        if ext.name == TICK and stale:
            ext.extra_objects = self.compiler.compile(
                [VMATH_SOURCE], output_dir=self.build_temp, extra_postargs=VMATH_CFLAGS,
                debug=self.debug)
        super().build_extension(ext)


setup(
    ext_modules=[
        Extension(
            TICK,
            sources=[f"{NATIVE}/tick.c"],
            # A change to the vector maths relinks the library (and the sdist carries it).
            depends=[VMATH_SOURCE],
            extra_compile_args=CFLAGS,
            libraries=["m"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildTick},
)
