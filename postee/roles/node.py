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
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import attrs
import structlog
import trio

from actors import MailboxStats, one_error
from postee.actions.base import ActionSpec
from postee.config import Config, ConfigError, load_config
from postee.metrics import Metrics
from postee.pipeline.action_actor import Execution
from postee.pipeline.build import Pipeline, PipelineError, build_pipeline, drain, runs_everything
from postee.pipeline.events import Event, RecentEvents
from postee.pipeline.router import DEFAULT_INTAKE_CAPACITY
from postee.rego.library import TemplateLibrary
from postee.rego.pool import RegoPool, open_rego_pool
from postee.store import SqliteStore
from postee.store.maintenance import serve_maintenance
from postee.store.sqlite import open_store
from postee.supervision import DEFAULT_STOP_GRACE
from postee.web.app import DEFAULT_MAX_BODY, PosteeApp
from postee.web.selfsigned import ensure_self_signed
from postee.web.server import serve_app

log = structlog.get_logger("postee.node")

ENV_API_KEY = "POSTEE_API_KEY"
ENV_INGEST_TOKEN = "POSTEE_INGEST_TOKEN"


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
    ) -> None:
        self.options = options
        self.metrics = Metrics()
        self.recent = RecentEvents()
        self.is_local = is_local
        self._load = load or self._load_file
        self.on_accepted = on_accepted
        self.on_execution = on_execution
        self.on_reloaded = on_reloaded
        self.config: Config | None = None
        self.pipeline: Pipeline | None = None
        self.store: SqliteStore | None = None
        """The node's SQLite store (it runs the maintenance too); the pipeline sees it as a `Store`."""
        self.pool: RegoPool | None = None
        self.library: TemplateLibrary | None = None
        self.urls: list[str] = []
        self.tls_urls: list[str] = []
        self.readiness_checks: dict[str, Callable[[], bool]] = {}
        self.extra_endpoints: dict[str, Callable[[], str]] = {}
        self._api_key = ""
        self._nursery: trio.Nursery | None = None
        self._stop_requested = trio.Event()
        self._reload_lock = trio.Lock()
        self._maintenance_scope: trio.CancelScope | None = None
        self.stopped = trio.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    async def _load_file(self) -> Config:
        config, warnings = await trio.to_thread.run_sync(
            functools.partial(load_config, self.options.cfgfile, environ=self.options.environ)
        )
        for warning in warnings:
            log.warning("config", problem=str(warning))
        return config

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `request_stop()` or a signal; raises ConfigError / PipelineError / StoreError at start.

        Raises one exception, never an exception group, for a single failure.
        """
        with one_error():  # a single failure leaves as itself, never as a group
            opts = self.options
            self.config = await self._load()
            try:
                async with open_store(opts.db_path) as store, open_rego_pool(
                    opts.rego_engine, workers=opts.rego_workers, isolation=opts.rego_isolation  # type: ignore[arg-type]
                ) as pool:
                    self.store, self.pool = store, pool
                    self._api_key = await self._init_api_key(store)
                    self.library = await trio.to_thread.run_sync(TemplateLibrary.load, opts.rego_templates)
                    self.pipeline = await self._build(self.config)
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        await nursery.start(self.pipeline.supervisor.run)
                        self.metrics.watch_mailboxes(self._mailboxes)
                        nursery.start_soon(self._maintenance_loop)
                        if opts.handle_signals:
                            nursery.start_soon(self._signal_loop)
                        await self._serve_web(task_status)
                        log.info("stopping: draining the pipeline", grace=opts.stop_grace)
                        await drain(self.pipeline, grace=opts.stop_grace)
                        nursery.cancel_scope.cancel()
            finally:
                self.metrics.ready.set(0)
                self.stopped.set()
                log.info("stopped")

    async def _serve_web(self, task_status: trio.TaskStatus[Node]) -> None:
        """Run the listeners until a stop is requested; returns once they stopped accepting."""
        opts = self.options
        app = PosteeApp(self, max_body=opts.max_body)
        web_stop = trio.Event()
        async with trio.open_nursery() as web:
            self.urls = await web.start(_serve, app, opts.http_bind, None, None, web_stop)
            if opts.https_bind:
                certfile, keyfile = opts.certfile, opts.keyfile
                if not (certfile and keyfile):
                    certfile, keyfile = await trio.to_thread.run_sync(ensure_self_signed, opts.db_path)
                self.tls_urls = await web.start(_serve, app, opts.https_bind, certfile, keyfile, web_stop)
            self.metrics.ready.set(1)
            log.info("ready", http=self.urls, https=self.tls_urls)
            task_status.started(self)
            await self._stop_requested.wait()
            self.metrics.ready.set(0)
            web_stop.set()

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def _init_api_key(self, store: SqliteStore) -> str:
        """The `/reload` key: `POSTEE_API_KEY` when set, else generated once and kept in the store."""
        from_env = self.options.environ.get(ENV_API_KEY)
        if from_env:
            await store.set_api_key(from_env)
            return from_env
        return await store.api_key()

    async def _build(self, config: Config) -> Pipeline:
        assert self.pool is not None and self.store is not None and self.library is not None
        return await build_pipeline(
            config,
            pool=self.pool,
            store=self.store,
            library=self.library,
            metrics=self.metrics,
            is_local=self.is_local,
            on_execution=self.on_execution,
            wall_clock=time.time,
            intake_capacity=self.options.intake_capacity,
            mailbox_capacity=self.options.mailbox_capacity,
            stop_grace=self.options.stop_grace,
        )

    async def reload(self) -> tuple[bool, str]:
        """Load the config again; swap pipelines only when the new one is valid."""
        async with self._reload_lock:
            try:
                config = await self._load()
                pipeline = await self._build(config)
            except (ConfigError, PipelineError) as exc:
                self.metrics.config_reloads.labels("rejected").inc()
                log.error("reload rejected; the running configuration stays", error=str(exc))
                return False, f"reload rejected, the running configuration stays: {exc}"
            assert self._nursery is not None and self.pipeline is not None
            await self._nursery.start(pipeline.supervisor.run)
            old, self.pipeline, self.config = self.pipeline, pipeline, config
            if self._maintenance_scope is not None:
                self._maintenance_scope.cancel()  # picks up the new interval and size limit
            self._nursery.start_soon(functools.partial(drain, old, grace=self.options.stop_grace))
            self.metrics.config_reloads.labels("ok").inc()
            log.info("configuration reloaded", routes=len(config.routes), actions=len(config.actions))
            if self.on_reloaded is not None:
                await self.on_reloaded(config)
            return True, "configuration reloaded"

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
                    interval=config.db_verify_interval_hours * 3600,
                    max_size_bytes=config.max_db_size or None,
                )

    def _mailboxes(self) -> Iterator[MailboxStats]:
        if self.pipeline is not None:
            yield from self.pipeline.mailboxes()

    # -- the web layer's Daemon interface --------------------------------------------------------
    async def submit(self, event: Event) -> bool:
        """Queue a webhook event; False when intake is full (the client gets 503 and retries)."""
        if self.pipeline is None or self._stop_requested.is_set() or not self.pipeline.submit(event):
            return False
        await self._accepted(event)
        return True

    async def submit_wait(self, event: Event) -> None:
        """Queue an event, waiting while intake is full (events from runners: back-pressure, not 503).

        Raises `actors.MailboxClosed` when the node is stopping.
        """
        assert self.pipeline is not None
        await self.pipeline.router.address.send(event)
        await self._accepted(event)

    async def _accepted(self, event: Event) -> None:
        self.recent.add(event)
        self.metrics.events_received.labels(event.source).inc()
        if self.on_accepted is not None:
            try:
                await self.on_accepted(event)
            except Exception as exc:  # e.g. the runner's outbox on a full disk: the event still runs here
                log.error("accepted event could not be reported upstream", event_id=event.id,
                          error=f"{type(exc).__name__}: {exc}")

    def route_names(self) -> list[str]:
        return list(self.pipeline.routes) if self.pipeline else []

    async def run_route(self, route: str, event: Event, *, timeout: float) -> dict[str, Any]:
        assert self.pipeline is not None
        self.recent.add(event)
        self.metrics.events_received.labels(event.source).inc()
        outcome = await self.pipeline.run_route(route, event, timeout=timeout)
        return outcome.as_dict()

    def recent_events_json(self) -> str:
        return self.recent.to_json()

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

    def extra_get(self, path: str) -> str | None:
        handler = self.extra_endpoints.get(path)
        return handler() if handler else None


async def _serve(app: PosteeApp, bind: str, certfile: str | None, keyfile: str | None, stop: trio.Event, *,
                 task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    await serve_app(app, bind, certfile=certfile, keyfile=keyfile, shutdown=stop, task_status=task_status)
