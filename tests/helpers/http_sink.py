"""A real HTTP(S) server for tests that records what clients sent and answers as scripted.

Hypercorn's Trio worker serves a tiny ASGI app on 127.0.0.1, port 0, inside the test's own Trio
run, so a test talks to it over real sockets with no threads and no extra process:

    async with open_http_sink([Reply(503), Reply(200, "ok")]) as sink:
        ...  # point an action at sink.url
        first, second = await sink.wait_for(2)
        assert first.header("content-type") == "application/json"

Replies are used in order, one per request; once they run out every request gets `default`.
A `Reply.delay` holds the answer back (to provoke client timeouts). Requests are recorded as they
arrive, before any delay, so a test can count attempts that timed out.

`open_https_sink` serves TLS with a certificate from a throwaway trustme CA (`sink.ca`);
`sink.client_ssl_context()` trusts it.
"""

from __future__ import annotations

import json
import logging
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio
import trustme
from hypercorn.config import Config
from hypercorn.trio import serve

DEFAULT_WAIT_TIMEOUT = 5.0
"""Seconds `wait_for` waits for the expected number of requests."""

SERVER_GRACE = 0.1
"""Seconds in-flight requests get when the sink closes (their delays are cancelled after that)."""


@attrs.frozen
class Reply:
    """One scripted answer: status, body, extra headers, and seconds to wait before answering."""

    status: int = 200
    body: bytes | str = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0

    def body_bytes(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


@attrs.frozen
class RecordedRequest:
    """A request as the server saw it. Header names are lower-case; repeated headers stay separate."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float = attrs.field(factory=time.monotonic, eq=False)
    """When the request arrived (monotonic clock), to compare arrival order across sinks."""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def query_params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


class HttpSink:
    """The recording server's state; `url` is set once it listens."""

    def __init__(self, replies: Iterable[Reply | int], default: Reply) -> None:
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self._replies = [reply if isinstance(reply, Reply) else Reply(reply) for reply in replies]
        self._default = default
        self._arrived = trio.Event()
        self.ca: trustme.CA | None = None

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the sink's CA (HTTPS sinks only)."""
        if self.ca is None:
            raise RuntimeError("not an HTTPS sink")
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    async def wait_for(self, count: int, timeout: float = DEFAULT_WAIT_TIMEOUT) -> list[RecordedRequest]:
        """The first `count` requests, once that many arrived; `TimeoutError` after `timeout` seconds."""
        with trio.move_on_after(timeout):
            while len(self.requests) < count:
                await self._arrived.wait()
            return self.requests[:count]
        raise TimeoutError(f"expected {count} request(s) within {timeout:g}s, got {len(self.requests)}")

    def _record(self, request: RecordedRequest) -> Reply:
        index = len(self.requests)
        self.requests.append(request)
        self._arrived.set()
        self._arrived = trio.Event()
        return self._replies[index] if index < len(self._replies) else self._default

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        reply = self._record(
            RecordedRequest(
                method=scope["method"],
                path=scope["path"],
                query=scope["query_string"].decode("latin-1"),
                headers=tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]),
                body=bytes(body),
            )
        )
        if reply.delay:
            await trio.sleep(reply.delay)
        payload = reply.body_bytes()
        headers = [(b"content-length", str(len(payload)).encode())]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _config(certfile: str | None = None, keyfile: str | None = None) -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("tests.http_sink")
    config.graceful_timeout = SERVER_GRACE
    if certfile:
        config.certfile = certfile
        config.keyfile = keyfile
    return config


@asynccontextmanager
async def _serving(sink: HttpSink, config: Config) -> AsyncIterator[HttpSink]:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, sink, config, shutdown_trigger=trio.sleep_forever))
        sink.url = binds[0]
        try:
            yield sink
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_http_sink(replies: Iterable[Reply | int] = (), *, default: Reply = Reply()) -> AsyncIterator[HttpSink]:
    """A recording HTTP server on 127.0.0.1, port 0, for the duration of the block."""
    sink = HttpSink(replies, default)
    async with _serving(sink, _config()) as running:
        yield running


@asynccontextmanager
async def open_https_sink(
    replies: Iterable[Reply | int] = (), *, default: Reply = Reply(), ca: trustme.CA | None = None
) -> AsyncIterator[HttpSink]:
    """As `open_http_sink`, over TLS with a certificate for 127.0.0.1/localhost from `ca` (or a new CA)."""
    sink = HttpSink(replies, default)
    sink.ca = ca or trustme.CA()
    certificate = sink.ca.issue_cert("127.0.0.1", "localhost")
    with tempfile.TemporaryDirectory(prefix="http-sink-") as directory:
        pem = f"{directory}/server.pem"
        certificate.private_key_and_cert_chain_pem.write_to_path(pem)
        async with _serving(sink, _config(pem, pem)) as running:
            yield running
