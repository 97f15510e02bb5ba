"""A Lane: a single-lane actor that runs one handler per message, strictly in arrival order.

It is the building block of a serialized route: however many tasks send to it concurrently,
the handler never runs twice at once, and messages are handled in the order the mailbox
accepted them (Trio's memory channels are FIFO for both buffered items and blocked senders).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from actors.actor import Actor
from actors.mailbox import DEFAULT_CAPACITY

T = TypeVar("T")

Handler = Callable[[T], Awaitable[None]]
ErrorHandler = Callable[[T, Exception], Awaitable[None]]


class Lane(Actor[T]):
    """Handles messages one at a time with `handler`.

    A handler that raises crashes the lane (its supervisor restarts it and the remaining
    messages are still there), unless `on_error` is given: then the lane reports the failure
    for that one message and carries on with the next, which is what a route wants when one
    event's action fails.
    """

    def __init__(
        self,
        handler: Handler[T],
        *,
        name: str | None = None,
        capacity: float = DEFAULT_CAPACITY,
        on_error: ErrorHandler[T] | None = None,
    ) -> None:
        super().__init__(name=name or getattr(handler, "__name__", "lane"), capacity=capacity)
        self._handler = handler
        self._on_error = on_error
        self.handled = 0
        self.failed = 0

    async def handle(self, message: T) -> None:
        if self._on_error is None:
            await self._handler(message)
            self.handled += 1
            return
        try:
            await self._handler(message)
        except Exception as exc:
            self.failed += 1
            await self._on_error(message, exc)
        else:
            self.handled += 1
