"""The outside parts of a node, each replaceable: what embedding and simulation inject.

A node is its pipeline plus parts it does not own the code of: a store, a Rego evaluator, the
actions' outside effects, a clock and blocking work (`postee.runtime`), HTTP listeners, and the bus
(a `Transport`, given to the controller and runner roles directly). The daemon uses the real ones:
None everywhere here means "the daemon's". An application that embeds Postee, or the simulator
(`postee.sim`), passes its own: an in-loop SQLite store that outlives a crashed node, one Rego pool
in the event loop shared by a thousand nodes, actions that record what they were asked to do, a
runtime on virtual time, no listeners. Nothing else changes: routing, dedup, aggregation, the
ledger and replay, the outbox, bootstrap, heartbeats and reload are the daemon's own code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, TypeVar

import attrs

from postee.actions.base import Action, ActionSpec
from postee.pipeline.action_actor import Execution
from postee.pipeline.events import Event
from postee.pipeline.route_actor import RouteOutcome
from postee.rego.library import TemplateLibrary
from postee.rego.pool import RegoPool
from postee.runtime import Runtime
from postee.store.sqlite import SqliteStore

__all__ = ["DAEMON_PARTS", "NodeParts", "Observer", "lend"]

T = TypeVar("T")


class Observer(Protocol):
    """Hears what happens in one node, synchronously and in order (it must not block or fail)."""

    def accepted(self, event: Event) -> None:
        """`event` was accepted (recorded, and queued for the pipeline): once per accepted event."""

    def queued(self, event: Event) -> None:
        """`event` (new or replayed) joins the pipeline's intake queue: the order routes see events in
        (across a reload, the replaced pipeline's events first, then the new one's)."""

    def replayed(self, event: Event) -> None:
        """`event`, accepted in an earlier run of the node and unfinished, goes through the pipeline again."""

    def outcome(self, event: Event, outcome: RouteOutcome) -> None:
        """A route decided what to do with `event` (no match, duplicate, aggregating, sent, error)."""

    def execution(self, execution: Execution) -> None:
        """An action ended for an event (after its retries), successfully or not."""


@attrs.frozen
class NodeParts:
    """A node's replaceable parts (see the module docstring); None: the daemon's own."""

    store: Callable[[], AbstractAsyncContextManager[SqliteStore]] | None = None
    """Opens the node's store for one run (the daemon: `open_store(db_path)` under the store's lock).
    A store that must outlive the node (a simulated crash and restart) is opened by the caller and
    lent here by a context manager that does not close it."""
    rego: Callable[[], AbstractAsyncContextManager[RegoPool]] | None = None
    """Opens the Rego evaluator (the daemon: a pool of worker processes)."""
    library: TemplateLibrary | None = None
    """The bundled and custom templates, loaded already (shared by many nodes of one process)."""
    actions: Callable[[ActionSpec], Action] | None = None
    """Makes each local action from its spec (the daemon: the action registry's `build_action`)."""
    runtime: Runtime | None = None
    """Blocking work, wall clock and ids for this node's tasks (None: the caller's, by default the daemon's)."""
    serve_http: bool = True
    """Open the HTTP/HTTPS listeners; without them events come in process (`Node.submit`)."""
    observer: Observer | None = None
    """Hears every accepted event, route outcome and execution of this node."""


DAEMON_PARTS = NodeParts()


def lend(resource: T) -> Callable[[], AbstractAsyncContextManager[T]]:
    """A `NodeParts` opener (`store`, `rego`) that hands `resource` to each run of a node and never
    closes it: the caller opened it and closes it (a store that outlives a restarted node, a pool
    shared by many nodes)."""

    @asynccontextmanager
    async def opener() -> AsyncIterator[T]:
        yield resource

    return opener
