"""Embedding Postee in a Trio application: a standalone node, a controller or a runner in your nursery.

Each role is offered in the trio-websocket style, as an `async with open_x(...)` context manager that
starts it, hands it to the block once it is ready, and stops it gracefully (drain, then cancel at
the grace deadline) when the block ends; and as an object with `run(task_status=...)` for
`nursery.start`, stopped with `request_stop()`:

    async with open_standalone(NodeOptions(cfgfile="cfg.yaml", https_bind=None)) as node:
        accepted = await submit_event(node, b'{"image": "alpine"}')

It is the same pipeline the daemon runs (the daemon is built on these objects). Every outside part is
replaceable through `NodeParts` (`postee.roles.parts`): the store, the Rego evaluator, the actions,
the runtime (blocking work, wall clock, ids), the HTTP listeners; the controller and runner take their
bus as a `Transport` (`postee.bus.nats_transport` for NATS, `actors.memory_transport.InMemoryBus` in
process). `examples/embedded.py` runs a controller and two runners in one process this way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actors.transport import Transport
from postee.pipeline.events import Event, InvalidEvent, parse_event_off_loop
from postee.roles.controller import Controller, ControllerOptions
from postee.roles.node import Node, NodeOptions
from postee.roles.parts import DAEMON_PARTS, NodeParts, Observer, lend
from postee.roles.runner import Runner, RunnerOptions
from postee.runtime import Runtime, use_runtime

STOP_MARGIN = 10.0
"""Seconds past a node's stop grace that leaving `open_*` waits before cancelling what is left."""

__all__ = [
    "Controller",
    "ControllerOptions",
    "InvalidEvent",
    "Node",
    "NodeOptions",
    "NodeParts",
    "Observer",
    "Runner",
    "RunnerOptions",
    "Runtime",
    "lend",
    "open_controller",
    "open_runner",
    "open_standalone",
    "submit_event",
]


@asynccontextmanager
async def _running(role: Node | Controller | Runner, stopped: trio.Event | None = None) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(role.run)
        try:
            yield
        finally:
            role.request_stop()
            node = role if isinstance(role, Node) else role.node
            if node is not None:  # the node drains until its grace deadline, then cancels: bounded
                with trio.CancelScope(shield=True), trio.move_on_after(node.options.stop_grace + STOP_MARGIN):
                    await node.stopped.wait()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_standalone(options: NodeOptions, *, parts: NodeParts = DAEMON_PARTS) -> AsyncIterator[Node]:
    """A standalone node, ready (config loaded, pipeline built, listeners open unless `parts` says no)."""
    node = Node(options, parts=parts)
    async with _running(node):
        yield node


@asynccontextmanager
async def open_controller(options: ControllerOptions, transport: Transport, *,
                          parts: NodeParts = DAEMON_PARTS) -> AsyncIterator[Controller]:
    """A controller serving runners on `transport`, ready."""
    controller = Controller(options, transport, parts=parts)
    async with _running(controller):
        yield controller


@asynccontextmanager
async def open_runner(options: RunnerOptions, transport: Transport, *,
                      parts: NodeParts = DAEMON_PARTS) -> AsyncIterator[Runner]:
    """A runner, ready once it has bootstrapped its configuration from the controller on `transport`."""
    runner = Runner(options, transport, parts=parts)
    async with _running(runner):
        yield runner


async def submit_event(target: Node | Controller | Runner, body: bytes | str) -> Event | None:
    """Hand `body` to a node as its webhook would: parsed strictly, recorded, queued.

    Returns the accepted event; None when the node cannot take it now (intake full, stopping: the
    webhook would answer 503). Raises `InvalidEvent` for a body the webhook would answer 400.
    """
    node = target if isinstance(target, Node) else target.node
    if node is None:
        return None
    with use_runtime(node.parts.runtime):  # its id and time from the node's runtime, as in the node
        event = await parse_event_off_loop(body.encode() if isinstance(body, str) else body)
    return event if await node.submit(event) else None
