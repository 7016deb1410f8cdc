"""A command line whose reader went away: ``edge-agent-hub rollout status | head -2``.

Python ignores SIGPIPE, so writing to a pipe whose reader closed raises :class:`BrokenPipeError`
wherever the output happens to be flushed (a ``print`` deep in a command, or the interpreter's
last flush at exit, which then prints ``Exception ignored ... BrokenPipeError`` and exits 120).
:func:`guard_stdout` is the one place the four command lines (``edge-agent``, ``edge-agentd``,
``edge-agent-host``, ``edge-agent-hub``) handle it: it runs the command, flushes its output
itself, and when standard output's reader is gone it points standard output at ``/dev/null``
(``os.dup2``, so that nothing is left to fail at exit) and returns :data:`CLOSED_STDOUT_EXIT`,
quietly: the reader chose to stop reading, nothing went wrong that a line could explain.

A broken pipe that is not standard output's (a subprocess, a socket) is not hidden: it is one
line on standard error and exit status 1, as any failed operation. A command line's own handler
of ``OSError`` lets :class:`BrokenPipeError` through to here.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["CLOSED_STDOUT_EXIT", "guard_stdout", "stdout_closed"]

CLOSED_STDOUT_EXIT: Final = 141
"""The exit status of a command whose standard output's reader closed: 128 + SIGPIPE (13), what
the shell reports for ``cat`` or ``grep`` stopped the same way, so that a script with ``set -o
pipefail`` treats ours as it treats them, and a status none of the command lines uses for
anything else (1: the operation failed, 2: a bad configuration or usage, 3 and up: a command's
own outcomes)."""


def stdout_closed() -> bool:
    """True when standard output is a pipe or socket whose reader is gone (poll says it is in
    error or hung up); False for an open one, a file or a terminal."""
    try:
        fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _fd, mask in events)


def _silence_stdout() -> None:
    """Standard output to ``/dev/null``: what is still buffered then flushes there at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def guard_stdout(run: Callable[[], int], prog: str) -> int:
    """``run()``'s exit status, its output flushed; :data:`CLOSED_STDOUT_EXIT` when standard
    output's reader went away meanwhile (module docstring) and ``run`` had not failed already.
    ``SystemExit`` (argparse's ``--help`` and usage errors) passes through, its output flushed
    first, unless it is a success whose output went nowhere (``--help | head -1``: 141 too). A
    broken pipe that is not standard output's is one line, ``prog: problem``, exit 1.
    """
    status: int | None = None
    try:
        try:
            status = run()
        except SystemExit as done:
            sys.stdout.flush()
            # argparse swallows the error of writing --help or --version; it exits 0.
            if done.code in (0, None) and stdout_closed():
                _silence_stdout()
                return CLOSED_STDOUT_EXIT
            raise
        sys.stdout.flush()
    except BrokenPipeError as err:
        if not stdout_closed():
            print(f"{prog}: {err}", file=sys.stderr)
            return 1
        _silence_stdout()
        return status or CLOSED_STDOUT_EXIT
    return status
