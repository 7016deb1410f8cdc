"""What pyproject.toml cannot declare: the compiled learning tick, built with the C compiler.

``edge_agent.aif.kernels.native._tick`` is a plain shared library that the package loads with
ctypes: no ``PyInit__tick``, no Python.h, so no python3-dev is needed; the wheel is still one per
Python and architecture (``cp313-cp313-linux_aarch64``), as any wheel with a compiled part. Its
sources, headers and flags are ``edge_agent/aif/kernels/native/recipe.py``'s (the tests and the
benchmarks build it from the same recipe), loaded here by its path: the package cannot be
imported before it is built. Each unit is compiled with its own flags (the logs and exps with
``-ffast-math``, the rest without) through setuptools' compiler, so that a packager's
``CFLAGS``, ``CPPFLAGS`` and ``LDFLAGS`` (scripts/arm64/rootfs.sh's Debian flags) apply to all.

The extension is optional: where there is no C compiler the package still installs (and steps
its agents with numpy). Every environment this repository builds has one (scripts/bootstrap.sh,
the Debian roots of scripts/arm64/rootfs.sh, Dockerfile.arm64's builder stage).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError
from setuptools.modified import newer_group

NATIVE = "edge_agent/aif/kernels/native"


def _recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "edge_agent_tick_recipe", Path(__file__).resolve().parent / NATIVE / "recipe.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECIPE = _recipe()
#: The units compiled with the extension's own flags, and the others with theirs.
KERNEL = [f"{NATIVE}/{name}" for name, flags in RECIPE.UNITS if flags == RECIPE.CFLAGS]
OTHERS = [(f"{NATIVE}/{name}", flags) for name, flags in RECIPE.UNITS
          if flags != RECIPE.CFLAGS]


class BuildTick(build_ext):
    """build_ext, with the units of other flags (tick_vmath.c) compiled each with its own and
    linked into ``_tick``, and the kernel's units built profile-guided (recipe.py: compiled with
    counters, the library run on the package's own worlds, compiled again from the counts;
    ``EDGE_AGENT_TICK_PROFILE=0``: once, without). Inside build_extension, so that a failure
    there is an optional extension's failure too: a warning, and the package without the
    library. A profile that cannot be made (a compiler other than gcc, the workload failing)
    leaves the library built without one, with a warning that says why."""

    def build_extension(self, ext: Extension) -> None:
        # As build_ext decides whether the library is out of date (its sources and depends).
        stale = self.force or newer_group([*ext.sources, *ext.depends],
                                          self.get_ext_fullpath(ext.name), "newer")
        if ext.name != RECIPE.NAME or not stale:
            super().build_extension(ext)
            return
        ext.extra_objects = [
            obj for source, flags in OTHERS
            for obj in self.compiler.compile([source], output_dir=self.build_temp,
                                             extra_postargs=list(flags), debug=self.debug)]
        if RECIPE.profiled():
            why = self._build_profiled(ext)
            if why is None:
                return
            self.warn(f"building the compiled tick without a profile: {why}")
        self._build_with(ext, [])

    def _build_with(self, ext: Extension, profile: list[str], link: tuple[str, ...] = ()) -> None:
        """The library built afresh, the kernel's units with ``profile`` added to their flags."""
        ext.extra_compile_args = [*RECIPE.CFLAGS, *profile]
        ext.extra_link_args = list(link)
        force, self.force = self.force, True
        try:
            super().build_extension(ext)
        finally:
            self.force = force

    def _build_profiled(self, ext: Extension) -> str | None:
        """The library built from the counts of a first build on the profile workload; None
        when it was, else why not."""
        counts = Path(self.build_temp).resolve() / "tick-profile"
        shutil.rmtree(counts, ignore_errors=True)
        try:
            self._build_with(ext, [*RECIPE.PROFILE_GENERATE, f"-fprofile-dir={counts}"],
                             ("-fprofile-arcs",))
            why = RECIPE.run_workload(Path(self.get_ext_fullpath(ext.name)).resolve(),
                                      Path(__file__).resolve().parent)
            if why is not None:
                return why
            self._build_with(ext, [*RECIPE.PROFILE_USE, f"-fprofile-dir={counts}"])
        except (CompileError, LinkError) as error:
            return f"the compiler could not build it profile-guided: {error}"
        return None


setup(
    ext_modules=[
        Extension(
            RECIPE.NAME,
            sources=KERNEL,
            # A change to a header or to the other units relinks the library (and the sdist
            # carries them).
            depends=[f"{NATIVE}/{name}" for name in RECIPE.HEADERS]
            + [source for source, _ in OTHERS],
            extra_compile_args=list(RECIPE.CFLAGS),
            libraries=list(RECIPE.LIBRARIES),
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildTick},
)
