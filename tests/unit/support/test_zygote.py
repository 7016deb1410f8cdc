"""tests/support/zygote.py, the fork server the command-line tests run their commands in: each
command a real process of its own, with the request's streams, directory, environment and argv,
its own exit status or the signal it died of, its own copy of the imported state; a request it
cannot serve as the script would run is refused, and the server stays usable.

The programs here are a probe's: a console script ``zygote-probe`` whose entry point is a small
module written for the test (its distribution's metadata beside it, on the zygote's
``PYTHONPATH``), so that each case asks the child for exactly what it checks. Real processes,
pipes, signals and file descriptors; nothing is mocked.

The zygotes here start under ``env --default-signal=INT`` (GNU coreutils), so that SIGINT's
disposition at start-up is the default whatever this process inherited: a job a
non-interactive shell starts in the background (as ``scripts/test-py313`` started the 3.13
suite before it reset both) has SIGINT ignored, an interpreter started so keeps it ignored, and
a probe interrupting itself would then sleep until its timeout. The test of the inherited
disposition starts the zygote and the script alone under the same prefix, default or ignored,
and compares what the two children have.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.zygote import Zygote, ZygoteError

PROBE = '''
import json, os, signal, sys, threading, time

CALLS = []  # module state: each child starts from the zygote's copy


def main():
    what = sys.argv[1]
    CALLS.append(what)
    if what == "report":
        print(json.dumps({
            "pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "argv": sys.argv,
            "path0": sys.path[0], "probe": os.environ.get("PROBE"), "calls": CALLS,
            "stdin": sys.stdin.read(),
            "sigpipe": signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN,
            "sigint": str(signal.getsignal(signal.SIGINT)),
        }))
        print("to stderr", file=sys.stderr)
        return 0
    if what == "exit":
        return int(sys.argv[2])
    if what == "raise":
        raise ValueError("the probe raised")
    if what == "sleep":
        time.sleep(600)
    if what == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(600)
    if what == "line":
        print("one line")
        return 0
    if what == "flood":
        for _ in range(10_000):
            print("x" * 100)
        return 0
    if what == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(600)
    return 2
'''

#: Started at import by the module preloaded into a zygote that must then refuse to fork.
THREADED = """import threading, time
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
"""

#: The prefix the zygotes start under: SIGINT's start-up disposition the default (module doc).
SIGINT_DEFAULT = ("env", "--default-signal=INT")


def probe_package(top: Path) -> tuple[Path, Path]:
    """The probe's module and distribution metadata in ``top/site``, its console script in
    ``top/bin``: (the site directory, the script)."""
    site, bin_dir = top / "site", top / "bin"
    site.mkdir()
    bin_dir.mkdir()
    (site / "zygote_probe.py").write_text(PROBE)
    (site / "zygote_threaded.py").write_text(THREADED)
    info = site / "zygote_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zygote-probe\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nzygote-probe = zygote_probe:main\n")
    script = bin_dir / "zygote-probe"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom zygote_probe import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    return site, script


def unbuffered_not(env: Any) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}


class Probe:
    """A zygote serving ``zygote-probe`` (``preload``: modules it imports first)."""

    def __init__(
        self,
        top: Path,
        preload: tuple[str, ...] = (),
        prefix: tuple[str, ...] = SIGINT_DEFAULT,
    ) -> None:
        self.site, self.script = probe_package(top)
        self.cwd = top
        # Standard output buffered, as for a pipe without PYTHONUNBUFFERED (the last flush).
        self.env = {
            **unbuffered_not(os.environ), "PYTHONPATH": str(self.site), "PROBE": "zygote's",
        }  # fmt: skip
        self.prefix = prefix
        self.zygote = Zygote([self.script], prefix=prefix, cwd=top, env=self.env, preload=preload)

    def run(self, *args: str, timeout: float = 60, **how: Any) -> subprocess.CompletedProcess[str]:
        how.setdefault("cwd", self.cwd)
        how.setdefault("env", self.env)
        return self.zygote.run([str(self.script), *args], timeout=timeout, **how)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    served = Probe(tmp_path_factory.mktemp("zygote"))
    yield served
    served.zygote.close()


def test_each_command_is_a_process_of_its_own_with_the_request_s_world(
    probe: Probe, tmp_path: Path
) -> None:
    env = {**probe.env, "PROBE": "the request's"}
    first = probe.run("report", cwd=tmp_path, env=env)
    assert (first.returncode, first.stderr) == (0, "to stderr\n")
    seen = json.loads(first.stdout)
    assert seen["ppid"] == probe.zygote.process.pid  # the zygote's child, not this process's
    assert seen["pid"] not in {os.getpid(), probe.zygote.process.pid}
    assert seen["cwd"] == str(tmp_path)
    assert seen["probe"] == "the request's"
    assert seen["argv"] == [str(probe.script), "report"]
    assert seen["path0"] == str(probe.script.parent)  # as for the script: its directory
    assert seen["stdin"] == ""  # /dev/null
    assert seen["sigpipe"]  # Python's start-up dispositions, as the script has them
    # Each child starts from the zygote's imported state: the first's call is not in the second.
    second = json.loads(probe.run("report").stdout)
    assert second["calls"] == ["report"]
    assert second["pid"] != seen["pid"]
    assert second["probe"] == "zygote's"


def test_exit_codes_exceptions_and_signals_are_the_process_s_own(probe: Probe) -> None:
    assert probe.run("exit", "7").returncode == 7
    raised = probe.run("raise")
    assert raised.returncode == 1
    assert raised.stderr.startswith("Traceback (most recent call last):")
    assert raised.stderr.endswith("ValueError: the probe raised\n")
    assert probe.run("signal").returncode == -signal.SIGTERM
    # SIGINT raises KeyboardInterrupt (the zygote started with its default disposition: module
    # doc); uncaught, the interpreter ends by the signal itself.
    interrupted = probe.run("interrupt")
    assert interrupted.returncode == -signal.SIGINT
    assert interrupted.stderr.endswith("KeyboardInterrupt\n")


@pytest.mark.parametrize(
    ("prefix", "handler"),
    [
        (SIGINT_DEFAULT, str(signal.default_int_handler)),
        (("env", "--ignore-signal=INT"), str(signal.SIG_IGN)),
    ],
    ids=["default", "ignored"],
)
def test_sigint_is_as_the_zygote_was_started_as_for_the_script_alone(
    tmp_path: Path, prefix: tuple[str, ...], handler: str
) -> None:
    """The start-up disposition of SIGINT is inherited: raising KeyboardInterrupt when the
    zygote started with the default, ignored when it started ignoring it (a background job of
    a non-interactive shell), as for the script started alone the same way."""
    started = Probe(tmp_path, prefix=prefix)
    try:
        forked = json.loads(started.run("report").stdout)
    finally:
        started.zygote.close()
    alone = script_alone(started)("report", stdout=subprocess.PIPE)
    assert alone.returncode == 0, alone.stderr
    assert forked["sigint"] == json.loads(alone.stdout)["sigint"] == handler


def test_a_command_past_its_timeout_is_killed_and_the_zygote_serves_on(probe: Probe) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        probe.run("sleep", timeout=0.5)
    assert probe.run("exit", "0").returncode == 0


@pytest.mark.parametrize(
    ("what", "code", "said"),
    [("line", 120, "Exception ignored"), ("flood", 1, "Traceback (most recent call last)")],
)
def test_standard_output_may_be_a_pipe_whose_reader_is_gone(
    probe: Probe, what: str, code: int, said: str
) -> None:
    """What ``| head -1`` gives a command: a pipe whose reader is gone. A line left in the
    buffer fails at the interpreter's last flush ('Exception ignored', exit 120), more than a
    buffer fails in ``print`` (a traceback, exit 1): as for the script run on its own."""
    results = []
    for child in (probe.run, script_alone(probe)):
        read, write = os.pipe()
        os.close(read)
        try:
            results.append(child(what, stdout=write))
        finally:
            os.close(write)
    forked, alone = results
    assert (forked.returncode, alone.returncode) == (code, code), forked.stderr + alone.stderr
    assert said in forked.stderr
    assert "BrokenPipeError" in forked.stderr
    assert forked.stderr.splitlines()[-1] == alone.stderr.splitlines()[-1]


def script_alone(probe: Probe) -> Any:
    """The probe's script as a fresh interpreter, the way the commands are started otherwise."""

    def run(*args: str, stdout: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*probe.prefix, str(probe.script), *args], cwd=probe.cwd, env=probe.env,
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60,
            check=False,
        )  # fmt: skip

    return run


def test_requests_it_cannot_serve_as_the_script_would_run_are_refused(
    probe: Probe, tmp_path: Path
) -> None:
    other = tmp_path / "other-program"
    other.write_text(probe.script.read_text())
    with pytest.raises(ZygoteError, match="not one of the programs"):
        probe.zygote.run([str(other), "report"], cwd=probe.cwd, env=probe.env, timeout=60)
    # A variable the interpreter reads only at start-up cannot change per child.
    with pytest.raises(ZygoteError, match="read at start-up"):
        probe.run("report", env={**probe.env, "PYTHONHASHSEED": "1"})
    assert probe.run("exit", "3").returncode == 3  # refusals leave it serving


def test_a_zygote_that_holds_a_thread_refuses_to_fork(tmp_path: Path) -> None:
    threaded = Probe(tmp_path, preload=("zygote_threaded",))
    try:
        with pytest.raises(ZygoteError, match="holds threads"):
            threaded.run("report")
    finally:
        threaded.zygote.close()


def test_programs_it_cannot_load_end_it_with_the_reason(tmp_path: Path) -> None:
    site, script = probe_package(tmp_path)
    missing = script.with_name("not-installed")
    missing.write_text(script.read_text())
    zygote = Zygote([missing], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    with pytest.raises(ZygoteError, match="no console script named \\['not-installed'\\]"):
        zygote.run([str(missing)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                   timeout=60)


def test_scripts_of_different_interpreters_are_refused(tmp_path: Path) -> None:
    _site, script = probe_package(tmp_path)
    other = script.with_name("other")
    other.write_text("#!/usr/bin/python3\n" + script.read_text().split("\n", 1)[1])
    with pytest.raises(ZygoteError, match="different interpreters"):
        Zygote([script, other], cwd=tmp_path, env=os.environ)
