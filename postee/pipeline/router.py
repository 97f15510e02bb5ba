"""Router: hands every accepted event to every route (a tenant event to its one route), in arrival order.

The router's mailbox is the intake queue: the webhook `try_send`s into it and answers 503 when it
is full. The router itself waits (back-pressure) when a route's mailbox is full, so a slow route
slows intake down instead of growing memory. It tells the ledger how many routes each event went
to, so the event is known to be finished once each of them has decided.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors import Actor, MailboxClosed
from postee.pipeline.events import Event
from postee.pipeline.ledger import Ledger
from postee.pipeline.route_actor import RouteActor, RouteJob

DEFAULT_INTAKE_CAPACITY = 256
"""Events accepted but not yet routed; beyond this the webhook answers 503 (seconds of work, not minutes)."""


class Router(Actor[Event]):
    def __init__(self, routes: Sequence[RouteActor], *, capacity: int = DEFAULT_INTAKE_CAPACITY,
                 ledger: Ledger | None = None) -> None:
        super().__init__(name="intake", capacity=capacity)
        self.routes = list(routes)
        self.ledger = ledger
        self.routed = 0

    def full(self) -> bool:
        """No room in the intake queue right now (the webhook answers 503)."""
        stats = self.mailbox.stats()
        return stats.depth >= stats.capacity

    async def handle(self, message: Event) -> None:
        routes = self.routes
        if message.route is not None:
            routes = [route for route in routes if route.route.name == message.route]
        if self.ledger is not None:
            await self.ledger.routed(message.id, len(routes))
        for route in routes:
            try:
                await route.address.send(RouteJob(message))
            except MailboxClosed:
                pass  # the route is being stopped (reload): the event stays unfinished, replayed at the next start
        self.routed += 1
