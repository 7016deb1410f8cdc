"""The compiled tick's recipe (edge_agent/aif/kernels/native/recipe.py), the one setup.py builds
the package's library with: its sources build with warnings as errors (every version: the
x86-64-v3 clone and the baseline alone), and the equality suite's cases run clean against its
AddressSanitizer + UBSan build, in a subprocess with the sanitizer's runtime preloaded (a
process must load it first); a build with a write past an array's end fails there, saying so.

The builds need the C compiler (``cc``; ``apt-get install gcc libc6-dev``, which scripts/test
installs) and gcc's libasan (part of gcc): without them these fail with that message."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.aif.kernels.native import binding, recipe
from tests.support import native_builds
from tests.support.native_tick import (
    FROZEN_L2_WORLDS,
    FROZEN_WORLDS,
    SANITIZED_ENV,
    SCOPES,
    SIZES,
    SUITE,
    frozen_l2_sizes,
    frozen_sizes,
    sizes,
)

REPO = Path(__file__).resolve().parents[5]


def test_the_sources_build_with_warnings_as_errors() -> None:
    for name in ("warnings", "baseline"):
        assert "-Werror" in native_builds.BUILDS[name]
        built = native_builds.build(name)  # the compiler's errors, if any, fail here
        assert binding.mismatch(binding.layout(binding.load(built))) is None


def _under_sanitizers(library: Path, *args: str,
                      suite: Path = SUITE) -> subprocess.CompletedProcess[str]:
    """The equality cases of ``suite`` (default: the compiled tick's equality suite; ``args``:
    pytest's selection), run against ``library`` in a process that loads the ASan runtime
    first (not captured: a report comes as the process ends)."""
    env = {**os.environ, SANITIZED_ENV: str(library),
           "LD_PRELOAD": str(recipe.asan_runtime()),
           # CPython frees nothing at exit: leaks are not the tick's
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=97",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-o", "addopts=", str(suite.relative_to(REPO)), *args],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=1200)


def _assert_clean(done: subprocess.CompletedProcess[str], passed: int) -> None:
    """The sanitized run passed exactly ``passed`` cases and no sanitizer reported."""
    report = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, report
    assert re.search(rf"\b{passed} passed\b", done.stdout), report
    assert "Sanitizer" not in done.stderr, report


# The sanitized build is a minute or more of one core's CPU; on a loaded machine, more.
@pytest.mark.timeout(1800)
def test_the_equality_cases_run_clean_under_address_and_undefined_behaviour_sanitizers() -> None:
    library = native_builds.build("sanitized")
    symbols = subprocess.run(["nm", "-D", str(library)], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert "__asan_report" in symbols
    assert "__ubsan_handle" in symbols
    done = _under_sanitizers(library, "-k", "sanitized")
    # each world and agents: every scope learning, and a frozen group at either precision
    # planning one-step policies, and two-step ones (three worlds); a frozen model's likelihood
    # table against the product and its logs; its first-step table against the step made,
    # three worlds (2, 3 and 4 factors); the scratch's Python twin against the library's, each
    # world; the outcomes' twins summed once against every outcome summed (per agent, shared
    # float64 and int8, frozen two-step); the vector log's bits at every whole-lane offset; a
    # shared pass's likelihood tables made once a tick against each agent's rows (four worlds,
    # float64 and int8); each agent's table made in the lanes its counts' expectation to the
    # bit (four worlds); the vector exp's and log's bits where the iteration's softmaxes take
    # them; each agent's q_pi its G's softmax to the bit (three worlds); the pass's logs of
    # x + 1e-16, quads of zeros among them, tick_log's bits
    cases = (sum(len(sizes(world, "sanitized")) for world in SIZES) * len(SCOPES)
             + sum(len(frozen_sizes(world, "sanitized")) for world in FROZEN_WORLDS) * 2 + 1
             + len(FROZEN_L2_WORLDS) * len(frozen_l2_sizes("sanitized")) * 2
             + 3 + len(SIZES) + 4 + 1 + 4 * 2 + 4 + 1 + 3 + 1)
    _assert_clean(done, cases)


#: The groups' compiled passes learning ``B`` (tests/unit/core/test_native_pass.py), 13 agents
#: (a whole block of 8 and a part), each scope and precision: per agent and shared float64, and
#: shared int8 (each column rounded through its codes, ``quantise_b``), on grid10's ``reach``
#: prior (every move's columns learned each tick); and the T-maze's int8 shared ``pA`` (each
#: column of ``A`` rounded, ``quantise_columns``; the surprise under ``A_float``), 13 agents.
PASS_SUITE = REPO / "tests" / "unit" / "core" / "test_native_pass.py"
PASS_CASES = ("(transitions_is_the_numpy_stages and 13-reach-False-grid10)"
              " or (int8_shared_pa_group_s_pass and 13)")


# The sanitized build is a minute or more of one core's CPU; on a loaded machine, more.
@pytest.mark.timeout(1800)
def test_the_groups_passes_learning_transitions_run_clean_under_the_sanitizers() -> None:
    done = _under_sanitizers(native_builds.build("sanitized"), "-k", PASS_CASES,
                             suite=PASS_SUITE)
    _assert_clean(done, 4)


#: Health measured in the pass (tests/unit/core/test_health_in_tick.py): 13 agents (a block
#: and a part), each world and precision, the prior kept; the T-maze int8 of 1,000, the
#: pass alone and the group's health; and two learning passes of 13 T-maze agents (each its own
#: ``pA``, a shared int8 ``pA``: measured from the state once the tick's tables followed their
#: update); the sample's fold (fold_measures) of 13 T-maze agents, frozen in each precision and
#: those two learning passes, with a preference and without.
HEALTH_SUITE = REPO / "tests" / "unit" / "core" / "test_health_in_tick.py"
HEALTH_CASES = ("(kept and 13) or (kept and tmaze and int8 and (1000 or large)) or "
                "(learning and tmaze and 13 and (per_agent or int8)) or "
                "(folds and frozen and tmaze and 13)")


# The sanitized build is a minute or more of one core's CPU; on a loaded machine, more.
@pytest.mark.timeout(1800)
def test_health_measured_in_the_pass_runs_clean_under_the_sanitizers() -> None:
    done = _under_sanitizers(native_builds.build("sanitized"), "-k", HEALTH_CASES,
                             suite=HEALTH_SUITE)
    _assert_clean(done, 18)


# The sanitized build is a minute or more of one core's CPU; on a loaded machine, more.
@pytest.mark.timeout(1800)
def test_a_write_past_an_array_s_end_fails_under_the_sanitizers(tmp_path: Path) -> None:
    """The sanitized run catches what it is there for: a build whose write-back puts each
    agent's policy posterior one agent later (the last agent's past the array's end)."""
    where = tmp_path / "src"
    where.mkdir()
    for source in recipe.sources():
        shutil.copy(source, where / source.name)
    kernel = (where / "tick.c").read_text()
    good = "state_put_block_vm(st->q_pi, first, q_pi, P, count, f32, vm);"
    assert good in kernel
    (where / "tick.c").write_text(kernel.replace(
        good, "state_put_block_vm(st->q_pi, first + 1, q_pi, P, count, f32, vm);"))
    broken = native_builds.build("sanitized", extra=("-O1",), where=where)
    done = _under_sanitizers(broken, "-x", "-k", "tmaze-A1-n13-per_agent-sanitized")
    assert done.returncode == 97, done.stdout[-2000:] + done.stderr[-4000:]
    assert "AddressSanitizer: heap-buffer-overflow" in done.stderr


#: The team award's compiled assignment against its Python twin (random sparse instances, ties,
#: roles sharing edge lists, rows with no path, teams taken back, a formation's size).
ASSIGNMENT_SUITE = REPO / "tests" / "unit" / "coordination" / "test_assignment_native.py"


# The sanitized build is a minute or more of one core's CPU; on a loaded machine, more.
@pytest.mark.timeout(1800)
def test_the_team_award_s_assignment_runs_clean_under_the_sanitizers() -> None:
    done = _under_sanitizers(native_builds.build("sanitized"), suite=ASSIGNMENT_SUITE)
    report = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, report
    assert re.search(r"\b407 passed\b", done.stdout), report
    assert "Sanitizer" not in done.stderr, report


def _tick_hashes(library: Path, ticks: int = 40) -> list[str]:
    """tests/support/tick_hashes.py's lines for ``library`` (learning groups of every scope and
    frozen int8 groups planning one and two steps, at 1 to 1,000 agents)."""
    done = subprocess.run([sys.executable, "tests/support/tick_hashes.py", str(library),
                           str(ticks)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, check=False, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout.splitlines()


# The profiled build is two compiles around the workload's run (about a minute and a half of
# one core), the plain one a compile: more on a loaded machine.
@pytest.mark.timeout(1800)
def test_the_profile_guided_library_steps_bit_for_bit_as_the_plain_one() -> None:
    profiled, plain = native_builds.build("profiled"), native_builds.build("plain")
    # the counts were read: gcc laid out the same sources and flags otherwise
    assert profiled.read_bytes() != plain.read_bytes()
    assert binding.mismatch(binding.layout(binding.load(profiled))) is None
    lines = _tick_hashes(profiled)
    # (all but the three-factor world's two-step plans: 324 policies, above the library's 64)
    assert sum(line.endswith(" native") for line in lines) == len(lines) - 4 == 76, lines
    assert lines == _tick_hashes(plain)


def test_a_profile_workload_that_cannot_run_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-library.so"
    why = recipe.run_workload(missing, REPO)
    assert why is not None
    assert why.startswith("the profile workload failed (1)")
    assert str(missing) in why


def test_the_profile_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(recipe.PROFILE_ENV, raising=False)
    assert recipe.profiled()
    monkeypatch.setenv(recipe.PROFILE_ENV, "0")
    assert not recipe.profiled()
