"""Ed25519 key files, key ids, signatures and the trusted key set."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.bundle import signing
from edge_agent.errors import SignatureError


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )


def _write_pem_pub(path: Path, private_key: Ed25519PrivateKey) -> Path:
    path.write_bytes(signing.public_key_to_pem(private_key.public_key()))
    return path


def _write_b64_pub(path: Path, private_key: Ed25519PrivateKey) -> Path:
    path.write_text(base64.b64encode(_raw(private_key.public_key())).decode() + "\n")
    return path


def test_key_id_is_first_16_hex_of_sha256_of_raw_key() -> None:
    public_key = Ed25519PrivateKey.generate().public_key()
    kid = signing.key_id(public_key)
    assert kid == hashlib.sha256(_raw(public_key)).hexdigest()[:16]
    assert len(kid) == 16
    assert signing.key_id(Ed25519PublicKey.from_public_bytes(_raw(public_key))) == kid


def test_sign_and_verify_round_trip() -> None:
    private_key = Ed25519PrivateKey.generate()
    signature = signing.sign_bytes(private_key, b"manifest bytes")
    assert len(signature) == signing.SIGNATURE_BYTES
    signing.verify_bytes(private_key.public_key(), b"manifest bytes", signature)


def test_verify_rejects_altered_data_and_other_keys() -> None:
    private_key = Ed25519PrivateKey.generate()
    signature = signing.sign_bytes(private_key, b"manifest bytes")
    with pytest.raises(SignatureError, match="bad signature"):
        signing.verify_bytes(private_key.public_key(), b"manifest bytez", signature)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SignatureError, match="bad signature"):
        signing.verify_bytes(other, b"manifest bytes", signature)
    with pytest.raises(SignatureError, match="63 bytes, expected 64"):
        signing.verify_bytes(private_key.public_key(), b"manifest bytes", signature[:-1])


def test_signature_text_round_trip_and_malformed_text() -> None:
    signature = signing.sign_bytes(Ed25519PrivateKey.generate(), b"x")
    text = signing.encode_signature(signature)
    assert signing.decode_signature(text) == signature
    for bad in ("", "not base64!", text[:-4], base64.b64encode(b"\x00" * 32).decode()):
        with pytest.raises(SignatureError, match="not the base64 of a 64-byte signature"):
            signing.decode_signature(bad)


def test_pem_and_raw_base64_public_keys_load_the_same_key(tmp_path: Path) -> None:
    private_key = Ed25519PrivateKey.generate()
    pem = signing.load_public_key(_write_pem_pub(tmp_path / "a.pub", private_key))
    raw = signing.load_public_key(_write_b64_pub(tmp_path / "b.pub", private_key))
    assert _raw(pem) == _raw(raw) == _raw(private_key.public_key())


def test_load_public_key_rejects_garbage_and_other_algorithms(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("hello world")
    with pytest.raises(SignatureError, match="neither PEM nor base64"):
        signing.load_public_key(garbage)
    short = tmp_path / "short.pub"
    short.write_text(base64.b64encode(b"\x01" * 31).decode())
    with pytest.raises(SignatureError, match="31 bytes, expected 32"):
        signing.load_public_key(short)
    ec_pub = tmp_path / "ec.pub"
    ec_pub.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    with pytest.raises(SignatureError, match="not an Ed25519 public key"):
        signing.load_public_key(ec_pub)
    broken_pem = tmp_path / "broken.pub"
    broken_pem.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SignatureError, match="not a valid PEM public key"):
        signing.load_public_key(broken_pem)
    with pytest.raises(SignatureError, match="cannot read key file"):
        signing.load_public_key(tmp_path / "missing.pub")


def test_private_key_round_trip_and_refusals(tmp_path: Path) -> None:
    private_key = Ed25519PrivateKey.generate()
    path = tmp_path / "k.key"
    path.write_bytes(signing.private_key_to_pem(private_key))
    loaded = signing.load_private_key(path)
    assert _raw(loaded.public_key()) == _raw(private_key.public_key())

    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        private_key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(SignatureError, match="encrypted private keys are not supported"):
        signing.load_private_key(encrypted)
    with pytest.raises(SignatureError, match="not a valid PEM private key"):
        signing.load_private_key(_write_pem_pub(tmp_path / "pub.key", private_key))
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
    )
    with pytest.raises(SignatureError, match="not an Ed25519 private key"):
        signing.load_private_key(ec_key)


def test_trusted_keys_from_dir_verifies_and_names_untrusted_keys(tmp_path: Path) -> None:
    first, second, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
    _write_pem_pub(tmp_path / "first.pub", first)
    _write_b64_pub(tmp_path / "second.pub", second)
    _write_pem_pub(tmp_path / "ignored.txt", stranger)
    trusted = signing.TrustedKeys.from_dir(tmp_path)

    first_id = signing.key_id(first.public_key())
    second_id = signing.key_id(second.public_key())
    stranger_id = signing.key_id(stranger.public_key())
    assert trusted.key_ids == {first_id, second_id}
    assert len(trusted) == 2
    assert first_id in trusted
    assert stranger_id not in trusted
    assert list(trusted) == sorted([first_id, second_id])

    data = b"canonical manifest"
    trusted.verify(second_id, data, signing.sign_bytes(second, data))
    with pytest.raises(SignatureError, match=f"bundle signed by untrusted key {stranger_id}"):
        trusted.verify(stranger_id, data, signing.sign_bytes(stranger, data))
    with pytest.raises(SignatureError, match="bad signature"):
        trusted.verify(first_id, data, signing.sign_bytes(second, data))
    with pytest.raises(SignatureError, match="bad signature"):
        trusted.verify(first_id, data + b"!", signing.sign_bytes(first, data))


def test_trusted_keys_dedupes_the_same_key_in_two_files(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    _write_pem_pub(tmp_path / "a.pub", key)
    _write_b64_pub(tmp_path / "b.pub", key)
    assert len(signing.TrustedKeys.from_dir(tmp_path)) == 1


def test_trusted_keys_refuses_empty_missing_and_bad_dirs(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="does not exist"):
        signing.TrustedKeys.from_dir(tmp_path / "nope")
    with pytest.raises(SignatureError, match=r"no trusted keys \(\*\.pub files\) found"):
        signing.TrustedKeys.from_dir(tmp_path)
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(SignatureError, match=re.escape("bad.pub")):
        signing.TrustedKeys.from_dir(tmp_path)


def test_trusted_keys_refuses_key_id_collisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_pem_pub(tmp_path / "a.pub", Ed25519PrivateKey.generate())
    _write_pem_pub(tmp_path / "b.pub", Ed25519PrivateKey.generate())
    monkeypatch.setattr(signing, "key_id", lambda _key: "0123456789abcdef")
    with pytest.raises(SignatureError, match="collides with a different trusted key"):
        signing.TrustedKeys.from_dir(tmp_path)


def test_only_the_canonical_base64_of_a_signature_is_taken() -> None:
    """The last character before ``==`` holds 4 padding bits that decoders ignore: 16 texts
    decode to one signature. Any but the canonical one is a changed manifest (a byte flip in
    the signed bundle), refused."""
    signature = Ed25519PrivateKey.generate().sign(b"manifest")
    text = signing.encode_signature(signature)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[-3])
    twins = [text[:-3] + alphabet[(last & ~0xF) | low] + "==" for low in range(16)]
    assert sum(base64.b64decode(t) == signature for t in twins) == 16
    for twin in twins:
        if twin == text:
            assert signing.decode_signature(twin) == signature
        else:
            with pytest.raises(SignatureError, match="not the canonical base64"):
                signing.decode_signature(twin)
