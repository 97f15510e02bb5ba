"""Controller role: the node that owns the configuration, serves runners, and sees every event.

On the bus it answers each runner's config request with its slice, takes the events and execution
reports runners send (acknowledging each once it is safely queued, processing each event id at
most once), keeps a registry of runners from their heartbeats, and tells runners when the
configuration is reloaded. Locally it is a `Node` that runs only the actions without `runs-on`:
an action meant for a runner is never initialised on the controller, and its `$VAR` secrets are not
resolved here (its runner resolves them). Each subscription is a child of the `controller-bus`
supervisor: a crash in one resubscribes it, the node and the others go on (runners resend what was not
acknowledged).

Slices are cut only from the configuration that is running: a reloaded file is kept pending until the
node has built and swapped in its pipeline, so a rejected reload changes nothing a runner can see.
A runner that missed the announcement (cut off during the reload, a lost message) still converges:
its heartbeats carry its slice version, and when that is not its current one the controller tells it
on its own subject, at most once per heartbeat.

Who a message is from is the subject it came on (`postee.runner.<name>.<kind>`), which the NATS
server lets only that runner use when it has its own key; a name in a payload or header is never
believed over it. Names the server does not vouch for (Postee's shared subjects, the shared seed, a
bus without authentication) are shown as they are on `/runners`, but never become metric labels.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import structlog
import trio

from actors import MailboxClosed, Supervisor, TransportError
from actors.transport import Message, Transport
from postee.actions.base import ActionSpec
from postee.bus.protocol import (
    ACK,
    CONFIG_CHANGED_SUBJECT,
    CONFIG_KIND,
    EVENTS_KIND,
    EXECUTIONS_KIND,
    HANDOVERS_KIND,
    HEADER_CONFIG_VERSION,
    HEADER_EVENT_ID,
    HEADER_ROUTE,
    HEADER_RUNNER,
    HEARTBEAT_KIND,
    LEGACY_SUBJECTS,
    RUNNER_INBOX_ROOT,
    ExecutionReport,
    Heartbeat,
    runner_config_subject,
    runner_inbox_prefix,
    runner_of_subject,
    runner_subjects_pattern,
)
from postee.config import Config, ConfigError, Severity, parse_config, yamlio
from postee.config.loader import read_yaml
from postee.config.model import DEFAULT_RUNNER_DISPATCH_TTL
from postee.config.runner_slice import SliceIndex, config_version, slice_yaml
from postee.pipeline.events import SOURCE_WEBHOOK, Event, InvalidEvent, parse_event_off_loop
from postee.pipeline.plan import CONTROLLER_SIDE, Handover, SideLink, allowed_sides
from postee.roles.handovers import (
    CONTROLLER_SOURCE,
    ControllerHandovers,
    continuation_event,
    expected_back,
    expired_message,
    is_handover,
)
from postee.roles.handovers import REQUEST_TIMEOUT as HANDOVER_REQUEST_TIMEOUT
from postee.roles.linked import run_linked
from postee.roles.node import Node, NodeOptions
from postee.roles.parts import DAEMON_PARTS, NodeParts
from postee.roles.runners import MAX_RUNNERS, RunnerRegistry
from postee.roles.upstream import HEARTBEAT_INTERVAL
from postee.roles.watch import execution_message, merged_executions_json
from postee.runtime import offload, use_runtime, wall_clock
from postee.store.errors import StoreError
from postee.supervision import node_supervisor

log = structlog.get_logger("postee.controller")

CONTROLLER_QUEUE = "postee-controllers"
"""Queue group: several controllers on one NATS cluster share runner traffic instead of duplicating it."""
UNNAMED_RUNNER = "postee-runner"
"""Source name for events from a Postee runner, which sends no name with its events."""
UNVERIFIED_LABEL = "unverified"
RESERVED_NAMES = frozenset({SOURCE_WEBHOOK, CONTROLLER_SOURCE})
"""Sources an event can have other than a runner: no runner may be named so (`Event.source` tells where an
event entered: `webhook` at this node, else the runner that reported it)."""
EXPIRY_INTERVAL = 30.0
"""Seconds between looks for steps that waited past `runner-dispatch-ttl` (a quarter of it when shorter)."""
RUNNER_STATE_INTERVAL = 1.0
"""Seconds between looks at the runners' states for the live feed."""
"""The metrics label of every runner whose name the bus does not vouch for."""


class BusUsers(Protocol):
    """Who may use the bus, reloaded with the configuration (the runner keys file, see `postee.roles.launch`)."""

    async def read(self) -> Any:
        """The users for the configuration being loaded; raises `ConfigError` when they cannot be read."""
        ...

    async def apply(self, users: Any) -> frozenset[str]:
        """Make `users` the bus's; returns the runners whose names the bus now vouches for."""
        ...


@attrs.frozen
class ControllerOptions:
    node: NodeOptions
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    verified_runners: frozenset[str] | None = None
    """Runners whose per-runner subjects only they can use (their own key, on a server enforcing
    permissions). None: every per-runner subject is trusted (an in-process bus, no outsider on it)."""


def controller_local(spec: ActionSpec) -> bool:
    """Actions without `runs-on` run on the controller; the others only on their runner."""
    return not (spec.runs_on or "").strip()


@attrs.define
class RawConfig:
    """The controller's file as parsed YAML (slices are cut from it), and its version."""

    data: dict[str, Any]
    version: str
    action_names: frozenset[str] | None = None
    """Its actions' names, once asked for."""
    index: SliceIndex | None = None
    """Its actions by runner, once a slice is cut."""

    @classmethod
    def of(cls, data: Any) -> RawConfig:
        data = data if isinstance(data, dict) else {}
        return cls(data, config_version(yamlio.safe_dump(data, sort_keys=True)))


class Controller:
    def __init__(self, options: ControllerOptions, transport: Transport, *, parts: NodeParts = DAEMON_PARTS) -> None:
        """`parts` replaces the node's store, Rego pool, actions, runtime or listeners (`postee.roles.parts`)."""
        self.options = options
        self.transport = transport
        self.parts = parts
        self.running: RawConfig | None = None
        """The raw configuration the node runs: the only one slices are cut from."""
        self._pending: RawConfig | None = None
        """A reloaded file, valid so far, until the node runs it (`_reloaded`)."""
        self._slices: dict[str, tuple[str, str]] = {}
        """Per runner, its slice of `running` and the slice's version (cut once per configuration)."""
        self._told: dict[str, str] = {}
        """Per runner, the version it was last told to fetch (said once in the log, then quietly)."""
        self.registry = RunnerRegistry(trio.current_time, wall_clock, options.heartbeat_interval,
                                       current_version=self.slice_version, verified=options.verified_runners)
        self.node: Node | None = None
        self.nats_server: Any = None
        """The embedded nats-server (`postee.bus.server.NatsServer`) when this controller started one."""
        self.duplicates = 0
        self.bus: Supervisor | None = None
        """The supervisor of the bus side (one child per subscription), once running."""
        self.handovers = ControllerHandovers(transport, self._store)
        """The steps kept for runners until they take them (`postee.roles.handovers`)."""
        self.bus_users: BusUsers | None = None
        """Re-read at every reload (runner keys), applied once the node runs the new configuration."""
        self._pending_users: Any = None

    def _store(self) -> Any:
        assert self.node is not None and self.node.store is not None
        return self.node.store

    @property
    def raw(self) -> dict[str, Any]:
        """The parsed YAML of the configuration now running."""
        return self.running.data if self.running is not None else {}

    async def _load(self) -> Config:
        """Read and check the config file; its raw YAML becomes current once the node runs it.

        The actions of runners are checked for their shape only: their `$VAR` values stay as written,
        to be resolved on their runner.
        """
        path = self.options.node.cfgfile
        data = await offload(read_yaml, path)
        # Checking the actions may read files and build TLS contexts: off the event loop.
        config, problems = await offload(functools.partial(
            parse_config, data, source=path, environ=self.options.node.environ, defer_runs_on_env=True
        ))
        for problem in problems:
            if problem.severity is Severity.WARNING:
                log.warning("config", problem=str(problem))
        if any(p.severity is Severity.ERROR for p in problems):
            raise ConfigError(path, problems)
        if self.running is not None and self.bus_users is not None:  # a reload: the runner keys too
            self._pending_users = await self.bus_users.read()
        self._pending = await offload(RawConfig.of, data)  # a YAML dump: off the event loop
        if self.running is None:
            # The first load: nothing serves slices before the node runs it (the bus side starts after).
            self._promote()
        return config

    def _promote(self) -> None:
        if self._pending is not None:
            self.running, self._pending = self._pending, None
            self._slices.clear()

    def slice_for(self, runner: str) -> tuple[str, str]:
        """The runner's slice of the running configuration, YAML, and its version."""
        cut = self._slices.get(runner)
        if cut is None:
            if len(self._slices) >= MAX_RUNNERS:
                self._slices.clear()  # a cache: names that do not exist must not grow it without bound
            running = self.running
            if running is not None and running.index is None:
                running.index = SliceIndex(running.data)  # once per configuration, not once per runner
            text = slice_yaml(running.index if running is not None and running.index else {}, runner)
            cut = self._slices[runner] = (text, config_version(text))
        return cut

    def _action_names(self) -> frozenset[str]:
        """The names of the running configuration's actions."""
        running = self.running
        if running is None:
            return frozenset()
        if running.action_names is None:
            actions = running.data.get("actions")
            names = {a.get("name") for a in actions if isinstance(a, dict)} if isinstance(actions, list) else set()
            running.action_names = frozenset(n for n in names if isinstance(n, str))
        return running.action_names

    def slice_version(self, runner: str) -> str:
        return self.slice_for(runner)[1]

    async def run(self, *, task_status: trio.TaskStatus[Controller] = trio.TASK_STATUS_IGNORED) -> None:
        with use_runtime(self.parts.runtime):
            node = self.node = Node(
                self.options.node, is_local=controller_local, load=self._load, on_reloaded=self._reloaded,
                parts=self.parts, link=SideLink(CONTROLLER_SIDE, self.handovers.hand_over),
            )
            node.name = node.role = "controller"
            node.extra_endpoints["/runners"] = self.registry.runners_json
            node.extra_endpoints["/executions"] = self.executions_json
            self.bus = self._bus_supervisor(node)
            await run_linked(node, self.bus, self.transport, readiness="bus",
                             started=lambda: task_status.started(self))

    def _bus_supervisor(self, node: Node) -> Supervisor:
        """The bus side, one child per subscription, supervised like the pipeline: a crash resubscribes."""
        bus = node_supervisor("controller-bus", node.metrics, stop_grace=self.options.node.stop_grace,
                              fail_fast_on_start=True)
        for kind, name, handler, queue in (
            (CONFIG_KIND, "config", self._on_config_request, ""),
            (EVENTS_KIND, "events", self._on_event, CONTROLLER_QUEUE),
            (EXECUTIONS_KIND, "executions", self._on_execution, CONTROLLER_QUEUE),
            (HEARTBEAT_KIND, "heartbeats", self._on_heartbeat, ""),
        ):
            bus.add(functools.partial(self._serve, runner_subjects_pattern(kind), handler, queue), name=name)
            bus.add(functools.partial(self._serve, LEGACY_SUBJECTS[kind], handler, queue), name=f"postee-{name}")
        bus.add(functools.partial(self._serve, runner_subjects_pattern(HANDOVERS_KIND), self._on_handovers,
                                  CONTROLLER_QUEUE), name="handovers")
        bus.add(functools.partial(self._expire_steps, node), name="dispatch-expiry")
        bus.add(functools.partial(self._publish_runner_states, node), name="runner-states")
        return bus

    def executions_json(self) -> str:
        """`GET /executions`: the runners' reported action runs and the controller's own, oldest first;
        each says where it ran (`node`; a runner's also keep `runner`)."""
        reported = [{**report.as_dict(), "node": report.runner} for report in self.registry.recent_executions()]
        return merged_executions_json(reported, self.node.watch.execution_entries() if self.node else [])

    def request_stop(self) -> None:
        if self.node is not None:
            self.node.request_stop()

    async def _publish_runner_states(self, node: Node, *,
                                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tell the node's feed when a runner comes up, goes stale or gone, or changes its configuration.

        Looked at every `RUNNER_STATE_INTERVAL` (states follow from heartbeat times, not from messages);
        only while someone watches: a new watcher hears changes from then on (`/runners` has the rest).
        """
        said: dict[str, tuple[str, str, bool | None]] = {}
        task_status.started()
        while True:
            if node.feed.wanted():
                for message in self.registry.changes(said):
                    node.feed.publish(message)
            else:
                said.clear()
            await trio.sleep(RUNNER_STATE_INTERVAL)

    async def _serve(self, subject: str, handler: Callable[[Message], Awaitable[None]], queue: str, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One subscription, its messages handled one at a time (runner events stay in order)."""
        async with self.transport.subscribe(subject, queue=queue) as subscription:
            task_status.started()
            async for message in subscription:
                try:
                    await handler(message)
                except TransportError as exc:
                    log.warning("could not answer on the bus", subject=subject, error=str(exc))
                except Exception as exc:  # one bad message (or a store hiccup) must not stop the subscription
                    log.error("message not handled; the sender will resend it", subject=subject,
                              error=f"{type(exc).__name__}: {exc}")

    async def _reply(self, message: Message, data: bytes, headers: dict[str, str] | None = None) -> None:
        if message.reply and self._reply_allowed(message):
            await self.transport.respond(message, data, headers=headers)

    def _reply_allowed(self, message: Message) -> bool:
        """Whether `message.reply` is the sender's own inbox. The sender names it and the server does not
        check it: answering elsewhere would publish with the controller's rights (a slice into another
        runner's inbox, an announcement, a report under another runner's name)."""
        if self.options.verified_runners is None:
            return True  # an in-process bus: nobody else on it
        runner = runner_of_subject(message.subject)
        if runner is not None:
            allowed = message.reply.startswith(runner_inbox_prefix(runner) + ".")
        else:  # Postee's shared subjects: a Postee runner's own `_INBOX.<id>`, never one of our runners'
            allowed = message.reply.startswith("_INBOX.") and not message.reply.startswith(RUNNER_INBOX_ROOT + ".")
        if not allowed:
            log.warning("no answer: the reply subject is not the sender's inbox", subject=message.subject,
                        reply=message.reply[:200])
        return allowed

    # -- senders -------------------------------------------------------------------------------
    def _sender(self, message: Message, claimed: str | None) -> str | None:
        """Who sent `message`: the runner its subject belongs to; on Postee's shared subjects, the name
        it claims (unverified). None: it claims the name of a runner that has its own key, which that
        runner never does there (its slice, its event ids, its counts are not for whoever says its name)."""
        name = runner_of_subject(message.subject)
        if name in RESERVED_NAMES:
            log.warning("message refused: a runner cannot be named like an event source", runner=name)
            return None
        if name is not None:
            return name
        name = claimed or UNNAMED_RUNNER
        if name in RESERVED_NAMES:
            log.warning("message refused: a runner cannot be named like an event source", runner=name)
            return None
        verified = self.options.verified_runners
        if verified is not None and name in verified:
            log.warning("message refused: it claims the name of a runner with its own key on Postee's shared "
                        "subject", subject=message.subject, runner=name)
            return None
        return name

    def _label(self, message: Message, runner: str) -> str:
        """`runner` as a metrics label, if the bus vouches for it; `unverified` otherwise (a label must
        not be chosen by whoever can reach the bus)."""
        if runner_of_subject(message.subject) is None:
            return UNVERIFIED_LABEL
        verified = self.options.verified_runners
        return runner if verified is None or runner in verified else UNVERIFIED_LABEL

    # -- handlers ------------------------------------------------------------------------------
    async def _on_config_request(self, message: Message) -> None:
        runner = self._sender(message, message.data.decode("utf-8", errors="replace").strip())
        if runner is None:
            return  # no answer: the request times out
        text, version = self.slice_for(runner)
        self.registry.config_fetched(runner, version)
        log.info("configuration sent to runner", runner=runner, version=version)
        await self._reply(message, text.encode(), {HEADER_CONFIG_VERSION: version})

    async def _on_event(self, message: Message) -> None:
        node = self.node
        assert node is not None and node.store is not None
        runner = self._sender(message, message.headers.get(HEADER_RUNNER))
        if runner is None:
            await self._reply(message, ACK)  # a forgery: taken and dropped, so it is not resent
            return
        event_id = message.headers.get(HEADER_EVENT_ID)
        key = f"{runner}:{event_id}" if event_id else None
        try:
            if is_handover(message.headers):
                event = await continuation_event(message.data, message.headers, runner)
                refused = await self._refused_handover(runner, event)
                if refused is not None:
                    log.warning("handed-over event refused", runner=runner, route=event.route, step=event.step,
                                reason=refused)
                    handover = Handover(origin_id=event.origin_id or "", route=event.route or "",
                                        step=event.step or 0, side=runner, only=event.only_step, text="",
                                        entered=event.entered or "", action=event.step_action or "")
                    self._record_failed_step(node, runner, handover, f"handover refused by the controller: {refused}")
                    await self._reply(message, ACK)  # resending it cannot make it right
                    return
            else:
                event = await parse_event_off_loop(message.data, event_id=event_id, source=runner,
                                                   route=message.headers.get(HEADER_ROUTE) or None)
        except InvalidEvent as exc:
            log.warning("invalid event from a runner dropped", runner=runner, reason=str(exc))
            await self._reply(message, ACK)  # resending the same bytes cannot help
            return
        try:
            # recorded in the store, and its key marked processed, in one transaction before the ack
            new = await node.submit_wait(event, processed_key=key)
        except MailboxClosed:
            return  # stopping: no acknowledgement, the runner sends it again later
        if not new:
            self.duplicates += 1
            await self._reply(message, ACK)  # processed before; the earlier acknowledgement was lost
            return
        self.registry.event(runner)
        node.metrics.runner_events.labels(self._label(message, runner)).inc()
        await self._reply(message, ACK)

    async def _refused_handover(self, runner: str, event: Event) -> str | None:
        """Why a runner may not hand this event over (None: it may). A runner hands over only where its own
        steps of a serialized route end: it cannot skip a step, start one of another runner's, or dispatch."""
        node = self.node
        route = node.pipeline.routes.get(event.route or "") if node is not None and node.pipeline else None
        plan = route.plan if route is not None else None
        if plan is None or not plan.serial:
            return f"route {event.route!r} is not serialized across sides here"
        step = plan.resolve(event.step or 0, event.step_action)
        if step is None:
            return f"route {event.route!r} has no step {event.step} ({event.step_action!r})"
        if event.only_step or not 0 <= step < len(plan.steps) or event.entered not in (runner, CONTROLLER_SIDE):
            return f"step {step} cannot be handed over by runner {runner!r}"
        if event.entered == CONTROLLER_SIDE and not await self._handed_to(runner, event, step):
            return f"the controller handed no step of this event to runner {runner!r}"
        allowed = allowed_sides(event.entered, all_runners=True)
        if plan.steps[step].side == runner:
            return f"step {step} of route {event.route!r} is runner {runner!r}'s own"
        before = plan.previous(step, allowed)
        if before is None:  # the event entered at the runner and the route starts elsewhere
            if event.entered != runner or runner not in plan.sides or plan.block(0, runner, allowed)[1] != step:
                return f"step {step} of route {event.route!r} is not where runner {runner!r} hands over"
        elif plan.steps[before].side != runner:
            return f"step {step} of route {event.route!r} does not follow a step of runner {runner!r}"
        return None

    async def _handed_to(self, runner: str, event: Event, step: int) -> bool:
        """Whether this controller handed `runner` the steps of `event` that end before `step` (an event
        that entered at the controller: a runner may not claim one it was not given)."""
        return await self._store().processed_exists(expected_back(runner, event.origin_id or "", event.route or "",
                                                                  step))

    async def _on_handovers(self, message: Message) -> None:
        """A runner asks for the steps kept for it (and acknowledges those it has)."""
        runner = runner_of_subject(message.subject)
        if runner is None:
            return
        try:
            answer = await self.handovers.answer(runner, message.data)
        except ValueError as exc:
            log.warning("request for steps refused", runner=runner, error=str(exc))
            return
        try:
            await self._reply(message, answer)
        except TransportError as exc:
            too_large = await self.handovers.too_large(runner, answer, exc)
            if too_large is None:
                raise
            assert self.node is not None
            self._record_failed_step(self.node, runner, too_large, f"not handed to runner {runner!r}: {exc}")

    async def _expire_steps(self, node: Node, *,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Record as expired the steps a runner did not take within `runner-dispatch-ttl`; keep the
        `postee_dispatch_pending` gauge current."""
        task_status.started()
        counted: set[str] = set()
        while True:
            ttl = node.config.runner_dispatch_ttl if node.config is not None else DEFAULT_RUNNER_DISPATCH_TTL
            try:
                now = trio.current_time()
                busy = {r for r, at in self.handovers.last_asked.items() if now - at < 2 * HANDOVER_REQUEST_TIMEOUT}
                for runner, handover in await self.handovers.expire(wall_clock() - ttl, busy=busy):
                    self._record_expired(node, runner, handover, ttl)
                pending = await self.handovers.pending()
            except StoreError as exc:
                log.error("steps for runners not checked for expiry", error=str(exc))
                pending = {}
            for runner in counted - set(pending):
                node.metrics.dispatch_pending.labels(runner).set(0)
            for runner, count in pending.items():
                node.metrics.dispatch_pending.labels(runner).set(count)
            counted = set(pending)
            await trio.sleep(min(EXPIRY_INTERVAL, ttl / 4))

    def _record_expired(self, node: Node, runner: str, handover: Handover, ttl: float) -> None:
        node.metrics.dispatch_expired.labels(runner, handover.route).inc()
        self._record_failed_step(node, runner, handover, expired_message(runner, ttl))

    def _record_failed_step(self, node: Node, runner: str, handover: Handover, error: str) -> None:
        """A step that will never run on its runner: an execution that failed there, for `/executions`."""
        report = ExecutionReport(runner=runner, route=handover.route, action=handover.action, action_type="",
                                 event_id=handover.id, ok=False, attempts=0, started_at=wall_clock(), duration=0.0,
                                 error=error, output="")
        self.registry.execution(report)
        if node.feed.wanted():
            node.feed.publish(execution_message(runner, report))
        log.warning("step for a runner dropped", runner=runner, route=handover.route, action=handover.action,
                    event_id=handover.origin_id, step=handover.step, error=error)

    async def _on_execution(self, message: Message) -> None:
        node = self.node
        assert node is not None and node.store is not None
        try:
            report = ExecutionReport.from_json(message.data)
        except (ValueError, TypeError) as exc:
            log.warning("invalid execution report dropped", error=str(exc))
            await self._reply(message, ACK)
            return
        sender = self._sender(message, report.runner)
        if sender is None:
            await self._reply(message, ACK)
            return
        report = attrs.evolve(report, runner=sender)
        report_id = message.headers.get(HEADER_EVENT_ID)
        if report_id is None or await node.store.mark_processed(f"{report.runner}:{report_id}"):
            self.registry.execution(report)
            status = "ok" if report.ok else "failed"
            label = self._label(message, report.runner)
            if label == UNVERIFIED_LABEL:
                action = UNVERIFIED_LABEL
            elif report.action in self._action_names():
                action = report.action
            else:  # label values come from the configuration: a report cannot add series at will
                action = "other"
            node.metrics.runner_executions.labels(label, action, status).inc()
            node.metrics.runner_execution_seconds.labels(label).observe(report.duration)
            if node.feed.wanted():
                node.feed.publish(execution_message(report.runner, report))
            log.info("runner execution", runner=report.runner, route=report.route, action=report.action,
                     event_id=report.event_id, ok=report.ok, error=report.error)
        await self._reply(message, ACK)

    async def _on_heartbeat(self, message: Message) -> None:
        try:
            beat = Heartbeat.from_json(message.data)
        except (ValueError, TypeError):
            return
        sender = self._sender(message, beat.runner)
        if sender is None:
            return
        beat = attrs.evolve(beat, runner=sender)
        self.registry.heartbeat(beat)
        if self.registry.should_tell(beat.runner):
            # It missed the announcement (or could not use it): tell it alone, on its own subject.
            version = self.slice_version(beat.runner)
            repeat = self._told.get(beat.runner) == version
            if len(self._told) >= MAX_RUNNERS:
                self._told.clear()  # only the log's "said once" memory: bounded like the registry
            self._told[beat.runner] = version
            (log.debug if repeat else log.info)("runner behind the configuration; telling it", runner=beat.runner,
                                                runs=beat.config_version, current=version)
            await self.transport.publish(runner_config_subject(beat.runner), version.encode())

    async def _reloaded(self, config: Config) -> None:
        """The node runs the reloaded file: slices come from it now; tell the runners to fetch theirs."""
        self._promote()
        users, self._pending_users = self._pending_users, None
        if users is not None and self.bus_users is not None:
            verified = await self.bus_users.apply(users)
            self.options = attrs.evolve(self.options, verified_runners=verified)
            self.registry.verified = verified
        assert self.running is not None
        try:
            await self.transport.publish(CONFIG_CHANGED_SUBJECT, self.running.version.encode())
        except TransportError as exc:
            log.warning("runners not told about the new configuration; their heartbeats will show it",
                        error=str(exc))
