"""Run a real mosquitto for tests: free loopback port, generated config, persistence off.

``MosquittoBroker.start()`` waits until the port accepts connections; ``kill()`` is SIGKILL (a
crash: no will is published, retained messages are lost with persistence off); ``stop()`` is
SIGTERM; ``restart()`` kills and starts again on the same port. The broker's log goes to
``workdir/mosquitto-N.log`` (one per start) and its tail is included in start-up errors.
``config_file`` runs a configuration written elsewhere (``edge-agent-host broker init``) as it is;
``reload()`` sends it SIGHUP.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

INSTALL_HINT = "install it: apt-get install mosquitto (scripts/test does this)"


class MosquittoMissingError(RuntimeError):
    pass


def find_mosquitto() -> str:
    """Path of the mosquitto binary (also looked up in /usr/sbin, which is not always on PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MosquittoMissingError(f"mosquitto not found; {INSTALL_HINT}")
    return found


#: The lowest port :func:`free_port` hands out; it stays below the kernel's ephemeral range.
LOWEST_PORT = 10000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (the source ports of outgoing
    connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port nothing listens on, **below the ephemeral range**. A client that retries
    a server the test stopped must be refused, not connected to itself: when nothing listens on
    a port of the ephemeral range, the kernel may pick that very port as the retry's source
    port, and the connection is a TCP self-connect (the client reads its own CONNECT, or its own
    TLS ClientHello; paho then drops the half-made TLS socket unclosed). The kernel never picks
    a source port outside the range, so a server's port there cannot be one."""
    high = _ephemeral_low()
    if high - LOWEST_PORT < 1000:  # a range set unusually low: the kernel's choice, as before
        candidates: list[int] = [0]
    else:
        candidates = random.Random().sample(range(LOWEST_PORT, high), 64)
    for candidate in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port: int = s.getsockname()[1]
            return port
    raise RuntimeError(f"no free loopback port among 64 tried in {LOWEST_PORT}-{high - 1}")


class MosquittoBroker:
    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: str = "",
        certfile: Path | None = None,
        keyfile: Path | None = None,
        users: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> None:
        """``certfile``/``keyfile`` make the listener TLS; ``users`` turns anonymous access off;
        ``config_file`` replaces the generated configuration (its listener must be on
        127.0.0.1:``port``)."""
        self.binary = find_mosquitto()
        self.certfile = certfile
        self.keyfile = keyfile
        self.users = dict(users or {})
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_config = extra_config
        self.config_file = config_file
        self.config_path = config_file or workdir / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_file: Path | None = None

    def _write_config(self) -> None:
        lines = [f"listener {self.port} {self.host}"]
        if self.certfile is not None and self.keyfile is not None:
            lines += [f"certfile {self.certfile}", f"keyfile {self.keyfile}"]
        if self.users:
            lines += ["allow_anonymous false", f"password_file {self._password_file()}"]
        else:
            lines.append("allow_anonymous true")
        lines += [
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # do not drop privileges: nothing here needs it
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config)

    def _password_file(self) -> Path:
        path = self.workdir / "passwords"
        path.write_text("")
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, password in self.users.items():
            subprocess.run([passwd, "-b", str(path), user, password], check=True)
        return path

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        if self.config_file is None:
            self._write_config()
        self.starts += 1
        self._log_file = self.workdir / f"mosquitto-{self.starts}.log"
        with open(self._log_file, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout_s} s")

    def reload(self, timeout_s: float = 60.0) -> None:
        """SIGHUP: mosquitto reads its ACL, password file and CRL again. Returns once it has:
        its loop logs "Reloading config." and reloads in the same pass, before it reads another
        packet (the configuration must log notices, as both this class's and ``broker init``'s
        do). ``timeout_s`` only guards a hang."""
        if self.proc is None:
            return
        before = self._whole_log().count("Reloading config.")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while self._whole_log().count("Reloading config.") <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not reload in {timeout_s} s:\n{self.log()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the broker dies like a crash."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: an orderly broker shutdown."""
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        self.kill()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    def log(self) -> str:
        if self._log_file is None or not self._log_file.exists():
            return ""
        return self._log_file.read_text(errors="replace")[-4000:]

    def _whole_log(self) -> str:
        if self._log_file is None or not self._log_file.exists():
            return ""
        return self._log_file.read_text(errors="replace")
