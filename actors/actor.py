"""The Actor base class: a mailbox, an address, and a run loop that handles one message at a time."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import trio

from actors.mailbox import DEFAULT_CAPACITY, Address, Mailbox

T = TypeVar("T")


class Actor(Generic[T]):
    """An object that owns a bounded mailbox and reacts to the messages in it.

    Subclasses implement `handle` (and optionally `on_start` / `on_stop`), or override `run`
    entirely when they need a different loop (for instance to handle messages concurrently in
    a nursery of their own). The same instance may be run again after a crash: the mailbox, and
    the messages waiting in it, survive the restart, so addresses held by others stay valid.

    Start it with `await nursery.start(actor.run)`, or hand it to a `Supervisor`. `run` calls
    `task_status.started(address)` once `on_start` has finished, so the starter can rely on the
    actor being ready.
    """

    def __init__(self, *, name: str | None = None, capacity: float = DEFAULT_CAPACITY) -> None:
        self.name = name or type(self).__name__
        self.mailbox: Mailbox[T] = Mailbox(capacity, name=self.name)
        self._address = self.mailbox.address()

    @property
    def address(self) -> Address[T]:
        """The actor's own address; call `.clone()` to hand out one you can close."""
        return self._address

    async def on_start(self) -> None:
        """Called at every (re)start before the first message; acquire resources here."""

    async def on_stop(self) -> None:
        """Called when the mailbox is closed and drained (not on a crash or a cancel)."""

    async def handle(self, message: T) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await self.on_start()
        task_status.started(self._address)
        async for message in self.mailbox:
            await self.handle(message)
        await self.on_stop()

    def begin_stop(self, deadline: float | None = None) -> None:
        """Stop accepting messages; `run` returns once the queued ones are handled.

        `deadline` is accepted for symmetry with `Supervisor.begin_stop`; the supervisor that
        owns this actor enforces it by cancelling.
        """
        self.mailbox.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
