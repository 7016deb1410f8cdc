"""A command line whose reader went away (``edge_agent/service/closed_stdout.py``): each case a
real child process whose standard output is a pipe with its reader already closed (or open, or a
file), running :func:`guard_stdout` around a small command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.service.closed_stdout import CLOSED_STDOUT_EXIT

REPO = Path(__file__).resolve().parents[3]

COMMAND = """
import argparse, os, sys
from edge_agent.service.closed_stdout import guard_stdout

def run() -> int:
    what = sys.argv[1]
    if what == "help":
        argparse.ArgumentParser(prog="demo").parse_args(["--help"])
    if what == "usage":
        argparse.ArgumentParser(prog="demo").parse_args(["--nope"])
    if what == "other-pipe":  # a broken pipe that is not standard output's
        r, w = os.pipe()
        os.close(r)
        os.write(w, b"x")
    if what == "fails":
        print("half a table")
        return 1
    if what == "quiet":
        return 0
    for i in range(20000):  # more than any buffer: the write itself fails, mid-command
        print(f"line {i}")
    return 0

sys.exit(guard_stdout(run, "demo"))
"""


def child(what: str, stdout: int | None) -> subprocess.CompletedProcess[str]:
    """The command in a child process, its standard output buffered as a command line's is."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", COMMAND, what], stdout=stdout, stderr=subprocess.PIPE,
        text=True, timeout=60, check=False, cwd=REPO, env=env,
    )  # fmt: skip


def closed(what: str) -> subprocess.CompletedProcess[str]:
    read, write = os.pipe()
    os.close(read)
    try:
        return child(what, write)
    finally:
        os.close(write)


@pytest.mark.parametrize("what", ["lines", "help"])
def test_output_nobody_reads_ends_quietly_with_141(what: str) -> None:
    done = closed(what)
    assert (done.returncode, done.stderr) == (CLOSED_STDOUT_EXIT, "")


def test_a_command_that_failed_keeps_its_status() -> None:
    done = closed("fails")  # its line still in the buffer when it failed
    assert (done.returncode, done.stderr) == (1, "")


def test_a_command_that_prints_nothing_keeps_its_status() -> None:
    assert (closed("quiet").returncode, closed("quiet").stderr) == (0, "")


def test_a_usage_error_is_argparse_s() -> None:
    done = closed("usage")
    assert done.returncode == 2
    assert "demo: error: unrecognized arguments: --nope" in done.stderr


def test_another_broken_pipe_is_one_error_line() -> None:
    done = child("other-pipe", subprocess.PIPE)
    assert done.returncode == 1
    assert done.stderr == "demo: [Errno 32] Broken pipe\n"


def test_an_open_output_gets_everything(tmp_path: Path) -> None:
    with (tmp_path / "out").open("w") as out:
        done = child("lines", out.fileno())
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "out").read_text().splitlines()[-1] == "line 19999"
