"""The running daemon loads OpenSSL only when it uses it.

Two imports would map OpenSSL into every daemon, whether it hashes with it or speaks TLS or not:

* ``hashlib`` and ``hmac`` prefer OpenSSL's implementations (the ``_hashlib`` extension) and fall
  back to CPython's builtin ones (``_sha256``, ``_blake2``, ...) when it is missing. NumPy's random
  module imports ``secrets``, hence ``hmac``, hence ``_hashlib``, and loading it initialises
  OpenSSL and its default provider: 3.3 MB resident. The daemon needs only SHA-256, which the
  builtin module computes bit for bit the same; at 150-400 MB/s it costs a few tens of
  milliseconds per snapshot of 1,000 grid10 agents, off the tick. :func:`use_builtin_digests`.
* paho-mqtt imports ``ssl`` at its own import, and ``_ssl`` links OpenSSL: 3.8-4.6 MB resident
  in a daemon whose broker link is plain TCP on a trusted network or a loopback bridge.
  :func:`defer_ssl` puts a stand-in under the name ``ssl`` that imports the real module the first
  time anything asks it for anything, so a daemon with ``[mqtt.tls]`` (or anything else that uses
  TLS) gets the real module at that moment, unchanged. The one exception: paho's socket
  read and write paths name ``ssl.SSLWantReadError`` and ``ssl.SSLWantWriteError`` in ``except``
  clauses, which Python evaluates every time an exception passes through them (a
  ``BlockingIOError`` on a non-blocking socket, a reset connection). Until ``ssl`` is loaded, the
  stand-in answers those two names with exception classes that nothing raises, and that is exact:
  only a socket wrapped by the real module (so after it was loaded) raises the real ones, and
  from the moment it is loaded the stand-in answers with the real classes.

Both must run before the imports they change: ``edge-agent run`` and ``edge-agentd`` call
:func:`keep_openssl_out` first. ``cryptography`` (bundle and command signatures, when hub keys
are configured) carries its own OpenSSL. Other commands and library users are not affected
(benchmarks/RESULTS.md, "Memory (issue 14)").
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

__all__ = ["defer_ssl", "keep_openssl_out", "ssl_loaded", "use_builtin_digests"]


def use_builtin_digests() -> bool:
    """Keep ``_hashlib`` out of this process, so ``hashlib`` and ``hmac`` use the builtin
    digests. True when they do; False (and nothing changed) when ``hashlib`` was imported
    before this call."""
    loaded: object = sys.modules.get("_hashlib", False)  # None: blocked (by an earlier call)
    if loaded is None:
        return True
    if "_hashlib" in sys.modules or "hashlib" in sys.modules:
        return False
    sys.modules["_hashlib"] = None  # type: ignore[assignment]  # "import _hashlib" now fails
    return True


class SSLWantReadError(OSError):
    """Stands in for :class:`ssl.SSLWantReadError` until ``ssl`` is loaded: nothing raises it."""


class SSLWantWriteError(OSError):
    """Stands in for :class:`ssl.SSLWantWriteError` until ``ssl`` is loaded: nothing raises it."""


_NOT_YET_RAISED: dict[str, type[OSError]] = {
    "SSLWantReadError": SSLWantReadError,
    "SSLWantWriteError": SSLWantWriteError,
}


class _DeferredSsl(types.ModuleType):
    """``sys.modules["ssl"]`` until something uses it; then the real module's namespace."""

    _lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # only for names not (yet) in the namespace
        if name in _NOT_YET_RAISED:
            return _NOT_YET_RAISED[name]
        return getattr(self.load(), name)

    def load(self) -> types.ModuleType:
        """Import the real ``ssl`` and give this object its namespace (modules that imported
        the stand-in hold this object, not the real one)."""
        with self._lock:
            if sys.modules.get("ssl") is self:
                del sys.modules["ssl"]
            real = importlib.import_module("ssl")
            self.__dict__.update(real.__dict__)
            return real


def defer_ssl() -> bool:
    """Put the stand-in under ``ssl`` (see the module's text). True when ``ssl`` is deferred;
    False (and nothing changed) when it was imported before this call."""
    current = sys.modules.get("ssl")
    if isinstance(current, _DeferredSsl):
        return True
    if current is not None or "_ssl" in sys.modules:
        return False
    # ModuleType sets __spec__ = None: "import ssl" finds the stand-in without asking it for
    # anything (the import system reads __spec__ of a module it finds in sys.modules).
    sys.modules["ssl"] = _DeferredSsl("ssl", "imported on first use (edge_agent.daemon.openssl)")
    return True


def ssl_loaded() -> bool:
    """Whether the real ``ssl`` (and with it OpenSSL) is in this process."""
    return "_ssl" in sys.modules


def keep_openssl_out() -> None:
    """What ``edge-agent run`` and ``edge-agentd`` do first: both of the above."""
    use_builtin_digests()
    defer_ssl()
