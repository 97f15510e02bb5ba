"""Runner role: bootstrap from the controller, run the local actions, report everything upstream.

A runner is a `Node` whose configuration comes from the controller (only the routes and actions
with `runs-on: <this runner>`), whose every accepted event and every action execution goes into the
upstream outbox, and whose readiness includes the link to the controller.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import structlog
import trio

from actors.transport import Transport
from postee.actions.base import ActionSpec
from postee.config import Config
from postee.roles.node import Node, NodeOptions
from postee.roles.upstream import DEFAULT_BACKOFF, HEARTBEAT_INTERVAL, Backoff, FetchedConfig, Upstream, fetch_config

log = structlog.get_logger("postee.runner")

RELOAD_FETCH_TIMEOUT = 15.0


@attrs.frozen
class RunnerOptions:
    name: str
    node: NodeOptions
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    backoff: Backoff = DEFAULT_BACKOFF


class Runner:
    def __init__(self, options: RunnerOptions, transport: Transport) -> None:
        self.options = options
        self.transport = transport
        self.name = options.name
        self.latest: FetchedConfig | None = None
        self.node: Node | None = None
        self.upstream = Upstream(transport, self.name, lambda: self._node().store, clock=time.time,
                                 backoff=options.backoff)

    def _node(self) -> Node:
        assert self.node is not None
        return self.node

    def is_local(self, spec: ActionSpec) -> bool:
        return (spec.runs_on or "").strip() == self.name

    async def _load(self) -> Config:
        """The node's config source: the controller's latest slice (re-fetched, bounded, on reload)."""
        if self.latest is not None and self.node is not None and self.node.pipeline is not None:
            with trio.move_on_after(RELOAD_FETCH_TIMEOUT):
                self._set(await self._fetch())
        assert self.latest is not None
        return self.latest.config

    async def _fetch(self) -> FetchedConfig:
        return await fetch_config(self.transport, self.name, dict(self.options.node.environ), self.options.backoff)

    def _set(self, fetched: FetchedConfig) -> None:
        self.latest = fetched
        self.upstream.config_version = fetched.version

    async def run(self, *, task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
        """Bootstrap (waiting for the controller as long as it takes), then serve until stopped."""
        log.info("runner starting: asking the controller for its configuration", runner=self.name)
        self._set(await self._fetch())
        node = self.node = Node(
            self.options.node,
            is_local=self.is_local,
            load=self._load,
            on_accepted=self.upstream.report_event,
            on_execution=self.upstream.report_execution,
        )
        node.readiness_checks["controller_link"] = lambda: bool(getattr(self.transport, "connected", True))
        node.metrics.bus_connected.set_function(lambda: 1.0 if getattr(self.transport, "connected", True) else 0.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            nursery.start_soon(self.upstream.drain_outbox)
            nursery.start_soon(self.upstream.send_heartbeats, self.options.heartbeat_interval)
            await nursery.start(self.upstream.watch_config, self._config_changed)
            task_status.started(self)
            await node.stopped.wait()
            nursery.cancel_scope.cancel()

    async def _config_changed(self) -> Any:
        ok, message = await self._node().reload()
        if not ok:
            log.error("new configuration from the controller rejected", reason=message)

    def request_stop(self) -> None:
        if self.node is not None:
            self.node.request_stop()
