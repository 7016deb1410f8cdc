"""The README's venv, made the way the README makes it, for the tests that run the docs' blocks.

The README's quick start makes ``.venv`` with ``scripts/demo`` (no extras: what a device needs),
and its "Using it" section first adds the host tool's extra with its own block
(``python -m pip install -e '.[host]'``). Pages that say their commands run "in the README's
venv" (README.md, docs/learning.md, docs/planning.md, the host tool of docs/fleet.md and
docs/security.md) are run in exactly that venv, not in the test suite's, which has every extra.

:func:`readme_venv` builds it once per test run: a fresh copy of the checkout (the files a clone
has: tracked and new, not ignored), ``scripts/demo --duration 6`` in it with nothing of ours on
``PATH`` and no ``EDGE_AGENT_*`` variables (the bootstrap makes ``.venv`` and the daemon runs its
demo, whose output the README describes), then README.md's install block as written, after
``source .venv/bin/activate``. pip's cache makes it quick: about 70 s on a warm cache (the
demo's venv about 30 s, 128 MB; the host extra about 35 s, 260 MB more). With several pytest
workers the first one builds it under a lock and the others wait for it and reuse it; a failed
build fails every test that needs it, with the build's output.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.doc_blocks import ROOT, doc_block

#: What the README's "Using it" says to do first, in the repository root.
ACTIVATE = "source .venv/bin/activate"
DEMO_SECONDS = 6


class ReadmeVenv:
    """A checkout (``root``) whose ``.venv`` the README's commands made; ``demo`` is what
    ``scripts/demo`` printed (the daemon logs to stderr), ``install`` the install block's."""

    def __init__(self, root: Path, demo: str, install: str) -> None:
        self.root = root
        self.venv = root / ".venv"
        self.bin = self.venv / "bin"
        self.demo = demo
        self.install = install

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a shell that sourced ``.venv/bin/activate``: this venv's ``bin``
        first on ``PATH``, nothing of the suite's venv, no ``EDGE_AGENT_*`` variables."""
        return {**clean_env(), "PATH": f"{self.bin}{os.pathsep}{clean_env()['PATH']}",
                "VIRTUAL_ENV": str(self.venv), **extra}  # fmt: skip

    def link_into(self, directory: Path) -> None:
        """``directory/.venv`` -> this venv: a working directory where ``source .venv/bin/
        activate`` works as in the checkout."""
        (directory / ".venv").symlink_to(self.venv)


def clean_env() -> dict[str, str]:
    """This process's environment without the suite's venv and ``EDGE_AGENT_*`` settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("EDGE_AGENT", "VIRTUAL_ENV"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(sys.prefix)
    )
    return env


def fresh_copy(dest: Path) -> Path:
    """The files a clone would have (tracked and new, not ignored): no .venv, no caches."""
    if shutil.which("git") is None:
        raise RuntimeError("git is needed to list the checkout's files: apt-get install git")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        elif src.is_symlink():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(src))
    return dest


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def _build(root: Path) -> ReadmeVenv:
    fresh_copy(root)
    # The tick built once, without its profile run (setup.py: the run and a second compile,
    # minutes of CPU beside a loaded suite); the profile-guided build is the wheel test's
    # (tests/integration/packaging/test_wheel.py) and the suite's own install's.
    env = {**clean_env(), "EDGE_AGENT_TICK_PROFILE": "0"}
    demo = _run(
        ["scripts/demo", "--duration", str(DEMO_SECONDS), "--state-dir", str(root / ".demo")],
        root, env,
    )  # fmt: skip
    if demo.returncode != 0:
        raise RuntimeError(f"scripts/demo failed ({demo.returncode}):\n{demo.stderr[-6000:]}")
    block = doc_block("README.md", 1)  # "Using it"'s install block, before the host tool's
    install = _run(["bash", "-euo", "pipefail", "-c", f"{ACTIVATE}\n{block}"], root, env)
    if install.returncode != 0:
        raise RuntimeError(
            f"README.md's install block failed:\n{block}\n{install.stderr[-6000:]}"
        )
    return ReadmeVenv(root, demo.stdout + demo.stderr, install.stdout + install.stderr)


def readme_venv(shared: Path) -> ReadmeVenv:
    """The README's venv under ``shared`` (a directory every worker of this run sees), built
    by the first caller (a file lock), reused by the others; RuntimeError with the build's
    output when it failed."""
    shared.mkdir(parents=True, exist_ok=True)
    root = shared / "readme-checkout"
    done, failed = shared / "readme-venv.done", shared / "readme-venv.failed"
    with (shared / "readme-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if failed.exists():
                raise RuntimeError(failed.read_text())
            if not done.exists():
                try:
                    built = _build(root)
                except (RuntimeError, OSError, subprocess.SubprocessError) as err:
                    failed.write_text(str(err))
                    raise
                (shared / "readme-venv.demo").write_text(built.demo)
                (shared / "readme-venv.install").write_text(built.install)
                done.write_text("")
                return built
            return ReadmeVenv(
                root,
                (shared / "readme-venv.demo").read_text(),
                (shared / "readme-venv.install").read_text(),
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
