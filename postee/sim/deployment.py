"""A controller and its runners in one Trio run, each node crashable and restartable on its own store.

Every node is the production `Controller` or `Runner` (through `postee.embed`'s objects), run with
the simulation's parts (`postee.sim.parts`) on the `SimBus`. A crash is the cancellation of the
node's scope, with no drain and no final flush: what it had committed to its store is all that is
left, as after a SIGKILL. A restart is a fresh `Controller`/`Runner` on the same store and the same
bus name, so the production code's own replay, outbox and bootstrap bring it back.

What each node does is heard by a `NodeLog` (the node's `Observer`): the events it accepted, what
each route decided, every execution; and each action attempt is a `Call` in the shared
`Recordings`. The invariants (`postee.sim.invariants`) are checked against these.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import attrs
import structlog
import trio

from postee.pipeline.action_actor import Execution
from postee.pipeline.events import Event
from postee.pipeline.route_actor import RouteOutcome
from postee.rego.library import TemplateLibrary
from postee.rego.pool import RegoPool
from postee.roles.controller import Controller, ControllerOptions
from postee.roles.node import Node, NodeOptions
from postee.roles.runner import Runner, RunnerOptions
from postee.sim.bus import SimBus
from postee.sim.parts import open_memory_store, sim_parts
from postee.sim.recording import Plan, Recordings
from postee.sim.scenario import CONTROLLER
from postee.sim.trace import Trace
from postee.store.sqlite import SqliteStore

log = structlog.get_logger("postee.sim")

__all__ = ["Accepted", "Deployment", "NodeLog", "Outcome"]

STOP_GRACE = 5.0
"""A node's drain at the very end (crashes do not drain)."""


@attrs.frozen
class Accepted:
    node: str
    event_id: str
    source: str
    n: int | None
    at: float
    incarnation: int


@attrs.frozen
class Outcome:
    node: str
    route: str
    event_id: str
    n: int | None
    matched: bool
    dropped: str | None
    checked_at: float | None
    at: float
    incarnation: int
    handed: tuple[str, ...] | None = None
    """The local actions the route handed the event to (None: it did not say)."""


@attrs.frozen
class Executed:
    node: str
    route: str
    action: str
    event_id: str
    ok: bool
    attempts: int
    at: float
    incarnation: int


def sim_number(event: Event) -> int | None:
    sim = event.body.get("sim") if isinstance(event.body, dict) else None
    n = sim.get("n") if isinstance(sim, dict) else None
    return n if isinstance(n, int) else None


class NodeLog:
    """The observer of one node, kept across its incarnations (see the module docstring)."""

    def __init__(self, node: str, trace: Trace) -> None:
        self.node = node
        self.trace = trace
        self.incarnation = 0
        self.accepted: list[Accepted] = []
        self.replayed: list[Accepted] = []
        self.queued: list[str] = []
        """Event ids in the order they joined the node's intake queue (replays included)."""
        self.outcomes: list[Outcome] = []
        self.executions: list[Executed] = []

    def accepted_event(self, event: Event) -> None:
        n = sim_number(event)
        self.accepted.append(Accepted(self.node, event.id, event.source, n, trio.current_time(), self.incarnation))
        self.trace.add("accept", node=self.node, ev=event.id, n=n, src=event.source)

    def replayed_event(self, event: Event) -> None:
        n = sim_number(event)
        self.replayed.append(Accepted(self.node, event.id, event.source, n, trio.current_time(), self.incarnation))
        self.trace.add("replay", node=self.node, ev=event.id, n=n)

    def outcome(self, event: Event, outcome: RouteOutcome) -> None:
        n = sim_number(event)
        self.outcomes.append(Outcome(self.node, outcome.route, event.id, n, outcome.matched, outcome.dropped,
                                     outcome.checked_at, trio.current_time(), self.incarnation, outcome.handed))
        self.trace.add("route", node=self.node, route=outcome.route, ev=event.id, matched=outcome.matched,
                       dropped=outcome.dropped)

    def execution(self, execution: Execution) -> None:
        self.executions.append(Executed(self.node, execution.route, execution.action, execution.event_id, execution.ok,
                                        execution.attempts, trio.current_time(), self.incarnation))
        self.trace.add("execution", node=self.node, route=execution.route, action=execution.action,
                       ev=execution.event_id, ok=execution.ok, attempts=execution.attempts)


class _Observer:
    """`postee.roles.parts.Observer` over a `NodeLog`."""

    def __init__(self, log_: NodeLog) -> None:
        self._log = log_

    def accepted(self, event: Event) -> None:
        self._log.accepted_event(event)

    def replayed(self, event: Event) -> None:
        self._log.replayed_event(event)

    def queued(self, event: Event) -> None:
        self._log.queued.append(event.id)

    def outcome(self, event: Event, outcome: RouteOutcome) -> None:
        self._log.outcome(event, outcome)

    def execution(self, execution: Execution) -> None:
        self._log.execution(execution)


@attrs.define
class _Slot:
    """One node's life: its store, its log, and its current incarnation (None while down)."""

    name: str
    store: SqliteStore
    log: NodeLog
    role: Controller | Runner | None = None
    scope: trio.CancelScope | None = None
    ended: trio.Event | None = None
    died: str | None = None
    """Why the node's last incarnation ended with an error (a configuration it cannot run, a bug)."""
    crashes: list[tuple[float, float]] = attrs.Factory(list)
    """(crashed at, restarted at) of each crash (restarted at = inf while down)."""


class Deployment:
    """One controller and its runners (see the module docstring). Use inside `serve`'s nursery."""

    def __init__(self, *, bus: SimBus, pool: RegoPool, library: TemplateLibrary, recordings: Recordings,
                 trace: Trace, plan: Plan, runners: tuple[str, ...], heartbeat_interval: float = 5.0) -> None:
        self.bus = bus
        self.pool = pool
        self.library = library
        self.recordings = recordings
        self.trace = trace
        self.plan = plan
        self.runner_names = runners
        self.heartbeat_interval = heartbeat_interval
        self.directory = Path(tempfile.mkdtemp(prefix="postee-sim-"))
        self.cfgfile = self.directory / "controller.yaml"
        self.slots: dict[str, _Slot] = {}
        self._nursery: trio.Nursery | None = None
        self.stopping = False

    # -- nodes -------------------------------------------------------------------------------------
    async def open(self, nursery: trio.Nursery) -> None:
        """Open every node's store; nodes are started with `start`."""
        self._nursery = nursery
        for name in (CONTROLLER, *self.runner_names):
            self.slots[name] = _Slot(name, await open_memory_store(), NodeLog(name, self.trace))

    async def aclose(self) -> None:
        for slot in self.slots.values():
            await slot.store.aclose()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _options(self, name: str) -> NodeOptions:
        return NodeOptions(cfgfile=str(self.cfgfile) if name == CONTROLLER else "", http_bind="", https_bind=None,
                           db_path=str(self.directory / f"{name}.db"), environ={}, stop_grace=STOP_GRACE)

    def start(self, name: str) -> None:
        """Start (or restart) node `name` in the background; it counts as up once it is ready."""
        slot = self.slots[name]
        assert slot.role is None and self._nursery is not None
        slot.log.incarnation += 1
        transport = self.bus.connect(name)
        parts = sim_parts(name, store=slot.store, pool=self.pool, library=self.library, recordings=self.recordings,
                          plan=self.plan, observer=_Observer(slot.log))
        role: Controller | Runner
        if name == CONTROLLER:
            role = Controller(ControllerOptions(self._options(name), heartbeat_interval=self.heartbeat_interval),
                              transport, parts=parts)
        else:
            role = Runner(RunnerOptions(name, self._options(name), heartbeat_interval=self.heartbeat_interval),
                          transport, parts=parts)
        slot.role, slot.scope, slot.ended = role, trio.CancelScope(), trio.Event()
        self._nursery.start_soon(self._live, slot, role, slot.scope, slot.ended)
        self.trace.add("start", node=name, incarnation=slot.log.incarnation)

    async def _live(self, slot: _Slot, role: Controller | Runner, scope: trio.CancelScope, ended: trio.Event) -> None:
        try:
            with scope:
                await role.run()
                if not self.stopping:
                    log.error("node stopped on its own", node=slot.name)
        except Exception as exc:  # a node that dies of an error: recorded, the simulation goes on
            slot.died = f"{type(exc).__name__}: {exc}"
            self.trace.add("died", node=slot.name, error=slot.died)
            log.error("node died", node=slot.name, error=f"{type(exc).__name__}: {exc}")
        finally:
            if slot.role is role:
                slot.role = None
            ended.set()

    async def crash(self, name: str) -> None:
        """Cancel node `name` at once, as a SIGKILL would end it (no drain, no final flush)."""
        slot = self.slots[name]
        if slot.role is None or slot.scope is None or slot.ended is None:
            return
        self.trace.add("crash", node=name)
        slot.crashes.append((trio.current_time(), math.inf))
        slot.scope.cancel()
        self.bus.disconnect(name)
        await slot.ended.wait()
        slot.role = None

    def restart(self, name: str) -> None:
        slot = self.slots[name]
        if slot.role is not None:
            return
        if slot.crashes and slot.crashes[-1][1] == math.inf:
            slot.crashes[-1] = (slot.crashes[-1][0], trio.current_time())
        self.start(name)

    def node(self, name: str) -> Node | None:
        """The running node `name`, once ready (None while down or starting)."""
        role = self.slots[name].role
        node = role.node if role is not None else None
        return node if node is not None and node.started.is_set() and not node.stopped.is_set() else None

    @property
    def controller(self) -> Controller | None:
        role = self.slots[CONTROLLER].role
        return role if isinstance(role, Controller) else None

    def runner(self, name: str) -> Runner | None:
        role = self.slots[name].role
        return role if isinstance(role, Runner) else None

    def crashed_between(self, name: str, start: float, end: float) -> bool:
        """Node `name` crashed at some time between `start` and `end` (in either order)."""
        low, high = min(start, end), max(start, end)
        return any(low <= at <= high for at, _ in self.slots[name].crashes)

    async def stop_all(self) -> None:
        """Stop every node gracefully (the end of the run)."""
        self.stopping = True
        for slot in self.slots.values():
            if slot.role is not None:
                slot.role.request_stop()
        for slot in self.slots.values():
            if slot.ended is not None:
                with trio.move_on_after(STOP_GRACE * 4):
                    await slot.ended.wait()
                if slot.scope is not None:
                    slot.scope.cancel()
