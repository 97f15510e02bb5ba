"""A lean HTTP/1.1 client for the URL actions (webhook, http, slack, teams): httpx's behaviour, a fifth of its CPU.

Why (issue #15): under `bench/pipeline.py` the webhook/http actions took ~47% of the daemon's main thread,
nearly all of it httpx's per-request machinery (Request/Response models, URL and header objects, auth and
redirect flows, httpcore's pool, h11's event machine), about 1.4 ms of CPU per POST on the bench machine.
`bench/http_client.py` measures the alternatives (httpx, httpcore alone, a minimal h11 client, this one); this
client sends the same bytes and classifies the same failures for 0.13-0.19 of httpx's CPU per request there
(225-260 µs against 1350-1790 µs, sequential and 8 in flight), 0.5-0.6 of a bare h11 client's.

What it is: a pool of keep-alive connections (Trio TCP streams, `trio.SSLStream` for https) per origin.
A request's head is written by hand from the same header list httpx would build, in the same order;
the reply's head is checked against h11's grammar with one regular expression and parsed by hand when it
is a plain HTTP/1.1 reply framed by Content-Length (or bodiless: 204, 304, HEAD). Anything else in a
reply (chunked or close-delimited bodies, 1xx, HTTP/1.0, obs-fold, malformed heads) is handed, with the
bytes already read, to an h11 connection that replays the request: h11 parses it and raises what it
raises under httpx. Failures are raised as the httpx exceptions httpx would raise (same class, same
message), so `httpclient.stream`'s classification applies unchanged.

Kept exactly as `httpx.AsyncClient(follow_redirects=True)` (the client `open_http_client` builds) does it:

- headers: the client's defaults (`Accept`, `Accept-Encoding`, `Connection`, `User-Agent`, read from the
  httpx client) merged with the request's, then `Host`, `Content-Length` (`0` for a bodiless POST, PUT,
  PATCH), `Authorization: Basic` from `user:pass@` in the URL, `Cookie` from the client's cookie jar
  (shared with the httpx client, filled from `Set-Cookie` replies); the URL's path and query as httpx
  normalizes them (`httpx.URL`), IPv6 literals, IDNA hosts;
- redirects: up to 20 (then `TooManyRedirects`); 301 turns a POST into a GET, 302 and 303 anything but
  HEAD; the body and `Content-Length` are dropped when the method becomes GET, `Authorization` when the
  origin changes (except http→https on the default ports); a redirect reply's body is read and dropped;
- replies: decoded as httpx decodes them (`Content-Encoding` through `httpx.Response`), read up to the
  caller's limit; a longer one is cut and its connection closed, never reused;
- timeouts: `timeout` seconds for each phase (connect, TLS handshake, each write, each read, the wait for
  a free connection slot) raising `ConnectTimeout`, `WriteTimeout`, `ReadTimeout`, `PoolTimeout`;
- a write error is ignored and the reply read anyway (a server may answer then close); no reply at all is
  "Server disconnected without sending a response.";
- the pool (one per client): at most 100 connections, at most 20 idle ones, idle ones expire after 5 s;
  an idle connection whose socket became readable (the server closed it) is dropped before use, as httpcore
  does, so a request is never sent on a connection known to be dead (one the server closes while the request
  is on its way fails, retryable, as under httpx);
- TLS: the caller's `SSLContext` (ALPN `http/1.1`), SNI and hostname check on the URL's host; a
  certificate failure is a `ConnectError` caused by the `SSLCertVerificationError`.

Not implemented here, sent through the httpx client instead (`LeanClient.plan` returns None): a proxy in
the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`: then every request goes through httpx, which
applies `NO_PROXY`), any request option other than `headers` and `content` (`json=`, `params=`, `auth=`,
...), a body that is not `bytes`, a URL httpx would refuse or not send to (no http/https scheme, no host,
a bad port), the CONNECT method, headers that are not plain ASCII (name a token, value printable, no
surrounding blanks: httpx/h11 raise for those, and still do) and the headers `Host`, `Content-Length`,
`Transfer-Encoding` and `Upgrade` set by the caller.

Differences from httpx, on purpose: no INFO log line per request on the `httpx` logger (httpx's line
carries the full URL, userinfo and webhook secrets included); bytes a server sends past the end of a reply
close that connection (httpx would read them as the start of the next reply); the request head and body go
out in one write. A redirect to a scheme other than http/https raises `UnsupportedProtocol` (httpcore
also accepts ws/wss there).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any
from urllib.request import getproxies

import attrs
import h11
import httpx
import trio

MAX_CONNECTIONS = 100
"""Connections open at once, all origins together (httpx's default limit)."""
MAX_IDLE_CONNECTIONS = 20
"""Idle keep-alive connections kept (httpx's default)."""
KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept for reuse (httpx's default)."""
MAX_REDIRECTS = 20
"""Redirects followed before `TooManyRedirects` (httpx's default)."""
READ_SIZE = 64 * 1024
"""Bytes asked of the socket per read (httpcore's)."""
MAX_HEAD_BYTES = 100 * 1024
"""A reply head longer than this is an error (httpcore's h11 `max_incomplete_event_size`)."""
CLOSE_TIMEOUT = 1.0
"""Seconds an orderly close (TLS close_notify) of an idle connection may take."""

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods that get `Content-Length: 0` when they have no body (as httpx sends them)."""
DEFAULT_PORTS = {"http": 80, "https": 443}
CLOSED_MESSAGE = "Cannot send a request, as the client has been closed."
NO_RESPONSE = "Server disconnected without sending a response."
CALLER_ONLY_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "upgrade"})
"""Request headers that change framing or the Host: a request setting one goes through httpx."""

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_PLAIN_VALUE = re.compile(r"(?:[\x21-\x7e](?:[ \t]*[\x21-\x7e])*)?")
"""A header value the fast path sends: printable ASCII, blanks only inside (h11 refuses others)."""


def _plain_value(value: str) -> bool:
    """`_PLAIN_VALUE.fullmatch(value)`, without the regex for the usual value: the http action's
    `Postee-Event` header is a whole description in base64 (tens of kilobytes), where the regex's
    nested repetition cost ~0.5 ms per request."""
    if not value:
        return True
    if not value.isascii() or value[0] in " \t" or value[-1] in " \t":
        return False
    return value.isprintable() or _PLAIN_VALUE.fullmatch(value) is not None

_HEAD_END = re.compile(rb"\n\r?\n")
"""Where h11 ends a head: the first blank line."""
_VCHAR = rb"[^\x00\s]"
_PLAIN_HEAD = re.compile(
    rb"HTTP/1\.1 [2-9][0-9][0-9](?: [^\x00\n\r\x0b\x0c]*)?\r\n"
    rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[ \t]*(?:" + _VCHAR + rb"+(?:[ \t]+" + _VCHAR + rb"+)*)?[ \t]*\r\n)*"
    rb"\r\n"
)
"""A final HTTP/1.1 reply head in h11's grammar, CRLF line ends and no obs-fold: what the fast path parses."""
_LENGTH = re.compile(rb"[0-9]{1,18}")


def proxies_configured() -> bool:
    """Whether httpx (trust_env) would send some requests through a proxy from the environment."""
    proxies = getproxies()
    if not any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return False
    return "*" not in (host.strip() for host in proxies.get("no", "").split(","))


class ReplyHeaders(Mapping[str, str]):
    """A reply's headers by case-insensitive name; repeated ones joined with ", " (as `httpx.Headers` reads)."""

    __slots__ = ("_decoded", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self._decoded: dict[str, str] | None = None

    @property
    def _values(self) -> dict[str, str]:
        """Decoded at the first look: a 2xx reply's headers are seldom read."""
        if self._decoded is None:
            encoding = _header_encoding(self.raw)
            values: dict[str, str] = {}
            for name, value in self.raw:
                key, text = name.decode(encoding).lower(), value.decode(encoding)
                values[key] = f"{values[key]}, {text}" if key in values else text
            self._decoded = values
        return self._decoded

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _header_encoding(raw: list[tuple[bytes, bytes]]) -> str:
    """httpx's choice: ascii if everything is, else utf-8 if everything decodes, else latin-1."""
    if all(name.isascii() and value.isascii() for name, value in raw):
        return "ascii"
    try:
        for name, value in raw:
            name.decode("utf-8")
            value.decode("utf-8")
    except UnicodeDecodeError:
        return "iso-8859-1"
    return "utf-8"


@attrs.frozen
class Target:
    """Where a URL sends a request, worked out once per URL (the URL actions post to one URL)."""

    url: httpx.URL
    scheme: str
    host: str
    """The host to connect to and to name in TLS (IDNA-encoded; an IPv6 address without brackets)."""
    port: int
    netloc: str
    """The `Host` header: host, and the port when it is not the scheme's default."""
    path: str
    """The request target: path and query, percent-encoded as httpx sends them."""
    authorization: str | None
    """`Basic ...` from the URL's `user:pass@`, as httpx sends it."""

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def parse_target(url: str | httpx.URL) -> Target | None:
    """`url` as the lean client sends to it; None for a URL only httpx knows what to do with (or refuses)."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError):
        return None
    port = parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0)
    if parsed.scheme not in DEFAULT_PORTS or not host or not 0 < port < 65536:
        return None
    authorization = None
    if parsed.username or parsed.password:
        probe = next(httpx.BasicAuth(parsed.username, parsed.password).sync_auth_flow(httpx.Request("GET", parsed)))
        authorization = probe.headers["Authorization"]
    return Target(parsed, parsed.scheme, host, port, parsed.netloc.decode("ascii"),
                  parsed.raw_path.decode("ascii"), authorization)


@attrs.frozen
class Plan:
    """A request the lean client can send: method, target, the header list httpx would send, the body."""

    method: str
    target: Target
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool
    """False when the request says `Connection: close` (h11 then closes the connection after the reply)."""


def parse_plain_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]] | None:
    """Status and headers (names lower-case) of a reply head up to its blank line, if it is a plain one.

    Plain: a final HTTP/1.1 reply in h11's grammar with CRLF line ends and no obs-fold (`_PLAIN_HEAD`),
    on which this split gives what h11 would give. Anything else (None) is left to h11.
    """
    if not _PLAIN_HEAD.fullmatch(head):
        return None
    lines = head[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.strip(b" \t")))
    return int(lines[0][9:12]), headers


def _set_header(headers: list[tuple[str, str]], name: str, value: str) -> None:
    """`httpx.Headers.__setitem__`: replace the first `name` in place (as `name`), drop the others, or append."""
    lower = name.lower()
    found = [index for index, (key, _) in enumerate(headers) if key.lower() == lower]
    for index in reversed(found[1:]):
        del headers[index]
    if found:
        headers[found[0]] = (name, value)
    else:
        headers.append((name, value))


def _drop_header(headers: list[tuple[str, str]], name: str) -> None:
    headers[:] = [(key, value) for key, value in headers if key.lower() != name]


def _has_header(headers: list[tuple[str, str]], name: str) -> bool:
    return any(key.lower() == name for key, _ in headers)


def _comma_tokens(headers: Sequence[tuple[Any, Any]], name: Any) -> list[Any]:
    """h11's `get_comma_header`: the comma-separated values of header `name`, stripped, lower-case."""
    tokens = []
    for key, value in headers:
        if key.lower() == name:
            tokens.extend(token.strip().lower() for token in value.split("," if isinstance(value, str) else b","))
    return tokens


def _encode_head(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    """The request head as h11 writes it: the request line, `Host` first, the other headers in order."""
    lines = [f"{method} {path} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers if name.lower() == "host")
    lines.extend(f"{name}: {value}\r\n" for name, value in headers if name.lower() != "host")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


class _Connection:
    """One keep-alive connection: a Trio stream, the origin it talks to, when it stops being reusable."""

    __slots__ = ("stream", "socket", "origin", "expires_at")

    def __init__(self, stream: trio.abc.Stream, socket: Any, origin: tuple[str, str, int]) -> None:
        self.stream = stream
        self.socket = socket
        self.origin = origin
        self.expires_at = 0.0

    async def send(self, data: bytes, timeout: float) -> None:
        """Write `data`; a broken connection is ignored (the reply, if any, is read next), as httpcore does."""
        # A bare CancelScope, not fail_after: a third of the cost, on every request.
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return
        raise httpx.WriteTimeout("")  # only when the deadline passed (str(trio.TooSlowError()) is "")

    async def receive(self, timeout: float) -> bytes:
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            try:
                return await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise httpx.ReadError(str(exc)) from exc
        raise httpx.ReadTimeout("")


class _FixedBody:
    """A body framed by Content-Length (possibly 0), read by hand. `chunk()` gives b"" at its end.

    `done`: the whole body was read; `extra`: the server sent bytes past its end (the connection is not reused).
    """

    __slots__ = ("_connection", "_timeout", "_pending", "_left", "_length", "done", "extra")

    def __init__(self, connection: _Connection, timeout: float, first: bytes, length: int) -> None:
        self._connection = connection
        self._timeout = timeout
        self._length = length
        self._pending = first[:length]
        self._left = length - len(self._pending)
        self.done = False
        self.extra = len(first) > length

    async def chunk(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if not self._left:
            self.done = True
            return b""
        data = await self._connection.receive(self._timeout)
        if not data:
            raise _premature_end(self._length, self._length - self._left)
        if len(data) > self._left:
            self.extra = True
            data = data[: self._left]
        self._left -= len(data)
        return data


class _H11Body:
    """A body h11 frames (chunked, until close, ...). `chunk()` gives b"" at its end."""

    __slots__ = ("_connection", "_timeout", "_h11", "done", "extra")

    def __init__(self, connection: _Connection, timeout: float, state: h11.Connection) -> None:
        self._connection = connection
        self._timeout = timeout
        self._h11 = state
        self.done = False
        self.extra = False

    async def chunk(self) -> bytes:
        while True:
            event = await _next_event(self._connection, self._h11, self._timeout)
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or event is h11.PAUSED:
                state = self._h11
                self.done = state.our_state is h11.DONE and state.their_state is h11.DONE
                self.extra = bool(state.trailing_data[0])
                return b""


def _premature_end(length: int, received: int) -> httpx.RemoteProtocolError:
    """The error h11 raises for a Content-Length body cut short, in its words (they change across versions)."""
    state = h11.Connection(h11.CLIENT)
    state.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
    state.send(h11.EndOfMessage())
    state.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length + bytes(received))
    state.receive_data(b"")
    try:
        for _ in range(3):  # the reply, its data, then the error
            state.next_event()
    except h11.RemoteProtocolError as exc:
        return httpx.RemoteProtocolError(str(exc))
    return httpx.RemoteProtocolError("peer closed connection without sending complete message body")


async def _next_event(connection: _Connection, state: h11.Connection, timeout: float) -> Any:
    """h11's next event, reading as it needs, errors as httpcore maps them."""
    while True:
        try:
            event = state.next_event()
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        if event is not h11.NEED_DATA:
            return event
        data = await connection.receive(timeout)
        if not data and state.their_state is h11.SEND_RESPONSE:
            raise httpx.RemoteProtocolError(NO_RESPONSE)
        state.receive_data(data)


@attrs.frozen
class _Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    """Raw (name, value) pairs; names lower-case on the fast path."""
    body: _FixedBody | _H11Body
    keep_alive: bool


class _RawStream(httpx.AsyncByteStream):
    """A reply's raw body as an httpx stream, for httpx to decode (`Content-Encoding`)."""

    def __init__(self, body: _FixedBody | _H11Body) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while data := await self._body.chunk():
            yield data


class LeanClient:
    """A pooled HTTP/1.1 client sending what `fallback` (an httpx client) would, at a fraction of its CPU.

    `plan()` says whether a request is one this client sends (None: send it with `fallback`), `send()`
    sends it and returns the status, headers and body (at most `limit` bytes and a few more: longer
    means "cut"). Safe to use from concurrent tasks. `aclose()` closes it and `fallback`.
    """

    def __init__(
        self,
        fallback: httpx.AsyncClient,
        ssl_context: ssl.SSLContext,
        timeout: float,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_idle: int = MAX_IDLE_CONNECTIONS,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        max_redirects: int = MAX_REDIRECTS,
        enabled: bool = True,
    ) -> None:
        self.fallback = fallback
        self.timeout = timeout
        self.enabled = enabled and not proxies_configured()
        """False: every request goes through `fallback` (a proxy is configured, or the caller said so)."""
        self._ssl_context = ssl_context
        ssl_context.set_alpn_protocols(["http/1.1"])  # as httpcore does on the context it is given
        self._defaults = [(name.decode("ascii"), value.decode("ascii")) for name, value in fallback.headers.raw]
        self._cookies = fallback.cookies
        self._targets: dict[str, Target | None] = {}
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._max_redirects = max_redirects
        self._open: set[_Connection] = set()
        """Every connection open or being opened (its slot taken)."""
        self._opening = 0
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._slot_freed = trio.lowlevel.ParkingLot()
        self._closed = False

    # --- what goes where ---------------------------------------------------------------------------

    def plan(self, method: str, url: str, *, headers: Any = None, content: Any = None, **options: Any) -> Plan | None:
        """The request as this client would send it, or None when it must go through `fallback`."""
        if not self.enabled or options or not (content is None or type(content) is bytes):
            return None
        method = method.upper()
        if method == "CONNECT" or not _TOKEN.fullmatch(method):
            return None
        target = self._target(url)
        if target is None:
            return None
        merged = self._merge(headers)
        if merged is None:
            return None
        body = content or b""
        if self._cookies and not _has_header(merged, "cookie"):
            self._add_cookie(merged, method, target.url)
        auto = [("Host", target.netloc)]
        if body:
            merged.append(("Content-Length", str(len(body))))
        elif method in BODY_METHODS:
            auto.append(("Content-Length", "0"))
        sent = auto + merged
        if target.authorization is not None:
            _set_header(sent, "Authorization", target.authorization)
        return Plan(method, target, sent, body, "close" not in _comma_tokens(sent, "connection"))

    def _target(self, url: str) -> Target | None:
        try:
            return self._targets[url]
        except KeyError:
            pass
        if len(self._targets) >= 64:
            self._targets.clear()
        target = self._targets[url] = parse_target(url)
        return target

    def _merge(self, headers: Any) -> list[tuple[str, str]] | None:
        """The client's default headers updated with `headers` (`httpx.Headers.update`); None if not plain."""
        if headers is None:
            items: Any = ()
        elif isinstance(headers, httpx.Headers):
            return None
        elif isinstance(headers, Mapping):
            items = headers.items()
        elif isinstance(headers, list | tuple):
            items = headers
        else:
            return None
        given: list[tuple[str, str]] = []
        names = set()
        for item in items:
            if len(item) != 2:
                return None
            name, value = item
            if type(name) is not str or type(value) is not str:
                return None
            if not _TOKEN.fullmatch(name) or not _plain_value(value):
                return None
            lower = name.lower()
            if lower in CALLER_ONLY_HEADERS:
                return None
            given.append((name, value))
            names.add(lower)
        return [(name, value) for name, value in self._defaults if name.lower() not in names] + given

    def _add_cookie(self, headers: list[tuple[str, str]], method: str, url: httpx.URL) -> None:
        """Append the jar's `Cookie` header for `url`, as httpx adds it to a request it builds."""
        probe = httpx.Request(method, url, headers=headers)
        httpx.Cookies(self._cookies).set_cookie_header(probe)
        cookie = probe.headers.get("Cookie")
        if cookie is not None:
            headers.append(("Cookie", cookie))

    # --- sending -------------------------------------------------------------------------------------

    async def send(self, plan: Plan, limit: int) -> tuple[int, ReplyHeaders, bytes]:
        """Send `plan`, following redirects; the final status, headers and body (cut past `limit` bytes).

        Raises the httpx exception httpx would raise.
        """
        if self._closed:
            raise RuntimeError(CLOSED_MESSAGE)
        redirects = 0
        while True:
            if redirects > self._max_redirects:
                raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.")
            connection, reply = await self._exchange(plan)
            try:
                if any(name.lower() == b"set-cookie" for name, _ in reply.headers):
                    self._extract_cookies(plan, reply)
                location = self._location(reply)
                if location is None:
                    data = await self._read(reply, limit)
                    await self._done(connection, reply, len(data) <= limit)
                    return reply.status, ReplyHeaders(reply.headers), data
                plan = self._redirect(plan, reply.status, location)
                await self._read(reply, None)
                await self._done(connection, reply, True)
            except BaseException:
                await self._discard(connection)
                raise
            redirects += 1

    async def _exchange(self, plan: Plan) -> tuple[_Connection, _Reply]:
        head = _encode_head(plan.method, plan.target.path, plan.headers)
        connection = await self._acquire(plan.target)
        try:
            await connection.send(head + plan.body if plan.body else head, self.timeout)
            reply = await self._receive_head(connection, plan)
        except BaseException:
            await self._discard(connection)
            raise
        return connection, reply

    async def _receive_head(self, connection: _Connection, plan: Plan) -> _Reply:
        """Read the reply's head: by hand when it is a plain one, else through h11 (see the module doc)."""
        buffer = b""
        start = 0
        end = None
        while True:
            if buffer:
                end = _HEAD_END.search(buffer, start)
                if end is not None or len(buffer) > MAX_HEAD_BYTES or buffer[0] < 0x21:
                    break  # a head; or one h11 refuses already (too long, blank or control byte first)
                start = len(buffer) - 2
            data = await connection.receive(self.timeout)
            if not data:
                raise httpx.RemoteProtocolError(NO_RESPONSE)
            buffer += data
        if end is not None:
            head = parse_plain_head(buffer[: end.end()])
            if head is not None:
                reply = self._plain_reply(connection, plan, *head, buffer[end.end() :])
                if reply is not None:
                    return reply
        return await self._h11_reply(connection, plan, buffer)

    def _plain_reply(
        self, connection: _Connection, plan: Plan, status: int, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> _Reply | None:
        """The reply from a plain head (`rest`: what followed it), or None when its framing is h11's business."""
        length = None
        keep_alive = plan.keep_alive
        for name, value in headers:
            if name == b"content-length":
                if length is not None or not _LENGTH.fullmatch(value):
                    return None
                length = int(value)
            elif name == b"transfer-encoding":
                return None
            elif name == b"connection" and b"close" in _comma_tokens([(name, value)], b"connection"):
                keep_alive = False
        if status in (204, 304) or plan.method == "HEAD":
            length = 0
        elif length is None:
            return None  # delimited by the connection's close: h11's
        return _Reply(status, headers, _FixedBody(connection, self.timeout, rest, length), keep_alive)

    async def _h11_reply(self, connection: _Connection, plan: Plan, buffer: bytes) -> _Reply:
        """Hand the reply to h11: replay the request into a fresh h11 connection, feed it what was read.

        h11 then decides the framing and whether the connection stays open (`_H11Body.done`).
        """
        state = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        state.send(h11.Request(method=plan.method, target=plan.target.path, headers=plan.headers))
        if plan.body:
            state.send(h11.Data(data=plan.body))
        state.send(h11.EndOfMessage())
        state.receive_data(buffer)
        while True:
            event = await _next_event(connection, state, self.timeout)
            if isinstance(event, h11.Response) or (
                isinstance(event, h11.InformationalResponse) and event.status_code == 101
            ):
                break
        return _Reply(event.status_code, list(event.headers.raw_items()), _H11Body(connection, self.timeout, state),
                      plan.keep_alive)

    @staticmethod
    def _location(reply: _Reply) -> str | None:
        """Where a redirect points (httpx's `has_redirect_location`), or None for a final reply."""
        if reply.status not in REDIRECT_STATUSES:
            return None
        return ReplyHeaders(reply.headers).get("location")

    def _redirect(self, plan: Plan, status: int, location: str) -> Plan:
        """The request that follows a redirect, as httpx's `_build_redirect_request` makes it."""
        method = plan.method
        if status in (302, 303) and method != "HEAD" or status == 301 and method == "POST":
            method = "GET"
        url = _redirect_url(plan.target.url, location)
        target = parse_target(url)
        if target is None:
            if url.scheme not in DEFAULT_PORTS:
                raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{url.scheme}://'.")
            raise httpx.UnsupportedProtocol("Request URL is missing a 'host'.")
        headers = list(plan.headers)
        body = plan.body
        if not _same_origin(url, plan.target.url):
            if not _is_https_redirect(plan.target.url, url):
                _drop_header(headers, "authorization")
            _set_header(headers, "Host", target.netloc)
        if method != plan.method and method == "GET":
            _drop_header(headers, "content-length")
            _drop_header(headers, "transfer-encoding")
            body = b""
        _drop_header(headers, "cookie")
        if self._cookies:
            self._add_cookie(headers, method, url)
        return Plan(method, target, headers, body, plan.keep_alive)

    def _extract_cookies(self, plan: Plan, reply: _Reply) -> None:
        """Keep a reply's cookies in the jar, as httpx does after every reply (redirects too)."""
        request = httpx.Request(plan.method, plan.target.url, headers=plan.headers)
        self._cookies.extract_cookies(httpx.Response(reply.status, headers=reply.headers, request=request))

    async def _read(self, reply: _Reply, limit: int | None) -> bytes:
        """The body: until its end, or until more than `limit` bytes were read (None: read it all, keep nothing)."""
        if any(name.lower() == b"content-encoding" for name, _ in reply.headers):
            return await self._read_decoded(reply, limit)
        body = reply.body
        if limit is None:
            while await body.chunk():
                pass
            return b""
        data = await body.chunk()
        if not data:
            return data
        chunks = [data]
        size = len(data)
        while size <= limit:
            data = await body.chunk()
            if not data:
                break
            chunks.append(data)
            size += len(data)
        return b"".join(chunks)

    async def _read_decoded(self, reply: _Reply, limit: int | None) -> bytes:
        """The body decoded by httpx itself (gzip, deflate, ... and its `DecodingError`s)."""
        response = httpx.Response(reply.status, headers=reply.headers, stream=_RawStream(reply.body))
        chunks: list[bytes] = []
        size = 0
        async with aclosing(response.aiter_bytes()) as decoded:
            async for data in decoded:
                if limit is None:
                    continue
                chunks.append(data)
                size += len(data)
                if size > limit:
                    break
        return b"".join(chunks)

    async def _done(self, connection: _Connection, reply: _Reply, whole: bool) -> None:
        """Back to the pool if the exchange ended cleanly and both sides keep the connection alive, else closed."""
        body = reply.body
        if whole and body.done and reply.keep_alive and not body.extra and self._release(connection):
            return
        self._forget(connection)
        await self._close(connection)

    # --- the pool ------------------------------------------------------------------------------------

    async def _acquire(self, target: Target) -> _Connection:
        """An idle connection to `target`'s origin, or a new one; waits (up to `timeout`) for a free slot."""
        deadline = None
        while True:
            if self._closed:
                raise RuntimeError(CLOSED_MESSAGE)
            connection = await self._take_idle(target.origin)
            if connection is not None:
                return connection
            if len(self._open) + self._opening < self._max_connections:
                return await self._connect(target)
            if await self._close_oldest_idle():
                continue
            if deadline is None:
                deadline = trio.current_time() + self.timeout
            try:
                with trio.fail_at(deadline):
                    await self._slot_freed.park()
            except trio.TooSlowError as exc:
                raise httpx.PoolTimeout(str(exc)) from exc

    async def _take_idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = trio.current_time()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.expires_at >= now and not connection.socket.is_readable():
                return connection
            self._forget(connection)
            await self._close(connection)
        return None

    async def _close_oldest_idle(self) -> bool:
        """Close the idle connection that waited longest (any origin) to free its slot."""
        oldest = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].expires_at < oldest.expires_at):
                oldest = connections[0]
        if oldest is None:
            return False
        self._idle[oldest.origin].remove(oldest)
        self._idle_count -= 1
        self._forget(oldest)
        await self._close(oldest)
        return True

    async def _connect(self, target: Target) -> _Connection:
        """A new connection (TCP, then TLS for https), its slot taken while it is made."""
        self._opening += 1
        try:
            try:
                with trio.fail_after(self.timeout):
                    tcp = await trio.open_tcp_stream(target.host, target.port)
            except trio.TooSlowError as exc:
                raise httpx.ConnectTimeout(str(exc)) from exc
            except (trio.BrokenResourceError, OSError) as exc:
                raise httpx.ConnectError(str(exc)) from exc
            stream: trio.abc.Stream = tcp
            if target.scheme == "https":
                stream = await self._start_tls(tcp, target.host)
        except BaseException:
            self._opening -= 1
            self._slot_freed.unpark()
            raise
        self._opening -= 1
        connection = _Connection(stream, tcp.socket, target.origin)
        self._open.add(connection)
        return connection

    async def _start_tls(self, tcp: trio.SocketStream, host: str) -> trio.SSLStream[trio.SocketStream]:
        stream = trio.SSLStream(tcp, self._ssl_context, server_hostname=host, https_compatible=True)
        try:
            with trio.fail_after(self.timeout):
                await stream.do_handshake()
        except BaseException as exc:
            await trio.aclose_forcefully(tcp)
            if isinstance(exc, trio.TooSlowError):
                raise httpx.ConnectTimeout(str(exc)) from exc
            if isinstance(exc, trio.BrokenResourceError):
                raise httpx.ConnectError(str(exc)) from exc
            raise
        return stream

    def _release(self, connection: _Connection) -> bool:
        """Keep `connection` for reuse; False when the pool is closed or has enough idle connections."""
        if self._closed or self._idle_count >= self._max_idle:
            return False
        connection.expires_at = trio.current_time() + self._keepalive_expiry
        self._idle.setdefault(connection.origin, []).append(connection)
        self._idle_count += 1
        self._slot_freed.unpark()
        return True

    def _forget(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            self._slot_freed.unpark()

    async def _discard(self, connection: _Connection) -> None:
        """Drop a connection in an unknown state (an error, a cancellation): close it without ceremony."""
        self._forget(connection)
        await trio.aclose_forcefully(connection.stream)

    async def _close(self, connection: _Connection) -> None:
        """Close a connection in order (TLS close_notify), briefly: a peer that takes nothing is not waited for."""
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await connection.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(connection.stream)

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection and the httpx client; requests after this raise RuntimeError."""
        self._closed = True
        idle = [connection for connections in self._idle.values() for connection in connections]
        self._idle.clear()
        self._idle_count = 0
        busy = [connection for connection in self._open if connection not in idle]
        self._open.clear()
        self._slot_freed.unpark_all()
        try:
            for connection in idle:
                await self._close(connection)
        finally:
            # Often run in a cancelled scope (an action's `async with` exit at shutdown), where the first
            # checkpoint raises: shielded, as httpcore closes its connections, so none is left to the GC.
            # Forceful closes are quick (and a no-op on a stream closed already).
            with trio.CancelScope(shield=True):
                for connection in idle + busy:
                    await trio.aclose_forcefully(connection.stream)
                await self.fallback.aclose()


def _redirect_url(url: httpx.URL, location: str) -> httpx.URL:
    """httpx's `_redirect_url`: `location` resolved against `url`, keeping its fragment."""
    try:
        new = httpx.URL(location)
    except httpx.InvalidURL as exc:
        raise httpx.RemoteProtocolError(f"Invalid URL in location header: {exc}.") from None
    if new.scheme and not new.host:
        new = new.copy_with(host=url.host)
    if new.is_relative_url:
        new = url.join(new)
    if url.fragment and not new.fragment:
        new = new.copy_with(fragment=url.fragment)
    return new


def _port_or_default(url: httpx.URL) -> int | None:
    return url.port if url.port is not None else DEFAULT_PORTS.get(url.scheme)


def _same_origin(url: httpx.URL, other: httpx.URL) -> bool:
    return url.scheme == other.scheme and url.host == other.host and _port_or_default(url) == _port_or_default(other)


def _is_https_redirect(url: httpx.URL, location: httpx.URL) -> bool:
    return (
        url.host == location.host
        and url.scheme == "http"
        and _port_or_default(url) == 80
        and location.scheme == "https"
        and _port_or_default(location) == 443
    )
