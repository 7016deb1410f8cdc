"""The running daemon hashes with Python's builtin digests, not OpenSSL's.

``hashlib`` and ``hmac`` prefer OpenSSL's implementations (the ``_hashlib`` extension) and fall
back to CPython's builtin ones (``_sha256``, ``_blake2``, ...) when it is missing. NumPy's random
module imports ``secrets``, hence ``hmac``, hence ``_hashlib``, and loading it initialises OpenSSL
and its default provider: 3.3 MB resident in a daemon that hashes a snapshot every few minutes
and a bundle per deployment (benchmarks/RESULTS.md, "Memory (issue 14)"). The daemon needs only
SHA-256, which the builtin module computes bit for bit the same; at 150-400 MB/s it costs a few
tens of milliseconds per snapshot of 1,000 grid10 agents, off the tick.

:func:`use_builtin_digests` must run before anything imports ``hashlib``: ``edge-agent run`` and
``edge-agentd`` call it first. ``ssl`` (TLS to the broker) does not need ``_hashlib`` and links
OpenSSL itself, so a daemon with MQTT maps it anyway; ``cryptography`` (bundle and command
signatures) carries its own. Other commands and library users keep OpenSSL's digests.
"""

from __future__ import annotations

import sys

__all__ = ["use_builtin_digests"]


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
