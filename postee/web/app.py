"""The ASGI application: Postee's endpoints, plus health, readiness and metrics.

Hand-written ASGI rather than a framework: there are a dozen routes, and owning the request loop
lets intake enforce its limits (body size, a full queue) before reading more than it must.

| endpoint | answer |
|---|---|
| POST `/`, `/scan` | 200 `""` accepted and recorded; 400 bad JSON; 401 token; 413 too large; 503 + Retry-After |
| POST `/tenant/{route}` | runs that route now and waits; 200 with what happened; 404 unknown route |
| GET `/ping` | `Postee alive!` |
| GET `/events` | the last 1000 events as a JSON array |
| GET `/reload?key=K` | reload the config (key from the store / `POSTEE_API_KEY`) |
| GET `/healthz`, `/readyz` | liveness; readiness (config loaded, bus up) |
| GET `/metrics` | Prometheus text format |

A 503 means "not accepted, send it again": the intake queue is full, the node is stopping, or the
store could not record the event (the node's log says which).
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog

from postee.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from postee.metrics import Metrics
from postee.pipeline.events import Event, InvalidEvent, parse_event

log = structlog.get_logger("postee.web")

DEFAULT_MAX_BODY = 16 * 1024 * 1024
"""Largest event accepted (bytes). Trivy reports of big images reach a few MB."""

RETRY_AFTER_SECONDS = 1
TENANT_TIMEOUT = 300.0
"""How long `POST /tenant/{route}` waits for the route and its actions."""

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Daemon(Protocol):
    """What the web layer needs from the running daemon (standalone, controller or runner)."""

    metrics: Metrics

    async def submit(self, event: Event) -> bool: ...

    def route_names(self) -> list[str]: ...

    async def run_route(self, route: str, event: Event, *, timeout: float) -> dict[str, Any]: ...

    def recent_events_json(self) -> str: ...

    async def reload(self) -> tuple[bool, str]: ...

    def api_key(self) -> str: ...

    def ingest_token(self) -> str: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def extra_get(self, path: str) -> str | None:
        """JSON for role-specific GET endpoints (`/runners`, `/executions`), or None."""
        ...


class _TooLarge(Exception):
    pass


class PosteeApp:
    """ASGI callable; one per daemon."""

    def __init__(self, daemon: Daemon, *, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.daemon = daemon
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
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

    # -- intake --------------------------------------------------------------------------------
    async def _read_event(self, scope: Scope, receive: Receive, send: Send, source: str) -> Event | None:
        metrics = self.daemon.metrics
        if not self._authorized(scope):
            metrics.events_rejected.labels("unauthorized").inc()
            await _respond(send, 401, b"missing or wrong bearer token\n", {"www-authenticate": "Bearer"})
            return None
        try:
            body = await self._read_body(scope, receive)
        except _TooLarge:
            metrics.events_rejected.labels("too_large").inc()
            await _respond(send, 413, f"event larger than {self.max_body} bytes\n".encode())
            return None
        try:
            return parse_event(body, source=source)
        except InvalidEvent as exc:
            metrics.events_rejected.labels("invalid").inc()
            log.warning("invalid event rejected", reason=str(exc), size=len(body))
            await _respond(send, 400, f"{exc}\n".encode())
            return None

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = await self._read_event(scope, receive, send, "webhook")
        if event is None:
            return
        if not await self.daemon.submit(event):
            self.daemon.metrics.events_rejected.labels("busy").inc()
            await _respond(send, 503, b"busy: the event was not accepted (intake full, stopping, or the store "
                           b"unavailable), retry later\n",
                           {"retry-after": str(RETRY_AFTER_SECONDS)})
            return
        await _respond(send, 200, b'""', {"content-type": "application/json"})

    async def _tenant(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        if route not in self.daemon.route_names():
            await _respond(send, 404, f"unknown route {route!r}\n".encode())
            return
        event = await self._read_event(scope, receive, send, "webhook")
        if event is None:
            return
        outcome = await self.daemon.run_route(route, event, timeout=TENANT_TIMEOUT)
        await _respond(send, 200, json.dumps(outcome).encode(), {"content-type": "application/json"})

    def _authorized(self, scope: Scope) -> bool:
        token = self.daemon.ingest_token()
        if not token:
            return True
        header = _header(scope, b"authorization")
        expected = f"Bearer {token}".encode()
        return header is not None and hmac.compare_digest(header, expected)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _TooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    # -- admin ---------------------------------------------------------------------------------
    async def _get(self, scope: Scope, send: Send, path: str) -> None:
        daemon = self.daemon
        if path == "/ping":
            await _respond(send, 200, b"Postee alive!", {"content-type": "text/plain; charset=utf-8"})
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n")
        elif path == "/readyz":
            ready, details = daemon.readiness()
            await _respond(send, 200 if ready else 503, json.dumps({"ready": ready, **details}).encode(),
                           {"content-type": "application/json"})
        elif path == "/metrics":
            await _respond(send, 200, daemon.metrics.render(), {"content-type": METRICS_CONTENT_TYPE})
        elif path == "/events":
            if not self._authorized(scope):
                await _respond(send, 401, b"missing or wrong bearer token\n", {"www-authenticate": "Bearer"})
                return
            await _respond(send, 200, daemon.recent_events_json().encode(), {"content-type": "application/json"})
        elif path == "/reload":
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            key = (query.get("key") or [""])[0]
            if not key or not hmac.compare_digest(key.encode(), daemon.api_key().encode()):
                await _respond(send, 403, b"wrong or missing key\n")
                return
            ok, message = await daemon.reload()
            await _respond(send, 200 if ok else 422, f"{message}\n".encode())
        else:
            extra = daemon.extra_get(path)
            if extra is None:
                await _respond(send, 404, b"not found\n")
            else:
                await _respond(send, 200, extra.encode(), {"content-type": "application/json"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


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


__all__ = ["DEFAULT_MAX_BODY", "Daemon", "PosteeApp"]
