"""Shared fixtures for bus tests: TLS material (trustme) and NKeys seed files, plus a running nats-server.

Every file is written under pytest's temporary directories; nothing listens beyond loopback.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trustme

from postee.bus.nkeys_util import new_user_seed, public_key_from_seed
from postee.bus.server import NatsServer, NatsServerOptions, open_nats_server

LOOPBACK_URL = "nats://127.0.0.1:0"


@attrs.frozen
class TLSMaterial:
    """PEM files for a server (127.0.0.1, localhost) and a client, all issued by `ca`.

    `untrusted_*` come from a second CA that the server does not trust: for negative tests.
    """

    directory: Path
    ca: trustme.CA
    ca_root: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    untrusted_ca: trustme.CA
    untrusted_ca_root: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path

    def client_context(self, *, cert: bool = True, untrusted: bool = False) -> ssl.SSLContext:
        """A client-side context trusting `ca`; with our client cert (or the untrusted CA's one)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_root))
        if untrusted:
            context.load_cert_chain(str(self.untrusted_client_cert), str(self.untrusted_client_key))
        elif cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def server_options(self, *, verify: bool = True, **kwargs: object) -> NatsServerOptions:
        """Options for a loopback server using this material (client certs required when `verify`)."""
        return NatsServerOptions(
            url=str(kwargs.pop("url", LOOPBACK_URL)),
            tls_cert=self.server_cert,
            tls_key=self.server_key,
            ca_root=self.ca_root if verify else None,
            **kwargs,  # type: ignore[arg-type]
        )


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", "::1")
    client = ca.issue_cert("postee-runner.test", common_name="postee-runner-1")
    untrusted_ca = trustme.CA()
    untrusted_client = untrusted_ca.issue_cert("postee-runner.test", common_name="postee-runner-1")
    return TLSMaterial(
        directory=directory,
        ca=ca,
        ca_root=_write(directory / "rootCA.pem", ca.cert_pem.bytes(), 0o644),
        server_cert=_write(directory / "server-cert.pem", b"".join(b.bytes() for b in server.cert_chain_pems), 0o644),
        server_key=_write(directory / "server-key.pem", server.private_key_pem.bytes()),
        client_cert=_write(directory / "runner-cert.pem", b"".join(b.bytes() for b in client.cert_chain_pems), 0o644),
        client_key=_write(directory / "runner-key.pem", client.private_key_pem.bytes()),
        untrusted_ca=untrusted_ca,
        untrusted_ca_root=_write(directory / "untrustedCA.pem", untrusted_ca.cert_pem.bytes(), 0o644),
        untrusted_client_cert=_write(
            directory / "untrusted-cert.pem", b"".join(b.bytes() for b in untrusted_client.cert_chain_pems), 0o644
        ),
        untrusted_client_key=_write(directory / "untrusted-key.pem", untrusted_client.private_key_pem.bytes()),
    )


@attrs.frozen
class NKeySeedFiles:
    """A user seed in a file (mode 0600) and its public key; and a second, wrong one."""

    path: Path
    seed: bytes
    public_key: str
    wrong_path: Path
    wrong_seed: bytes
    wrong_public_key: str


@pytest.fixture
def nkey_seed_file(tmp_path: Path) -> NKeySeedFiles:
    directory = tmp_path / "nkeys"
    directory.mkdir(mode=0o700)
    seed, wrong = new_user_seed(), new_user_seed()
    return NKeySeedFiles(
        path=_write(directory / "seed.txt", seed + b"\n"),
        seed=seed,
        public_key=public_key_from_seed(seed),
        wrong_path=_write(directory / "wrong-seed.txt", wrong + b"\n"),
        wrong_seed=wrong,
        wrong_public_key=public_key_from_seed(wrong),
    )


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A supervised plain nats-server on a free loopback port; `nats_server.client_url`."""
    async with open_nats_server(NatsServerOptions(url=LOOPBACK_URL, work_dir=tmp_path / "nats")) as server:
        yield server
