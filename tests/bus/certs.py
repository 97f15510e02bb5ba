"""Certificates with exactly the extensions a test asks for (trustme always adds clientAuth *and* serverAuth).

An operator's server certificate is often "ordinary": serverAuth only, named after the host runners
dial, never after 127.0.0.1. These helpers make such certificates with `cryptography`, so tests can
prove the controller copes with them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_AUTH = (ExtendedKeyUsageOID.SERVER_AUTH,)
CLIENT_AUTH = (ExtendedKeyUsageOID.CLIENT_AUTH,)
VALIDITY = datetime.timedelta(days=2)


def _write(path: Path, data: bytes, mode: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@attrs.frozen
class TestCA:
    """A CA certificate and key kept in memory; `root` is its certificate file."""

    __test__ = False  # not a pytest class

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    root: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256())
        )
        root = _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(name=name, key=key, cert=cert, root=root)

    def issue(self, directory: Path, stem: str, *, dns: Sequence[str] = (), ips: Sequence[str] = (),
              usages: Sequence[x509.ObjectIdentifier] = SERVER_AUTH) -> tuple[Path, Path]:
        """(cert file, key file 0600) for a leaf with exactly these names and extended key usages."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = _write(directory / f"{stem}-cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        key_path = _write(directory / f"{stem}-key.pem", _key_pem(key), 0o600)
        return cert_path, key_path
