"""A self-signed certificate for the HTTPS listener when none is configured.

Postee ships a fixed certificate; we generate one on first start (next to the database, so it is
stable across restarts and clients can pin it) and reuse it afterwards. The key file is 0600 whatever
the umask, and is set so again at every start when it exists already.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from postee.store.private import make_private, make_private_dirs, open_private

CERT_NAME = "postee-selfsigned.crt"
KEY_NAME = "postee-selfsigned.key"
VALIDITY_DAYS = 3650


def ensure_self_signed(db_path: str | os.PathLike[str]) -> tuple[str, str]:
    """Return (certfile, keyfile) beside the database, generating them if missing. Blocking: use a thread."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(db_path).resolve().parent
    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    if cert_path.exists() and key_path.exists():
        make_private(key_path)  # a key from an older version, or copied in with a loose mode
        return str(cert_path), str(key_path)
    make_private_dirs(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"postee {hostname}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName(hostname),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = open_private(key_path, os.O_WRONLY | os.O_TRUNC)  # 0600 whatever the umask, also when it existed
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)
