"""The daemon's process hashes with Python's builtin digests: same results, no OpenSSL mapped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from edge_agent.daemon.digests import use_builtin_digests
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
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    sha, mac, blake, where, mapped = out.stdout.splitlines()
    import hashlib  # this process: OpenSSL's implementations
    import hmac

    data = bytes(range(256)) * 4099
    assert sha == hashlib.sha256(data).hexdigest()
    assert mac == hmac.new(b"key", data, "sha256").hexdigest()
    assert blake == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert where == "_sha256 None"  # the builtin module's type; _hashlib blocked
    assert mapped == "False"


def test_nothing_changes_once_hashlib_is_loaded() -> None:
    code = (
        "import hashlib\n"
        "from edge_agent.daemon.digests import use_builtin_digests\n"
        "print(use_builtin_digests(), type(hashlib.sha256()).__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "_hashlib"]
