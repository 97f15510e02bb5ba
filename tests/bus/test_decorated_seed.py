"""Decorated NKeys seed files (`-----BEGIN USER NKEY SEED-----`, as `nsc` writes them) for every client.

The server side always read them; a client connection handed the *path* to nats-py, whose parser
only takes a bare seed. Checked with nats-py itself: a real nats-server requiring the NKey, our
transport and a bare nats-py client, all from the same decorated file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
import trio

from actors.errors import TransportAuthError
from postee.bus.nats_transport import open_nats_transport
from postee.bus.nkeys_util import new_user_seed, read_seed
from postee.bus.server import NatsServerOptions, open_nats_server
from postee.roles.launch import LinkOptions
from tests.bus.conftest import LOOPBACK_URL
from tests.bus.link_helpers import controller_node, free_port, runner_node
from tests.daemon.helpers import admin_get

#: A user JWT as nsc writes it (the content does not matter here: the server authenticates the NKey).
FAKE_JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJURVNUIn0.c2lnbmF0dXJl"


def _creds_text(seed: bytes) -> str:
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{FAKE_JWT}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


@pytest.fixture
def creds(tmp_path: Path) -> tuple[Path, bytes]:
    seed = new_user_seed()
    path = tmp_path / "user.creds"
    path.write_text(_creds_text(seed))
    path.chmod(0o600)
    return path, seed


def _bare_nats_py_publish(url: str, seed: str, subject: str, data: bytes) -> None:
    """nats-py on its own (asyncio, in this worker thread), authenticated with the seed itself."""
    import nats

    async def main() -> None:
        client = await asyncio.wait_for(
            nats.connect(url, nkeys_seed_str=seed, allow_reconnect=False, connect_timeout=5), timeout=10
        )
        try:
            await client.publish(subject, data)
            await client.flush(timeout=5)
        finally:
            await client.close()

    asyncio.run(main())


async def test_transport_and_bare_nats_py_connect_with_a_decorated_seed_file(tmp_path, creds):
    path, seed = creds
    options = NatsServerOptions(url=LOOPBACK_URL, seed_files=[path], work_dir=tmp_path / "nats")
    with structlog.testing.capture_logs() as logs:
        async with open_nats_server(options) as server:
            assert server.client_url is not None
            async with open_nats_transport(server.client_url, name="decorated", nkey_seed_file=str(path),
                                           connect_timeout=5) as transport:
                async with transport.subscribe("postee.decorated") as subscription:
                    with trio.fail_after(20):
                        await trio.to_thread.run_sync(_bare_nats_py_publish, server.client_url,
                                                      read_seed(path).decode(), "postee.decorated", b"hello")
                        message = await subscription.next(timeout=10)
                assert message.data == b"hello"
            # a wrong seed, decorated the same way, is still refused at once
            wrong = tmp_path / "wrong.creds"
            wrong.write_text(_creds_text(new_user_seed()))
            with trio.fail_after(20), pytest.raises(TransportAuthError, match="authorization violation"):
                async with open_nats_transport(server.client_url, name="wrong", nkey_seed_file=str(wrong),
                                               connect_timeout=5):
                    pass
    assert seed.decode() not in repr(logs)


async def test_a_file_without_a_seed_is_refused_naming_the_file(tmp_path):
    options = NatsServerOptions(url=LOOPBACK_URL, work_dir=tmp_path / "nats")
    empty = tmp_path / "no-seed.creds"
    empty.write_text("-----BEGIN USER NKEY SEED-----\nnot a seed\n------END USER NKEY SEED------\n")
    async with open_nats_server(options) as server:
        with trio.fail_after(20), pytest.raises(TransportAuthError, match="no NKEY seed found in seed file"):
            async with open_nats_transport(server.client_url, name="empty", nkey_seed_file=str(empty),
                                           connect_timeout=5):
                pass


async def test_controller_and_runner_with_decorated_seed_files(tmp_path, creds):
    path, _ = creds
    link = LinkOptions(url=f"nats://127.0.0.1:{free_port()}", seed_file=str(path))
    async with controller_node(tmp_path, link), runner_node(tmp_path, link) as (runner, client):
        assert set(runner.node.pipeline.actions) == {"terminate-pod"}
        assert (await admin_get(client, runner.node, "/readyz")).json()["checks"]["controller_link"] is True
