"""Ed25519 keys and signatures for bundles (and anything else the device must trust).

Key files
---------
* **Public keys** (``*.pub``): PEM ``SubjectPublicKeyInfo`` (``-----BEGIN PUBLIC KEY-----``), the
  format ``edge-agent-host keygen`` writes. A file holding one line of standard base64 that decodes
  to the raw 32-byte Ed25519 key is accepted too, so keys can be pasted from other tools.
* **Private keys** (host side only): unencrypted PEM PKCS#8 (``-----BEGIN PRIVATE KEY-----``).

A key is named by its *key id*: the first 16 hex characters of the sha256 of the raw 32-byte public
key. Signatures are the raw 64-byte Ed25519 signature, base64-encoded where they travel as text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# ``cryptography`` (about 9 MB resident) is imported by the functions that need it, so a daemon
# that never verifies a signature does not pay for it.

logger = logging.getLogger(__name__)

__all__ = [
    "KEY_ID_HEX_CHARS",
    "SIGNATURE_BYTES",
    "TrustedKeys",
    "decode_signature",
    "encode_signature",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_public_key",
    "private_key_to_pem",
    "public_key_to_pem",
    "sign_bytes",
    "verify_bytes",
]

KEY_ID_HEX_CHARS = 16
"""Length of a key id: this many leading hex characters of sha256(raw public key)."""

SIGNATURE_BYTES = 64
"""Length of a raw Ed25519 signature."""

_MAX_KEY_FILE_BYTES = 16 * 1024
_RAW_KEY_BYTES = 32
_B64_SIGNATURE_RE = re.compile(r"[A-Za-z0-9+/]{86}==")


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    key_path = Path(path)
    try:
        with key_path.open("rb") as fh:
            data = fh.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as err:
        raise SignatureError(f"{key_path}: cannot read key file: {err.strerror or err}") from err
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise SignatureError(f"{key_path}: key file is larger than {_MAX_KEY_FILE_BYTES} bytes")
    return data


def parse_public_key(data: bytes, source: str = "public key") -> Ed25519PublicKey:
    """Parse an Ed25519 public key from PEM SubjectPublicKeyInfo or one line of raw-key base64.

    ``source`` names where the bytes came from, for the error message.
    Raises :class:`SignatureError` if the data is neither, or is a key of another algorithm.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, UnsupportedAlgorithm) as err:
            raise SignatureError(f"{source}: not a valid PEM public key: {err}") from err
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError(
                f"{source}: not an Ed25519 public key (found {type(key).__name__})"
            )
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise SignatureError(
            f"{source}: neither PEM nor base64 of a raw 32-byte Ed25519 key"
        ) from err
    if len(raw) != _RAW_KEY_BYTES:
        raise SignatureError(
            f"{source}: base64 key decodes to {len(raw)} bytes, expected {_RAW_KEY_BYTES}"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load an Ed25519 public key file (PEM SubjectPublicKeyInfo, or base64 of the raw key)."""
    return parse_public_key(_read_key_file(path), source=str(path))


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an unencrypted PEM PKCS#8 Ed25519 private key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as err:
        raise SignatureError(f"{path}: encrypted private keys are not supported") from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise SignatureError(f"{path}: not a valid PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key (found {type(key).__name__})")
    return key


def public_key_to_pem(public_key: Ed25519PublicKey) -> bytes:
    """PEM SubjectPublicKeyInfo bytes of ``public_key`` (the ``*.pub`` format)."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def private_key_to_pem(private_key: Ed25519PrivateKey) -> bytes:
    """Unencrypted PEM PKCS#8 bytes of ``private_key``."""
    from cryptography.hazmat.primitives import serialization

    return private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of sha256 over the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


def sign_bytes(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The raw 64-byte Ed25519 signature of ``data``."""
    return private_key.sign(data)


def verify_bytes(public_key: Ed25519PublicKey, data: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature; raise :class:`SignatureError` ("bad signature") if it fails."""
    from cryptography.exceptions import InvalidSignature

    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"bad signature: {len(signature)} bytes, expected {SIGNATURE_BYTES}")
    try:
        public_key.verify(signature, data)
    except InvalidSignature as err:
        raise SignatureError("bad signature") from err


def encode_signature(signature: bytes) -> str:
    """Standard base64 text of a raw signature."""
    return base64.b64encode(signature).decode("ascii")


def decode_signature(value: str) -> bytes:
    """Raw signature bytes from base64 text; :class:`SignatureError` if malformed.

    Only the canonical text is taken: the last character before ``==`` carries 4 padding bits
    that base64 decoders ignore, so 16 texts decode to the same signature; any other than the
    one :func:`encode_signature` writes is a changed manifest, refused."""
    if not _B64_SIGNATURE_RE.fullmatch(value):
        raise SignatureError(
            f"bad signature: value is not the base64 of a {SIGNATURE_BYTES}-byte signature"
        )
    raw = base64.b64decode(value, validate=True)
    if encode_signature(raw) != value:
        raise SignatureError("bad signature: not the canonical base64 of its bytes")
    return raw


class TrustedKeys:
    """The public keys a device accepts signatures from, looked up by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            self._add(key, source="key")

    def _add(self, key: Ed25519PublicKey, *, source: str) -> None:
        kid = key_id(key)
        known = self._keys.get(kid)
        if known is not None:
            if _raw(known) != _raw(key):
                raise SignatureError(
                    f"{source}: key id {kid} collides with a different trusted key"
                )
            return
        self._keys[kid] = key

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str]) -> TrustedKeys:
        """Load every ``*.pub`` file in ``directory`` (not recursive).

        Raises :class:`SignatureError` if the directory is missing, holds no ``*.pub`` file, or a
        file is not an Ed25519 public key.
        """
        root = Path(directory)
        if not root.is_dir():
            raise SignatureError(f"{root}: trusted key directory does not exist")
        try:  # unlike glob, iterdir says when the directory cannot be read
            found = sorted(p for p in root.iterdir() if p.suffix == ".pub")
        except OSError as err:
            raise SignatureError(
                f"{root}: cannot read the trusted key directory: {err.strerror or err}"
            ) from err
        trusted = cls(())
        for path in found:
            if not path.is_file():
                continue
            key = load_public_key(path)
            trusted._add(key, source=str(path))
            logger.debug("trusting key %s from %s", key_id(key), path)
        if not trusted._keys:
            raise SignatureError(f"{root}: no trusted keys (*.pub files) found")
        return trusted

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of every trusted key."""
        return frozenset(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The trusted key with this id, or ``None``."""
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def raw_keys(self) -> frozenset[bytes]:
        """Every trusted key as its 32 raw bytes."""
        return frozenset(_raw(key) for key in self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def verify(self, kid: str, data: bytes, signature: bytes) -> None:
        """Check that ``signature`` over ``data`` was made by the trusted key ``kid``.

        Raises :class:`SignatureError` ("bundle signed by untrusted key …" or "bad signature").
        """
        key = self._keys.get(kid)
        if key is None:
            trusted = ", ".join(sorted(self._keys)) or "none"
            raise SignatureError(f"bundle signed by untrusted key {kid} (trusted: {trusted})")
        verify_bytes(key, data, signature)


def _raw(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
