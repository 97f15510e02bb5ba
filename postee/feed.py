"""What happens in a node, for whoever watches it live: a bounded broadcast that never slows the pipeline.

The node publishes one plain dict per happening (an event accepted, an action run, a runner's state
changed); each subscriber (a WebSocket client of `/feed`, the `/ui` page, `postee events --follow`,
a test) reads from its own bounded queue. Publishing never waits and costs nothing without
subscribers: a subscriber that does not keep up loses the messages its queue has no room for; they
are counted, and the next message it reads is `{"type": "dropped", "count": N}` so it knows. A
subscriber may also give a filter, applied before queueing, so what it does not want costs it no room.
(An embedder or a simulation that must hear everything uses `NodeParts.observer` instead: synchronous,
complete, and its own responsibility not to block.)

This is the groundwork of issue #14 (the `/feed` endpoint, its authentication and the dashboard build
on it); the in-process part is here so that the pipeline's side is settled and tested first.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import trio

__all__ = ["DEFAULT_SUBSCRIBER_CAPACITY", "Feed", "FeedSubscription"]

DEFAULT_SUBSCRIBER_CAPACITY = 1024
"""Messages one subscriber may have waiting; beyond, the newest are dropped (and counted) for it alone."""

Message = Mapping[str, Any]


class FeedSubscription:
    """One subscriber's view of a `Feed`: `await receive()` or `async for message in subscription`."""

    def __init__(self, capacity: int, accept: Callable[[Message], bool] | None) -> None:
        self.capacity = capacity
        self.accept = accept
        self.dropped = 0
        """Messages lost since the last `dropped` notice (reset when the notice is read)."""
        self.dropped_total = 0
        self._queue: collections.deque[Message] = collections.deque()
        self._ready = trio.Event()
        self.closed = False

    def _offer(self, message: Message) -> None:
        if self.accept is not None and not self.accept(message):
            return
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            self.dropped_total += 1
        else:
            self._queue.append(message)
        self._ready.set()

    def pending(self) -> int:
        return len(self._queue)

    async def receive(self) -> Message:
        """The next message: a `dropped` notice first when messages were lost since the last one.
        Raises `trio.EndOfChannel` once the feed closed this subscription and nothing is left."""
        while True:
            if self.dropped:
                count, self.dropped = self.dropped, 0
                return {"type": "dropped", "count": count}
            if self._queue:
                return self._queue.popleft()
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

    def __init__(self, *, subscriber_capacity: int = DEFAULT_SUBSCRIBER_CAPACITY) -> None:
        self.subscriber_capacity = subscriber_capacity
        self._subscribers: list[FeedSubscription] = []
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, message: Message) -> None:
        """Offer `message` to every subscriber, now; never waits (a full subscriber loses it)."""
        self.published += 1
        for subscriber in self._subscribers:
            subscriber._offer(message)

    def wanted(self) -> bool:
        """Whether anyone listens: callers skip building messages nobody would read."""
        return bool(self._subscribers)

    @contextmanager
    def subscribe(self, *, capacity: int | None = None,
                  accept: Callable[[Message], bool] | None = None) -> Iterator[FeedSubscription]:
        """A subscription for the block: messages published from now on that `accept` keeps."""
        subscription = FeedSubscription(capacity or self.subscriber_capacity, accept)
        self._subscribers.append(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.remove(subscription)
            subscription._close()

    def close(self) -> None:
        """End every subscription (the node stops): readers finish what is queued, then stop."""
        for subscriber in list(self._subscribers):
            subscriber._close()
