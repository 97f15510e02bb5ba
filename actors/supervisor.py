"""Supervisors: own a nursery of children, restart the ones that crash, escalate when it is hopeless.

A supervisor is itself an actor-like child (it has `run` and `begin_stop`), so trees are built by
starting supervisors under supervisors. The rules follow Erlang/OTP, adapted to Trio:

* A child is anything with `async def run(*, task_status)` (an `Actor`, a `Lane`, another
  `Supervisor`) or a plain async callable taking `task_status`. It is started with
  `nursery.start`, so the supervisor knows when it is ready.
* A child that raises has crashed; one that returns has finished and is not restarted.
* `ONE_FOR_ONE` restarts just the crashed child; `ONE_FOR_ALL` cancels its siblings and restarts
  all children in start order (for children that only make sense together).
* Restarts are limited by an intensity: more than `max_restarts` crashes within `window` seconds
  and the supervisor gives up, raising `SupervisorGaveUp` to its own parent (escalation). Between
  restarts it waits an exponential backoff, capped, so a crash loop does not spin the CPU.
* Stopping is graceful: children are asked to stop in reverse start order (downstream actors are
  usually started first, so upstream ones stop and flush into them before they stop), each
  drains its mailbox, and whatever is still running at the deadline is cancelled.
"""

from __future__ import annotations

import collections
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from actors._groups import leaves
from actors.errors import SupervisorGaveUp

log = logging.getLogger(__name__)

DEFAULT_MAX_RESTARTS = 5
DEFAULT_WINDOW = 60.0
DEFAULT_BACKOFF_INITIAL = 0.1
DEFAULT_BACKOFF_FACTOR = 2.0
DEFAULT_BACKOFF_MAX = 10.0
DEFAULT_STOP_GRACE = 10.0


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"


@attrs.frozen
class RestartPolicy:
    """How a supervisor reacts to crashes."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = DEFAULT_MAX_RESTARTS
    window: float = DEFAULT_WINDOW
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR
    backoff_max: float = DEFAULT_BACKOFF_MAX

    def backoff(self, attempt: int) -> float:
        """Delay before restart number `attempt` (1-based) within the current window."""
        return min(self.backoff_initial * self.backoff_factor ** max(attempt - 1, 0), self.backoff_max)


class EventKind(enum.Enum):
    CRASHED = "crashed"
    RESTARTED = "restarted"
    EXITED = "exited"
    GAVE_UP = "gave_up"


@attrs.frozen
class SupervisorEvent:
    """What happened to a child; passed to the supervisor's `on_event` hook."""

    kind: EventKind
    supervisor: str
    child: str
    time: float
    error: BaseException | None = None
    restarts: int = 0
    delay: float = 0.0


class Startable(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...


ChildTarget = Callable[..., Awaitable[Any]]


@attrs.define(eq=False)
class _Child:
    name: str
    target: ChildTarget
    begin_stop: Callable[[float], None] | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    finished: trio.Event = attrs.field(factory=trio.Event)
    running: bool = False


class _RestartAll(Exception):
    """Raised out of a one-for-all generation: `child` crashed with `error`."""

    def __init__(self, child: _Child, error: BaseException) -> None:
        super().__init__(child.name)
        self.child = child
        self.error = error


def _crash_of(exc: BaseException) -> BaseException | None:
    """The error that crashed a child, or None when `exc` is not a crash (cancel, ^C)."""
    found = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
    if not found or not all(isinstance(e, Exception) for e in found):
        return None
    return found[0] if len(found) == 1 else exc


class Supervisor:
    """Starts children, restarts them by policy, stops them gracefully. See the module docstring."""

    def __init__(
        self,
        name: str = "supervisor",
        policy: RestartPolicy | None = None,
        *,
        on_event: Callable[[SupervisorEvent], None] | None = None,
        stop_grace: float = DEFAULT_STOP_GRACE,
        fail_fast_on_start: bool = False,
    ) -> None:
        """`fail_fast_on_start`: a child that fails before it is ready, while the supervisor itself is
        starting, is not restarted: its error leaves `run` (and so the starter's `nursery.start`) at
        once, as in OTP, where a child whose init fails makes its supervisor's start fail. For
        children whose first failure means a wrong setting (an unreachable bus, a refused
        credential) rather than bad luck; every later crash is restarted as usual."""
        self.name = name
        self.policy = policy or RestartPolicy()
        self.stop_grace = stop_grace
        self.fail_fast_on_start = fail_fast_on_start
        self._on_event = on_event
        self._children: list[_Child] = []
        self._history: collections.deque[float] = collections.deque()
        self._generation: trio.Nursery | None = None
        self._stop_requested = trio.Event()
        self._stop_deadline: float | None = None
        self._finished = trio.Event()
        self._started = False
        self.restart_count = 0

    # -- public API ----------------------------------------------------------------------------
    @property
    def children(self) -> list[str]:
        """Names of the children currently supervised, in start order."""
        return [c.name for c in self._children]

    def add(self, child: Startable | ChildTarget, *, name: str | None = None) -> None:
        """Register a child before `run`; it is started (in order) when the supervisor starts."""
        if self._generation is not None:
            raise RuntimeError("supervisor is running: use `await start(child)`")
        self._children.append(self._make_child(child, name))

    async def start(self, child: Startable | ChildTarget, *, name: str | None = None) -> None:
        """Start a child now (the supervisor must be running); returns once it is ready."""
        if self._generation is None:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        if self._stop_requested.is_set():
            raise RuntimeError(f"supervisor {self.name!r} is stopping")
        entry = self._make_child(child, name)
        self._children.append(entry)
        await self._generation.start(self._child_task, entry)

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped or cancelled; raises `SupervisorGaveUp` when intensity is exceeded."""
        reported = False
        try:
            while True:
                try:
                    async with trio.open_nursery() as generation:
                        self._generation = generation
                        for entry in list(self._children):
                            await generation.start(self._child_task, entry)
                        if not reported:
                            self._started = True
                            task_status.started(self)
                            reported = True
                        await self._stop_requested.wait()
                        await self._stop_children()
                        generation.cancel_scope.cancel()
                    return
                except BaseException as exc:  # inspected, re-raised unless ours
                    restart_all = [e for e in leaves(exc) if isinstance(e, _RestartAll)]
                    gave_up = [e for e in leaves(exc) if isinstance(e, SupervisorGaveUp)]
                    if gave_up:
                        raise gave_up[0] from gave_up[0].__cause__
                    if not restart_all:
                        raise
                    crash = restart_all[0]
                    if self._stop_requested.is_set():
                        return
                    delay = self._record_crash(crash.child, crash.error)
                    await trio.sleep(delay)
                    self._emit(EventKind.RESTARTED, crash.child.name, restarts=len(self._history))
        finally:
            self._generation = None
            self._finished.set()

    def begin_stop(self, deadline: float | None = None) -> None:
        """Ask for a graceful stop: children stop in reverse order, draining until `deadline`."""
        if self._stop_requested.is_set():
            return
        self._stop_deadline = deadline if deadline is not None else trio.current_time() + self.stop_grace
        self._stop_requested.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully within `grace` seconds and wait until the supervisor has finished."""
        grace = self.stop_grace if grace is None else grace
        self.begin_stop(trio.current_time() + grace)
        await self._finished.wait()

    async def wait_finished(self) -> None:
        """Wait until `run` has returned (stopped, gave up or cancelled), without asking for a stop."""
        await self._finished.wait()

    # -- internals -----------------------------------------------------------------------------
    def _make_child(self, child: Startable | ChildTarget, name: str | None) -> _Child:
        run = getattr(child, "run", None)
        target = run if run is not None else child
        if not callable(target):
            raise TypeError(f"a child must have an async run() or be an async callable, not {child!r}")
        child_name = name or getattr(child, "name", None) or getattr(target, "__name__", repr(child))
        if any(c.name == child_name for c in self._children):
            raise ValueError(f"supervisor {self.name!r} already has a child named {child_name!r}")
        return _Child(name=child_name, target=target, begin_stop=getattr(child, "begin_stop", None))

    async def _child_task(self, child: _Child, *, task_status: trio.TaskStatus[None]) -> None:
        reported = False
        child.finished = trio.Event()
        try:
            while True:
                child.scope = trio.CancelScope()
                try:
                    with child.scope:
                        child.running = True
                        async with trio.open_nursery() as holder:
                            await holder.start(child.target)
                            if not reported:
                                task_status.started()
                                reported = True
                    child.running = False
                    if child.scope.cancelled_caught:
                        return  # stopped by us (graceful stop of a plain task)
                    self._emit(EventKind.EXITED, child.name)
                    self._children.remove(child)
                    return
                except BaseException as exc:  # classified below
                    child.running = False
                    error = _crash_of(exc)
                    if error is None:
                        raise
                    if self.fail_fast_on_start and not self._started:
                        raise
                    if self._stop_requested.is_set():
                        self._emit(EventKind.CRASHED, child.name, error=error)
                        return
                    if self.policy.strategy is Strategy.ONE_FOR_ALL:
                        if not reported:
                            task_status.started()
                            reported = True
                        raise _RestartAll(child, error) from None
                    delay = self._record_crash(child, error)
                    await trio.sleep(delay)
                    self._emit(EventKind.RESTARTED, child.name, restarts=len(self._history))
        finally:
            child.finished.set()

    def _record_crash(self, child: _Child, error: BaseException) -> float:
        """Count a crash against the intensity; raise `SupervisorGaveUp` or return the backoff."""
        now = trio.current_time()
        policy = self.policy
        while self._history and self._history[0] <= now - policy.window:
            self._history.popleft()
        if len(self._history) >= policy.max_restarts:
            self._emit(EventKind.GAVE_UP, child.name, error=error, restarts=len(self._history))
            raise SupervisorGaveUp(self.name, child.name, len(self._history), policy.window) from error
        self._history.append(now)
        self.restart_count += 1
        delay = policy.backoff(len(self._history))
        log.warning(
            "supervisor %s: child %s crashed (%s: %s); restart %d in %.3gs",
            self.name, child.name, type(error).__name__, error, len(self._history), delay,
        )
        self._emit(EventKind.CRASHED, child.name, error=error, restarts=len(self._history), delay=delay)
        return delay

    async def _stop_children(self) -> None:
        deadline = self._stop_deadline if self._stop_deadline is not None else trio.current_time()
        for child in reversed(list(self._children)):
            if child.finished.is_set():
                continue
            if child.begin_stop is not None:
                child.begin_stop(deadline)
            else:
                child.scope.cancel()
            with trio.move_on_at(deadline):
                await child.finished.wait()

    def _emit(self, kind: EventKind, child: str, **fields: Any) -> None:
        if self._on_event is None:
            return
        event = SupervisorEvent(kind=kind, supervisor=self.name, child=child, time=trio.current_time(), **fields)
        try:
            self._on_event(event)
        except Exception:
            log.exception("supervisor %s: on_event hook failed", self.name)

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} children={self.children}>"
