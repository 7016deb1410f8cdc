"""What the running daemon keeps out of its process until it uses it.

Three imports would put into every daemon what most never use:

* ``hashlib`` and ``hmac`` prefer OpenSSL's implementations (the ``_hashlib`` extension) and fall
  back to CPython's builtin ones (``_sha256``, ``_blake2``, ...) when it is missing. NumPy's random
  module imports ``secrets``, hence ``hmac``, hence ``_hashlib``, and loading it initialises
  OpenSSL and its default provider: 3.3 MB resident. The daemon needs only SHA-256, which the
  builtin module computes bit for bit the same; at 150-400 MB/s it costs a few tens of
  milliseconds per snapshot of 1,000 grid10 agents, off the tick. :func:`use_builtin_digests`.
* paho-mqtt imports ``ssl`` at its own import, and ``_ssl`` links OpenSSL: 3.8-4.6 MB resident
  in a daemon whose broker link is plain TCP on a trusted network or a loopback bridge.
  :func:`defer_module` puts a stand-in under the name ``ssl`` that imports the real module the first
  time anything asks it for anything, so a daemon with ``[mqtt.tls]`` (or anything else that uses
  TLS) gets the real module at that moment, unchanged. The one exception: paho's socket
  read and write paths name ``ssl.SSLWantReadError`` and ``ssl.SSLWantWriteError`` in ``except``
  clauses, which Python evaluates every time an exception passes through them (a
  ``BlockingIOError`` on a non-blocking socket, a reset connection). Until ``ssl`` is loaded, the
  stand-in answers those two names with exception classes that nothing raises, and that is exact:
  only a socket wrapped by the real module (so after it was loaded) raises the real ones, and
  from the moment it is loaded the stand-in answers with the real classes.
* paho-mqtt also imports ``urllib.request``, and with it ``http.client`` and most of the
  ``email`` package (about 25 modules, 4 MB resident), to read proxy settings from the
  environment when PySocks is installed: never, on a broker link without a SOCKS proxy. The
  same kind of stand-in (:func:`defer_module`) runs its code the first time something reads one
  of its attributes.

Why not :class:`importlib.util.LazyLoader`: its modules load on *any* attribute read, and an
``import`` statement that finds a module in ``sys.modules`` reads its ``__spec__``, so the
second ``import`` (paho's) would load it. The stand-ins keep ``__spec__`` (None) in their own
namespace, and load on the first read of anything else.

All must run before the imports they change: ``edge-agent run`` and ``edge-agentd`` call
:func:`keep_unused_modules_out` first. ``cryptography`` (bundle and command signatures, when hub
keys are configured) carries its own OpenSSL. Other commands and library users are not affected
(benchmarks/notes/memory.md).
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

__all__ = [
    "DEFERRED_MODULES",
    "defer_module",
    "keep_unused_modules_out",
    "loaded",
    "use_builtin_digests",
]

DEFERRED_MODULES: tuple[str, ...] = ("ssl", "urllib.request")
"""Imported on first use in the daemon (:func:`defer_module`): both by paho at its import."""


def use_builtin_digests() -> bool:
    """Keep ``_hashlib`` out of this process, so ``hashlib`` and ``hmac`` use the builtin
    digests. True when they do; False (and nothing changed) when ``hashlib`` was imported
    before this call."""
    blocked: object = sys.modules.get("_hashlib", False)  # None: blocked (by an earlier call)
    if blocked is None:
        return True
    if "_hashlib" in sys.modules or "hashlib" in sys.modules:
        return False
    sys.modules["_hashlib"] = None  # type: ignore[assignment]  # "import _hashlib" now fails
    return True


class SSLWantReadError(OSError):
    """Stands in for :class:`ssl.SSLWantReadError` until ``ssl`` is loaded: nothing raises it."""


class SSLWantWriteError(OSError):
    """Stands in for :class:`ssl.SSLWantWriteError` until ``ssl`` is loaded: nothing raises it."""


_PLACEHOLDERS: dict[str, dict[str, Any]] = {
    "ssl": {"SSLWantReadError": SSLWantReadError, "SSLWantWriteError": SSLWantWriteError},
}
"""Names a stand-in answers without loading its module (see the module's text)."""


class _Deferred(types.ModuleType):
    """``sys.modules[name]`` until something uses it; then the real module's namespace.

    ``types.ModuleType`` puts ``__name__``, ``__doc__``, ``__spec__`` (None), ``__loader__`` and
    ``__package__`` in the namespace: reading those does not load the module."""

    _lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:  # only for names not (yet) in the namespace
        placeholders = _PLACEHOLDERS.get(self.__name__, {})
        if attr in placeholders:
            return placeholders[attr]
        return getattr(self.load(), attr)

    def load(self) -> types.ModuleType:
        """Import the real module and give this object its namespace (modules that imported
        the stand-in hold this object, not the real one)."""
        with self._lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__.update(real.__dict__)
            return real


def defer_module(name: str) -> bool:
    """Register a stand-in for ``name`` that imports the real module when something first reads
    one of its attributes. True when ``name`` is deferred; False (and nothing changed) when it
    was imported before this call."""
    current = sys.modules.get(name)
    if isinstance(current, _Deferred):
        return True
    if current is not None or name in sys.modules:
        return False
    parent, _, child = name.rpartition(".")
    if parent:
        importlib.import_module(parent)
    stand_in = _Deferred(name, "imported on first use (edge_agent.daemon.footprint)")
    sys.modules[name] = stand_in
    if parent:  # "import a.b" binds a, then reads a.b
        setattr(sys.modules[parent], child, stand_in)
    return True


def loaded(name: str) -> bool:
    """Whether the real module ``name`` has run in this process (not only its stand-in)."""
    module = sys.modules.get(name)
    return module is not None and (
        not isinstance(module, _Deferred) or "__file__" in module.__dict__
    )


def keep_unused_modules_out() -> None:
    """What ``edge-agent run`` and ``edge-agentd`` do first: all of the above."""
    use_builtin_digests()
    for name in DEFERRED_MODULES:
        defer_module(name)
