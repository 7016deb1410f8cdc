"""The broker's PKI: a CA that signs certificates and CRLs only (:func:`make_ca`), the listener's
and each identity's certificate (:func:`issue_cert`), the CRL of revoked serials
(:func:`make_crl`), PEM encodings, and the CA read back from a broker directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent.errors import InputError

CA_MIN_DAYS: Final = 3650
"""The CA (and its CRL) lives at least this long; leaf certificates ``--validity-days``."""
_CLOCK_SKEW: Final = dt.timedelta(minutes=5)


# ----------------------------------------------------------------------------------------- PKI
def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # P-256: every TLS stack takes it


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # mosquitto and the daemon cannot ask for a passphrase
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def common_name(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def make_ca(fleet: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign certificates and CRLs, nothing else."""
    key = new_key()
    now = utc_now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(common_name(f"edge-agent {fleet} CA"))
        .issuer_name(common_name(f"edge-agent {fleet} CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=max(days, CA_MIN_DAYS)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    name: str,
    *,
    days: int,
    server_names: Sequence[str] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate for ``name`` (its CN): a server's with ``server_names`` (DNS names or
    IP addresses), else a client's."""
    key = new_key()
    now = utc_now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(common_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_crl(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, revoked: Mapping[str, str]
) -> x509.CertificateRevocationList:
    """The CA's CRL of ``revoked`` (hex serial -> ISO time), valid as long as the CA: an
    expired CRL would lock every client out."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(utc_now() - _CLOCK_SKEW)
        .next_update(ca_cert.not_valid_after_utc)
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial, 16))
            .revocation_date(dt.datetime.fromisoformat(when))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def load_ca(out: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((out / "ca" / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(f"{out / 'ca' / 'ca.key'} is not the EC key this tool writes")
    return key, x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())


def crl_pem(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, revoked: Mapping[str, str]
) -> bytes:
    return make_crl(ca_key, ca_cert, revoked).public_bytes(serialization.Encoding.PEM)
