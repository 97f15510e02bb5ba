"""Router: hands every accepted event to every route, in arrival order.

The router's mailbox is the intake queue: the webhook `try_send`s into it and answers 503 when it
is full. The router itself waits (back-pressure) when a route's mailbox is full, so a slow route
slows intake down instead of growing memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors import Actor, MailboxClosed
from postee.pipeline.events import Event
from postee.pipeline.route_actor import RouteActor, RouteJob

DEFAULT_INTAKE_CAPACITY = 256
"""Events accepted but not yet routed; beyond this the webhook answers 503 (seconds of work, not minutes)."""


class Router(Actor[Event]):
    def __init__(self, routes: Sequence[RouteActor], *, capacity: int = DEFAULT_INTAKE_CAPACITY) -> None:
        super().__init__(name="intake", capacity=capacity)
        self.routes = list(routes)
        self.routed = 0

    async def handle(self, message: Event) -> None:
        for route in self.routes:
            try:
                await route.address.send(RouteJob(message))
            except MailboxClosed:
                pass  # the route is being stopped (reload): the replacement pipeline gets new events
        self.routed += 1
