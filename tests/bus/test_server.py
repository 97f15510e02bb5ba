"""The embedded nats-server actor, against real nats-server processes on loopback ports chosen by the OS."""

from __future__ import annotations

import functools
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
import trio

from actors import EventKind, RestartPolicy, SupervisorEvent, SupervisorGaveUp, one_error
from actors.testing import wait_until
from postee.bus.nkeys_util import NKeyError, public_key_from_seed_file, validate_public_key
from postee.bus.server import (
    DEFAULT_MAX_PAYLOAD,
    LOG_TAIL_LINES,
    MAX_LOG_LINE,
    NatsServer,
    NatsServerConfigError,
    NatsServerDied,
    NatsServerNotFound,
    NatsServerOptions,
    NatsServerPortInUse,
    NatsServerStartTimeout,
    find_nats_server,
    open_nats_server,
    parse_listen_url,
    render_config,
    serve_nats_server,
)
from tests.bus.conftest import LOOPBACK_URL, NKeySeedFiles, TLSMaterial
from tests.bus.nats_wire import NatsWire

FAST_RESTARTS = RestartPolicy(max_restarts=3, window=30.0, backoff_initial=0.05, backoff_max=0.2)


@asynccontextmanager
async def _nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose single error is raised as itself (as a supervisor sees it), not as a group."""
    with one_error():
        async with trio.open_nursery() as nursery:
            yield nursery


def _run_dirs(work_dir: Path) -> list[Path]:
    return list(work_dir.glob("postee-nats-*"))


def _gone(pid: int) -> bool:
    """True when no process (not even a zombie) has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port(server: NatsServer) -> int:
    assert server.port is not None
    return server.port


# -- options and config -------------------------------------------------------------------------
def test_parse_listen_url() -> None:
    assert parse_listen_url("nats://0.0.0.0:4222") == ("0.0.0.0", 4222)
    assert parse_listen_url("nats://127.0.0.1:-1") == ("127.0.0.1", 0)
    assert parse_listen_url("nats://[::1]:0") == ("::1", 0)
    assert parse_listen_url("localhost") == ("localhost", 4222)
    assert parse_listen_url("tls://10.0.0.1:7422") == ("10.0.0.1", 7422)
    for bad in ("http://x:1", "nats://x:70000", "nats://u:p@x:1", "nats://x:1/path"):
        with pytest.raises(NatsServerConfigError):
            parse_listen_url(bad)


def test_options_validation(tmp_path: Path) -> None:
    with pytest.raises(NatsServerConfigError, match="certificate and a key"):
        NatsServerOptions(tls_cert=tmp_path / "c.pem")
    with pytest.raises(NatsServerConfigError, match="needs server TLS"):
        NatsServerOptions(ca_root=tmp_path / "ca.pem")
    with pytest.raises(NatsServerConfigError, match="max_payload"):
        NatsServerOptions(max_payload=0)
    options = NatsServerOptions()
    assert (options.host, options.port, options.max_payload) == ("0.0.0.0", 4222, DEFAULT_MAX_PAYLOAD)


def test_render_config(tls_material: TLSMaterial, nkey_seed_file: NKeySeedFiles) -> None:
    options = tls_material.server_options(seed_files=[nkey_seed_file.path])
    text = render_config(options, port=0, public_keys=[nkey_seed_file.public_key])
    assert "port: -1" in text
    assert "verify: true" in text and str(tls_material.ca_root) in text
    assert f'{{nkey: "{nkey_seed_file.public_key}"}}' in text
    assert nkey_seed_file.seed.decode() not in text
    assert f"max_payload: {DEFAULT_MAX_PAYLOAD}" in text


def test_nkeys_helpers(nkey_seed_file: NKeySeedFiles) -> None:
    assert public_key_from_seed_file(nkey_seed_file.path) == nkey_seed_file.public_key
    assert validate_public_key(f" {nkey_seed_file.public_key}\n") == nkey_seed_file.public_key
    key = nkey_seed_file.public_key
    for bad in (key[:20] + ("B" if key[20] == "A" else "A") + key[21:], "hello", nkey_seed_file.seed.decode()):
        with pytest.raises(NKeyError) as caught:
            validate_public_key(bad)
        assert nkey_seed_file.seed.decode()[:12] not in str(caught.value)
    with pytest.raises(NatsServerConfigError, match="not an NKEY public key"):
        NatsServer(NatsServerOptions(nkeys=["nope"]))._public_keys()


def test_binary_lookup(tmp_path: Path) -> None:
    assert find_nats_server().name.startswith("nats-server")
    with pytest.raises(NatsServerNotFound, match="not executable"):
        find_nats_server(tmp_path / "nope")


# -- lifecycle ----------------------------------------------------------------------------------
async def test_starts_on_free_port_answers_info_and_stops_cleanly(tmp_path: Path) -> None:
    server = NatsServer(NatsServerOptions(url=LOOPBACK_URL, work_dir=tmp_path))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        assert url == f"nats://127.0.0.1:{server.port}"
        assert server.pid is not None and server.ready_count == 1
        async with await NatsWire.connect("127.0.0.1", _port(server)) as wire:
            assert wire.info["max_payload"] == DEFAULT_MAX_PAYLOAD
            assert not wire.info.get("tls_required") and not wire.info.get("auth_required")
            assert await wire.hello() == ["+OK", "PONG"]
        [run_dir] = _run_dirs(tmp_path)
        config = run_dir / "nats-server.conf"
        assert config.stat().st_mode & 0o777 == 0o600
        assert run_dir.stat().st_mode & 0o777 == 0o700
        nursery.cancel_scope.cancel()
    assert _gone(server.pid)  # terminated *and* reaped: a zombie would still answer kill(pid, 0)
    assert not _run_dirs(tmp_path)
    assert "Server Exiting.." in "\n".join(server.log_tail)  # graceful: it logged its own shutdown


async def test_wildcard_host_gives_loopback_client_url(tmp_path: Path) -> None:
    async with open_nats_server(NatsServerOptions(url="nats://0.0.0.0:0", work_dir=tmp_path)) as server:
        assert server.client_url == f"nats://127.0.0.1:{server.port}"
        async with await NatsWire.connect("127.0.0.1", _port(server)) as wire:
            assert wire.info["port"] == server.port


async def test_process_death_raises_died_with_log_tail(tmp_path: Path) -> None:
    server = NatsServer(NatsServerOptions(url=LOOPBACK_URL, work_dir=tmp_path))
    with pytest.raises(NatsServerDied) as caught:
        async with _nursery() as nursery:
            await nursery.start(server.run)
            assert server.pid is not None
            os.kill(server.pid, signal.SIGKILL)
    error = caught.value
    assert error.returncode == -signal.SIGKILL
    assert "SIGKILL" in str(error) and "Server is ready" in str(error)
    assert error.log_tail and not error.during_startup


async def test_kill_9_is_restarted_on_the_same_port(tmp_path: Path) -> None:
    events: list[SupervisorEvent] = []
    server = NatsServer(NatsServerOptions(url=LOOPBACK_URL, work_dir=tmp_path))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: serve_nats_server(
                server=server, policy=FAST_RESTARTS, on_event=events.append, task_status=task_status
            )
        )
        first_pid, port = server.pid, _port(server)
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        with trio.fail_after(10):
            await wait_until(lambda: server.ready_count == 2)
        assert server.pid != first_pid and _gone(first_pid)
        assert server.port == port and server.client_url == url
        kinds = [e.kind for e in events]
        assert kinds == [EventKind.CRASHED, EventKind.RESTARTED]
        assert isinstance(events[0].error, NatsServerDied)
        async with await NatsWire.connect("127.0.0.1", port) as wire:
            assert await wire.hello(verbose=False) == ["PONG"]
        second_pid = server.pid
        nursery.cancel_scope.cancel()
    assert second_pid is not None and _gone(second_pid)


async def test_crash_loop_gives_up(tmp_path: Path) -> None:
    server = NatsServer(NatsServerOptions(url=LOOPBACK_URL, work_dir=tmp_path))
    policy = RestartPolicy(max_restarts=1, window=30.0, backoff_initial=0.01)
    with pytest.raises(SupervisorGaveUp) as caught:
        async with _nursery() as nursery:
            await nursery.start(lambda task_status: serve_nats_server(server=server, policy=policy,
                                                                     task_status=task_status))
            for count in (1, 2):
                with trio.fail_after(10):
                    await wait_until(lambda count=count: server.ready_count == count)
                assert server.pid is not None
                os.kill(server.pid, signal.SIGKILL)
    assert isinstance(caught.value.__cause__, NatsServerDied)
    assert server.pid is not None and _gone(server.pid)


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with trio.socket.socket() as blocker:
        await blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        options = NatsServerOptions(url=f"nats://127.0.0.1:{port}", work_dir=tmp_path)
        with trio.fail_after(10), pytest.raises(NatsServerPortInUse) as caught:
            await NatsServer(options).run()
        assert caught.value.port == port
        assert f"127.0.0.1:{port}" in str(caught.value) and "address already in use" in str(caught.value)
        # Supervised: a first start that fails is reported at once, not retried.
        events: list[SupervisorEvent] = []
        with trio.fail_after(10), pytest.raises(NatsServerPortInUse):
            await serve_nats_server(options, policy=FAST_RESTARTS, on_event=events.append)
        assert events == []


async def test_missing_tls_file_is_a_config_error(tmp_path: Path) -> None:
    options = NatsServerOptions(url=LOOPBACK_URL, tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")
    with trio.fail_after(10), pytest.raises(NatsServerConfigError, match="TLS certificate file"):
        await serve_nats_server(options)


async def _start_error(form: str, options: NatsServerOptions) -> BaseException:
    """The exception a failed first start raises, caught where the entry point raised it."""
    serve = functools.partial(serve_nats_server, options, policy=FAST_RESTARTS)
    try:
        if form == "serve":
            await serve()
        elif form == "nursery.start":
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(serve)
                except BaseException as exc:  # inside the caller's nursery, which would wrap it
                    return exc
        else:
            async with open_nats_server(options, policy=FAST_RESTARTS):
                pass
    except BaseException as exc:
        return exc
    raise AssertionError("the server started")


@pytest.mark.parametrize("form", ["serve", "nursery.start", "open"])
async def test_a_server_that_cannot_start_raises_one_exception_not_a_group(form: str, tmp_path: Path) -> None:
    exits = tmp_path / "exits-at-once"
    exits.write_text("#!/bin/sh\necho '[FTL] made-up fatal error'\nexit 3\n")
    exits.chmod(0o755)
    cases = [
        (NatsServerOptions(url=LOOPBACK_URL, binary=tmp_path / "nope", work_dir=tmp_path), NatsServerNotFound),
        (NatsServerOptions(url=LOOPBACK_URL, binary=exits, work_dir=tmp_path), NatsServerDied),
        (NatsServerOptions(url=LOOPBACK_URL, seed_files=[tmp_path / "none"], work_dir=tmp_path), NatsServerConfigError),
    ]
    for options, expected in cases:
        with trio.fail_after(10):
            error = await _start_error(form, options)
        assert type(error) is expected, repr(error)
        assert not isinstance(error.__context__, BaseExceptionGroup)
    assert "made-up fatal error" in str(await _start_error(form, cases[1][0]))
    assert not _run_dirs(tmp_path)


# -- TLS ----------------------------------------------------------------------------------------
async def test_tls_without_client_verification(tls_material: TLSMaterial, tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        async with open_nats_server(tls_material.server_options(verify=False, work_dir=tmp_path)) as server:
            async with await NatsWire.connect("127.0.0.1", _port(server)) as wire:
                assert wire.info["tls_required"] is True and not wire.info.get("tls_verify")
                await wire.start_tls(tls_material.client_context(cert=False))
                assert await wire.hello() == ["+OK", "PONG"]
    # The readiness probe does not finish a TLS handshake; the server's complaint about it is not an error.
    assert [e for e in logs if e["log_level"] == "error"] == []
    assert any(e.get("readiness_probe") for e in logs)


async def test_tls_with_ca_root_requires_a_trusted_client_certificate(
    tls_material: TLSMaterial, tmp_path: Path
) -> None:
    async with open_nats_server(tls_material.server_options(work_dir=tmp_path)) as server:
        port = _port(server)
        async with await NatsWire.connect("127.0.0.1", port) as wire:
            assert wire.info["tls_required"] is True and wire.info["tls_verify"] is True
            await wire.start_tls(tls_material.client_context())
            assert await wire.hello() == ["+OK", "PONG"]
        for context in (tls_material.client_context(cert=False), tls_material.client_context(untrusted=True)):
            async with await NatsWire.connect("127.0.0.1", port) as wire:
                # TLS 1.3: the client may finish its side of the handshake before the server's alert arrives.
                with pytest.raises((ssl.SSLError, trio.BrokenResourceError, EOFError)):
                    await wire.start_tls(context)
                    await wire.hello()
        # The server survives the rejected clients.
        async with await NatsWire.connect("127.0.0.1", port) as wire:
            await wire.start_tls(tls_material.client_context())
            assert await wire.hello(verbose=False) == ["PONG"]


async def test_client_must_trust_the_server_ca(tls_material: TLSMaterial, tmp_path: Path) -> None:
    async with open_nats_server(tls_material.server_options(verify=False, work_dir=tmp_path)) as server:
        async with await NatsWire.connect("127.0.0.1", _port(server)) as wire:
            wrong = ssl.create_default_context(cafile=str(tls_material.untrusted_ca_root))
            with pytest.raises((ssl.SSLCertVerificationError, trio.BrokenResourceError)):
                await wire.start_tls(wrong)


# -- NKeys --------------------------------------------------------------------------------------
async def _check_nkeys(port: int, seeds: NKeySeedFiles, context: ssl.SSLContext | None) -> None:
    async with await NatsWire.connect("127.0.0.1", port) as wire:
        assert wire.info["auth_required"] is True and wire.info["nonce"]
        if context is not None:
            await wire.start_tls(context)
        assert await wire.hello(seed=seeds.seed) == ["+OK", "PONG"]
    async with await NatsWire.connect("127.0.0.1", port) as wire:
        if context is not None:
            await wire.start_tls(context)
        assert await wire.hello(seed=seeds.wrong_seed) == ["-ERR 'Authorization Violation'"]
    async with await NatsWire.connect("127.0.0.1", port) as wire:
        if context is not None:
            await wire.start_tls(context)
        assert await wire.hello() == ["-ERR 'Authorization Violation'"]


async def test_nkeys_without_tls(nkey_seed_file: NKeySeedFiles, tmp_path: Path) -> None:
    options = NatsServerOptions(url=LOOPBACK_URL, seed_files=[nkey_seed_file.path], work_dir=tmp_path)
    async with open_nats_server(options) as server:
        await _check_nkeys(_port(server), nkey_seed_file, None)


async def test_nkeys_with_tls_and_client_certificates(
    tls_material: TLSMaterial, nkey_seed_file: NKeySeedFiles, tmp_path: Path
) -> None:
    options = tls_material.server_options(seed_files=[nkey_seed_file.path], work_dir=tmp_path)
    async with open_nats_server(options) as server:
        await _check_nkeys(_port(server), nkey_seed_file, tls_material.client_context())


async def test_nkeys_from_public_keys_and_decorated_seed_file(nkey_seed_file: NKeySeedFiles, tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_bytes(
        b"-----BEGIN USER NKEY SEED-----\n" + nkey_seed_file.wrong_seed + b"\n------END USER NKEY SEED------\n"
    )
    options = NatsServerOptions(url=LOOPBACK_URL, seed_files=[creds], nkeys=[nkey_seed_file.public_key],
                                work_dir=tmp_path)
    async with open_nats_server(options) as server:
        for seed in (nkey_seed_file.seed, nkey_seed_file.wrong_seed):
            async with await NatsWire.connect("127.0.0.1", _port(server)) as wire:
                assert await wire.hello(seed=seed, verbose=False) == ["PONG"]


async def test_seed_never_logged_nor_in_errors(nkey_seed_file: NKeySeedFiles, tmp_path: Path) -> None:
    secret = nkey_seed_file.seed.decode()
    with structlog.testing.capture_logs() as logs:
        server = NatsServer(NatsServerOptions(url=LOOPBACK_URL, seed_files=[nkey_seed_file.path], work_dir=tmp_path))
        with pytest.raises(NatsServerDied) as died:
            async with _nursery() as nursery:
                await nursery.start(server.run)
                async with await NatsWire.connect("127.0.0.1", _port(server)) as wire:
                    assert await wire.hello(seed=nkey_seed_file.wrong_seed) == ["-ERR 'Authorization Violation'"]
                [run_dir] = _run_dirs(tmp_path)
                assert secret not in (run_dir / "nats-server.conf").read_text()
                assert server.pid is not None
                os.kill(server.pid, signal.SIGKILL)
    assert logs and any(entry["event"] == "nats-server ready" for entry in logs)
    assert secret not in repr(logs) and secret not in str(died.value) and secret not in repr(server.log_tail)
    # A damaged seed file: the error names the file, never its content.
    damaged = tmp_path / "damaged.txt"
    flipped = "B" if secret[10] == "A" else "A"  # a middle character: the last one ends in padding bits
    damaged.write_text(secret[:10] + flipped + secret[11:] + "\n")
    wrong_kind = tmp_path / "not-a-seed.txt"
    wrong_kind.write_text("this is not a seed\n")
    for path in (damaged, wrong_kind):
        with trio.fail_after(10), pytest.raises(NatsServerConfigError) as bad:
            await NatsServer(NatsServerOptions(url=LOOPBACK_URL, seed_files=[path], work_dir=tmp_path)).run()
        assert str(path) in str(bad.value)
        assert secret[:20] not in str(bad.value) and "not a seed" not in str(bad.value)
        assert bad.value.__cause__ is None and bad.value.__suppress_context__


async def test_shared_nats_server_fixture(nats_server: NatsServer) -> None:
    assert nats_server.client_url is not None
    async with await NatsWire.connect("127.0.0.1", _port(nats_server)) as wire:
        assert await wire.hello(verbose=False) == ["PONG"]


# -- stubborn and silent processes (a stand-in binary) --------------------------------------------
FAKE_SERVER = '''#!{python}
"""Stands in for nats-server: {mode}."""
import json, os, signal, socket, sys, time
args = sys.argv[1:]
ports_dir = args[args.index("--ports_file_dir") + 1]
if "{mode}" == "ignores SIGTERM":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
port = listener.getsockname()[1]
print("[INF] fake server listening", flush=True)
if "{mode}" == "ignores SIGTERM":
    with open(os.path.join(ports_dir, f"fake_{{os.getpid()}}.ports"), "w") as f:
        json.dump({{"nats": [f"nats://127.0.0.1:{{port}}"]}}, f)
    print("x" * 10000, flush=True)  # one very long line
    for n in range(100):
        print(f"[WRN] line {{n}}", flush=True)
    listener.settimeout(0.05)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
            conn.sendall(b"INFO {{}}\\r\\n")
            conn.close()
        except OSError:
            pass
else:
    time.sleep(60)
'''


def _fake_binary(directory: Path, mode: str) -> Path:
    path = directory / "fake-nats-server"
    path.write_text(FAKE_SERVER.format(python=sys.executable, mode=mode))
    path.chmod(0o755)
    return path


async def test_sigterm_ignored_then_killed_after_grace_and_log_is_bounded(tmp_path: Path) -> None:
    binary = _fake_binary(tmp_path, "ignores SIGTERM")
    options = NatsServerOptions(url=LOOPBACK_URL, binary=binary, stop_grace=0.3, work_dir=tmp_path)
    server = NatsServer(options)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            with trio.fail_after(10):
                await wait_until(lambda: "[WRN] line 99" in server.log_tail)
            start = trio.current_time()
            nursery.cancel_scope.cancel()
    assert 0.3 <= trio.current_time() - start < 5
    assert server.pid is not None and _gone(server.pid)
    assert any(e["event"].startswith("nats-server did not stop in time") for e in logs)
    assert len(server.log_tail) == LOG_TAIL_LINES
    long_lines = [e["event"] for e in logs if e["event"].startswith("xxx")]
    assert long_lines and all(len(line) <= MAX_LOG_LINE + 10 for line in long_lines)
    assert [e["log_level"] for e in logs if e["event"] == "line 5"] == ["warning"]


async def test_never_ready_times_out_and_cancel_during_startup_stops_it(tmp_path: Path) -> None:
    binary = _fake_binary(tmp_path, "never ready")
    server = NatsServer(NatsServerOptions(url=LOOPBACK_URL, binary=binary, ready_timeout=0.5, work_dir=tmp_path))
    with trio.fail_after(10), pytest.raises(NatsServerStartTimeout, match="not ready within 0.5s"):
        await server.run()
    assert server.pid is not None and _gone(server.pid)
    server = NatsServer(NatsServerOptions(url=LOOPBACK_URL, binary=binary, work_dir=tmp_path))
    with trio.move_on_after(0.5) as scope:
        await server.run()
    assert scope.cancelled_caught and server.client_url is None
    assert server.pid is not None and _gone(server.pid)
    assert not _run_dirs(tmp_path)


# -- the real client library ----------------------------------------------------------------------
def _nats_py_round_trip(url: str, context: ssl.SSLContext, seed_file: Path) -> bytes:
    """Connect with nats-py (asyncio, in this worker thread), publish a large message to ourselves."""
    import asyncio

    import nats

    async def main() -> bytes:
        client = await asyncio.wait_for(
            nats.connect(url, tls=context, tls_hostname="127.0.0.1", nkeys_seed=str(seed_file),
                         allow_reconnect=False, connect_timeout=5),
            timeout=10,
        )
        try:
            sub = await client.subscribe("postee.test")
            await client.publish("postee.test", b"x" * (3 * 1024 * 1024))  # over nats-server's default 1 MiB
            message = await sub.next_msg(timeout=5)
            return message.data
        finally:
            await client.close()

    return asyncio.run(main())


async def test_nats_py_client_with_tls_client_cert_and_nkeys(
    tls_material: TLSMaterial, nkey_seed_file: NKeySeedFiles, tmp_path: Path
) -> None:
    options = tls_material.server_options(seed_files=[nkey_seed_file.path], work_dir=tmp_path)
    async with open_nats_server(options) as server:
        assert server.client_url is not None
        with trio.fail_after(20):
            data = await trio.to_thread.run_sync(
                _nats_py_round_trip, server.client_url, tls_material.client_context(), nkey_seed_file.path
            )
    assert len(data) == 3 * 1024 * 1024
