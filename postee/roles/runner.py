"""Runner role: bootstrap from the controller, run the local actions, report everything upstream.

A runner is a `Node` whose configuration comes from the controller (only the routes and actions
with `runs-on: <this runner>`), whose every accepted event and every action execution goes into the
upstream outbox, and whose readiness includes the link to the controller. The link's services run
under their own supervisor (`runner-link`), beside the node's pipeline supervisor.

The runner converges on its current slice: told (or after a reconnect) it fetches the slice, and
reloads only when the version differs from the one it runs; the version it reports in heartbeats is
the one its node runs, never one it fetched but could not use. What keeps it from running the slice
as written (an action disabled for an unset `$VAR`, no action for it at all, a slice it rejected) is
logged once when it appears and carried by every heartbeat to the controller's `/runners`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import attrs
import structlog
import trio

from actors import Supervisor
from actors.transport import Transport
from postee.actions.base import ActionSpec
from postee.bus.protocol import HEADER_EVENT_ID, HEADER_ROUTE, HEADER_STEP_ACTION
from postee.config import Config, ConfigError, Problem
from postee.pipeline.action_actor import Execution
from postee.pipeline.events import Event
from postee.pipeline.plan import SideLink
from postee.roles.handovers import RunnerHandovers
from postee.roles.linked import run_linked
from postee.roles.node import Node, NodeOptions
from postee.roles.parts import DAEMON_PARTS, NodeParts
from postee.roles.upstream import (
    DEFAULT_BACKOFF,
    HEARTBEAT_INTERVAL,
    Backoff,
    FetchedConfig,
    RunnerFatal,
    Upstream,
    fetch_config,
    read_slice,
    request_slice,
)
from postee.runtime import use_runtime, wall_clock
from postee.supervision import node_supervisor

log = structlog.get_logger("postee.runner")

RELOAD_FETCH_TIMEOUT = 15.0
"""Seconds a re-fetch may wait for the controller; a runner still behind is told again by heartbeat."""
REASON_MAX = 500
"""Characters of a rejection reason carried to `/runners`."""


@attrs.frozen
class RunnerOptions:
    name: str
    node: NodeOptions
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    backoff: Backoff = DEFAULT_BACKOFF


class Runner:
    def __init__(self, options: RunnerOptions, transport: Transport, *, parts: NodeParts = DAEMON_PARTS) -> None:
        """`parts` replaces the node's store, Rego pool, actions, runtime or listeners (`postee.roles.parts`)."""
        self.options = options
        self.transport = transport
        self.parts = parts
        self.name = options.name
        self.current: FetchedConfig | None = None
        """The slice the node runs."""
        self._next: FetchedConfig | None = None
        """A fetched slice for the node's next load."""
        self._loading: FetchedConfig | None = None
        """The slice the node is building a pipeline from (current once the node swapped to it)."""
        self.rejected: tuple[str, str] | None = None
        """(version, reason) of the last slice this runner could not use, until one works."""
        self.node: Node | None = None
        self.link: Supervisor | None = None
        """The supervisor of the link's services (outbox, heartbeats, config watch), once running."""
        self.upstream = Upstream(transport, self.name, lambda: self._node().store, clock=wall_clock,
                                 backoff=options.backoff)
        self.handovers = RunnerHandovers(transport, self.name, lambda: self._node().store, self.upstream.wake,
                                         unusable=self._unusable_step)

    def _node(self) -> Node:
        assert self.node is not None
        return self.node

    def is_local(self, spec: ActionSpec) -> bool:
        return (spec.runs_on or "").strip() == self.name

    async def _load(self) -> Config:
        """The node's config source: the slice fetched for it, else (a reload asked on this node) a fresh one."""
        fetched, self._next = self._next, None
        if fetched is None:
            with trio.move_on_after(RELOAD_FETCH_TIMEOUT):
                try:
                    fetched = await self._fetch()
                except RunnerFatal as exc:  # e.g. not YAML: this reload is rejected, the node goes on
                    raise ConfigError(f"controller slice for {self.name}", [Problem("", str(exc))]) from None
            fetched = fetched or self.current
        assert fetched is not None
        if self.current is None:
            self._accept(fetched)  # the first load: nothing reports a version before the node runs it
        else:
            self._loading = fetched
        return fetched.config

    async def _reloaded(self, config: Config) -> None:
        if self._loading is not None and self._loading.config is config:
            self._accept(self._loading)
        self._loading = None

    async def _fetch(self) -> FetchedConfig:
        return await fetch_config(self.transport, self.name, self.options.node.environ, self.options.backoff)

    def _accept(self, fetched: FetchedConfig) -> None:
        """`fetched` runs now: report its version, and what keeps it from running as written."""
        self.current = fetched
        if self.rejected is not None and self.rejected[0] != fetched.version:
            self.rejected = None
        self.upstream.config_version = fetched.version
        self.upstream.actions = sum(1 for a in fetched.config.actions if a.enable and self.is_local(a))
        self._report()

    def _report(self) -> None:
        """Refresh the problems heartbeats carry; log each one once, when it appears."""
        assert self.current is not None
        problems = [str(unset) for unset in self.current.unset]
        for line in problems:
            if line not in self.upstream.problems:
                log.error(line, runner=self.name)
        if not self.current.config.actions:
            line = (f"no action in the controller's configuration has runs-on: {self.name}; "
                    "this runner only reports its events")
            if line not in self.upstream.problems:
                log.warning(line, runner=self.name)
            problems.append(line)
        if self.rejected is not None:
            version, reason = self.rejected
            problems.append(f"configuration {version} from the controller rejected: {reason}")
        self.upstream.problems = tuple(problems)

    async def run(self, *, task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
        """Bootstrap (waiting for the controller as long as it takes), then serve until stopped."""
        with use_runtime(self.parts.runtime):
            log.info("runner starting: asking the controller for its configuration", runner=self.name)
            self._next = await self._fetch()
            node = self.node = Node(
                self.options.node,
                is_local=self.is_local,
                load=self._load,
                on_accepted=self.upstream.event_reported,
                report=self.upstream.event_message,
                on_execution=self.upstream.report_execution,
                on_reloaded=self._reloaded,
                parts=self.parts,
                link=SideLink(self.name, self.handovers.hand_over),
            )
            node.name = self.name
            node.role = "runner"
            self.link = self._link_supervisor(node)
            await run_linked(node, self.link, self.transport, readiness="controller_link",
                             started=lambda: task_status.started(self))

    def _link_supervisor(self, node: Node) -> Supervisor:
        """The link to the controller, supervised like the pipeline: a crash in it restarts that part."""
        link = node_supervisor("runner-link", node.metrics, stop_grace=self.options.node.stop_grace,
                               fail_fast_on_start=True)
        link.add(self.upstream.drain_outbox, name="outbox")
        link.add(functools.partial(self.handovers.fetch, self._take_handover, check=self._cannot_run),
                 name="handovers")
        link.add(functools.partial(self.upstream.send_heartbeats, self.options.heartbeat_interval), name="heartbeats")
        link.add(functools.partial(self.upstream.watch_config, self._config_notice), name="config-watch")
        return link

    def _cannot_run(self, event: Event) -> str | None:
        """Why this runner cannot run a step the controller handed it (its configuration changed), or None."""
        pipeline = self._node().pipeline
        route = pipeline.routes.get(event.route or "") if pipeline is not None else None
        if route is None:
            return f"this runner has no route {event.route!r}"
        if route.plan is not None:  # a serialized route across sides: its whole plan is known here
            found = route.plan.resolve(event.step or 0, event.step_action) is not None
        else:  # only this runner's actions are: a dispatched step must be one of them
            found = event.step_action is None or event.step_action in route.by_name
        return None if found else f"route {event.route!r} has no step {event.step} ({event.step_action!r}) here"

    async def _unusable_step(self, headers: Mapping[str, str], reason: str) -> None:
        """A step this runner cannot run: a failed execution, reported like any other."""
        now = wall_clock()
        await self.upstream.report_execution(Execution(
            action=headers.get(HEADER_STEP_ACTION, ""), action_type="", route=headers.get(HEADER_ROUTE, ""),
            event_id=headers.get(HEADER_EVENT_ID, ""), ok=False, attempts=0, started_at=now, duration=0.0,
            error=f"not run on runner {self.name!r}: {reason}", output=""))

    async def _take_handover(self, event: Event, processed_key: str) -> bool:
        """A step the controller handed over: recorded and queued like an accepted event."""
        return await self._node().submit_wait(event, processed_key=processed_key)

    async def _config_notice(self, told: str | None) -> None:
        """The slice may have changed (`told`: the controller says it is this version): fetch, then
        reload only when it differs from the running one and was not rejected already."""
        if told is not None and self._settled(told):
            return
        answer = None
        with trio.move_on_after(RELOAD_FETCH_TIMEOUT):
            try:
                answer = await request_slice(self.transport, self.name, self.options.backoff)
            except RunnerFatal as exc:  # refused now: the running slice stays; the refusal is what to fix
                log.error("configuration not fetched", reason=str(exc))
                return
        if answer is None:
            log.warning("configuration not fetched in time; the controller tells again at the next heartbeat",
                        timeout=RELOAD_FETCH_TIMEOUT)
            return
        text, version = answer
        if self._settled(version):
            return
        try:
            self._next = await read_slice(text, version, self.name, self.options.node.environ)
        except (ConfigError, RunnerFatal) as exc:
            self._reject(version, str(exc))
            return
        ok, message = await self._node().reload()
        if not ok:
            self._reject(version, message)

    def _settled(self, version: str) -> bool:
        """`version` runs already, or was rejected already: nothing to fetch or reload."""
        assert self.current is not None
        return version == self.current.version or (self.rejected is not None and version == self.rejected[0])

    def _reject(self, version: str, reason: str) -> None:
        log.error("new configuration from the controller rejected; the running one stays", version=version,
                  reason=reason)
        self.rejected = (version, " ".join(reason.split())[:REASON_MAX])
        self._report()

    def request_stop(self) -> None:
        if self.node is not None:
            self.node.request_stop()
