"""TLS for the controller's own connection to its embedded nats-server, whatever certificate the operator gave.

Remote runners verify the server's certificate against their CA (`--runner-ca-root`, or the system
store) under the name they dial; with `--controller-ca-root` they must present a client certificate
from that CA. The controller dials its own server on loopback, with an *ordinary* server
certificate: serverAuth only, named after the host runners use, not after 127.0.0.1, and there is
no client certificate among the flags. Rather than weaken what remote clients face, the controller:

* **pins** the server's own certificate: the first certificate of `--controller-tls-cert` is the
  only trust anchor (`VERIFY_X509_PARTIAL_CHAIN` lets a leaf be one), and the host name is not
  checked because the pin *is* the identity. No other certificate, even one from the same CA, passes.
* when the server requires client certificates, presents one of its own: at each start it makes an
  ephemeral CA and a clientAuth certificate signed by it (`cryptography`, EC P-256). The server
  trusts the operator's CA root *plus* that CA (`NatsServerOptions.local_client_ca`). The CA's key
  exists only in memory and is dropped once the client certificate is signed; the client key is
  written (0600, in a fresh 0700 directory) only while `ssl` loads it, then removed. Remote clients
  still need a certificate from the operator's CA.

Everything here blocks (key generation, files): callers run it in a thread.
"""

from __future__ import annotations

import datetime
import os
import shutil
import ssl
import tempfile
import uuid
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postee.bus.server_errors import NatsServerConfigError

__all__ = ["LocalLinkTLS", "local_link_tls", "pinned_server_context"]

#: Validity of the ephemeral CA and client certificate: they die with the controller anyway.
LOCAL_VALIDITY = datetime.timedelta(days=3650)
#: Tolerated clock skew at the start of their validity.
CLOCK_SKEW = datetime.timedelta(minutes=5)
LOCAL_CA_NAME = "postee controller local CA"
LOCAL_CLIENT_NAME = "postee controller (local link)"


@attrs.frozen
class LocalLinkTLS:
    """What the controller's own connection needs: its TLS context, and the CA the server must add."""

    context: ssl.SSLContext
    #: PEM of the ephemeral CA that signed `context`'s client certificate (None: no client certificate).
    client_ca_pem: bytes | None


def _first_certificate(cert_file: Path) -> x509.Certificate:
    try:
        data = cert_file.read_bytes()
    except OSError as exc:
        raise NatsServerConfigError(
            f"cannot read the TLS certificate {str(cert_file)!r}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise NatsServerConfigError(f"no PEM certificate found in the TLS certificate file {str(cert_file)!r}")
    return certificates[0]


def pinned_server_context(cert_file: Path) -> ssl.SSLContext:
    """A client context that trusts exactly the first certificate of `cert_file`, whatever its names."""
    leaf = _first_certificate(cert_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the pin is the identity: names are for remote clients
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=leaf.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=signer, crl_sign=signer, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         encipher_only=False, decipher_only=False)


def _ephemeral_client() -> tuple[bytes, bytes, bytes]:
    """(CA cert PEM, client cert PEM, client key PEM); the CA key is dropped on return."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{LOCAL_CA_NAME} {uuid.uuid4()}")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + LOCAL_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signer=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        x509.CertificateBuilder().subject_name(_name(LOCAL_CLIENT_NAME)).issuer_name(ca_name)
        .public_key(client_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + LOCAL_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signer=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = client_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca_cert.public_bytes(pem), client_cert.public_bytes(pem), key_pem


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def local_link_tls(server_cert: Path, *, client_certificate: bool, scratch_dir: Path | None = None) -> LocalLinkTLS:
    """The controller's TLS context for its embedded server (see the module docstring).

    `client_certificate`: the server requires client certificates (a CA root was given). The client
    key touches `scratch_dir` (default: the system's temporary directory) only while it is loaded.
    """
    context = pinned_server_context(server_cert)
    if not client_certificate:
        return LocalLinkTLS(context=context, client_ca_pem=None)
    ca_pem, cert_pem, key_pem = _ephemeral_client()
    if scratch_dir is not None:
        scratch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory = Path(tempfile.mkdtemp(prefix="postee-local-tls-", dir=scratch_dir))  # mode 0700
    try:
        _write_private(directory / "client-cert.pem", cert_pem)
        _write_private(directory / "client-key.pem", key_pem)
        context.load_cert_chain(directory / "client-cert.pem", directory / "client-key.pem")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return LocalLinkTLS(context=context, client_ca_pem=ca_pem)
