"""A node with its bus side beside it: what the controller and the runner run the same way.

Both roles are a `Node` plus a supervisor of bus services (the controller's subscriptions, the
runner's outbox, heartbeats and config watch). They start together, the node's readiness and the
`postee_bus_connected` gauge follow the transport's link, and both stop when the node stops.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from actors import Supervisor, one_error
from actors.transport import Transport
from postee.roles.node import Node


def link_is_up(transport: Transport) -> bool:
    """The transport's link state; a transport without one (the in-memory bus) is always up."""
    return bool(getattr(transport, "connected", True))


async def run_linked(node: Node, bus_side: Supervisor, transport: Transport, *, readiness: str,
                     started: Callable[[], None]) -> None:
    """Run `node` and `bus_side` until the node stops; `started()` once both are ready.

    Raises one exception, never an exception group, for a single failure.
    """
    node.readiness_checks[readiness] = lambda: link_is_up(transport)
    node.metrics.bus_connected.set_function(lambda: 1.0 if link_is_up(transport) else 0.0)
    with one_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await nursery.start(bus_side.run)
            started()
            await node.stopped.wait()
            nursery.cancel_scope.cancel()
