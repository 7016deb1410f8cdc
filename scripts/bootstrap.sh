# shellcheck shell=bash
# Sourced by scripts/test and scripts/demo: make a venv in .venv with everything the project needs,
# on a fresh Debian/Ubuntu machine, and put it first on PATH. Idempotent and quiet when done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGE_AGENT_VENV:-$ROOT/.venv}"
STAMP="$VENV/.edge-agent-installed"
EXTRAS="${EDGE_AGENT_EXTRAS-dev,onnx,tflite,host}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

apt_install() {
    # Install Debian packages only when a listed command is missing.
    echo "bootstrap: apt-get install $*" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

use_ccache() {
    # The tests that build the project (a fresh copy's bootstrap, the wheel, the README's venv)
    # compile the learning tick about ten times, each the same sources with the same flags:
    # through ccache (Debian's compiler links in /usr/lib/ccache, where it is installed:
    # scripts/test installs it) every one after the first is a hit, about 10 s of CPU less each.
    # Each copy and venv has paths of its own: ccache hashes them relative to the directory it
    # compiles in (CCACHE_BASEDIR=/) and not that directory itself (NOHASHDIR: the object's
    # debug information names the first one's). The cache is outside the checkout.
    if [ -d /usr/lib/ccache ]; then
        export PATH="/usr/lib/ccache:$PATH" CCACHE_BASEDIR=/ CCACHE_NOHASHDIR=true \
            CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-200M}" \
            CCACHE_DIR="${CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccache}"
    fi
}

prebuild_native() {
    # The tests' builds of the compiled tick (tests/support/native_builds.py), made ahead into
    # their cache with the compiler the tests use (ccache first on PATH, as run_pytest puts it:
    # the compiler's path is part of a build's key). A failed build is not this step's verdict:
    # the test that asks for it builds it again and fails with the compiler's errors.
    echo "== the tests' builds of the compiled tick, ahead" >&2
    (use_ccache && python -m tests.support.native_builds >&2) \
        || echo "bootstrap: a build failed; the tests that need it build it and say why" >&2
}

run_pytest() {
    # run_pytest ARGS...: pytest on EDGE_AGENT_TEST_WORKERS processes (default: one and a half
    # per CPU this process may use, at least 3: an integration test spends about half its time
    # waiting on the daemons, brokers and databases it started, so two workers on two CPUs left
    # them idle half the time), each taking the next test when it is free (pytest-xdist's
    # worksteal); 0 runs the tests in this process, one after the other. Replaces the shell.
    local workers="${EDGE_AGENT_TEST_WORKERS:-}"
    if [ -z "$workers" ]; then
        workers="$(python -c 'import os; n = len(os.sched_getaffinity(0)); print(max(3, n + n // 2))')"
    fi
    # The project's own modules compiled once: the suite starts its daemons and command lines as
    # new processes (over a thousand), and each would compile every module it imports again
    # where nothing writes bytecode (PYTHONDONTWRITEBYTECODE=1, a fresh clone): about 0.6 s of
    # CPU per daemon start. Python reads a valid .pyc whatever that variable says.
    python -m compileall -q -j 0 edge_agent tools benchmarks examples tests/support >/dev/null
    use_ccache
    echo "== pytest ($workers workers)" >&2
    if [ "$workers" = 0 ]; then
        exec python -m pytest "$@"
    fi
    exec python -m pytest -n "$workers" --dist worksteal "$@"
}

find_python() {
    for py in python3.11 python3.12 python3.13 python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$py"; return 0
        fi
    done
    return 1
}

PY="$(find_python || true)"
if [ -z "$PY" ]; then
    apt_install python3 python3-venv python3-dev
    PY="$(find_python)" || { echo "bootstrap: Python >= 3.11 is required" >&2; exit 1; }
fi
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
fi
# The install compiles the learning tick (setup.py: edge_agent/aif/kernels/native) with the C
# compiler and the C library's headers; no python3-dev. Without them the package would install
# and learn with numpy, slower: every environment this repository makes has them.
if ! command -v cc >/dev/null 2>&1; then
    apt_install gcc libc6-dev
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
fi
# The stamp lists the extras installed into this venv (one per line). A caller that needs more
# (scripts/demo installs none, scripts/test all) installs the union. What the install is built
# from, newer than the stamp (pyproject.toml; setup.py, the compiled tick's recipe and C sources,
# whose library the editable install builds in place), or that library missing, reinstalls
# everything the venv already had. Only then: pip's editable build compiles the tick afresh every
# time (about 90 s: it is built twice around a profile run, recipe.py), even when nothing changed.
TICK_DIR="$ROOT/edge_agent/aif/kernels/native"
TICK_LIBRARY="$TICK_DIR/_tick$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
built_current() {
    local input
    [ -f "$STAMP" ] && [ -f "$TICK_LIBRARY" ] || return 1
    for input in "$ROOT/pyproject.toml" "$ROOT/setup.py" "$TICK_DIR"/recipe.py \
        "$TICK_DIR"/*.[ch]; do
        if [ "$input" -nt "$STAMP" ]; then return 1; fi
    done
}
have=""
if [ -f "$STAMP" ]; then have="$(tr -s ' \n' ',' <"$STAMP")"; fi
union="$(printf '%s,%s' "$have" "$EXTRAS" | tr ', ' '\n\n' | sed '/^$/d' | sort -u | paste -sd, -)"
missing="$(comm -13 <(printf '%s' "$have" | tr ',' '\n' | sed '/^$/d' | sort -u) \
    <(printf '%s' "$union" | tr ',' '\n' | sed '/^$/d' | sort -u) | paste -sd, -)"
why=""  # what this venv lacks
if [ -f "$STAMP" ] && [ -n "$missing" ]; then why="adding $missing"; fi
if [ -f "$STAMP" ] && ! built_current; then
    why="${why:+$why; }pyproject.toml, setup.py or the compiled tick's sources changed, or its library is missing"
fi
if [ ! -f "$STAMP" ] || [ -n "$why" ]; then
    target="$ROOT"
    [ -n "$union" ] && target="$ROOT[$union]"
    echo "bootstrap: installing edge-agent-runtime${union:+[$union]} into $VENV${why:+ ($why)}" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    # A venv made before the rename holds this checkout as the distribution 'edge-agent' (the
    # name of another project on PyPI since): both would own edge_agent, so the old one goes.
    if "$VENV/bin/python" -m pip show -q edge-agent >/dev/null 2>&1; then
        echo "bootstrap: removing the distribution 'edge-agent' (this project's old name)" >&2
        "$VENV/bin/python" -m pip uninstall -q -y edge-agent >&2
    fi
    # The extension is optional (a machine without a compiler still installs), so pip succeeds
    # without it, and a failed build would leave the previous library in place: here it must be
    # built, from these sources. No stamp otherwise: the next run tries again.
    rm -f "$TICK_LIBRARY"
    "$VENV/bin/python" -m pip install -q -e "$target" >&2
    if [ ! -f "$TICK_LIBRARY" ]; then
        echo "bootstrap: the compiled learning tick was not built (${TICK_LIBRARY#"$ROOT/"});" \
            "the compiler's messages: $VENV/bin/python -m pip install -v --no-deps -e $ROOT" >&2
        exit 1
    fi
    printf '%s\n' "$union" | tr ',' '\n' | sed '/^$/d' >"$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export EDGE_AGENT_ROOT="$ROOT"
