"""Throwaway certificates for TLS tests, made with `cryptography` (EC P-256, valid from 5 minutes ago for a
day): never committed, so no test depends on a key that could leak or expire."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK_NAMES = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def certificate(subject: str, key, issuer_name: str, issuer_key, *, ca: bool, san=None) -> x509.Certificate:
    """`subject`'s certificate for `key`, signed by `issuer_key` (the same key: self-signed)."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(obj) -> bytes:
    """A certificate, or a private key (PKCS#8, unencrypted), as PEM."""
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key, written as PEM into `folder`; being
    its own CA, the certificate is also the root a client trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("localhost", key, "localhost", key, ca=True, san=LOOPBACK_NAMES)
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(pem(cert))
    keyfile.write_bytes(pem(key))
    return certfile, keyfile
