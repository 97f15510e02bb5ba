"""A Postee node: config, store, Rego pool, pipeline and web servers, run as one supervised unit.

Standalone mode is a `Node` as it is; the controller and runner roles add their bus bridges
around the same node (they decide which actions are local and what happens to accepted events).

Lifecycle:
1. load and validate the config (every problem reported; nothing starts on an invalid config);
2. open the store and the Rego worker pool, build the pipeline (templates and rules compiled and
   tried), start it, then start the HTTP and HTTPS listeners: the node is ready;
3. SIGHUP or `GET /reload` builds a new pipeline from the file; if it is valid it replaces the
   running one, which drains in the background; if not, the running one stays and the reason is
   reported;
4. SIGTERM/SIGINT or `request_stop()`: the listeners stop accepting, in-flight requests finish,
   queued events drain through routes and actions until the grace deadline, then the rest is
   cancelled and the store is closed.

Accepted means durable (see `postee.pipeline.ledger`): an event is recorded in the store before it is
answered 200 (or, from a runner, acknowledged), on a runner in the same transaction as its report
upstream; at start, before the listeners open, the events a previous run left unfinished (a
SIGKILL, a grace deadline that ran out) go through the pipeline again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from typing import Any

import attrs
import structlog
import trio

from actors import AskTimeout, MailboxClosed, MailboxStats, one_error
from postee.actions.base import ActionSpec
from postee.actions.registry import build_action
from postee.config import Config, ConfigError, load_config
from postee.feed import Feed
from postee.metrics import Metrics
from postee.pipeline.action_actor import Execution
from postee.pipeline.build import Pipeline, PipelineError, build_pipeline, drain, runs_everything
from postee.pipeline.events import RECENT_EVENTS_BYTES, Event, RecentEvents
from postee.pipeline.ledger import Ledger
from postee.pipeline.plan import SideLink
from postee.pipeline.route_actor import RouteOutcome
from postee.pipeline.router import DEFAULT_INTAKE_CAPACITY
from postee.rego.library import TemplateLibrary
from postee.rego.pool import RegoPool, open_rego_pool
from postee.roles.parts import DAEMON_PARTS, NodeParts
from postee.roles.watch import NodeWatch
from postee.runtime import offload, use_runtime, wall_clock
from postee.store import OutboxMessage, SqliteStore, StoreError
from postee.store.connection import MEMORY
from postee.store.maintenance import serve_checkpoints, serve_maintenance
from postee.store.owner import own_store
from postee.store.sqlite import open_store
from postee.supervision import DEFAULT_STOP_GRACE
from postee.web.app import (
    DEFAULT_MAX_BODY,
    DEFAULT_TENANT_CONCURRENCY,
    DEFAULT_TENANT_TIMEOUT,
    FEED_SEND_TIMEOUT,
    PosteeApp,
    RouteTimedOut,
    RouteUnavailable,
)
from postee.web.lean_server import serve_lean
from postee.web.selfsigned import ensure_self_signed
from postee.web.server import serve_app

log = structlog.get_logger("postee.node")

ENV_API_KEY = "POSTEE_API_KEY"
ENV_INGEST_TOKEN = "POSTEE_INGEST_TOKEN"
ENV_HTTP_SERVER = "POSTEE_HTTP_SERVER"
"""`lean` (default: `postee.web.lean_server`, h11 and wsproto on Trio) or `hypercorn` (the previous one)."""
ENV_OPEN_EVENTS = "POSTEE_OPEN_EVENTS"
"""Set to 1 (or `--open-events`), `GET /events` is as open as the webhook, as in Postee."""
ENV_VOLATILE_INTAKE = "POSTEE_BENCH_VOLATILE_INTAKE"
"""Set to 1, events are not recorded before they are answered (lost on a crash): for `bench/durability.py`,
which measures what durable intake costs against this. Not a mode to run in."""


@attrs.frozen
class NodeOptions:
    cfgfile: str
    http_bind: str = "0.0.0.0:8082"
    https_bind: str | None = "0.0.0.0:8445"
    certfile: str | None = None
    keyfile: str | None = None
    db_path: str = "/server/database/webhooks.db"
    rego_engine: str = "regopy"
    rego_templates: str | None = None
    rego_workers: int | None = None
    rego_isolation: str = "process"
    stop_grace: float = DEFAULT_STOP_GRACE
    max_body: int = DEFAULT_MAX_BODY
    intake_capacity: int = DEFAULT_INTAKE_CAPACITY
    mailbox_capacity: int | None = None
    """Capacity of route and action mailboxes (None: their defaults)."""
    handle_signals: bool = False
    environ: Mapping[str, str] = attrs.field(factory=lambda: dict(os.environ))
    durable_intake: bool = True
    """Record accepted events before answering (off only for benchmarks; see `ENV_VOLATILE_INTAKE`)."""
    open_events: bool = False
    """`GET /events` without the API key, as open as the webhook (Postee's); also `ENV_OPEN_EVENTS`."""
    recent_events_bytes: int = RECENT_EVENTS_BYTES
    """Memory the events behind `GET /events` may take together (the oldest go first)."""
    tenant_timeout: float = DEFAULT_TENANT_TIMEOUT
    tenant_concurrency: int = DEFAULT_TENANT_CONCURRENCY
    stuck_client_timeout: float = FEED_SEND_TIMEOUT
    """Seconds a client may leave what the node sends it (a `/feed` message, an answer) untaken before
    its connection is cut (`postee.web.server`: the kernel's TCP user timeout)."""

    @property
    def durable(self) -> bool:
        return self.durable_intake and self.environ.get(ENV_VOLATILE_INTAKE, "") not in ("1", "true")

    @property
    def events_open(self) -> bool:
        return self.open_events or self.environ.get(ENV_OPEN_EVENTS, "").lower() in ("1", "true", "yes")


class Node:
    """One running Postee (see the module docstring). Implements the web layer's `Daemon`."""

    def __init__(
        self,
        options: NodeOptions,
        *,
        is_local: Callable[[ActionSpec], bool] = runs_everything,
        load: Callable[[], Awaitable[Config]] | None = None,
        on_accepted: Callable[[Event], Awaitable[None]] | None = None,
        on_execution: Callable[[Execution], Any] | None = None,
        on_reloaded: Callable[[Config], Awaitable[None]] | None = None,
        report: Callable[[Event], OutboxMessage | None] | None = None,
        parts: NodeParts = DAEMON_PARTS,
        link: SideLink | None = None,
    ) -> None:
        """`report` (a runner's) makes the outbox message reporting an event upstream: it is recorded
        with the event, in one transaction; `on_accepted` is called once an event is accepted and
        recorded (with its report). `parts` replaces the daemon's store, Rego pool, actions, runtime
        or listeners (`postee.roles.parts`: embedding, simulation). `link`: the node's side in a
        controller/runner deployment, for routes whose actions run on several sides."""
        self.options = options
        self.link = link
        self.parts = parts
        self.name = "standalone"
        """How the node names itself in what it publishes (its role sets it: `controller`, the runner's name)."""
        self.role = "standalone"
        self.metrics = Metrics()
        self.feed = Feed(on_drop=self.metrics.feed_dropped.inc, on_subscribers=self.metrics.feed_subscribers.set)
        """What happens here, for live watchers (`postee.feed`: the `/feed` endpoint, the `/ui` dashboard)."""
        self.watch = NodeWatch(self.feed, lambda: self.name)
        """The feed's messages and the recent executions (`postee.roles.watch`)."""
        self.recent = RecentEvents(max_bytes=options.recent_events_bytes)
        self.is_local = is_local
        self._load = load or self._load_file
        self.on_accepted = on_accepted
        self.on_execution = on_execution
        self.on_reloaded = on_reloaded
        self.report = report
        self.ledger: Ledger | None = None
        """What is unfinished among the accepted events (created with the store)."""
        self._accepting = 0
        """Webhook events being recorded or queued: they count against the intake capacity."""
        self._replay_scope: trio.CancelScope | None = None
        self.config: Config | None = None
        self.pipeline: Pipeline | None = None
        self.store: SqliteStore | None = None
        """The node's SQLite store (it runs the maintenance too); the pipeline sees it as a `Store`."""
        self.pool: RegoPool | None = None
        self.library: TemplateLibrary | None = None
        self.urls: list[str] = []
        self.tls_urls: list[str] = []
        self.readiness_checks: dict[str, Callable[[], bool]] = {}
        self.extra_endpoints: dict[str, Callable[[], str]] = {
            "/executions": self.watch.executions_json,
            "/node": self.node_json,
        }
        """Role-specific GET endpoints behind the API key (a controller adds `/runners`)."""
        self._api_key = ""
        self._nursery: trio.Nursery | None = None
        self._stop_requested = trio.Event()
        self._reload_lock = trio.Lock()
        self._maintenance_scope: trio.CancelScope | None = None
        self.started = trio.Event()
        """Set once the node is ready (pipeline running, listeners open): it takes events."""
        self.stopped = trio.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    async def _load_file(self) -> Config:
        config, warnings = await offload(
            functools.partial(load_config, self.options.cfgfile, environ=self.options.environ)
        )
        for warning in warnings:
            log.warning("config", problem=str(warning))
        return config

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `request_stop()` or a signal; raises ConfigError / PipelineError / StoreError at start.

        Raises one exception, never an exception group, for a single failure.
        """
        with one_error(), use_runtime(self.parts.runtime):  # one failure leaves as itself, never as a group
            opts = self.options
            self.config = await self._load()
            try:
                # one node per store (see postee.store.owner); a store lent by the embedder is its business
                with own_store(opts.db_path) if self.parts.store is None else contextlib.nullcontext():
                    await self._run_on_store(task_status)
            finally:
                self.metrics.ready.set(0)
                self.feed.close()
                self.stopped.set()
                log.info("stopped")

    async def _run_on_store(self, task_status: trio.TaskStatus[Node]) -> None:
        """Open the store and the Rego pool, run the pipeline and the listeners until stopped."""
        opts, parts = self.options, self.parts
        open_this_store = parts.store or functools.partial(open_store, opts.db_path)
        open_this_pool = parts.rego or functools.partial(
            open_rego_pool, opts.rego_engine, workers=opts.rego_workers, isolation=opts.rego_isolation
        )
        async with open_this_store() as store, open_this_pool() as pool:
            self.store, self.pool = store, pool
            self.ledger = Ledger(store, durable=opts.durable)
            self._api_key = await self._init_api_key(store)
            self.library = parts.library or await offload(TemplateLibrary.load, opts.rego_templates)
            self.pipeline = await self._build(self.config)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.pipeline.supervisor.run)
                self.metrics.watch_mailboxes(self._mailboxes)
                nursery.start_soon(self._maintenance_loop)
                nursery.start_soon(self.ledger.serve)
                if store.path != MEMORY:  # an in-memory store has no WAL to checkpoint
                    nursery.start_soon(serve_checkpoints, store)
                if opts.handle_signals:
                    nursery.start_soon(self._signal_loop)
                await self._replay()
                await self._serve_web(task_status)
                log.info("stopping: draining the pipeline", grace=opts.stop_grace)
                await drain(self.pipeline, grace=opts.stop_grace)
                await self.ledger.final_flush()
                nursery.cancel_scope.cancel()

    async def _serve_web(self, task_status: trio.TaskStatus[Node]) -> None:
        """Run the listeners until a stop is requested; returns once they stopped accepting."""
        opts = self.options
        if not self.parts.serve_http:  # events come in process (`submit`)
            self.metrics.ready.set(1)
            log.info("ready (no listeners: events come in process)")
            self.started.set()
            task_status.started(self)
            await self._stop_requested.wait()
            self.metrics.ready.set(0)
            return
        app = PosteeApp(self, max_body=opts.max_body, tenant_timeout=opts.tenant_timeout,
                        tenant_concurrency=opts.tenant_concurrency, open_events=opts.events_open,
                        feed_send_timeout=opts.stuck_client_timeout)
        if opts.events_open:
            log.warning("GET /events is open (--open-events / POSTEE_OPEN_EVENTS): whoever may send events "
                        "may read every recent event")
        web_stop = trio.Event()
        async with trio.open_nursery() as web:
            server = opts.environ.get(ENV_HTTP_SERVER, "lean")
            if server not in ("lean", "hypercorn"):
                raise ValueError(f"{ENV_HTTP_SERVER}={server!r}: expected 'lean' or 'hypercorn'")
            serve = functools.partial(_serve, stuck_client_timeout=opts.stuck_client_timeout, server=server)
            self.urls = await web.start(serve, app, opts.http_bind, None, None, web_stop)
            if opts.https_bind:
                certfile, keyfile = opts.certfile, opts.keyfile
                if not (certfile and keyfile):
                    certfile, keyfile = await trio.to_thread.run_sync(ensure_self_signed, opts.db_path)
                self.tls_urls = await web.start(serve, app, opts.https_bind, certfile, keyfile, web_stop)
            self.metrics.ready.set(1)
            log.info("ready", http=self.urls, https=self.tls_urls)
            self.started.set()
            task_status.started(self)
            await self._stop_requested.wait()
            self.metrics.ready.set(0)
            self.feed.close()  # `/feed` clients are told the node stops: their connections end now
            web_stop.set()

    def request_stop(self) -> None:
        self._stop_requested.set()
        if self._replay_scope is not None:
            self._replay_scope.cancel()  # what is not replayed yet stays recorded for the next start

    async def _replay(self) -> None:
        """Send the events a previous run left unfinished through the pipeline, before new ones come."""
        assert self.ledger is not None
        with trio.CancelScope() as scope:
            self._replay_scope = scope
            if not self._stop_requested.is_set():
                await self.ledger.replay(self._replayed)
        self._replay_scope = None

    async def _init_api_key(self, store: SqliteStore) -> str:
        """The `/reload` key: `POSTEE_API_KEY` when set, else generated once and kept in the store."""
        from_env = self.options.environ.get(ENV_API_KEY)
        if from_env:
            await store.set_api_key(from_env)
            return from_env
        return await store.api_key()

    async def _build(self, config: Config, replacing: Pipeline | None = None) -> Pipeline:
        assert self.pool is not None and self.store is not None and self.library is not None
        return await build_pipeline(
            config,
            pool=self.pool,
            store=self.store,
            library=self.library,
            metrics=self.metrics,
            is_local=self.is_local,
            on_execution=self._executed,
            ledger=self.ledger,
            wall_clock=wall_clock,
            action_factory=self.parts.actions or build_action,
            on_outcome=self._decided,
            on_routed=self.watch.routed,
            intake_capacity=self.options.intake_capacity,
            mailbox_capacity=self.options.mailbox_capacity,
            stop_grace=self.options.stop_grace,
            replacing=replacing,
            link=self.link,
        )

    def _executed(self, execution: Execution) -> Any:
        """An action ended: the observer hears it, then the role's `on_execution` (a runner reports it)."""
        if self.parts.observer is not None:
            self.parts.observer.execution(execution)
        self.watch.executed(execution)
        return self.on_execution(execution) if self.on_execution is not None else None

    def _decided(self, event: Event, outcome: RouteOutcome) -> None:
        """A route decided for an event: the observer hears it, and the feed once every route did."""
        if self.parts.observer is not None:
            self.parts.observer.outcome(event, outcome)
        self.watch.decided(event, outcome)

    def node_json(self) -> str:
        """`GET /node`: who this node is, for the dashboard and scripts."""
        config = self.config
        return json.dumps({
            "name": self.name, "role": self.role,
            "routes": self.route_names(),
            "actions": sorted(a.name for a in config.actions) if config is not None else [],
            "urls": self.urls + self.tls_urls,
        })

    async def reload(self) -> tuple[bool, str]:
        """Load the config again; swap pipelines only when the new one is valid."""
        with use_runtime(self.parts.runtime):  # the caller may be outside the node (a web request, a test)
            return await self._reload()

    async def _reload(self) -> tuple[bool, str]:
        async with self._reload_lock:
            try:
                config = await self._load()
                pipeline = await self._build(config, replacing=self.pipeline)
            except (ConfigError, PipelineError) as exc:
                self.metrics.config_reloads.labels("rejected").inc()
                log.error("reload rejected; the running configuration stays", error=str(exc))
                return False, f"reload rejected, the running configuration stays: {exc}"
            assert self._nursery is not None and self.pipeline is not None
            await self._nursery.start(pipeline.supervisor.run)
            old, self.pipeline, self.config = self.pipeline, pipeline, config
            if self._maintenance_scope is not None:
                self._maintenance_scope.cancel()  # picks up the new interval and size limit
            self._nursery.start_soon(self._drain_replaced, old)
            self.metrics.config_reloads.labels("ok").inc()
            log.info("configuration reloaded", routes=len(config.routes), actions=len(config.actions))
            if self.on_reloaded is not None:
                await self.on_reloaded(config)
            return True, "configuration reloaded"

    async def _drain_replaced(self, old: Pipeline) -> None:
        """Let a replaced pipeline finish every event it holds: they were answered 200.

        No deadline but the node's stop (each action's work is bounded by its own timeouts and
        retries). Not shielded: a stopping node cuts it after its own drain, and what is left is
        still recorded, for the replay at the next start.
        """
        try:
            await old.supervisor.stop(math.inf)
        finally:  # ended (or a route crashed while stopping): the new serialized routes must not wait on it
            for route in old.routes.values():
                route.drained.set()

    async def _signal_loop(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    log.info("signal received", signal=signal.Signals(signum).name)
                    self.request_stop()

    async def _maintenance_loop(self) -> None:
        """Postee's `db-verify-interval`: expire dedup keys, keep the database under `max-db-size`.

        Restarted with the new interval and limit when a reload changes them.
        """
        assert self.store is not None
        while True:
            config = self.config
            assert config is not None
            with trio.CancelScope() as scope:
                self._maintenance_scope = scope
                await serve_maintenance(
                    self.store,
                    wall_clock=wall_clock,
                    interval=config.db_verify_interval_hours * 3600,
                    max_size_bytes=config.max_db_size or None,
                )

    def _mailboxes(self) -> Iterator[MailboxStats]:
        if self.pipeline is not None:
            yield from self.pipeline.mailboxes()

    # -- the web layer's Daemon interface --------------------------------------------------------
    async def submit(self, event: Event) -> bool:
        """Accept a webhook event: recorded in the store, then queued. False (the client gets 503 and
        retries) when intake is full, the node is stopping, or the store could not record it."""
        if self.parts.runtime is None:
            return await self._submit(event)
        with use_runtime(self.parts.runtime):  # called from outside the node (a web request, an embedder)
            return await self._submit(event)

    def refuses_events(self) -> bool:
        """`submit` would refuse a webhook event now: no pipeline, stopping, or intake full."""
        pipeline, ledger = self.pipeline, self.ledger
        if pipeline is None or ledger is None or self._stop_requested.is_set():
            return True
        if not ledger.durable:
            return pipeline.router.full()
        stats = pipeline.router.mailbox.stats()
        return stats.depth + self._accepting >= stats.capacity

    async def _submit(self, event: Event) -> bool:
        pipeline, ledger = self.pipeline, self.ledger
        if pipeline is None or ledger is None or self._stop_requested.is_set():
            return False
        if not ledger.durable:
            self.watch.accepted(event)  # before the router has it: its `routed` message comes after
            if not pipeline.submit(event):
                return False
            await self._report_now(event)
            self._count(event)
            return True
        stats = pipeline.router.mailbox.stats()
        if stats.depth + self._accepting >= stats.capacity:
            return False
        self._accepting += 1
        try:
            try:
                new = await ledger.accept(event, self._report_of(event))
            except StoreError as exc:
                log.error("event refused: the store could not record it", event_id=event.id, error=str(exc))
                return False
            if not new:  # its (random) id is recorded already: it is accepted and queued once
                return True
            self.watch.accepted(event)
            await self._enqueue(event)
        finally:
            self._accepting -= 1
        await self._recorded(event)
        return True

    async def submit_wait(self, event: Event, *, processed_key: str | None = None) -> bool:
        """Accept an event from a runner, waiting while intake is full (back-pressure, not 503).

        Once it returns True the event is recorded (it survives a crash): the runner may be told.
        `processed_key` is marked processed in the same transaction; False, nothing queued, when it
        was marked before or the event id is recorded already (a duplicate). Raises `StoreError`
        when it could not be recorded, and (volatile intake only) `actors.MailboxClosed` when stopping.
        """
        assert self.pipeline is not None and self.ledger is not None and self.store is not None
        if not self.ledger.durable:
            if processed_key is not None and not await self.store.mark_processed(processed_key):
                return False
            self.watch.accepted(event)
            try:
                await self.pipeline.router.address.send(event)
            except MailboxClosed:
                if processed_key is not None:  # not processed after all: its resend must be
                    await self.store.forget_processed(processed_key)
                raise
            self._count(event)
            return True
        if not await self.ledger.accept(event, self._report_of(event), processed_key):
            return False
        self.watch.accepted(event)
        await self._enqueue(event)
        await self._recorded(event)
        return True

    async def _enqueue(self, event: Event) -> None:
        """Queue a recorded event, waiting for room; when the node is stopping it stays recorded (and
        runs at the next start); when a reload swapped pipelines meanwhile, the new one takes it."""
        observer = self.parts.observer
        while True:
            pipeline = self.pipeline
            assert pipeline is not None
            try:
                # An observer hears the queue's order exactly: after a put that needs no wait, or
                # before waiting in line (waiting senders are served first come, first served).
                queued = pipeline.router.address.try_send(event)
                if observer is not None:
                    observer.queued(event)
                if not queued:
                    await pipeline.router.address.send(event)
                return
            except MailboxClosed:
                if self._stop_requested.is_set() or self.pipeline is pipeline:
                    log.info("pipeline closed: accepted event kept for the next start", event_id=event.id)
                    return

    async def _replayed(self, event: Event) -> None:
        if self.parts.observer is not None:
            self.parts.observer.replayed(event)
        await self._enqueue(event)

    def _report_of(self, event: Event) -> OutboxMessage | None:
        return self.report(event) if self.report is not None else None

    async def _recorded(self, event: Event) -> None:
        """The event and its report are recorded: count it, tell `on_accepted`."""
        self._count(event)
        if self.on_accepted is not None:
            try:
                await self.on_accepted(event)
            except Exception as exc:
                log.error("accepted-event hook failed", event_id=event.id, error=f"{type(exc).__name__}: {exc}")

    async def _report_now(self, event: Event) -> None:
        """Report an event upstream on its own (a tenant run, or volatile intake), then tell `on_accepted`."""
        message = self._report_of(event)
        if message is not None:
            assert self.store is not None
            try:
                await self.store.outbox_add(message.subject, message.payload, message.headers)
            except StoreError as exc:  # e.g. a full disk: the event still runs here
                log.error("accepted event could not be reported upstream", event_id=event.id, error=str(exc))
                return
        if self.on_accepted is not None:
            try:
                await self.on_accepted(event)
            except Exception as exc:  # e.g. the runner's outbox on a full disk: the event still runs here
                log.error("accepted event could not be reported upstream", event_id=event.id,
                          error=f"{type(exc).__name__}: {exc}")

    def _count(self, event: Event) -> None:
        self.recent.add(event)
        if self.parts.observer is not None:
            self.parts.observer.accepted(event)
        # `webhook` or `runner`: a runner's name may come from whoever reaches the bus, and a metrics label
        # must not be chosen by outside input (per-runner counts are `postee_runner_events`, verified names)
        self.metrics.events_received.labels("webhook" if event.source == "webhook" else "runner").inc()

    def route_names(self) -> list[str]:
        return list(self.pipeline.routes) if self.pipeline else []

    async def run_route(self, route: str, event: Event, *, timeout: float, detailed: bool = False) -> dict[str, Any]:
        """`POST /tenant/{route}`: run one route now and wait for it. The event is reported upstream
        first (on a runner), naming its route; it is not recorded for a replay: the answer comes only
        once the route is done, so a client that got no answer sends it again.

        Without `detailed` (a caller without the API key) the answer says what happened, not what the
        actions said: no output, no error messages (a script's output can hold anything). Raises
        `RouteTimedOut` past `timeout`, `RouteUnavailable` when the node is stopping.
        """
        pipeline = self.pipeline
        if pipeline is None or self._stop_requested.is_set():
            raise RouteUnavailable("the node is stopping")
        if route not in pipeline.routes:  # removed by a reload since the web layer looked
            raise RouteUnavailable(f"the route {route!r} was just reloaded away")
        event = attrs.evolve(event, route=route)
        self._count(event)
        self.watch.accepted(event)
        self.watch.routed(event, 1)  # its one route decides (not through the router)
        await self._report_now(event)
        try:
            outcome = await pipeline.run_route(route, event, timeout=timeout)
        except AskTimeout:
            raise RouteTimedOut(route) from None
        except MailboxClosed:
            raise RouteUnavailable("the node is stopping or reloading") from None
        return tenant_answer(outcome, detailed=detailed)

    def recent_events_json(self, *, bodies: bool = True, limit: int | None = None) -> str:
        return self.recent.to_json(bodies=bodies, limit=limit, extra=None if bodies else self.watch.routes_of)

    def api_key(self) -> str:
        return self._api_key

    def ingest_token(self) -> str:
        return self.options.environ.get(ENV_INGEST_TOKEN) or (self.config.ingest_token if self.config else "")

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {"config": self.config is not None, "pipeline": self.pipeline is not None,
                  "stopping": self._stop_requested.is_set()}
        for name, check in self.readiness_checks.items():
            checks[name] = check()
        ready = checks["config"] and checks["pipeline"] and not checks["stopping"] and all(
            checks[name] for name in self.readiness_checks
        )
        return ready, {"checks": checks}

    def extra_paths(self) -> Collection[str]:
        return self.extra_endpoints.keys()

    def extra_get(self, path: str) -> str | None:
        handler = self.extra_endpoints.get(path)
        return handler() if handler else None


def tenant_answer(outcome: RouteOutcome, *, detailed: bool) -> dict[str, Any]:
    """The JSON of a `/tenant` run: in full (with each action's output) for the API key, else only
    whether the route matched, why it dropped the event, and whether each action succeeded."""
    if detailed:
        answer = outcome.as_dict()
        for report in outcome.reports:
            answer["actions"][report.action]["output"] = report.output
        return answer
    dropped = outcome.dropped
    if dropped is not None and dropped.startswith("error"):
        dropped = "error"  # the message may quote the event or the template: the API key shows it
    return {
        "route": outcome.route,
        "matched": outcome.matched,
        "dropped": dropped,
        "actions": {r.action: {"ok": r.ok, "attempts": r.attempts} for r in outcome.reports},
    }


async def _serve(app: PosteeApp, bind: str, certfile: str | None, keyfile: str | None, stop: trio.Event, *,
                 stuck_client_timeout: float, server: str,
                 task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    serve = serve_lean if server == "lean" else serve_app
    await serve(app, bind, certfile=certfile, keyfile=keyfile, shutdown=stop,
                stuck_client_timeout=stuck_client_timeout, task_status=task_status)
