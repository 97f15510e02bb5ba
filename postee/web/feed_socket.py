"""`GET /feed` as a WebSocket: the node's live feed (`postee.feed`), one JSON text message per happening.

Messages (`postee.roles.watch` builds them): `{"type": "event", "stage": "accepted", ...}` (an accepted
event: id, received_at, source, size; its `body` only with `?bodies=1`, since events may hold sensitive
data), `{"type": "event", "stage": "routed", ...}` (the routes it matched, once every route decided),
`{"type": "execution", ...}` (node, route,
action, event id, status, attempts, duration, error), `{"type": "runner", ...}` (a runner's state or
configuration changed) and `{"type": "dropped", "count": N}` (this client fell behind and lost N).

A client may filter with query parameters, applied before its queue: `types=event,execution`,
`route=R` (an event's `routed` message when it matched R), `runner=X` (the node or source),
`status=ok|failed`.

Authentication: the API key, as `Authorization: Bearer <key>` or `?key=<key>` (browsers cannot set
headers on a WebSocket); without it the upgrade is refused with 401. A WebSocket upgrade on any other
path is refused with 404.

Back-pressure never reaches the pipeline: each client has its own bounded queue in the feed, and a
client that takes nothing for `SEND_TIMEOUT` is disconnected: the lean server (`postee.web.lean_server`)
aborts a write that waits that long, and so does this module's `send_timeout` around each burst. Under
hypercorn (`POSTEE_HTTP_SERVER=hypercorn`) it is the listener's TCP user timeout (`postee.web.server`):
hypercorn shields its socket writes from cancellation. What is waiting goes out in one burst, in one
write where the server offers `postee.websocket.send_many` (each still its own WebSocket message).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
import trio

from postee.feed import Feed, wire

log = structlog.get_logger("postee.web")

__all__ = ["SEND_TIMEOUT", "feed_filter", "query_params", "refuse_websocket", "serve_feed"]

SEND_TIMEOUT = 30.0
"""Seconds a client may take to accept one message before it is disconnected as too slow."""
FEED_CAPACITY = 1024
"""Messages one client may have waiting in the feed before it loses the newest (announced as `dropped`)."""
TYPES = frozenset({"event", "execution", "runner"})
BURST = 256
"""Messages written together at most (each still its own WebSocket message)."""
BURST_WINDOW = 0.05
"""Seconds a message waits for others to go out with it: a live view 50 ms late, for a fraction of the cost."""

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def query_params(scope: Scope) -> dict[str, str]:
    """The query string's parameters (the last value of each)."""
    parsed = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {name: values[-1] for name, values in parsed.items()}


def feed_filter(query: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool] | None:
    """The filter of a client's query (None: everything). Unknown values simply match nothing."""
    types = {t.strip() for t in query.get("types", "").split(",") if t.strip()}
    route, runner, status = query.get("route"), query.get("runner"), query.get("status")
    if not (types or route or runner or status):
        return None

    def accept(message: Mapping[str, Any]) -> bool:
        kind = message.get("type")
        if types and kind not in types:
            return False
        if route and kind in ("event", "execution") and message.get("route") != route \
                and route not in (message.get("routes") or ()):
            return False
        if runner and runner not in (message.get("node"), message.get("source"), message.get("name")):
            return False
        return not (status and kind == "execution" and message.get("status") != status)

    return accept


async def refuse_websocket(scope: Scope, send: Send, status: int, body: bytes) -> None:
    """Refuse an upgrade with an HTTP status (the ASGI denial extension), else a plain close (403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def serve_feed(scope: Scope, receive: Receive, send: Send, feed: Feed, *,
                     send_timeout: float = SEND_TIMEOUT) -> None:
    """Accept the upgrade and stream the feed until the client leaves, is too slow (one message not
    taken within `send_timeout`), or the node stops."""
    first = await receive()
    if first.get("type") != "websocket.connect":
        return
    query = query_params(scope)
    bodies = query.get("bodies") in ("1", "true", "yes")
    send_many = "postee.websocket.send_many" in scope.get("extensions", {})
    with feed.subscribe(capacity=FEED_CAPACITY, accept=feed_filter(query), bodies=bodies) as subscription:
        await send({"type": "websocket.accept"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_client_leaves, receive, nursery.cancel_scope)
            async for first in subscription:
                # what else comes within `BURST_WINDOW` goes out with it: one wake-up and, where the
                # server can, one write for a burst, instead of one per message (a system call per
                # message and client was most of the feed's cost)
                await trio.sleep(BURST_WINDOW)
                texts = [wire(message, bodies) for message in (first, *subscription.receive_pending(BURST - 1))]
                with trio.move_on_after(send_timeout) as waited:
                    if send_many:
                        await send({"type": "websocket.send_many", "texts": texts})
                    else:
                        for text in texts:
                            await send({"type": "websocket.send", "text": text})
                if waited.cancelled_caught:
                    log.warning("feed client too slow: disconnected", client=scope.get("client"))
                    with trio.move_on_after(1):
                        await send({"type": "websocket.close", "code": 1008, "reason": "too slow"})
                    break
            else:  # the feed closed: the node is stopping
                with trio.move_on_after(1):
                    await send({"type": "websocket.close", "code": 1001, "reason": "node stopping"})
            nursery.cancel_scope.cancel()


async def _until_client_leaves(receive: Receive, scope: trio.CancelScope) -> None:
    """Read (and ignore) what the client sends; when it disconnects, stop streaming to it."""
    while True:
        message = await receive()
        if message.get("type") == "websocket.disconnect":
            scope.cancel()
            return
