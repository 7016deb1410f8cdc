"""Signing key files on the host: generate a key pair, load a private key for signing."""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import signing

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_KEY_NAME", "KEY_NAME_RE", "KeyPair", "generate_keypair", "load_signing_key"]

DEFAULT_KEY_NAME = "edge-agent"
KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class KeyPair:
    """Where a generated key pair was written, and its key id."""

    private_path: Path
    public_path: Path
    key_id: str


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_keypair(out_dir: str | os.PathLike[str], name: str = DEFAULT_KEY_NAME) -> KeyPair:
    """Write a new Ed25519 key pair as ``NAME.key`` (PEM PKCS#8, mode 0600) and ``NAME.pub``.

    ``NAME.pub`` is PEM SubjectPublicKeyInfo: copy it into a device's trusted key directory.
    Existing files are never overwritten (``FileExistsError``); ``ValueError`` for a bad name.
    """
    if not KEY_NAME_RE.fullmatch(name):
        raise ValueError(
            f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / f"{name}.key"
    public_path = out / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"{path} already exists; refusing to overwrite a key")
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key()
    _write_new_file(private_path, signing.private_key_to_pem(private_key), 0o600)
    _write_new_file(public_path, signing.public_key_to_pem(public_key), 0o644)
    kid = signing.key_id(public_key)
    logger.info("generated key %s in %s", kid, out)
    return KeyPair(private_path=private_path, public_path=public_path, key_id=kid)


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load a private key for signing; warn if group or others can read the file."""
    key_path = Path(path)
    try:
        mode = key_path.stat().st_mode
    except OSError:
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "private key %s is accessible by group or others (mode %o); chmod 600 it",
            key_path,
            stat.S_IMODE(mode),
        )
    return signing.load_private_key(key_path)
