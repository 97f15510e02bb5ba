"""A lean ASGI server for `PosteeApp`: HTTP/1.1 (h11) and WebSocket (wsproto) straight on Trio streams.

Why not hypercorn (`postee.web.server.serve_app`): it costs ~100-190 µs of Python per WebSocket message
(ASGI wrapper, framing, a lock, a shielded `send_all` each) and a good share of the main process's CPU
per HTTP request; the live feed sends a few messages per event to every client. And its writes are
shielded from cancellation: a client that stops reading holds a send, its connection and a graceful
stop for ever. Here a write that waits longer than `stuck_client_timeout` gets its connection aborted
(one watchdog for all connections, not a cancel scope per write), and `websocket.send_many` writes
several text messages with one `send_all` (their frames made here: the bytes wsproto makes, cheaper).

Only the ASGI 3 subset the app uses: `http` and `websocket` scopes (no lifespan, no HTTP/2, no
permessage-deflate), with the `websocket.http.response` extension (refusals with an HTTP status) and
`postee.websocket.send_many` (`{"type": "websocket.send_many", "texts": [...]}`).

Reading happens in the application's own `receive()` calls, never in a background task: a request's
body is read as the app asks for it, WebSocket frames (and pings, answered) while the app waits for a
message. A client that leaves while the app prepares an HTTP answer is noticed on the write.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import http
import logging
import math
import ssl
import struct
import time
import urllib.parse
from typing import Any

import h11
import trio
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from postee.web.server import normalize_bind

log = logging.getLogger("postee.http")

__all__ = ["serve_lean"]

KEEP_ALIVE_TIMEOUT = 5.0
"""Seconds an idle keep-alive connection waits for its next request (hypercorn's default)."""
REQUEST_TIMEOUT = 60.0
"""Seconds a request's headers may take in all, and each read of its body (slowloris)."""
LINGER = 1.0
"""Seconds a closing connection reads what the client still sends (see `_Connection.linger`)."""
MAX_WS_MESSAGE = 1 << 20
"""Largest WebSocket message accepted from a client (bytes); beyond, close 1009."""
RECEIVE_SIZE = 65536
WRITE_SLICE = 256 * 1024
"""Bytes written at a time: the stuck-client clock restarts after each (a slow reader makes progress)."""
BACKLOG = 128
_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_DISCONNECTED = {"type": "http.disconnect"}
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


async def serve_lean(
    app: Any,
    bind: str,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    shutdown: trio.Event,
    graceful_timeout: float = 10.0,
    stuck_client_timeout: float | None = 30.0,
    max_connections: int = 1024,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `bind` until `shutdown` is set; then stop accepting, close idle connections, give
    in-flight requests and WebSockets up to `graceful_timeout`, cancel the rest and return.

    `task_status.started` gets the URL bound, as hypercorn gives it (`http://127.0.0.1:PORT`).
    `stuck_client_timeout`: seconds one write may wait for a client that takes nothing before its
    connection is aborted (None: no limit). Beyond `max_connections` at once, accepting waits."""
    ssl_context = _ssl_context(certfile, keyfile) if certfile and keyfile else None
    listener = trio.SocketListener(await _listening_socket(normalize_bind(bind)))
    server = _Server(app, ssl_context, stuck_client_timeout)
    url = f"{'https' if ssl_context else 'http'}://{_address(listener.socket)}"
    try:
        async with trio.open_nursery() as connections:
            accepting = trio.CancelScope()
            connections.start_soon(server.accept, listener, connections, accepting, trio.Semaphore(max_connections))
            connections.start_soon(server.watch_writes)
            task_status.started([url])
            await shutdown.wait()
            accepting.cancel()
            await listener.aclose()
            await server.drain(graceful_timeout)
            connections.cancel_scope.cancel()
    finally:
        await listener.aclose()


def _ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def _listening_socket(address: str) -> trio.socket.SocketType:
    """One socket, as hypercorn makes it: IPv6 when the host has a colon, `[...]` stripped."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        await sock.bind((host, int(port)))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _address(sock: trio.socket.SocketType) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == trio.socket.AF_INET6 else f"{host}:{port}"


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType:
    return stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else stream.socket


_date_cache: list[Any] = [0, b""]


def _date() -> bytes:
    """The `date` header, formatted once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[:] = [now, email.utils.formatdate(now, usegmt=True).encode()]
    return _date_cache[1]


def _response(status: int, headers: list[Any]) -> h11.Response:
    """With the reason phrase (h11 leaves it empty) and a `date`, as hypercorn answers."""
    return h11.Response(status_code=status, headers=[*headers, (b"date", _date())], reason=_REASONS.get(status, b""))


def _text_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]


class _Server:
    """The connections of one listener, and what a graceful stop needs to know about them."""

    def __init__(self, app: Any, ssl_context: ssl.SSLContext | None, stuck_client_timeout: float | None) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.write_timeout = stuck_client_timeout or math.inf
        self.stopping = False
        self.connections: set[_Connection] = set()
        self.drained = trio.Event()

    async def accept(self, listener: trio.SocketListener, nursery: trio.Nursery, scope: trio.CancelScope,
                     slots: trio.Semaphore) -> None:
        with scope:
            while True:
                await slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:  # out of descriptors or memory: wait, as trio.serve_listeners does
                    slots.release()
                    if exc.errno not in _CAPACITY_ERRNOS:
                        raise
                    log.error("accept failed (%s): waiting", exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self.serve, stream, slots)

    async def serve(self, stream: trio.abc.Stream, slots: trio.Semaphore) -> None:
        connection = None
        try:
            if self.ssl_context is not None:
                stream = await self._handshake(stream)
            if stream is not None and not self.stopping:
                connection = _Connection(self, stream)
                self.connections.add(connection)
                await connection.serve()
        finally:
            slots.release()
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if connection is not None:
                self.connections.discard(connection)
            if self.stopping and not self.connections:
                self.drained.set()

    async def _handshake(self, stream: trio.SocketStream) -> trio.SSLStream | None:
        """The TLS stream, or None (closed) when the client fails or stalls its handshake."""
        tls = trio.SSLStream(stream, self.ssl_context, server_side=True, https_compatible=True)
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                await tls.do_handshake()
                return tls
            except trio.BrokenResourceError as exc:
                log.debug("TLS handshake failed: %s", exc.__cause__ or exc)
        await trio.aclose_forcefully(tls)
        return None

    async def watch_writes(self) -> None:
        """Abort the connections whose current write has waited longer than the stuck-client timeout.

        One watchdog for all instead of a cancel scope around each write: a write is then two
        attribute stores, and a stuck one is cut within a quarter of the timeout (at most 1 s) after it."""
        if self.write_timeout == math.inf:
            return
        while True:
            await trio.sleep(min(1.0, self.write_timeout / 4))
            limit = trio.current_time() - self.write_timeout
            for connection in list(self.connections):
                since = connection.writing_since
                if since is not None and since < limit:
                    log.warning("client %s took nothing for %gs: connection aborted", connection.client,
                                self.write_timeout)
                    connection.abort(reset=True)

    async def drain(self, timeout: float) -> None:
        """Close the idle connections now, wait up to `timeout` for the others."""
        self.stopping = True
        for connection in list(self.connections):
            if connection.idle is not None:
                connection.idle.cancel()
        with trio.move_on_after(timeout):
            if self.connections:
                await self.drained.wait()


class _Connection:
    """One client connection: its h11 state, and the one place that writes to it."""

    def __init__(self, server: _Server, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER)
        self.write_lock = trio.Lock()
        self.writing_since: float | None = None
        """When the write in progress began (the watchdog's clock)."""
        self.closed = False
        """Aborted (or finished): writes are dropped, reads see the end."""
        self.idle: trio.CancelScope | None = None
        """While waiting for a next request: what a graceful stop cancels."""
        self.answered: trio.Event | None = None
        """The current HTTP exchange's "response complete" (set on abort too)."""
        sock = _socket_of(stream)
        try:
            self.client, self.local = tuple(sock.getpeername()[:2]), tuple(sock.getsockname()[:2])
        except OSError:  # already gone
            self.client = self.local = None

    async def serve(self) -> None:
        """Requests in order (a pipelined one waits in h11's buffer) until a side closes; a WebSocket
        request takes the connection."""
        while not self.closed:
            request = await self._next_request()
            if request is None:
                return
            exchange = _HttpExchange(self, request)
            if _wants_websocket(request):
                await _WebSocket(self, request, exchange).run()
                return
            await exchange.run()
            if self.closed or self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                if not self.closed and self.h11.their_state in (h11.SEND_BODY, h11.ERROR):  # input left unread
                    await self.linger()
                return
            self.h11.start_next_cycle()

    async def _next_request(self) -> h11.Request | None:
        deadline = trio.current_time() + REQUEST_TIMEOUT
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint)
                return None
            if isinstance(event, h11.Request):
                return event
            if event is not h11.NEED_DATA:  # ConnectionClosed
                return None
            if self.h11.trailing_data[0]:  # a request has begun: it has until the deadline
                data = await self.read(deadline - trio.current_time())
                if data is None:
                    log.debug("request headers stalled: connection dropped")
            else:
                data = await self._read_idle()
            if data is None:
                return None
            self.h11.receive_data(data)

    async def _read_idle(self) -> bytes | None:
        """The first bytes of the next request, None when none comes in time or the server stops."""
        if self.server.stopping:
            return None
        data = None
        with trio.move_on_after(KEEP_ALIVE_TIMEOUT) as self.idle:
            data = await self.read(math.inf)
        self.idle = None
        return data

    async def _refuse(self, status: int) -> None:
        """Answer a malformed request (or headers too large) and close, when h11 still lets us."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = f"{status} {_REASONS.get(status, b'').decode().lower()}\n".encode()
            headers = [*_text_headers(body), (b"connection", b"close")]
            data = [self.h11.send(_response(status, headers)), self.h11.send(h11.Data(data=body)),
                    self.h11.send(h11.EndOfMessage())]
            if await self.write(b"".join(data)):
                await self.linger()

    async def read(self, timeout: float) -> bytes | None:
        """Some bytes (b"": the client closed, or the connection is gone); None: nothing within `timeout`."""
        with trio.move_on_after(timeout):
            try:
                return await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
        return None

    async def write(self, data: bytes) -> bool:
        """Send `data` whole, or abort the connection: False when it is (or was already) closed.

        One writer at a time (the lock taken without a trip through the scheduler when free). A write
        that fails, is cut by the watchdog (`_Server.watch_writes`) or is cancelled by the app leaves
        the stream broken mid-message: the connection is aborted."""
        if self.closed:
            await trio.lowlevel.checkpoint()
            return False
        lock = self.write_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        sent = False
        try:
            if not self.closed:
                # in slices, each restarting the clock: the watchdog cuts a client that takes nothing,
                # not a slow one still reading a large answer (`GET /events` can be megabytes)
                view = memoryview(data)
                for start in range(0, max(len(view), 1), WRITE_SLICE):
                    self.writing_since = trio.current_time()
                    await self.stream.send_all(view[start:start + WRITE_SLICE])
                sent = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.writing_since = None
            lock.release()
            if not sent:  # stuck, gone, or cancelled (the app's own timeout)
                self.abort(reset=True)
        return sent

    def abort(self, reset: bool = False) -> None:
        """Close the socket now: a pending read sees the end, later writes are dropped. `reset`: drop the
        unsent data too (else the kernel keeps offering it to a stuck client for minutes)."""
        self.closed = True
        if self.answered is not None:
            self.answered.set()
        sock = _socket_of(self.stream)
        if reset:
            with contextlib.suppress(OSError):
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    async def linger(self) -> None:
        """Closing a socket with unread input makes the kernel reset the connection, which can destroy
        the answer still on its way (a 413 to a client still uploading): say we are done, then read
        and drop what still comes, briefly."""
        with trio.move_on_after(LINGER):
            try:
                if isinstance(self.stream, trio.abc.HalfCloseableStream):
                    await self.stream.send_eof()
                while await self.stream.receive_some(RECEIVE_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def scope(self, kind: str, request: h11.Request) -> dict[str, Any]:
        raw_path, _, query = request.target.partition(b"?")
        secure = self.server.ssl_context is not None
        scope = {
            "type": kind, "asgi": {"version": "3.0"}, "http_version": request.http_version.decode(),
            "scheme": ("https" if secure else "http") if kind == "http" else ("wss" if secure else "ws"),
            "path": urllib.parse.unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "root_path": "", "headers": list(request.headers),
            "client": self.client, "server": self.local, "extensions": {},
        }
        if kind == "http":
            scope["method"] = request.method.decode("latin-1")
        return scope


def _wants_websocket(request: h11.Request) -> bool:
    """A GET asking for a version-13 WebSocket; any other upgrade is answered as plain HTTP."""
    if request.method != b"GET":
        return False
    headers = dict(request.headers)  # the last value of each: enough for these single-valued headers
    return (b"websocket" in headers.get(b"upgrade", b"").lower()
            and b"upgrade" in headers.get(b"connection", b"").lower()
            and b"sec-websocket-key" in headers and headers.get(b"sec-websocket-version") == b"13")


class _HttpExchange:
    """One request and its response: the ASGI `receive` and `send` of an `http` scope."""

    def __init__(self, connection: _Connection, request: h11.Request) -> None:
        self.conn = connection
        self.request = request
        self.head = request.method == b"HEAD"
        self.close = False  # answer with `connection: close` whatever happens
        self.pending: h11.Data | None = None  # a body chunk taken from h11, not yet given to the app
        self.body_done = False  # h11 gave the body's end (it may still be pending for the app)
        self.delivered = False  # the app got `more_body: False`
        self.broken = False  # the body could not be read: the app sees a disconnect
        self.start: dict[str, Any] | None = None
        self.headers_sent = False
        self.complete = False
        connection.answered = self.answered = trio.Event()
        self._take_buffered()  # a request without a body: its end is already there

    async def run(self) -> None:
        try:
            await self.conn.server.app(self.conn.scope("http", self.request), self.receive, self.send)
        except Exception:
            log.exception("request failed: %s %s", self.request.method.decode("latin-1"),
                          self.request.target.decode("latin-1"))
        if not self.complete:
            await self.fail()

    async def fail(self) -> None:
        """500 when nothing was written yet, else the connection ends: the answer cannot be finished."""
        if self.headers_sent or self.conn.closed:
            self.conn.abort()
            return
        self.start = None
        await self.respond(500, b"internal error\n")

    async def respond(self, status: int, body: bytes) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": _text_headers(body)})
        await self.send({"type": "http.response.body", "body": body})

    def _take_buffered(self) -> bool:
        """Take the next body event if h11 has it buffered; False when more bytes are needed."""
        try:
            event = self.conn.h11.next_event()
        except h11.RemoteProtocolError:
            self.broken = True
            return True
        if isinstance(event, h11.Data):
            self.pending = event
        elif isinstance(event, h11.EndOfMessage):
            self.body_done = True
        else:
            return False
        return True

    async def _advance(self) -> None:
        """Read until a body chunk is pending, the body ended, or it cannot be read."""
        conn = self.conn
        while self.pending is None and not self.body_done and not self.broken:
            if self._take_buffered():
                continue
            if conn.h11.they_are_waiting_for_100_continue:
                await conn.write(conn.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
            data = None if conn.closed else await conn.read(REQUEST_TIMEOUT)
            if data is None:
                if not conn.closed:
                    log.debug("request body stalled: connection dropped")
                    conn.abort()
                self.broken = True
            else:
                conn.h11.receive_data(data)

    async def receive(self) -> dict[str, Any]:
        if self.delivered or self.conn.closed:  # ASGI: after the body, a disconnect once the answer is out
            await self.answered.wait()
            return _DISCONNECTED
        await self._advance()
        if self.broken:
            return _DISCONNECTED
        body = b""
        if self.pending is not None:
            body, self.pending = bytes(self.pending.data), None
            self._take_buffered()  # more_body False at once when the end is already there
        self.delivered = self.body_done and self.pending is None
        return {"type": "http.request", "body": body, "more_body": not self.delivered}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start" and self.start is None:
            self.start = message  # written with the first body chunk: one write for a small answer
            return
        if kind != "http.response.body" or self.start is None:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self.complete or self.conn.closed:
            await trio.lowlevel.checkpoint()
            return
        h = self.conn.h11
        chunks = []
        if not self.headers_sent:
            headers = list(self.start.get("headers", ()))
            if self.close or self.conn.server.stopping or not self.body_done:  # unread body: close after
                headers.append((b"connection", b"close"))
            chunks.append(h.send(_response(self.start["status"], headers)))
            self.headers_sent = True
        body = message.get("body", b"")
        if body and not self.head:
            chunks.append(h.send(h11.Data(data=body)))
        if not message.get("more_body", False):
            chunks.append(h.send(h11.EndOfMessage()))
            self.complete = True
        await self.conn.write(b"".join(chunks))
        if self.complete:
            self.answered.set()


def _text_frame(text: str) -> bytes:
    """One unmasked, final text frame: the bytes wsproto's `send(TextMessage(text))` makes without
    extensions (a test checks it), at a tenth of its cost."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class _WebSocket:
    """One WebSocket: the handshake through h11, frames through wsproto, messages in the app's `receive`."""

    def __init__(self, connection: _Connection, request: h11.Request, exchange: _HttpExchange) -> None:
        self.conn = connection
        self.request = request
        self.http = exchange  # answers a refusal (`websocket.http.response.*`, a close before accept, 500)
        self.http.close = True
        self.ws: WSConnection | None = None
        self.connected = False  # `websocket.connect` was given
        self.settled = trio.Event()  # accepted or refused
        self.parts: list[Any] = []
        self.size = 0
        self.disconnected: dict[str, Any] | None = None

    async def run(self) -> None:
        scope = self.conn.scope("websocket", self.request)
        protocols = dict(self.request.headers).get(b"sec-websocket-protocol", b"")
        scope["subprotocols"] = [p.strip() for p in protocols.decode("latin-1").split(",") if p.strip()]
        scope["extensions"] = {"websocket.http.response": {}, "postee.websocket.send_many": {}}
        try:
            if not self.http.body_done:
                raise RuntimeError("a WebSocket request with a body")
            await self.conn.server.app(scope, self.receive, self.send)
        except Exception:
            log.exception("websocket failed: %s", scope["path"])
            if self.ws is None:
                await self.http.fail()
            else:
                await self._send_frames([CloseConnection(code=1011)])
        await self._finish()

    async def _finish(self) -> None:
        """Not accepted: 403 if the app said nothing. Accepted: a close frame if the app sent none, then
        the client's close frame awaited briefly (closing first could reset the connection)."""
        self.settled.set()
        if self.ws is None:
            if self.http.start is None:
                await self.http.respond(403, b"")
            elif not self.http.complete:
                self.conn.abort()
            return
        if self.ws.state is ConnectionState.OPEN:
            await self._send_frames([CloseConnection(code=1000)])
        with trio.move_on_after(LINGER):
            while self.disconnected is None:
                await self.receive()

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        await self.settled.wait()
        ws = self.ws
        while self.disconnected is None:
            if ws is None or self.conn.closed:
                self.disconnected = {"type": "websocket.disconnect", "code": 1006}
                break
            event = next(ws.events(), None)
            if event is None:
                ws.receive_data(await self.conn.read(math.inf) or None)  # None: the end (close code 1006)
                continue
            message = await self._handle(event)
            if message is not None:
                return message
        return self.disconnected

    async def _handle(self, event: Event) -> dict[str, Any] | None:
        """A complete message or the disconnect for the app; None: a frame handled here (ping, pong)."""
        if isinstance(event, (TextMessage, BytesMessage)):
            return await self._message_part(event)
        if isinstance(event, CloseConnection):
            return await self._closed(event)
        if isinstance(event, Ping):
            await self._send_frames([event.response()])
        return None

    async def _message_part(self, event: TextMessage | BytesMessage) -> dict[str, Any] | None:
        self.parts.append(event.data)
        self.size += len(event.data)
        if self.size > MAX_WS_MESSAGE:
            return await self._closed(CloseConnection(code=1009, reason="message too big"))
        if not event.message_finished:
            return None
        parts, self.parts, self.size = self.parts, [], 0
        if isinstance(event, TextMessage):
            return {"type": "websocket.receive", "text": "".join(parts)}
        return {"type": "websocket.receive", "bytes": b"".join(parts)}

    async def _closed(self, event: CloseConnection) -> dict[str, Any]:
        """The client's close frame (answered), a protocol error or a message too big (said with a close
        frame), or the end of the stream (code 1006): the app's disconnect."""
        await self._send_frames([CloseConnection(code=event.code, reason=event.reason)])
        self.disconnected = {"type": "websocket.disconnect", "code": int(event.code)}
        return self.disconnected

    async def _send_frames(self, events: list[Any]) -> None:
        """Frames in one write; nothing (silently, as hypercorn) once the connection is closing."""
        ws = self.ws
        if ws is None or self.conn.closed or ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            await trio.lowlevel.checkpoint()
            return
        if ws.state is ConnectionState.REMOTE_CLOSING:  # the client closed: only our close may follow
            events = [e for e in events if isinstance(e, CloseConnection)][:1]
        data = b"".join([ws.send(event) for event in events])
        if data:
            await self.conn.write(data)

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.ws is None:
            await self._send_before_accept(kind, message)
        elif kind == "websocket.send_many":
            await self._send_texts(message["texts"])
        elif kind == "websocket.send" and message.get("text") is not None:
            await self._send_texts([message["text"]])
        elif kind == "websocket.send":
            await self._send_frames([BytesMessage(data=message.get("bytes") or b"")])
        elif kind == "websocket.close":
            await self._send_frames([CloseConnection(code=message.get("code", 1000), reason=message.get("reason"))])
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after accept")

    async def _send_texts(self, texts: list[str]) -> None:
        """The feed's path: text frames made here, all in one write."""
        if self.ws is not None and self.ws.state is ConnectionState.OPEN:
            await self.conn.write(b"".join([_text_frame(text) for text in texts]))
        else:
            await trio.lowlevel.checkpoint()

    async def _send_before_accept(self, kind: str, message: dict[str, Any]) -> None:
        if self.http.start is None and kind == "websocket.accept":
            await self._accept(message)
        elif self.http.start is None and kind == "websocket.close":
            await self.http.respond(403, b"")
        elif kind.startswith("websocket.http.response."):
            await self.http.send({**message, "type": kind.replace("websocket.", "", 1)})
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} before accept")
        self.settled.set()

    async def _accept(self, message: dict[str, Any]) -> None:
        key = dict(self.request.headers)[b"sec-websocket-key"]
        headers = [(b"upgrade", b"WebSocket"), (b"connection", b"Upgrade"),
                   (b"sec-websocket-accept", generate_accept_token(key))]
        if message.get("subprotocol"):
            headers.append((b"sec-websocket-protocol", message["subprotocol"].encode()))
        headers += list(message.get("headers") or ())
        data = self.conn.h11.send(h11.InformationalResponse(status_code=101, headers=headers,
                                                                  reason=b"Switching Protocols"))
        self.ws = WSConnection(ConnectionType.SERVER, trailing_data=self.conn.h11.trailing_data[0])
        await self.conn.write(data)
