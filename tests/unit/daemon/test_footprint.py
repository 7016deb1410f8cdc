"""``edge_agent.daemon.footprint``: the daemon maps OpenSSL, and runs paho's proxy imports, only
when it uses them; and the groups' MQTT I/O (``fleet/agent_io.py``) is imported only by a node
whose groups have an MQTT source or sink.

Each check runs in a fresh interpreter (a child process), since what it changes is which modules
a process imports; the daemon itself is checked in ``tests/integration/fleet/test_fleet_daemon.py``
(plain TCP across broker restarts: no OpenSSL) and ``test_broker_acl.py`` (TLS: loaded).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.integration.daemon.test_daemon import REPO


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in the repository with ``args``; its exit, stdout and stderr."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )


def run_fresh(code: str) -> str:
    """Run ``code`` (dedented) in a fresh interpreter in the repository; its stdout."""
    out = run_python("-c", textwrap.dedent(code))
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_paho_runs_its_socket_paths_without_ssl_and_gets_the_real_module_on_first_use() -> None:
    out = run_fresh(
        """
        import socket, struct, sys
        from edge_agent.daemon.footprint import keep_unused_modules_out, loaded
        keep_unused_modules_out()
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
        assert not loaded("ssl") and "_ssl" not in sys.modules, "importing paho loaded ssl"

        client = paho.Client(CallbackAPIVersion.VERSION2)
        mine, theirs = socket.socketpair()
        mine.setblocking(False)
        client._sock = mine
        try:                       # nothing to read: paho's except clauses name ssl's errors
            client._sock_recv(1)
        except BlockingIOError:
            pass
        else:
            raise AssertionError("recv on an empty non-blocking socket returned")
        theirs.close()
        mine.setblocking(True)
        assert client._sock_recv(1) == b""      # the peer closed: no exception, no ssl
        theirs2, other = socket.socketpair()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        other.close()                           # a reset connection
        client._sock = theirs2
        try:
            client._sock_send(b"x" * 100_000)
            client._sock_send(b"x" * 100_000)
        except OSError:
            pass
        assert not loaded("ssl") and "_ssl" not in sys.modules, "paho's socket paths loaded ssl"

        import ssl                              # what paho's tls_set and our [mqtt.tls] do
        ctx = ssl.create_default_context()
        assert loaded("ssl") and "_ssl" in sys.modules
        real = sys.modules["ssl"]
        assert type(real).__name__ == "module"  # the real one, registered under its name
        assert paho.ssl.SSLWantReadError is real.SSLWantReadError
        assert paho.ssl.SSLContext is real.SSLContext is type(ctx)
        assert ssl.SSLWantWriteError is real.SSLWantWriteError
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_nothing_changes_once_ssl_is_loaded() -> None:
    out = run_fresh(
        """
        import ssl, sys
        from edge_agent.daemon.footprint import defer_module
        assert defer_module("ssl") is False and sys.modules["ssl"] is ssl
        print("ok")
        """
    )
    assert out.strip() == "ok"


CHILD = """
import sys
from edge_agent.daemon.footprint import use_builtin_digests
assert use_builtin_digests() is True
assert use_builtin_digests() is True  # a second call: still so
import hashlib, hmac, secrets
import numpy.random  # what pulled OpenSSL in: secrets -> hmac -> _hashlib
from edge_agent.bundle import signing  # hashlib users of the daemon import fine
rng = numpy.random.default_rng()
data = bytes(range(256)) * 4099
print(hashlib.sha256(data).hexdigest())
print(hmac.new(b"key", data, "sha256").hexdigest())
print(hashlib.blake2b(data, digest_size=16).hexdigest())
print(type(hashlib.sha256()).__module__, "_hashlib" in sys.modules and sys.modules["_hashlib"])
print("libcrypto" in open("/proc/self/maps").read())
"""


def test_builtin_digests_equal_openssls_and_keep_it_unmapped() -> None:
    sha, mac, blake, where, mapped = run_fresh(CHILD).splitlines()
    import hashlib  # this process: OpenSSL's implementations
    import hmac

    data = bytes(range(256)) * 4099
    assert sha == hashlib.sha256(data).hexdigest()
    assert mac == hmac.new(b"key", data, "sha256").hexdigest()
    assert blake == hashlib.blake2b(data, digest_size=16).hexdigest()
    # The builtin module's type (_sha256 until Python 3.11, _sha2 from 3.12); _hashlib blocked.
    builtin = "_sha2" if sys.version_info >= (3, 12) else "_sha256"
    assert where == f"{builtin} None"
    assert mapped == "False"


def test_nothing_changes_once_hashlib_is_loaded() -> None:
    out = run_fresh(
        """
        import hashlib
        from edge_agent.daemon.footprint import use_builtin_digests
        print(use_builtin_digests(), type(hashlib.sha256()).__module__)
        """
    )
    assert out.split() == ["False", "_hashlib"]


def test_urllib_request_runs_on_first_use_only() -> None:
    out = run_fresh(
        """
        import sys
        from edge_agent.daemon.footprint import defer_module, keep_unused_modules_out, loaded
        keep_unused_modules_out()
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
        client = paho.Client(CallbackAPIVersion.VERSION2)
        assert client._get_proxy() is None      # no PySocks: paho reads no proxy settings
        assert "http.client" not in sys.modules and "email.message" not in sys.modules
        assert not loaded("urllib.request") and not loaded("ssl")
        assert defer_module("urllib.request") is True       # registered already
        import urllib.request
        assert urllib.request is sys.modules["urllib.request"] is paho.urllib.request
        assert isinstance(urllib.request.getproxies(), dict)    # first use: the real code runs
        assert "http.client" in sys.modules and loaded("urllib.request")
        assert defer_module("urllib.request") is False      # the real one now
        assert urllib.request.Request("http://127.0.0.1/").host == "127.0.0.1"
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_a_node_without_mqtt_sources_or_sinks_never_imports_the_groups_mqtt_io(
    tmp_path: Path,
) -> None:
    out = run_fresh(
        f"""
        import sys
        from pathlib import Path
        from edge_agent.config.daemon import ConfigFile, parse_config
        from edge_agent.config.toml_lines import TomlDocument
        from edge_agent.daemon.uplink import FleetUplink
        from edge_agent.fleet.comms.base import Incoming
        from edge_agent.fleet.protocol import Birth
        text = '''[daemon]
        profile = "x86-dev"
        state_dir = "{tmp_path}"
        [[groups]]
        name = "grid"
        model = {{ type = "builtin", name = "grid10" }}
        count = 1
        source = {{ type = "sim" }}
        sink = {{ type = "sim" }}
        [mqtt]
        enabled = true
        host = "127.0.0.1"
        port = 1
        node_id = "pi-1"
        '''
        config = parse_config(text.replace("\\n        ", "\\n"), "node.toml")
        uplink = FleetUplink(
            config,
            ConfigFile(config, TomlDocument.parse("", "node.toml")),
            Path({str(tmp_path)!r}),
            birth=Birth(software_version="0", profile="x86-dev", budget_bytes=1, groups={{}}),
            handlers={{}},
            event=lambda *a, **k: None,
        )
        uplink.bind_sources([])
        assert uplink.router is None
        assert not uplink._claim(Incoming("plant/x/obs", b"", 1, False, 0))
        print("edge_agent.fleet.agent_io" in sys.modules, "sqlite3" in sys.modules)
        uplink.stop()
        """
    )
    # Nor SQLite: the outbox and the nonce store are record logs (fleet/record_log.py).
    assert out.split() == ["False", "False"]
