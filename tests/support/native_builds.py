"""The tests' builds of the compiled tick, from its recipe (edge_agent/aif/kernels/native/
recipe.py: the sources and flags setup.py builds the package's library with), each with the
recipe's flags for it added; cached under ``$EDGE_AGENT_NATIVE_BUILDS`` when set (.ci/run keeps
it outside the clone, as pip's and ccache's caches), else ``${EDGE_AGENT_BENCH_CACHE:-.cache}/
native-builds``, by what it is built from (the sources' bytes, the flags, the compiler and its
version), so a run builds only what changed. ``python -m tests.support.native_builds`` makes
every build of :data:`BUILDS` of the package's sources ahead of the tests (.ci/run does, while
the root stages leave a core idle); a test that asks for one then finds it, or builds it itself
and fails with the compiler's errors. They need the C compiler (``cc``; ``apt-get install gcc
libc6-dev``, which scripts/test installs): without one the recipe's error says so, and the test
fails with it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from edge_agent.aif.kernels.native import recipe

REPO = Path(__file__).resolve().parents[2]

#: The builds by name: the recipe's flags each adds.
BUILDS: dict[str, tuple[str, ...]] = {
    # The recipe alone (the tests' changed sources, with their own flags after).
    "plain": (),
    # Warnings as errors, as the package's library is built otherwise (its x86-64-v3 clone too).
    "warnings": recipe.WARNINGS,
    # The kernel's baseline version alone, warnings as errors too.
    "baseline": (*recipe.WARNINGS, *recipe.BASELINE_ONLY),
    # AddressSanitizer and UBSan (loaded only with the ASan runtime preloaded), the kernel's
    # baseline version alone: the x86-64-v3 clone is the same source, and instrumenting both
    # doubled the build (gcc 14 at -O3: about 80 s of CPU for tick.c, more than a loaded CI
    # run's test timeout; the clone is checked by the equality tests without sanitizers).
    "sanitized": (*recipe.SANITIZE, *recipe.BASELINE_ONLY),
    # Profile-guided, as setup.py builds the package's library (the recipe's flags, built twice
    # around the profile workload's run).
    "profiled": (),
}
#: The builds made profile-guided (recipe.build's ``profile``).
PROFILED = frozenset({"profiled"})


def cache_dir() -> Path:
    kept = os.environ.get("EDGE_AGENT_NATIVE_BUILDS")
    if kept:
        return Path(kept)
    return Path(os.environ.get("EDGE_AGENT_BENCH_CACHE", str(REPO / ".cache"))) / "native-builds"


def build(name: str, *, extra: Sequence[str] = (), where: Path = recipe.HERE) -> Path:
    """The library of build ``name`` (:data:`BUILDS`) of the sources in ``where``, with
    ``extra`` flags after the build's (built once per sources, flags and compiler)."""
    flags = (*BUILDS[name], *extra)
    cc = recipe.compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True,
                             timeout=60).stdout
    key = hashlib.sha256(b"\0".join([
        *(path.read_bytes() for path in recipe.sources(where)), repr(recipe.UNITS).encode(),
        " ".join(flags).encode(), str(shutil.which(cc)).encode(), version.encode(),
    ])).hexdigest()[:16]
    out = cache_dir() / f"tick-{name}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # One build per key at a time: another worker that needs the same library waits for this
    # one's instead of compiling it again beside it (two sanitized builds at once, each minutes
    # of CPU on a loaded machine, ran past the tests' timeout).
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.so")
            recipe.build(tmp, extra=flags, where=where, profile=name in PROFILED)
            tmp.replace(out)  # atomic: a reader never sees a part-written library
            prune(name, keep=out)
    return out


#: How many libraries of one build name a cache keeps (the newest; each is 2-9 MB): a cache
#: outside the clone (.ci/run's) otherwise gains one a build at every change of the C sources.
KEPT_PER_BUILD = 4


def prune(name: str, *, keep: Path) -> list[Path]:
    """Remove build ``name``'s libraries but ``keep`` and the newest others, up to
    :data:`KEPT_PER_BUILD` in all (a process that loaded one keeps its mapping); the removed."""
    others = sorted((path for path in cache_dir().glob(f"tick-{name}-*.so")
                     if path != keep and ".tmp." not in path.name),
                    key=lambda path: path.stat().st_mtime, reverse=True)
    removed = others[KEPT_PER_BUILD - 1:]
    for path in removed:
        path.unlink(missing_ok=True)
        path.with_suffix(".lock").unlink(missing_ok=True)
    return removed


def build_all() -> list[Path]:
    """Every build of :data:`BUILDS` of the package's sources (each made unless cached)."""
    return [build(name) for name in BUILDS]


if __name__ == "__main__":
    for library in build_all():
        print(library)
