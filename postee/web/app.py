"""The ASGI application: Postee's endpoints, plus health, readiness and metrics.

Hand-written ASGI rather than a framework: there are a dozen routes, and owning the request loop
lets intake enforce its limits (body size, a full queue) before reading more than it must.

| endpoint | needs | answer |
|---|---|---|
| POST `/`, `/scan` | ingest token | 200 `""` accepted and recorded; 400 bad JSON; 401; 413 too large; 503 |
| POST `/tenant/{route}` | ingest token | runs that route now and waits: 200 with what happened; 404 unknown route; |
| | | 503 when too many run; 504 past the tenant timeout |
| GET `/ping`, `/healthz` | - | `Postee alive!`; liveness |
| GET `/readyz` | - | 200/503 readiness; the checks behind it only for the API key |
| GET `/metrics` | - | Prometheus text format |
| GET `/events` | API key (`--open-events`: as the webhook) | the last events as a JSON array |
| | | (`?limit=N`: the last N; `?bodies=0`: each event's size instead of the event) |
| GET `/executions`, `/node`, `/runners` | API key | the last action runs; who this node is; a controller's runners |
| GET `/ui` | - (the page asks for the API key) | the dashboard (`postee.web.dashboard`) |
| GET `/reload` | API key, or `?key=K` (Postee) | reload the config |
| WebSocket `/feed` | API key, or `?key=K` | the live feed (`postee.web.feed_socket`); other upgrade paths: 404 |

A `/tenant` answer has the actions' output and error messages only for a caller with the API key
(an `exec` script's output can hold anything). 503 answers carry `Retry-After`.

Credentials: the ingest token (`POSTEE_INGEST_TOKEN` / `ingest-token:`; none set: the webhook is open,
as in Postee) and the API key (`POSTEE_API_KEY`, else generated once and kept in the store; `postee
apikey` prints it), both sent as `Authorization: Bearer <value>`. The API key is the stronger one: it
is accepted wherever the ingest token is. Only `/reload` also takes it as `?key=` (Postee's form, which
leaves the key in access logs). 401 answers carry `WWW-Authenticate: Bearer`; `/reload` keeps
answering 403 to a wrong key.

Everything an outsider can make the node hold or do is bounded: the body size, the intake queue,
and the `/tenant` runs (how many at once, and for how long an answer is awaited).

A 503 means "not accepted, send it again": the intake queue is full, the node is stopping, or the
store could not record the event (the node's log says which).
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

import structlog
import trio

from postee.feed import Feed
from postee.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from postee.metrics import Metrics
from postee.pipeline.events import Event, InvalidEvent, parse_event_off_loop
from postee.web.dashboard import dashboard_page
from postee.web.feed_socket import SEND_TIMEOUT as FEED_SEND_TIMEOUT
from postee.web.feed_socket import query_params, refuse_websocket, serve_feed

log = structlog.get_logger("postee.web")

DEFAULT_MAX_BODY = 16 * 1024 * 1024
"""Largest event accepted (bytes). Trivy reports of big images reach a few MB."""

RETRY_AFTER_SECONDS = 1

DEFAULT_TENANT_TIMEOUT = 30.0
"""Seconds `POST /tenant/{route}` waits for the route and its actions before answering 504 (the run
goes on, bounded by the actions' own timeouts). Postee waits without limit."""

DEFAULT_TENANT_CONCURRENCY = 16
"""`POST /tenant/{route}` runs in progress at once; more are answered 503 + Retry-After, as a full intake."""

UNAUTHORIZED = b"missing or wrong bearer token\n"
NEEDS_API_KEY = b"this endpoint needs the API key: Authorization: Bearer <key> (see `postee apikey`)\n"

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RouteTimedOut(Exception):
    """`Daemon.run_route` got no outcome within its timeout (the run may still be going on)."""


class RouteUnavailable(Exception):
    """`Daemon.run_route` could not start the run now (the node is stopping or reloading): retry."""


BUSY_EVENT = b"busy: the event was not accepted (intake full, stopping, or the store unavailable), retry later\n"


class Daemon(Protocol):
    """What the web layer needs from the running daemon (standalone, controller or runner)."""

    metrics: Metrics
    feed: Feed
    """What happens in the node, for `/feed` (`postee.feed`)."""

    async def submit(self, event: Event) -> bool: ...

    def refuses_events(self) -> bool:
        """`submit` would refuse an event now (intake full, stopping): the webhook answers 503 without
        parsing the body."""

    def route_names(self) -> list[str]: ...

    async def run_route(self, route: str, event: Event, *, timeout: float, detailed: bool) -> dict[str, Any]:
        """Run one route now; the outcome as JSON-ready data, with the actions' output and errors only
        when `detailed`. Raises `RouteTimedOut` or `RouteUnavailable`."""
        ...

    def recent_events_json(self, *, bodies: bool = True, limit: int | None = None) -> str: ...

    async def reload(self) -> tuple[bool, str]: ...

    def api_key(self) -> str: ...

    def ingest_token(self) -> str: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def extra_paths(self) -> Collection[str]:
        """The role-specific GET endpoints (`/runners`, `/executions`): each needs the API key."""
        ...

    def extra_get(self, path: str) -> str | None:
        """JSON for a role-specific GET endpoint, or None."""
        ...


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client left before its request body ended: what came is not an event (it will resend)."""


class PosteeApp:
    """ASGI callable; one per daemon (shared by its HTTP and HTTPS listeners)."""

    def __init__(
        self,
        daemon: Daemon,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        tenant_timeout: float = DEFAULT_TENANT_TIMEOUT,
        tenant_concurrency: int = DEFAULT_TENANT_CONCURRENCY,
        open_events: bool = False,
        feed_send_timeout: float = FEED_SEND_TIMEOUT,
    ) -> None:
        """`open_events`: `GET /events` is as open as the webhook (Postee's behaviour), not behind the API key.
        `feed_send_timeout`: seconds a `/feed` client may take over one message before it is disconnected."""
        self.daemon = daemon
        self.max_body = max_body
        self.tenant_timeout = tenant_timeout
        self.tenant_concurrency = tenant_concurrency
        self.open_events = open_events
        self.feed_send_timeout = feed_send_timeout
        self._tenant_running = 0
        self._warned_query_key = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        try:
            if method == "POST" and path in ("/", "/scan"):
                await self._ingest(scope, receive, send)
            elif method == "POST" and path.startswith("/tenant/"):
                await self._tenant(scope, receive, send, urllib.parse.unquote(path[len("/tenant/"):]))
            elif method in ("GET", "HEAD"):
                await self._get(scope, send, path)
            else:
                await _respond(send, 405, b"method not allowed\n")
        except Exception:
            log.exception("request failed", method=method, path=path)
            await _respond(send, 500, b"internal error\n")

    # -- credentials ---------------------------------------------------------------------------
    def _is_admin(self, scope: Scope) -> bool:
        """The request carries the API key as a bearer token."""
        return _bearer_matches(scope, self.daemon.api_key())

    def _may_ingest(self, scope: Scope) -> bool:
        """No ingest token is set (Postee's open webhook), or the request carries it or the API key."""
        token = self.daemon.ingest_token()
        return not token or _bearer_matches(scope, token) or self._is_admin(scope)

    # -- intake --------------------------------------------------------------------------------
    async def _refuse_unauthorized(self, scope: Scope, send: Send) -> bool:
        """Answer 401 (and count it) unless the request may send events; True when refused."""
        if self._may_ingest(scope):
            return False
        self.daemon.metrics.events_rejected.labels("unauthorized").inc()
        await _respond(send, 401, UNAUTHORIZED, {"www-authenticate": "Bearer"})
        return True

    async def _read_event(self, scope: Scope, receive: Receive, send: Send, source: str) -> Event | None:
        """The request's event, or None once a 413/400 went out. Authorization is checked before."""
        body = await self._read_whole_body(scope, receive, send)
        if body is None:
            return None
        metrics = self.daemon.metrics
        try:
            return await parse_event_off_loop(body, source=source)
        except InvalidEvent as exc:
            metrics.events_rejected.labels("invalid").inc()
            log.warning("invalid event rejected", reason=str(exc), size=len(body))
            await _respond(send, 400, f"{exc}\n".encode())
            return None

    async def _read_whole_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request's body, or None once a 413 went out (or the client left)."""
        try:
            return await self._read_body(scope, receive)
        except _TooLarge:
            self.daemon.metrics.events_rejected.labels("too_large").inc()
            await _respond(send, 413, f"event larger than {self.max_body} bytes\n".encode())
        except _ClientGone:
            self.daemon.metrics.events_rejected.labels("incomplete").inc()
            log.info("request body cut short by the client leaving: nothing accepted")
        return None

    async def _busy(self, send: Send, what: bytes) -> None:
        self.daemon.metrics.events_rejected.labels("busy").inc()
        await _respond(send, 503, what, {"retry-after": str(RETRY_AFTER_SECONDS)})

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._refuse_unauthorized(scope, send):
            return
        if self.daemon.refuses_events():
            # Refused whatever it holds: read (the connection stays usable) but not parsed. Under a burst
            # most requests are refused, and parsing each (~0.2 ms for 8 KB) was spent on an answer known
            # before (bench/README.md: the same CPU refuses ~2,300 requests/s instead of ~1,460).
            if await self._read_whole_body(scope, receive, send) is not None:
                await self._busy(send, BUSY_EVENT)
            return
        event = await self._read_event(scope, receive, send, "webhook")
        if event is None:
            return
        if not await self.daemon.submit(event):
            await self._busy(send, BUSY_EVENT)
            return
        await _respond(send, 200, b'""', {"content-type": "application/json"})

    async def _tenant(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        """Authorization first, so that without it a known route and an unknown one look the same;
        then the route, then a free slot, and only then the body is read."""
        if await self._refuse_unauthorized(scope, send):
            return
        if route not in self.daemon.route_names():
            await _respond(send, 404, f"unknown route {route!r}\n".encode())
            return
        if self._tenant_running >= self.tenant_concurrency:
            await self._busy(send, f"busy: {self.tenant_concurrency} tenant runs in progress, retry later\n".encode())
            return
        self._tenant_running += 1
        try:
            event: Event | None = None
            with trio.move_on_after(self.tenant_timeout) as reading:
                # the slot is taken: a client sending its body slowly must not keep it for ever
                event = await self._read_event(scope, receive, send, "webhook")
            if reading.cancelled_caught:
                await _respond(send, 408, f"request body not received within {self.tenant_timeout:g}s\n".encode())
                return
            if event is None:
                return
            try:
                outcome = await self.daemon.run_route(route, event, timeout=self.tenant_timeout,
                                                      detailed=self._is_admin(scope))
            except RouteUnavailable as exc:
                await self._busy(send, f"busy: {exc}, retry later\n".encode())
                return
            except RouteTimedOut:
                error = (f"no outcome within {self.tenant_timeout:g}s (the tenant timeout); "
                         "the route may still be running")
                await _respond(send, 504, json.dumps({"route": route, "error": error}).encode(),
                               {"content-type": "application/json"})
                return
        finally:
            self._tenant_running -= 1
        await _respond(send, 200, json.dumps(outcome).encode(), {"content-type": "application/json"})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _TooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # before the body ended: nothing was sent
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    # -- reading and admin ---------------------------------------------------------------------
    async def _get(self, scope: Scope, send: Send, path: str) -> None:
        daemon = self.daemon
        if path == "/ping":
            await _respond(send, 200, b"Postee alive!", {"content-type": "text/plain; charset=utf-8"})
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n")
        elif path == "/readyz":  # probes have no key: the status is open, what is behind it is not
            ready, details = daemon.readiness()
            answer = {"ready": ready, **details} if self._is_admin(scope) else {"ready": ready}
            await _respond(send, 200 if ready else 503, json.dumps(answer).encode(),
                           {"content-type": "application/json"})
        elif path == "/metrics":
            await _respond(send, 200, daemon.metrics.render(), {"content-type": METRICS_CONTENT_TYPE})
        elif path == "/events":
            if not (self._is_admin(scope) or (self.open_events and self._may_ingest(scope))):
                await _respond(send, 401, UNAUTHORIZED if self.open_events else NEEDS_API_KEY,
                               {"www-authenticate": "Bearer"})
                return
            query = query_params(scope)
            limit = query.get("limit", "")
            recent = daemon.recent_events_json(bodies=query.get("bodies") not in ("0", "false", "no"),
                                               limit=int(limit) if limit.isdecimal() and len(limit) <= 7 else None)
            await _respond(send, 200, recent.encode(), {"content-type": "application/json"})
        elif path in ("/ui", "/ui/"):
            page = dashboard_page()
            await _respond(send, 200, page.body, page.headers)
        elif path == "/reload":
            await self._reload(scope, send)
        elif path in daemon.extra_paths():
            if not self._is_admin(scope):
                await _respond(send, 401, NEEDS_API_KEY, {"www-authenticate": "Bearer"})
                return
            extra = daemon.extra_get(path)
            if extra is None:
                await _respond(send, 404, b"not found\n")
            else:
                await _respond(send, 200, extra.encode(), {"content-type": "application/json"})
        else:
            await _respond(send, 404, b"not found\n")

    async def _reload(self, scope: Scope, send: Send) -> None:
        """The key as a bearer token, or Postee's `?key=` (accepted, with a warning: it gets logged)."""
        authorized = self._is_admin(scope)
        if not authorized:
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            key = (query.get("key") or [""])[0]
            authorized = _same_secret(key.encode(), self.daemon.api_key())
            if authorized and not self._warned_query_key:
                self._warned_query_key = True
                log.warning("the API key came in the query string (GET /reload?key=), where access logs and "
                            "proxies keep it; send it as 'Authorization: Bearer <key>' instead")
        if not authorized:
            await _respond(send, 403, b"wrong or missing key\n")
            return
        ok, message = await self.daemon.reload()
        await _respond(send, 200 if ok else 422, f"{message}\n".encode())

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/feed` (the live feed, for the API key: as a bearer token or `?key=`, which browsers can send);
        an upgrade anywhere else is refused with 404."""
        if scope.get("path") != "/feed":
            await refuse_websocket(scope, send, 404, b"not found\n")
            return
        key = query_params(scope).get("key", "")
        if not (self._is_admin(scope) or _same_secret(key.encode(), self.daemon.api_key())):
            await refuse_websocket(scope, send, 401, NEEDS_API_KEY)
            return
        try:
            await serve_feed(scope, receive, send, self.daemon.feed, send_timeout=self.feed_send_timeout)
        except Exception:  # a client gone mid-send, a bug: that client's connection ends, nothing else
            log.exception("feed connection failed")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _bearer_matches(scope: Scope, secret: str) -> bool:
    """`Authorization: Bearer <secret>` (scheme in any case), compared in constant time; never for ""."""
    header = _header(scope, b"authorization")
    if header is None:
        return False
    scheme, _, value = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and _same_secret(value.strip(), secret)


def _same_secret(given: bytes, secret: str) -> bool:
    return bool(secret) and hmac.compare_digest(given, secret.encode())


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


async def _respond(send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    header_list = [(b"content-length", str(len(body)).encode())]
    names = {k.lower() for k in (headers or {})}
    if "content-type" not in names:
        header_list.append((b"content-type", b"text/plain; charset=utf-8"))
    for key, value in (headers or {}).items():
        header_list.append((key.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status, "headers": header_list})
    await send({"type": "http.response.body", "body": body})


__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_TENANT_CONCURRENCY",
    "DEFAULT_TENANT_TIMEOUT",
    "FEED_SEND_TIMEOUT",
    "Daemon",
    "PosteeApp",
    "RouteTimedOut",
    "RouteUnavailable",
]
