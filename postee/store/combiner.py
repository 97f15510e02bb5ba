"""Group commit: concurrent small operations share one thread hop and one transaction.

A call to `SqliteStore.dedup_seen` is a few microseconds of SQLite work but a hop to a worker thread and
back costs tens to hundreds of microseconds, and every commit appends to the WAL. When many route
actors deduplicate at once, running each call separately makes the hop and the commit the
bottleneck. The combiner queues such calls; one of the waiting tasks (the *leader*) takes every
queued call, runs them in order in one worker-thread hop (the store runs them in one transaction),
hands each caller its own result and passes the leadership to the next queued call, if any.

No task is started: the leader is always one of the callers, so the combiner needs no nursery and
the store keeps its plain `await SqliteStore.open()` / `aclose()` form. Cancellation: a call cancelled
before a leader took it is withdrawn (it never runs); once taken, it runs with its batch (its
result is dropped), exactly like an operation whose worker thread had already started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import outcome
import trio


@attrs.define(eq=False)
class Request:
    """One queued call; `run_batch` fills `result` in the worker thread."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    result: outcome.Outcome[Any] | None = None
    taken: bool = False
    wake: trio.Event = attrs.field(factory=trio.Event)


class Combiner:
    """Queue small calls and run whatever is queued as one batch, one batch at a time.

    `limiter` is the store's: holding it means owning the connection, so batches and ordinary
    operations never overlap. `run_batch(requests)` runs in a worker thread and must set every
    request's `result`.
    """

    def __init__(self, limiter: trio.CapacityLimiter, run_batch: Callable[[list[Request]], None], *,
                 in_loop: bool = False) -> None:
        """`in_loop`: run batches on the event loop instead of a worker thread (a deterministic store)."""
        self._limiter = limiter
        self._run_batch = run_batch
        self._in_loop = in_loop
        # to_thread needs a limiter of its own; it is never contended since we hold `limiter`.
        self._thread_limiter = trio.CapacityLimiter(1)
        self._pending: list[Request] = []
        self._leading = False
        self.batches = 0
        """Batches run so far (one worker-thread hop each), for tests and metrics."""

    async def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Queue `fn(connection, *args)`, wait until a batch ran it, return its result."""
        request = Request(fn, args)
        self._pending.append(request)
        try:
            while request.result is None:
                if self._leading:
                    await request.wake.wait()
                    request.wake = trio.Event()
                else:
                    await self._lead()
        except BaseException:
            if not request.taken:
                self._pending.remove(request)
            raise
        finally:
            self._hand_over()
        return request.result.unwrap()

    async def _lead(self) -> None:
        """Run one batch of everything queued (the leader's own call included)."""
        self._leading = True
        batch: list[Request] = []
        try:
            async with self._limiter:
                batch, self._pending = self._pending, []
                for request in batch:
                    request.taken = True
                self.batches += 1
                if self._in_loop:
                    self._run_batch(batch)
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.to_thread.run_sync(self._run_batch, batch, limiter=self._thread_limiter)
        finally:
            self._leading = False
            for request in batch:
                if request.result is None:  # `run_batch` itself failed: no caller may wait forever
                    request.result = outcome.Error(RuntimeError("the batch this call was part of failed"))
                request.wake.set()

    def _hand_over(self) -> None:
        """Make the oldest queued call the next leader when nobody leads."""
        if not self._leading and self._pending:
            self._pending[0].wake.set()
