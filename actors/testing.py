"""Helpers for deterministic tests of actor trees.

Under `trio.testing.MockClock(autojump_threshold=0)` virtual time jumps forward whenever every
task is blocked, so backoffs, timeouts and expiries take no real time and always happen in the
same order. With pytest-trio use the `autojump_clock` fixture; outside pytest use
`run_deterministic`. `InMemoryBus` (re-exported here) stands in for NATS, so a controller and
several runners can share one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import trio
import trio.testing

from actors.actor import Actor
from actors.mailbox import DEFAULT_CAPACITY
from actors.memory_transport import InMemoryBus, InMemoryTransport
from actors.supervisor import RestartPolicy, Supervisor, SupervisorEvent

__all__ = [
    "InMemoryBus",
    "InMemoryTransport",
    "Recorder",
    "open_supervisor",
    "run_deterministic",
    "wait_until",
]

T = TypeVar("T")
R = TypeVar("R")


def run_deterministic(fn: Callable[..., Awaitable[R]], *args: Any, start_time: float = 0.0) -> R:
    """`trio.run(fn, *args)` under an autojumping mock clock starting at `start_time`."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    clock.jump(start_time)
    return trio.run(fn, *args, clock=clock)


@asynccontextmanager
async def open_supervisor(
    name: str = "test-supervisor",
    policy: RestartPolicy | None = None,
    *,
    stop_grace: float = 5.0,
) -> AsyncIterator[tuple[Supervisor, list[SupervisorEvent]]]:
    """A running supervisor and the list its events are recorded in; stopped on exit."""
    events: list[SupervisorEvent] = []
    supervisor = Supervisor(name, policy, on_event=events.append, stop_grace=stop_grace)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            yield supervisor, events
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(stop_grace + 1):
                await supervisor.stop(stop_grace)
            nursery.cancel_scope.cancel()


class Recorder(Actor[T], Generic[T]):
    """An actor that records every message it receives, for assertions."""

    def __init__(self, *, name: str = "recorder", capacity: float = DEFAULT_CAPACITY) -> None:
        super().__init__(name=name, capacity=capacity)
        self.messages: list[T] = []
        self._changed = trio.Event()

    async def handle(self, message: T) -> None:
        self.messages.append(message)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[T]:
        """Wait until at least `count` messages arrived; `trio.TooSlowError` after `timeout`."""
        with trio.fail_after(timeout):
            while len(self.messages) < count:
                await self._changed.wait()
        return self.messages


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll `predicate` until true; `trio.TooSlowError` after `timeout` (virtual time under autojump).

    Prefer waiting on an event; this is for state that offers none (counters, external files).
    """
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(interval)
