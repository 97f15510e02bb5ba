"""The lean ASGI server (`postee.web.lean_server`) on real sockets (127.0.0.1, port 0).

Small ASGI apps show the HTTP/1.1 and WebSocket behaviour the brief asks for (keep-alive, pipelining,
chunked bodies, early answers, HEAD, errors, refusals, a stuck client cut off, TLS, graceful stop);
the real `PosteeApp` of a standalone node, served by `serve_lean` on a second port, shows the
application works on it unchanged (intake, `/feed`, refusals).
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trustme
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import TextMessage

from postee.embed import NodeOptions, NodeParts, open_standalone
from postee.sim.recording import Recordings, always_ok, recording_factory
from postee.web.app import PosteeApp
from postee.web.lean_server import _text_frame, serve_lean
from tests.daemon.helpers import webhook_route

# -- test apps -------------------------------------------------------------------------------------


class EchoApp:
    """`http`: answers with what it saw (JSON) and records each request's receive messages; a few paths
    behave badly on purpose. `websocket` on `/ws`: echoes, `many` → three messages with `send_many`."""

    def __init__(self, send_timeout: float = 60.0) -> None:
        self.send_timeout = send_timeout  # `/flood` gives up a message not taken in time, as serve_feed
        self.flood_gave_up = False
        self.download: tuple[int, dict] | None = None  # `/download`: chunks sent, then what receive() gave
        self.downloaded = trio.Event()
        self.messages: list[list[dict]] = []  # per request: what `receive()` gave
        self.arrived = trio.Event()  # a first HTTP request reached the app
        self.read = trio.Event()  # a first request body was read (to its end or a disconnect)
        self.scopes: list[dict] = []
        self.entered = trio.Event()  # `/slow` started
        self.go = trio.Event()  # `/slow` may answer
        self.cancelled = trio.Event()  # `/forever` was cancelled
        self.ws_disconnect: dict | None = None
        self.ws_ended = trio.Event()
        self.flood_sent = 0

    async def __call__(self, scope, receive, send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
            return
        path = scope["path"]
        self.arrived.set()
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/silent":
            return
        if path == "/early":  # answers before reading the body, as PosteeApp's 401 and 413
            await respond(send, 413, b"too large\n")
            return
        if path == "/half":  # fails after the answer started
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("half")
        if path == "/download":
            await self.large_answer(receive, send)
            return
        if path == "/slow":
            self.entered.set()
            await self.go.wait()
        if path == "/forever":
            self.entered.set()
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled.set()
        received = await read_all(receive)
        self.messages.append(received)
        self.read.set()
        body = b"".join(m.get("body", b"") for m in received)
        answer = {"method": scope["method"], "path": path, "body": body.decode(), "client": list(scope["client"])}
        await respond(send, 200, json.dumps(answer).encode())

    async def large_answer(self, receive, send) -> None:
        """1 MiB chunks (bounded: 256 of them); then what `receive` says once the body is over."""
        await read_all(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        for _ in range(256):
            await send({"type": "http.response.body", "body": b"x" * (1 << 20), "more_body": True})
            sent += 1
        await send({"type": "http.response.body", "body": b""})
        self.download = (sent, await receive())
        self.downloaded.set()

    async def websocket(self, scope, receive, send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/refuse":
            await send({"type": "websocket.http.response.start", "status": 401,
                        "headers": [(b"content-length", b"3")]})
            await send({"type": "websocket.http.response.body", "body": b"no\n"})
            return
        if scope["path"] == "/close-first":
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["path"] == "/nothing":  # returns without a word
            return
        await send({"type": "websocket.accept"})
        if scope["path"] == "/crash":
            raise RuntimeError("crash after accept")
        try:
            async with trio.open_nursery() as nursery:
                if scope["path"] == "/flood":
                    nursery.start_soon(self.flood, send, nursery.cancel_scope)
                await self.echo(receive, send)
                nursery.cancel_scope.cancel()
        finally:
            self.ws_ended.set()

    async def echo(self, receive, send) -> None:
        for _ in range(100):
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.ws_disconnect = message
                return
            if message.get("text") == "many":
                await send({"type": "websocket.send_many", "texts": ["a", "b", "c"]})
            elif message.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})

    async def flood(self, send, scope: trio.CancelScope) -> None:
        """Send 64 KiB messages until the connection is cut (bounded: 4000 of them, 256 MB)."""
        for _ in range(4000):
            with trio.move_on_after(self.send_timeout) as waited:
                await send({"type": "websocket.send", "text": "x" * 65536})
            if waited.cancelled_caught:
                self.flood_gave_up = True
                return
            self.flood_sent += 1
            if self.ws_disconnect is not None:
                return


async def read_all(receive) -> list[dict]:
    messages = []
    for _ in range(10_000):
        message = await receive()
        messages.append(message)
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return messages
    raise AssertionError("endless body")


async def respond(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(app, **options):
    """`serve_lean(app)` on 127.0.0.1:0: its URL; stopped (and awaited) on exit."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(functools.partial(serve_lean, app, "127.0.0.1:0", shutdown=shutdown, **options))
        yield url
        shutdown.set()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def raw(url: str) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port_of(url))


async def read_to_end(stream: trio.abc.Stream) -> bytes:
    """Everything until the server closes (bounded: 10 s, 1000 reads)."""
    data = b""
    with trio.fail_after(10):
        for _ in range(1000):
            chunk = await stream.receive_some(65536)
            if not chunk:
                return data
            data += chunk
    raise AssertionError("the server never closed")


# -- HTTP ------------------------------------------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection_with_the_asgi_scope():
    app = EchoApp()
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        answers = [(await client.get(f"/a%20b/{n}?x=1&y=%2F")).json() for n in range(3)]
        assert [a["path"] for a in answers] == ["/a b/0", "/a b/1", "/a b/2"]
        assert len({tuple(a["client"]) for a in answers}) == 1  # one connection
    scope = app.scopes[0]
    assert scope["asgi"] == {"version": "3.0"} and scope["http_version"] == "1.1" and scope["scheme"] == "http"
    assert (scope["raw_path"], scope["query_string"], scope["root_path"]) == (b"/a%20b/0", b"x=1&y=%2F", "")
    assert scope["server"] == ("127.0.0.1", port_of(url)) and scope["extensions"] == {}
    assert (b"host", f"127.0.0.1:{port_of(url)}".encode()) in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])


async def test_the_bound_urls_are_hypercorns():
    for bind, host in [("127.0.0.1:0", "127.0.0.1"), ("0.0.0.0:0", "0.0.0.0"), (":0", "0.0.0.0"),
                       ("localhost:0", "127.0.0.1")]:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(functools.partial(serve_lean, EchoApp(), bind, shutdown=shutdown))
            assert url.startswith(f"http://{host}:") and port_of(url) > 0
            async with httpx.AsyncClient(timeout=10) as client:
                assert (await client.get(f"http://127.0.0.1:{port_of(url)}/")).status_code == 200
            shutdown.set()


async def test_pipelined_requests_are_answered_in_order():
    async with serving(EchoApp()) as url:
        stream = await raw(url)
        await stream.send_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n"
                              b"POST /two HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc")
        data = await read_to_end(stream)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert data.index(b'"path": "/one"') < data.index(b'"path": "/two"') and b'"body": "abc"' in data


async def test_a_chunked_request_body_is_streamed_to_the_app():
    app = EchoApp()

    async def chunks():
        for n in range(5):
            yield f"part{n};".encode()

    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.post("/upload", content=chunks())
    assert answer.json()["body"] == "part0;part1;part2;part3;part4;"
    [messages] = app.messages
    assert all(m["type"] == "http.request" for m in messages) and messages[-1]["more_body"] is False


async def test_an_answer_before_the_body_was_read_closes_the_connection():
    async with serving(EchoApp()) as url:
        stream = await raw(url)  # a big upload, barely begun: the app answers 413 at once
        await stream.send_all(b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1000)
        data = await read_to_end(stream)
        await stream.aclose()
        assert data.startswith(b"HTTP/1.1 413 ") and b"connection: close\r\n" in data.lower()
        assert data.endswith(b"too large\n")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:  # the server goes on
            answer = await client.post("/early", content=b"y" * 100_000)
            assert answer.status_code == 413 and answer.headers["connection"] == "close"
            assert (await client.get("/")).status_code == 200


async def test_head_answers_headers_only():
    async with serving(EchoApp()) as url:
        stream = await raw(url)
        await stream.send_all(b"HEAD /h HTTP/1.1\r\nhost: x\r\n\r\n"
                              b"GET /g HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = await read_to_end(stream)
    head, rest = data.split(b"\r\n\r\n", 1)  # the HEAD answer's headers, then at once the GET answer
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 0" not in head and b"content-length: " in head
    assert rest.startswith(b"HTTP/1.1 200 OK") and b'"path": "/g"' in rest and b'"/h"' not in rest


async def test_app_failures_answer_500_or_cut_the_answer_and_the_server_goes_on():
    async with serving(EchoApp()) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        failed = await client.get("/boom")
        assert (failed.status_code, failed.text) == (500, "internal error\n")
        assert (await client.get("/silent")).status_code == 500  # returned without answering
        with pytest.raises(httpx.RemoteProtocolError):  # the answer had begun: the connection ends
            await client.get("/half")
        assert (await client.get("/")).status_code == 200


async def test_a_malformed_request_gets_400_and_huge_headers_431():
    async with serving(EchoApp()) as url:
        stream = await raw(url)
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        assert (await read_to_end(stream)).startswith(b"HTTP/1.1 400 ")
        await stream.aclose()
        stream = await raw(url)  # more than h11's 16 KiB limit still incomplete after a read
        await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n")
        assert (await read_to_end(stream)).startswith(b"HTTP/1.1 431 ")
        await stream.aclose()


async def test_a_client_leaving_mid_body_is_a_disconnect_for_the_app():
    app = EchoApp()
    async with serving(app) as url:
        stream = await raw(url)
        await stream.send_all(b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n" + b"x" * 10)
        with trio.fail_after(10):
            await app.arrived.wait()
        await stream.aclose()
        with trio.fail_after(10):
            await app.read.wait()
    [received] = app.messages
    assert received[-1] == {"type": "http.disconnect"} and received[0]["more_body"] is True


async def test_beyond_max_connections_accepting_waits():
    async with serving(EchoApp(), max_connections=1) as url:
        first = await raw(url)
        await first.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await first.receive_some(65536)).startswith(b"HTTP/1.1 200")
        second = await raw(url)  # the kernel's backlog takes it; the server does not yet
        await second.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        with trio.move_on_after(0.3) as waited:
            await second.receive_some(65536)
        assert waited.cancelled_caught
        await first.aclose()
        assert (await read_to_end(second)).startswith(b"HTTP/1.1 200")


# -- WebSocket -------------------------------------------------------------------------------------


def ws(url: str, path: str) -> str:
    return url.replace("http", "ws", 1) + path


async def test_websocket_messages_both_ways_send_many_ping_and_close():
    app = EchoApp()
    async with serving(app) as url:
        async with open_websocket_url(ws(url, "/ws?k=v")) as client:
            await client.send_message("hi")
            assert await client.get_message() == "echo:hi"
            await client.send_message(b"\x01\x02")
            assert await client.get_message() == b"\x02\x01"
            await client.send_message("many")  # one write, three messages
            assert [await client.get_message() for _ in range(3)] == ["a", "b", "c"]
            with trio.fail_after(5):
                await client.ping(b"p1")  # returns when the pong came
        with trio.fail_after(5):
            await app.ws_ended.wait()
    assert app.ws_disconnect == {"type": "websocket.disconnect", "code": 1000}
    scope = app.scopes[0]
    assert (scope["type"], scope["scheme"], scope["path"], scope["query_string"]) == ("websocket", "ws", "/ws", b"k=v")
    assert scope["extensions"] == {"websocket.http.response": {}, "postee.websocket.send_many": {}}
    assert scope["subprotocols"] == []


async def test_websocket_app_failures_and_oversized_messages_close_with_their_codes():
    app = EchoApp()
    async with serving(app) as url:
        async with open_websocket_url(ws(url, "/crash")) as client:
            with pytest.raises(ConnectionClosed) as crashed:
                await client.get_message()
        assert crashed.value.reason.code == 1011
        async with open_websocket_url(ws(url, "/ws")) as client:
            with pytest.raises(ConnectionClosed) as too_big:  # the close may come while the client sends
                await client.send_message("x" * (2 << 20))  # over the server's 1 MiB limit
                await client.get_message()
        assert too_big.value.reason.code == 1009
        with trio.fail_after(5):
            await app.ws_ended.wait()
        assert app.ws_disconnect == {"type": "websocket.disconnect", "code": 1009}


@pytest.mark.parametrize("text", ["", "é", "x" * 125, "x" * 126, "x" * 65535, "x" * 65536, "ü" * 40_000])
def test_text_frames_are_the_bytes_wsproto_makes(text):
    assert _text_frame(text) == WSConnection(ConnectionType.SERVER).send(TextMessage(data=text))


async def test_websocket_refusals_are_http_answers():
    async with serving(EchoApp()) as url:
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(ws(url, "/refuse")):
                pass
        assert (refused.value.status_code, refused.value.body) == (401, b"no\n")
        with pytest.raises(ConnectionRejected) as closed:
            async with open_websocket_url(ws(url, "/close-first")):
                pass
        assert closed.value.status_code == 403
        with pytest.raises(ConnectionRejected) as silent:
            async with open_websocket_url(ws(url, "/nothing")):
                pass
        assert silent.value.status_code == 403


async def stuck_client(url: str, request: bytes) -> trio.SocketStream:
    """A client with a small receive window that sends `request` and then reads only its first bytes."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    await sock.connect(("127.0.0.1", port_of(url)))
    stream = trio.SocketStream(sock)
    await stream.send_all(request)
    await stream.receive_some(200)
    return stream


async def reset_or_end(stream: trio.SocketStream) -> bool:
    """True once the server ended the connection (a reset, or the end after what it had sent)."""
    try:
        with trio.fail_after(5):
            for _ in range(10_000):
                if not await stream.receive_some(65536):
                    return True
    except trio.BrokenResourceError:
        return True
    finally:
        await stream.aclose()
    return False


UPGRADE = (b"GET /flood HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
           b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")


async def test_a_websocket_client_that_stops_reading_is_cut_after_the_stuck_client_timeout():
    app = EchoApp()
    async with serving(app, stuck_client_timeout=0.5) as url:
        started = trio.current_time()
        stream = await stuck_client(url, UPGRADE)
        with trio.fail_after(10):
            await app.ws_ended.wait()
        assert trio.current_time() - started >= 0.5
        assert app.ws_disconnect == {"type": "websocket.disconnect", "code": 1006}
        assert app.flood_sent < 4000 and not app.flood_gave_up  # cut by the server, before the loop's bound
        assert await reset_or_end(stream)


async def test_an_app_cancelling_a_stuck_send_ends_the_connection():
    """Without a server limit, the app's own timeout (as serve_feed's) cuts the send short: the stream is
    then broken mid-frame, so the connection ends and the app's receive says so."""
    app = EchoApp(send_timeout=0.5)
    async with serving(app, stuck_client_timeout=None) as url:
        stream = await stuck_client(url, UPGRADE)
        with trio.fail_after(10):
            await app.ws_ended.wait()
        assert app.flood_gave_up and app.ws_disconnect == {"type": "websocket.disconnect", "code": 1006}
        assert await reset_or_end(stream)


async def test_an_http_client_that_stops_reading_is_cut_and_the_app_told():
    app = EchoApp()
    async with serving(app, stuck_client_timeout=0.5) as url:
        started = trio.current_time()
        stream = await stuck_client(url, b"GET /download HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(10):  # the app's later sends returned at once, silently
            await app.downloaded.wait()
        assert trio.current_time() - started >= 0.5
        assert app.download == (256, {"type": "http.disconnect"})
        assert await reset_or_end(stream)


# -- TLS -------------------------------------------------------------------------------------------


async def test_tls_with_a_certificate_file(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    app = EchoApp()
    async with serving(app, certfile=str(certfile), keyfile=str(keyfile)) as url:
        assert url.startswith("https://127.0.0.1:")
        plain = await raw(url)  # a client that does not speak TLS is dropped (at most a TLS alert)
        await plain.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert not (await read_to_end(plain)).startswith(b"HTTP")
        await plain.aclose()
        async with httpx.AsyncClient(base_url=url, verify=trust, timeout=10) as client:
            assert (await client.post("/tls", content=b"secret")).json()["body"] == "secret"
        async with open_websocket_url(ws(url, "/ws"), ssl_context=trust) as client:
            await client.send_message("hi")
            assert await client.get_message() == "echo:hi"
    assert [s["scheme"] for s in app.scopes] == ["https", "wss"]


# -- graceful stop ---------------------------------------------------------------------------------


async def test_a_graceful_stop_finishes_in_flight_requests_and_closes_idle_connections_at_once():
    app = EchoApp()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(functools.partial(serve_lean, app, "127.0.0.1:0", shutdown=shutdown,
                                                      graceful_timeout=10))
        idle = await raw(url)
        await idle.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await idle.receive_some(65536)).startswith(b"HTTP/1.1 200")
        busy = await raw(url)
        await busy.send_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(5):
            await app.entered.wait()
        shutdown.set()
        with trio.fail_after(1):
            assert await idle.receive_some(100) == b""  # closed at once
        with pytest.raises(OSError):  # no longer accepting
            await raw(url)
        app.go.set()
        answer = await read_to_end(busy)
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close\r\n" in answer.lower()
    # the nursery exited: serve_lean returned once the last connection ended


async def test_a_request_stuck_past_the_graceful_timeout_is_cancelled():
    app = EchoApp()
    shutdown = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(functools.partial(serve_lean, app, "127.0.0.1:0", shutdown=shutdown,
                                                          graceful_timeout=0.5))
            stuck = await raw(url)
            await stuck.send_all(b"GET /forever HTTP/1.1\r\nhost: x\r\n\r\n")
            await app.entered.wait()
            shutdown.set()
            stopping = trio.current_time()
        assert 0.5 <= trio.current_time() - stopping < 5
    assert app.cancelled.is_set()
    assert await read_to_end(stuck) == b""


# -- the real application ----------------------------------------------------------------------------


@asynccontextmanager
async def posteeapp_on_lean(tmp_path):
    """A standalone node (hypercorn on its own port) and `serve_lean(PosteeApp(node))` on another: the node
    and the lean server's URL."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(webhook_route("https://hooks.example.com/x", route="all") + "    retries: 0\n")
    options = NodeOptions(cfgfile=str(cfg), http_bind="127.0.0.1:0", https_bind=None, db_path=str(tmp_path / "db"),
                          rego_isolation="thread", rego_workers=1, environ={})
    parts = NodeParts(actions=recording_factory("node", Recordings(), always_ok))
    async with open_standalone(options, parts=parts) as node, serving(PosteeApp(node)) as url:
        yield node, url


async def test_posteeapp_serves_intake_and_the_live_feed(tmp_path):
    async with posteeapp_on_lean(tmp_path) as (node, url):
        bearer = [(b"authorization", f"Bearer {node.api_key()}".encode())]
        async with open_websocket_url(ws(url, "/feed"), extra_headers=bearer) as feed, \
                httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/ping")).text == "Postee alive!"
            for n in range(2):
                assert (await client.post("/", content=json.dumps({"image": f"img-{n}"}))).status_code == 200
            with trio.fail_after(10):
                messages = [json.loads(await feed.get_message()) for _ in range(6)]
        kinds = sorted((m["type"], m.get("stage")) for m in messages)
        assert kinds == [("event", "accepted")] * 2 + [("event", "routed")] * 2 + [("execution", None)] * 2


async def test_posteeapp_refusals_on_lean(tmp_path):
    async with posteeapp_on_lean(tmp_path) as (node, url):
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(ws(url, "/feed")):
                pass
        assert refused.value.status_code == 401
        with pytest.raises(ConnectionRejected) as elsewhere:
            async with open_websocket_url(ws(url, "/events")):
                pass
        assert elsewhere.value.status_code == 404
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            too_large = await client.post("/", content=b"x" * (17 * 1024 * 1024))
            assert too_large.status_code == 413
            assert (await client.get("/events")).status_code == 401
            assert (await client.get("/healthz")).text == "ok\n"


async def test_a_slow_but_steady_reader_of_a_large_answer_is_not_cut():
    """Found in review: the stuck-client clock ran over a whole answer, so a client reading an 8 MB
    `GET /events` at ~3 MB/s was cut after 2 s while it was still reading. It now restarts per slice."""
    size = 8 << 20

    async def big(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % size)]})
        await send({"type": "http.response.body", "body": b"x" * size})

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(functools.partial(serve_lean, big, "127.0.0.1:0", shutdown=stop,
                                                      stuck_client_timeout=1.0))
        sock = trio.socket.socket()
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 65536)
        await sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        await sock.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        got = 0
        with trio.fail_after(30):
            while got < size:  # the headers, then the body: ~4 s at this pace, 4x the stuck-client timeout
                chunk = await sock.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
                await trio.sleep(0.02)
        sock.close()
        stop.set()
    assert got > size  # every byte of the body (plus the headers) arrived
