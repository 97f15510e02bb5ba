"""Router: decides which routes an event concerns, and hands it to those, in arrival order.

The router's mailbox is the intake queue: the webhook `try_send`s into it and answers 503 when it
is full. With a rule book (`postee.pipeline.rulebook`, the daemon's default) the router asks, once per
event, every route's rule at once, and hands the event only to the routes that matched (or whose rule
failed: the route reports that error); a route the event does not concern hears of it as an outcome
(`RouteActor.skip`), at no cost. Several events are decided at once (`window`: Rego work in the
worker pool), and handed over strictly in arrival order. A tenant event (`POST /tenant/{route}`) goes
to its one route, which asks its own rule.

The router waits (back-pressure) when a route's mailbox is full, so a slow route slows intake down
instead of growing memory. It tells the ledger how many routes each event went to, so the event is
known to be finished once each of them has decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog
import trio

from actors import Actor, Lane, MailboxClosed
from postee.pipeline.events import Event
from postee.pipeline.ledger import Ledger
from postee.pipeline.route_actor import DEFAULT_ROUTE_WINDOW, RouteActor, RouteJob
from postee.pipeline.rulebook import Decision, RuleBook

log = structlog.get_logger("postee.router")

DEFAULT_INTAKE_CAPACITY = 256
"""Events accepted but not yet routed; beyond this the webhook answers 503 (seconds of work, not minutes)."""


class _Decided:
    __slots__ = ("decisions", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.decisions: dict[str, Decision] | None = None
        """None: no decision (a bug while deciding): every route gets the event and asks its own rule."""


class Router(Actor[Event]):
    def __init__(self, routes: Sequence[RouteActor], *, capacity: int = DEFAULT_INTAKE_CAPACITY,
                 ledger: Ledger | None = None,
                 on_routed: Callable[[Event, int, dict[str, Decision] | None], Any] | None = None,
                 rulebook: RuleBook | None = None, window: int = DEFAULT_ROUTE_WINDOW) -> None:
        """`on_routed(event, n, decisions)`: told, before any route has the event, how many routes it
        concerns and what their rules decided (None: each route will decide). Without `rulebook` every
        route gets every event and asks its own rule."""
        super().__init__(name="intake", capacity=capacity)
        self.routes = list(routes)
        self.ledger = ledger
        self.on_routed = on_routed
        self.rulebook = rulebook
        self.window = window
        self.routed = 0

    def full(self) -> bool:
        """No room in the intake queue right now (the webhook answers 503)."""
        stats = self.mailbox.stats()
        return stats.depth >= stats.capacity

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Decide up to `window` events at once; hand them over strictly in arrival order."""
        if self.rulebook is None:
            await super().run(task_status=task_status)
            return
        lane: Lane[tuple[Event, _Decided]] = Lane(self._hand_over, name="intake:hand-over",
                                                 capacity=max(self.window - 1, 0), on_error=self._failed)
        async with trio.open_nursery() as stages:
            await stages.start(lane.run)
            task_status.started(self.address)
            async for event in self.mailbox:
                decided = _Decided()
                stages.start_soon(self._decide_into, event, decided)
                await lane.address.send((event, decided))
            lane.begin_stop()

    async def _decide_into(self, event: Event, decided: _Decided) -> None:
        assert self.rulebook is not None
        try:
            if event.route is None:
                decided.decisions = await self.rulebook.decide(event, [r.route.name for r in self.routes])
        except Exception as exc:  # a bug: this event goes to every route, which asks its own rule
            log.error("route rules could not be decided together", event_id=event.id,
                      error=f"{type(exc).__name__}: {exc}")
        finally:
            decided.done.set()

    async def _hand_over(self, item: tuple[Event, _Decided]) -> None:
        event, decided = item
        if not decided.done.is_set():  # (a set Event's wait still yields to the scheduler)
            await decided.done.wait()
        await self._send(event, decided.decisions)

    async def _failed(self, item: tuple[Event, _Decided], exc: Exception) -> None:
        """A bug while handing one event over: logged; the others go on (the event stays recorded,
        unfinished, and runs again at the next start)."""
        log.error("event not handed to its routes", event_id=item[0].id, error=f"{type(exc).__name__}: {exc}")

    async def handle(self, message: Event) -> None:
        """Without a rule book: every route gets the event and asks its own rule."""
        await self._send(message, None)

    async def _send(self, event: Event, decisions: dict[str, Decision] | None) -> None:
        routes = self.routes
        if event.route is not None:
            routes = [route for route in routes if route.route.name == event.route]
        if self.on_routed is not None:
            try:
                self.on_routed(event, len(routes), decisions)
            except Exception as exc:  # a watcher's bug must not stop routing
                log.error("on_routed failed", event_id=event.id, error=f"{type(exc).__name__}: {exc}")
        skipped = [] if decisions is None else [r for r in routes if decisions.get(r.route.name) is False]
        if skipped:
            routes = [r for r in routes if decisions.get(r.route.name) is not False]  # type: ignore[union-attr]
        if self.ledger is not None:
            await self.ledger.routed(event.id, len(routes))
        for route in skipped:
            try:
                route.skip(event)
            except Exception as exc:  # an observer's bug must not stop routing
                log.error("skip failed", route=route.route.name, event_id=event.id,
                          error=f"{type(exc).__name__}: {exc}")
        for route in routes:
            if event.continues:  # decided where the event entered
                decision: Decision | None = True
            else:
                decision = None if decisions is None else decisions.get(route.route.name)
            try:
                await route.address.send(RouteJob(event, rule=decision))
            except MailboxClosed:
                pass  # the route is being stopped (reload): the event stays unfinished, replayed at the next start
        self.routed += 1
