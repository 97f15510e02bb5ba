"""What happens in a node, for whoever watches it live: a bounded broadcast that never slows the pipeline.

The node publishes one plain dict per happening (an event accepted, an action run, a runner's state
changed); each subscriber (a WebSocket client of `/feed`, the `/ui` page, `postee events --follow`,
a test) reads from its own bounded queue. Publishing never waits and costs nothing without
subscribers: a subscriber that does not keep up loses the messages its queue has no room for; they
are counted, and the next message it reads is `{"type": "dropped", "count": N}` so it knows. A
subscriber may also give a filter, applied before queueing, so what it does not want costs it no room.
(An embedder or a simulation that must hear everything uses `NodeParts.observer` instead: synchronous,
complete, and its own responsibility not to block.)

`EventRoutes` tallies, per event, what its routes decided, so that the feed can say which routes an
event matched once all of them have (`{"type": "event", "stage": "routed", ...}`).

The `/feed` WebSocket (`postee.web.feed_socket`), `postee events --follow` and the `/ui` dashboard
read it.
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import trio

__all__ = ["DEFAULT_SUBSCRIBER_CAPACITY", "EventRoutes", "Feed", "FeedMessage", "FeedSubscription", "wire"]

DEFAULT_SUBSCRIBER_CAPACITY = 1024
"""Messages one subscriber may have waiting; beyond, the newest are dropped (and counted) for it alone."""
BODY_BUDGET = 32 * 1024 * 1024
"""Characters of event bodies (their `size`) one subscriber's queue may hold: a stuck client must not
keep a thousand large scan reports alive."""

Message = Mapping[str, Any]


class FeedMessage(dict):  # type: ignore[type-arg]
    """A published message: a plain dict, with its JSON text kept once made, so that twenty clients
    cost one encoding, not twenty (`wire`)."""

    __slots__ = ("_texts",)

    def __init__(self, message: Mapping[str, Any]) -> None:
        super().__init__(message)
        self._texts: dict[bool, str] = {}


def wire(message: Mapping[str, Any], bodies: bool) -> str:
    """The message as one JSON text; an event's `body` only with `bodies` (it may hold sensitive data)."""
    texts = message._texts if isinstance(message, FeedMessage) else None
    if texts is not None:
        text = texts.get(bodies)
        if text is None:
            text = texts[bodies] = _encode(message, bodies)
        return text
    return _encode(message, bodies)


def _encode(message: Mapping[str, Any], bodies: bool) -> str:
    if not bodies and "body" in message:
        message = {k: v for k, v in message.items() if k != "body"}
    return json.dumps(message, ensure_ascii=False, default=str)


class FeedSubscription:
    """One subscriber's view of a `Feed`: `await receive()` or `async for message in subscription`."""

    def __init__(self, capacity: int, accept: Callable[[Message], bool] | None,
                 on_drop: Callable[[], None] | None = None, *, bodies: bool = False) -> None:
        self.capacity = capacity
        self.accept = accept
        self.on_drop = on_drop
        self.bodies = bodies
        """The subscriber reads events' bodies (the node only attaches them while one does)."""
        self.body_chars = 0
        """Body characters its queue holds (bounded by `BODY_BUDGET`)."""
        self.dropped = 0
        """Messages lost since the last `dropped` notice (reset when the notice is read)."""
        self.dropped_total = 0
        self._queue: collections.deque[Message] = collections.deque()
        self._ready = trio.Event()
        self.closed = False

    def _offer(self, message: Message) -> None:
        if self.accept is not None and not self.accept(message):
            return
        size = message.get("size", 0) if "body" in message else 0
        if len(self._queue) >= self.capacity or (size and self.body_chars + size > BODY_BUDGET):
            self.dropped += 1
            self.dropped_total += 1
            if self.on_drop is not None:
                self.on_drop()
        else:
            self._queue.append(message)
            self.body_chars += size
        self._ready.set()

    def _took(self, message: Message) -> Message:
        if "body" in message:
            self.body_chars -= message.get("size", 0)
        return message

    def pending(self) -> int:
        return len(self._queue)

    def receive_pending(self, limit: int) -> list[Message]:
        """What is waiting now (at most `limit`, a `dropped` notice first), without waiting: a sender
        that writes several messages at once."""
        taken: list[Message] = []
        if self.dropped:
            count, self.dropped = self.dropped, 0
            taken.append({"type": "dropped", "count": count})
        while self._queue and len(taken) < limit:
            taken.append(self._took(self._queue.popleft()))
        return taken

    async def receive(self) -> Message:
        """The next message: a `dropped` notice first when messages were lost since the last one.
        Raises `trio.EndOfChannel` once the feed closed this subscription and nothing is left."""
        while True:
            if self.dropped:
                count, self.dropped = self.dropped, 0
                return {"type": "dropped", "count": count}
            if self._queue:
                return self._took(self._queue.popleft())
            if self.closed:
                raise trio.EndOfChannel
            self._ready = trio.Event()
            await self._ready.wait()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.receive()
            except trio.EndOfChannel:
                return

    def _close(self) -> None:
        self.closed = True
        self._ready.set()


class Feed:
    """The broadcast of one node (see the module docstring)."""

    def __init__(self, *, subscriber_capacity: int = DEFAULT_SUBSCRIBER_CAPACITY,
                 on_drop: Callable[[], None] | None = None,
                 on_subscribers: Callable[[int], None] | None = None) -> None:
        """`on_drop()`: a subscriber lost a message; `on_subscribers(n)`: there are now n (metrics)."""
        self.subscriber_capacity = subscriber_capacity
        self.on_drop = on_drop
        self.on_subscribers = on_subscribers
        self._subscribers: list[FeedSubscription] = []
        self.published = 0
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, message: Message) -> None:
        """Offer `message` to every subscriber, now; never waits (a full subscriber loses it)."""
        self.published += 1
        if not isinstance(message, FeedMessage):
            message = FeedMessage(message)
        for subscriber in self._subscribers:
            subscriber._offer(message)

    def wanted(self) -> bool:
        """Whether anyone listens: callers skip building messages nobody would read."""
        return bool(self._subscribers)

    def wants_bodies(self) -> bool:
        """Whether a subscriber reads events' bodies (`/feed?bodies=1`): only then are they attached."""
        return any(subscriber.bodies for subscriber in self._subscribers)

    @contextmanager
    def subscribe(self, *, capacity: int | None = None, accept: Callable[[Message], bool] | None = None,
                  bodies: bool = False) -> Iterator[FeedSubscription]:
        """A subscription for the block: messages published from now on that `accept` keeps; `bodies`:
        it reads events' bodies (see `wants_bodies`)."""
        subscription = FeedSubscription(capacity or self.subscriber_capacity, accept, self.on_drop, bodies=bodies)
        if self.closed:  # the node is stopping: nothing more will come
            subscription._close()
        self._subscribers.append(subscription)
        self._counted()
        try:
            yield subscription
        finally:
            self._subscribers.remove(subscription)
            self._counted()
            subscription._close()

    def _counted(self) -> None:
        if self.on_subscribers is not None:
            self.on_subscribers(len(self._subscribers))

    def close(self) -> None:
        """End every subscription (the node stops): readers finish what is queued, then stop."""
        self.closed = True
        for subscriber in list(self._subscribers):
            subscriber._close()


TALLY_LIMIT = 10_000
"""Events whose routes are being tallied at once; beyond, the oldest tally is forgotten (an event whose
route was stopped by a reload never hears from it: its tally must not stay for ever)."""


class EventRoutes:
    """Per event in flight: how many routes have still to decide, and which matched so far.

    `expect` when the router hands an event to its routes; `decided` for each route's outcome, which
    returns the event's tally (matched routes, routes that failed) once the last route decided.
    Bounded by `limit` events: it only serves watchers, and must never grow with a stuck route.
    """

    def __init__(self, limit: int = TALLY_LIMIT) -> None:
        self.limit = limit
        self._tallies: dict[str, tuple[int, list[str], list[str]]] = {}

    def __len__(self) -> int:
        return len(self._tallies)

    def expect(self, event_id: str, routes: int) -> None:
        if routes <= 0:
            return
        self._tallies[event_id] = (routes, [], [])
        while len(self._tallies) > self.limit:
            del self._tallies[next(iter(self._tallies))]

    def decided(self, event_id: str, route: str, matched: bool, failed: bool) -> tuple[list[str], list[str]] | None:
        """Record one route's decision; `(matched, failed)` route names once every route decided."""
        tally = self._tallies.get(event_id)
        if tally is None:
            return None
        left, matched_routes, failed_routes = tally
        if matched:
            matched_routes.append(route)
        if failed:
            failed_routes.append(route)
        if left > 1:
            self._tallies[event_id] = (left - 1, matched_routes, failed_routes)
            return None
        del self._tallies[event_id]
        return matched_routes, failed_routes
