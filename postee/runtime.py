"""How a node touches what lies outside its event loop: blocking work, the wall clock, fresh ids.

The daemon runs blocking work (reading a config file, checking actions, parsing a big body) in
worker threads, stamps records with `time.time()` and draws random ids. A simulation of a whole
deployment (`postee.sim`) must do all three on the event loop, on Trio's virtual clock, and from
its seed, or two runs of one seed would differ. So the code asks this module instead of calling
`trio.to_thread`, `time.time` or `uuid4` itself, and this module asks the `Runtime` in a context
variable: the daemon's by default; a simulation sets its own at the root of its Trio run
(`use_runtime`), and every task started under it inherits it, as Trio tasks inherit the context of
the task that starts them. An embedder may also give one in `NodeParts.runtime`.

Only what a node's own pipeline and bus side do goes through here. Actions that block (stdout,
email, Slack bodies) keep their own thread limiters: a simulation replaces actions by recorders.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import trio

T = TypeVar("T")

__all__ = ["PRODUCTION", "Runtime", "current_runtime", "new_id", "offload", "use_runtime", "wall_clock"]


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


async def _inline(fn: Callable[..., T], *args: Any) -> T:
    result = fn(*args)
    await trio.lowlevel.checkpoint()
    return result


def _uuid_hex() -> str:
    return uuid.uuid4().hex


@attrs.frozen
class Runtime:
    """The three outside dependencies of a node's code (see the module docstring)."""

    offload: Callable[..., Awaitable[Any]] = _in_thread
    """`await offload(fn, *args)`: run blocking `fn(*args)` without holding the event loop (a thread)."""
    wall_clock: Callable[[], float] = time.time
    """Epoch seconds: what the store keeps and reports carry."""
    new_id: Callable[[], str] = _uuid_hex
    """A fresh unique id (32 hex characters): events, reports, aggregate takers."""

    @classmethod
    def inline(cls, *, wall_clock: Callable[[], float], new_id: Callable[[], str]) -> Runtime:
        """Blocking work runs on the loop itself (then yields once): for simulations on virtual time."""
        return cls(offload=_inline, wall_clock=wall_clock, new_id=new_id)


PRODUCTION = Runtime()

_current: contextvars.ContextVar[Runtime] = contextvars.ContextVar("postee_runtime", default=PRODUCTION)


def current_runtime() -> Runtime:
    return _current.get()


@contextmanager
def use_runtime(runtime: Runtime | None) -> Iterator[None]:
    """Make `runtime` the current one in this task (and the tasks it starts) for the block; None: keep it."""
    if runtime is None:
        yield
        return
    token = _current.set(runtime)
    try:
        yield
    finally:
        _current.reset(token)


async def offload(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking `fn(*args)` the current runtime's way (a worker thread in the daemon)."""
    return await _current.get().offload(fn, *args)


def wall_clock() -> float:
    """The current runtime's epoch seconds (`time.time()` in the daemon)."""
    return _current.get().wall_clock()


def new_id() -> str:
    """A fresh id from the current runtime (a random UUID's hex in the daemon)."""
    return _current.get().new_id()
