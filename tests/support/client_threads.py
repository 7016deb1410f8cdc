"""MQTT clients a test file leaves running fail it, at the teardown that should have stopped them.

A paho client whose owner never calls ``loop_stop()`` keeps its network thread after the test
that made it, reconnecting to a broker that test killed: paho's own reconnect (the default,
``reconnect_on_failure``) retries every second or so for the rest of the run. When nothing
listens on the dead broker's port and the kernel happens to pick that same port as the retry's
source port, the connection is a TCP self-connect, the TLS handshake reads its own ClientHello and
fails, and paho 2.2 drops the half-made ``SSLSocket`` without closing it
(``Client._ssl_wrap_socket``): a ``ResourceWarning`` that pytest raises in whichever test happens
to run then, files away from the one at fault (CI, 2026-11-28:
``test_waves_soak_pause_resume_and_a_hub_restart``).

This plugin (``tests/conftest.py`` registers it) notes the client threads alive when a test file's
first test is set up on a process, and after the teardown of its last test there (module-scoped
fixtures are finalised by then) fails that teardown if a client thread started since is still
alive, naming it: paho's (``paho-mqtt-client-<client id>``) and the daemon's transport supervisor
(``edge-agent-mqtt``). A test whose clients run past a test file's end is what it catches; the
grace for a stopping thread is :data:`GRACE_S`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import pytest

__all__ = ["GRACE_S", "ClientThreads", "client_threads"]

#: How long a client thread that is stopping may take to end after the last teardown.
GRACE_S = 5.0

_PREFIXES = ("paho-mqtt-client-", "edge-agent-mqtt")


def client_threads() -> set[threading.Thread]:
    """The MQTT client threads alive in this process."""
    return {t for t in threading.enumerate() if t.name.startswith(_PREFIXES) and t.is_alive()}


class ClientThreads:
    """The check above, per test file and per process (each xdist worker its own)."""

    def __init__(self) -> None:
        self._module: str | None = None
        self._before: set[threading.Thread] = set()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        module = item.nodeid.split("::", 1)[0]
        if module != self._module:
            self._module = module
            self._before = client_threads()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, None, None]:
        yield
        module = item.nodeid.split("::", 1)[0]
        if nextitem is not None and nextitem.nodeid.split("::", 1)[0] == module:
            return
        self._module = None
        deadline = time.monotonic() + GRACE_S
        left = client_threads() - self._before
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = {t for t in left if t.is_alive()}
        if left:
            names = ", ".join(sorted(t.name for t in left))
            pytest.fail(
                f"{module} left MQTT client threads running after its last test: {names} "
                "(stop each client it starts: loop_stop() for paho, disconnect() for the "
                "transport, in a finally or a fixture's teardown)",
                pytrace=False,
            )
