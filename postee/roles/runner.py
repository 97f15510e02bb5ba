"""Runner role: bootstrap from the controller, run the local actions, report everything upstream.

A runner is a `Node` whose configuration comes from the controller (only the routes and actions
with `runs-on: <this runner>`), whose every accepted event and every action execution goes into the
upstream outbox, and whose readiness includes the link to the controller. The link's services run
under their own supervisor (`runner-link`), beside the node's pipeline supervisor.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import attrs
import structlog
import trio

from actors import Supervisor
from actors.transport import Transport
from postee.actions.base import ActionSpec
from postee.config import Config
from postee.roles.linked import run_linked
from postee.roles.node import Node, NodeOptions
from postee.roles.upstream import DEFAULT_BACKOFF, HEARTBEAT_INTERVAL, Backoff, FetchedConfig, Upstream, fetch_config
from postee.supervision import node_supervisor

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
        self.link: Supervisor | None = None
        """The supervisor of the link's services (outbox, heartbeats, config watch), once running."""
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
        self.link = self._link_supervisor(node)
        await run_linked(node, self.link, self.transport, readiness="controller_link",
                         started=lambda: task_status.started(self))

    def _link_supervisor(self, node: Node) -> Supervisor:
        """The link to the controller, supervised like the pipeline: a crash in it restarts that part."""
        link = node_supervisor("runner-link", node.metrics, stop_grace=self.options.node.stop_grace,
                               fail_fast_on_start=True)
        link.add(self.upstream.drain_outbox, name="outbox")
        link.add(functools.partial(self.upstream.send_heartbeats, self.options.heartbeat_interval), name="heartbeats")
        link.add(functools.partial(self.upstream.watch_config, self._config_changed), name="config-watch")
        return link

    async def _config_changed(self) -> Any:
        ok, message = await self._node().reload()
        if not ok:
            log.error("new configuration from the controller rejected", reason=message)

    def request_stop(self) -> None:
        if self.node is not None:
            self.node.request_stop()
