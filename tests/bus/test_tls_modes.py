"""The controller's TLS modes with an *ordinary* server certificate: serverAuth only, no 127.0.0.1 in its names.

* `--controller-tls-cert`/`--controller-tls-key` alone: the server speaks TLS, runners verify it
  (their CA root, under the name they dial) and need no client certificate.
* plus `--controller-ca-root`: client certificates are required and verified against that CA.

In both the controller reaches its own server (it pins the server's certificate and, when client
certificates are required, presents an ephemeral one of its own) without that weakening anything for
remote clients.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio

from actors.errors import TransportAuthError
from postee.bus.local_link import local_link_tls, pinned_server_context
from postee.bus.nats_transport import open_nats_transport
from postee.bus.server import NatsServerOptions, open_nats_server
from postee.roles.launch import LinkOptions
from tests.bus.certs import CLIENT_AUTH, SERVER_AUTH, TestCA
from tests.bus.conftest import LOOPBACK_URL
from tests.bus.link_helpers import controller_node, free_port, runner_node
from tests.daemon.helpers import admin_get


def _material(tmp_path: Path):
    directory = tmp_path / "pki"
    directory.mkdir()
    ca = TestCA.create(directory, "postee-ca")
    other = TestCA.create(directory, "other-ca")
    server = ca.issue(directory, "server", dns=["localhost"], usages=SERVER_AUTH)
    runner = ca.issue(directory, "runner", dns=["postee-runner-1.test"], usages=CLIENT_AUTH)
    stranger = other.issue(directory, "stranger", dns=["postee-runner-1.test"], usages=CLIENT_AUTH)
    return ca, server, runner, stranger


async def _refused(url: str, **options) -> str:
    with trio.fail_after(20), pytest.raises(TransportAuthError) as info:
        async with open_nats_transport(url, name="probe", connect_timeout=5, **options):
            pass
    return str(info.value)


def _private_keys_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()}


async def test_cert_and_key_alone_serve_tls_that_runners_verify_without_a_client_certificate(tmp_path):
    ca, (server_cert, server_key), _, _ = _material(tmp_path)
    port = free_port()
    controller_link = LinkOptions(url=f"nats://127.0.0.1:{port}", tls_cert=str(server_cert), tls_key=str(server_key))
    runner_link = LinkOptions(url=f"nats://localhost:{port}", ca_root=str(ca.root))
    async with controller_node(tmp_path, controller_link):
        async with runner_node(tmp_path, runner_link) as (runner, client):
            assert set(runner.node.pipeline.actions) == {"terminate-pod"}
            assert (await admin_get(client, runner.node, "/readyz")).json()["checks"]["controller_link"] is True
        # TLS is really on: a client that does not trust the CA is refused, so is one dialling a wrong name
        assert "not trusted" in await _refused(f"nats://localhost:{port}")
        assert "not trusted" in await _refused(f"nats://127.0.0.1:{port}", tls_ca=str(ca.root))


async def test_ca_root_requires_client_certificates_and_the_controller_still_connects(tmp_path):
    ca, (server_cert, server_key), (runner_cert, runner_key), (stranger_cert, stranger_key) = _material(tmp_path)
    port = free_port()
    controller_link = LinkOptions(url=f"nats://127.0.0.1:{port}", tls_cert=str(server_cert), tls_key=str(server_key),
                                  ca_root=str(ca.root))
    runner_link = LinkOptions(url=f"nats://localhost:{port}", ca_root=str(ca.root), tls_cert=str(runner_cert),
                              tls_key=str(runner_key))
    async with controller_node(tmp_path, controller_link):
        async with runner_node(tmp_path, runner_link) as (runner, _):
            assert set(runner.node.pipeline.actions) == {"terminate-pod"}
        url = f"nats://localhost:{port}"
        assert "client certificate" in await _refused(url, tls_ca=str(ca.root))
        assert "does not accept our client certificate" in await _refused(
            url, tls_ca=str(ca.root), tls_cert=str(stranger_cert), tls_key=str(stranger_key))
        # the controller's own client key never stays on disk: only the operator's keys are there
        assert _private_keys_under(tmp_path) == _private_keys_under(tmp_path / "pki")


async def test_the_pin_trusts_exactly_the_servers_own_certificate(tmp_path):
    ca, (server_cert, server_key), _, _ = _material(tmp_path)
    sibling_cert, sibling_key = ca.issue(tmp_path / "pki", "sibling", dns=["localhost"], usages=SERVER_AUTH)
    options = NatsServerOptions(url=LOOPBACK_URL, tls_cert=sibling_cert, tls_key=sibling_key, work_dir=tmp_path / "n")
    async with open_nats_server(options) as server:
        pinned = await trio.to_thread.run_sync(pinned_server_context, server_cert)
        # same CA, same names: still not the pinned certificate
        message = await _refused(server.client_url, tls_context=pinned)
        assert "not trusted" in message
        own = await trio.to_thread.run_sync(pinned_server_context, sibling_cert)
        async with open_nats_transport(server.client_url, name="pinned", tls_context=own, connect_timeout=5):
            pass


def test_local_link_client_certificate_is_signed_by_its_own_ca(tmp_path):
    ca, (server_cert, _), _, _ = _material(tmp_path)
    local = local_link_tls(server_cert, client_certificate=True, scratch_dir=tmp_path / "scratch")
    assert local.client_ca_pem is not None and local.client_ca_pem != ca.root.read_bytes()
    assert b"PRIVATE KEY" not in local.client_ca_pem
    assert list((tmp_path / "scratch").iterdir()) == []  # the client key was only there while loaded
    assert local.context.verify_mode == ssl.CERT_REQUIRED and not local.context.check_hostname
    assert local_link_tls(server_cert, client_certificate=False).client_ca_pem is None
