"""A raw HTTP/1.1 server for client tests: it records each request as it arrived (head and Content-Length
body, with the connection it came on) and writes whatever bytes the test says, so replies can be
malformed, cut short, never sent or trickled. On 127.0.0.1 (or `host`), port 0, plain or TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import trio
import trustme

from tests.helpers.changes import Changes

WAIT = 5.0
"""Seconds a test waits for something the server should do at once."""
MAX_REQUEST_HEAD = 1 << 20
"""The server gives up on a request head longer than this (no unbounded buffer in the tests either)."""


@attrs.frozen
class Seen:
    """One request as it arrived: the connection it came on, its head (request line and header lines,
    with the blank line), its body."""

    connection: int
    head: bytes
    body: bytes

    @property
    def method(self) -> str:
        return self.head.split(b" ", 1)[0].decode("latin-1")

    @property
    def target(self) -> str:
        return self.head.split(b" ", 2)[1].decode("latin-1")

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


Behaviour = Callable[[trio.abc.Stream], Awaitable[None]]
"""A custom way to go on answering: writes what it likes; the connection is closed when it returns."""


@attrs.frozen
class Answer:
    """What the server does with a request: write `data`, then run `then` (the connection is closed
    afterwards unless `keep`), then close the connection if `close`."""

    data: bytes = b""
    close: bool = False
    then: Behaviour | None = None
    keep: bool = False


async def hang(stream: trio.abc.Stream) -> None:
    """Never answer; read (and drop) whatever comes, until the client leaves."""
    while await stream.receive_some(65536):
        pass


async def trickle(stream: trio.abc.Stream) -> None:
    """A header line every 10 s, the head never ending (until the client leaves or the test ends)."""
    for _ in range(100_000):
        await trio.sleep(10.0)
        await stream.send_all(b"X-Still-Coming: 1\r\n")


class Server:
    """Reads requests, records them in `seen`, writes `answer(seen)`; counts connections."""

    def __init__(self, answer: Callable[[Seen], Answer | bytes]) -> None:
        self.answer = answer
        self.seen: list[Seen] = []
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.closed = 0
        self.server_names: list[str | None] = []
        self.url = ""
        self.port = 0
        self.changes = Changes(WAIT)

    async def wait(self, condition: Callable[[], bool]) -> None:
        """Until `condition()` holds (checked whenever a request arrives or a connection opens or ends)."""
        await self.changes.wait(condition)

    async def handle(self, stream: trio.abc.Stream) -> None:
        number = self.connections
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        self.changes.note()
        try:
            await self._serve(number, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.open_now -= 1
            self.closed += 1
            self.changes.note()
            await trio.aclose_forcefully(stream)

    async def _serve(self, number: int, stream: trio.abc.Stream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data or len(buffer) > MAX_REQUEST_HEAD:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            seen = Seen(number, head + b"\r\n\r\n", b"")
            length = int(seen.header("content-length") or 0)
            while len(buffer) < length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            seen = attrs.evolve(seen, body=buffer[:length])
            buffer = buffer[length:]
            self.seen.append(seen)
            self.changes.note()
            answer = self.answer(seen)
            if isinstance(answer, bytes):
                answer = Answer(answer)
            await stream.send_all(answer.data)
            if answer.then is not None:
                await answer.then(stream)
                if not answer.keep:
                    return
            if answer.close:
                return


@asynccontextmanager
async def open_server(answer: Callable[[Seen], Answer | bytes], *, tls: trustme.LeafCert | None = None,
                      host: str = "127.0.0.1") -> AsyncIterator[Server]:
    """A server on `host`, port 0; with `tls`, https with that certificate (recording the SNI names)."""
    server = Server(answer)
    handler: Callable[[trio.SocketStream], Awaitable[None]] = server.handle
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.configure_cert(context)
        context.sni_callback = lambda sock, name, ctx: server.server_names.append(name)

        async def handler(tcp: trio.SocketStream) -> None:
            stream = trio.SSLStream(tcp, context, server_side=True)
            try:
                with trio.fail_after(WAIT):
                    await stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                await trio.aclose_forcefully(tcp)
                return
            await server.handle(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=host))
        server.port = listeners[0].socket.getsockname()[1]
        shown = host if ":" not in host else f"[{host}]"
        server.url = f"{'https' if tls else 'http'}://{shown}:{server.port}"
        yield server
        nursery.cancel_scope.cancel()
