"""A fork server ("zygote") for the console scripts: each command a real process of its own
that does not start an interpreter and import the command line's world again.

Why: ``tests/integration/command_lines`` runs every subcommand of the four command lines about
250 times, and most of each run was the interpreter starting and importing the command line
and what it imports (numpy, pydantic, cryptography...), a second of CPU each time for nothing
the test checks.

What it is: :class:`Zygote` starts one process, ``PREFIX PYTHON zygote.py FD PROG...``: the
interpreter the scripts name in their ``#!`` line, under the caller's prefix (``setpriv
--bounding-set=...``), in the caller's environment and directory, with standard input
``/dev/null`` and standard output and error pipes, as the commands are started. It loads each
program's ``console_scripts`` entry point from the installed metadata (importing the module and
everything that imports at start) and waits on a Unix socket. For each :meth:`Zygote.run` it
forks a child, which takes the request's three standard streams (file descriptors passed with
``SCM_RIGHTS``, ``socket.send_fds``, and ``dup2``'d onto 0, 1 and 2), its working directory,
its environment and its argv, and then does what the script does: ``sys.argv[0]`` the
program's path, ``sys.path[0]`` its directory, ``sys.exit(main())`` with the entry point's
``main``. The zygote waits for the child (killing it at the request's timeout) and reports its
wait status. The zygote never runs a command itself, so every child starts from the same
imported state, and a command that changes module-level state changes it in its own copy.

Why it still counts as a real process: the command runs in a process of its own with real
file descriptors (the pipes the test reads, or a pipe whose reader is already closed, which is
what ``| head -1`` gives), real signals (the dispositions Python sets at start-up: SIGPIPE
ignored, SIGINT raising KeyboardInterrupt; SIGKILL at a timeout) and a real exit status (the
code it exited with or the signal it died of, from ``waitpid``). It runs the installed entry
point's function, and its end is the interpreter's own: ``SystemExit`` propagates out of this
module's frames to the interpreter, which prints an uncaught exception's traceback, flushes
standard output last (where a broken pipe prints ``Exception ignored`` and exits 120, as for
the script) and runs the ``atexit`` handlers. ``sys.stdout`` is the object the interpreter
made at start-up for a pipe, as the script's is, and writes to fd 1, which is the request's.

What is not the script's, and why that does not matter: the imports happened before the fork
(a command's lazy imports still happen in the child); variables the interpreter reads only at
start-up (``PYTHON*``, ``LANG``, ``LC_*``) cannot change per child, so a request whose values
differ from the zygote's is refused; the child's parent is the zygote and its
``/proc/self/cmdline`` the zygote's (the daemon's state-directory lock records it, to name who
holds a directory). A zygote that holds a thread refuses to fork.

This file is both the client (imported as ``tests.support.zygote``) and the server (run as a
script; it imports nothing but the standard library).
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["Zygote", "ZygoteError"]

#: Environment variables the interpreter reads when it starts, which a child cannot read again.
STARTUP_VARIABLES = ("PYTHON", "LANG", "LC_")
#: The largest request (argv, directory and environment, as JSON).
MAX_REQUEST = 1 << 20


class ZygoteError(RuntimeError):
    """The zygote could not start, refused a request, or went away."""


# ----------------------------------------------------------------------------------- the client
class Zygote:
    """A fork server for the console scripts ``scripts`` (module docstring), started as
    ``prefix`` followed by their interpreter, in ``cwd`` with ``env``."""

    def __init__(
        self,
        scripts: Sequence[Path],
        *,
        prefix: Sequence[str] = (),
        cwd: Path,
        env: Mapping[str, str],
        preload: Sequence[str] = (),
    ) -> None:
        python = interpreter_of(scripts)
        programs = [s.name for s in scripts]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [*prefix, python, __file__, str(theirs.fileno()), *programs, "--", *preload],
                pass_fds=(theirs.fileno(),), cwd=cwd, env=dict(env),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        self.channel = ours

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdout: int | None = None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` (``argv[0]``: the script's path) as a child of the zygote, in ``cwd`` with
        ``env``; standard input ``/dev/null``, standard output the file descriptor ``stdout``
        or else a pipe read into the result, standard error a pipe read into it. As
        ``subprocess.run(..., text=True)``: the return code is ``-N`` for a child a signal N
        killed; a child still running after ``timeout`` seconds is killed (SIGKILL) and
        :class:`subprocess.TimeoutExpired` raised."""
        request = {"argv": list(argv), "cwd": str(cwd), "env": dict(env), "timeout": timeout}
        out_read, err_read = -1, -1
        readers: dict[int, bytearray] = {}
        try:
            passed = [os.open(os.devnull, os.O_RDONLY)]
            try:
                if stdout is None:
                    out_read, out_write = os.pipe()
                    passed.append(out_write)
                else:
                    passed.append(os.dup(stdout))
                err_read, err_write = os.pipe()
                passed.append(err_write)
                readers = {fd: bytearray() for fd in (out_read, err_read) if fd != -1}
                try:
                    socket.send_fds(self.channel, [json.dumps(request).encode()], passed)
                except OSError as gone:  # it ended before reading the request
                    raise ZygoteError(f"the zygote went away:\n{self.close()}") from gone
            finally:  # the child's now: the pipes close when it (and what it started) ends
                for fd in passed:
                    os.close(fd)
            self._reply("pid")
            _read_until_closed(readers)
            done = self._reply("status")
        finally:
            for fd in (out_read, err_read):
                if fd != -1:
                    os.close(fd)
        out = readers[out_read].decode() if stdout is None else ""
        err = readers[err_read].decode()
        if done["timed_out"]:
            raise subprocess.TimeoutExpired(list(argv), timeout, out, err)
        code = os.waitstatus_to_exitcode(done["status"])
        return subprocess.CompletedProcess(list(argv), code, out, err)

    def _reply(self, key: str) -> dict[str, Any]:
        try:
            data = self.channel.recv(MAX_REQUEST)
        except ConnectionResetError:  # it ended with our request unread
            data = b""
        if not data:
            raise ZygoteError(f"the zygote went away:\n{self.close()}")
        reply: dict[str, Any] = json.loads(data)
        if key not in reply:
            raise ZygoteError(f"the zygote refused the request: {reply.get('error', reply)}")
        return reply

    def close(self) -> str:
        """Stop the zygote (it ends when its socket closes); what it wrote to standard error."""
        self.channel.close()
        try:
            _out, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _out, err = self.process.communicate()
        return str(err.decode(errors="replace"))


def interpreter_of(scripts: Sequence[Path]) -> str:
    """The interpreter the console scripts run (their ``#!`` line), the same for all."""
    found = set()
    for script in scripts:
        with script.open("rb") as f:
            first = f.readline().decode().strip()
        if not first.startswith("#!") or " " in first:
            raise ZygoteError(f"{script}: not a console script run by '#!PYTHON': {first!r}")
        found.add(first[2:])
    if len(found) != 1:
        raise ZygoteError(f"the scripts run different interpreters: {sorted(found)}")
    return found.pop()


def _read_until_closed(readers: dict[int, bytearray]) -> None:
    """Read each pipe of ``readers`` into its buffer until every writer closed it."""
    with selectors.DefaultSelector() as selector:
        for fd in readers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _events in selector.select():
                chunk = os.read(key.fd, 65536)
                if chunk:
                    readers[key.fd] += chunk
                else:
                    selector.unregister(key.fd)


# ----------------------------------------------------------------------------------- the server
def serve(channel_fd: int, programs: Sequence[str], preload: Sequence[str]) -> None:
    """Load the programs' entry points and import the ``preload`` modules, then answer
    requests until the caller hangs up."""
    mains: dict[str, Callable[[], Any]] = {
        ep.name: ep.load()
        for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.name in programs
    }
    if missing := sorted(set(programs) - set(mains)):
        raise SystemExit(f"zygote: no console script named {missing} is installed")
    for module in preload:
        importlib.import_module(module)
    # What the imports made stays where it is: a child's collector never walks it, so the child
    # neither copies those pages nor spends its time on them (the gc module's advice for a
    # process that forks without exec).
    gc.collect()
    gc.freeze()
    startup = _startup_variables(os.environ)
    channel = socket.socket(fileno=channel_fd)
    while True:
        data, fds, flags, _address = socket.recv_fds(channel, MAX_REQUEST, 3)
        if not data:
            return  # the caller hung up
        request = json.loads(data)
        problem = None
        if flags & socket.MSG_TRUNC or len(fds) != 3:
            problem = "a request is one message of at most 1 MiB with three file descriptors"
        elif os.path.basename(request["argv"][0]) not in mains:
            problem = f"{request['argv'][0]}: not one of the programs {sorted(mains)}"
        elif _startup_variables(request["env"]) != startup:
            problem = f"the variables read at start-up must be the zygote's: {startup}"
        elif threading.active_count() != 1:
            problem = f"the zygote holds threads {threading.enumerate()}: it may not fork"
        if problem is not None:
            for fd in fds:
                os.close(fd)
            channel.send(json.dumps({"error": problem}).encode())
            continue
        pid = os.fork()
        if pid == 0:
            _become(request, fds, channel, mains)
        for fd in fds:
            os.close(fd)
        channel.send(json.dumps({"pid": pid}).encode())
        timed_out = not _exits_within(pid, request["timeout"])
        if timed_out:
            os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still the child's
        _pid, status = os.waitpid(pid, 0)
        channel.send(json.dumps({"status": status, "timed_out": timed_out}).encode())


def _startup_variables(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(env.items()) if k.startswith(STARTUP_VARIABLES)}


def _exits_within(pid: int, timeout: float) -> bool:
    pidfd = os.pidfd_open(pid)
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def _become(
    request: dict[str, Any],
    fds: list[int],
    channel: socket.socket,
    mains: Mapping[str, Callable[[], Any]],
) -> NoReturn:
    """In the child: the request's streams, directory, environment and argv, then the script's
    ``sys.exit(main())``; its ``SystemExit`` ends the interpreter as the script's does."""
    channel.close()
    for target, fd in enumerate(fds):  # received fds are >= 3: 0, 1 and 2 are open
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(argv[0])
    sys.exit(mains[os.path.basename(argv[0])]())


if __name__ == "__main__":
    # A script's sys.path[0] is its own directory (the venv's bin), not this one's: nothing here
    # may shadow what the programs import.
    sys.path[0] = os.path.dirname(sys.executable)
    _split = sys.argv.index("--")  # zygote.py FD PROG... -- MODULE...
    serve(int(sys.argv[1]), sys.argv[2:_split], sys.argv[_split + 1 :])
