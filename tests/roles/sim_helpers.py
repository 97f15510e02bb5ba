"""A controller, runners and standalone nodes in one Trio run, on Trio's virtual clock.

The tests of `tests/roles` run whole nodes (their real pipeline, ledger, outbox, bootstrap,
heartbeats, registry and reload) with the deterministic parts of `postee.sim`: an in-memory store run
on the event loop (one per node name, kept when that node is started again), one inline Rego pool and
one template library for every node, actions that record each attempt instead of reaching the outside
world, no HTTP listeners, and ids and wall-clock time from the simulation runtime. Nothing leaves the
event loop, so under pytest-trio's `autojump_clock` fixture the daemon's own intervals (5 s heartbeats,
5 s bus requests, backoff from 0.5 s to 30 s, stale after 3 beats, gone after 12) take no real time
and need no shortening, and a test waits on virtual time only.

Where a test used to go through an HTTP endpoint it calls what the endpoint calls: `submit_event`
for `POST /`, `node.run_route` for `POST /tenant/{route}`, `node.reload()` for `GET /reload`,
`node.recent_events_json()` for `/events`, `controller.registry.runners_json()` / `executions_json()`
for `/runners` / `/executions`, `node.readiness()` for `/readyz`, `node.metrics.render()` for
`/metrics`. The HTTP layer itself is tested in `tests/web` and `tests/daemon`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from actors.memory_transport import InMemoryBus
from actors.testing import wait_until
from actors.transport import Transport
from postee.embed import open_controller, open_runner, open_standalone, submit_event
from postee.pipeline.events import Event
from postee.rego.library import TemplateLibrary
from postee.rego.pool import RegoPool
from postee.roles.controller import Controller, ControllerOptions
from postee.roles.node import Node, NodeOptions
from postee.roles.parts import NodeParts
from postee.roles.runner import Runner, RunnerOptions
from postee.roles.upstream import DEFAULT_BACKOFF, HEARTBEAT_INTERVAL, Backoff
from postee.runtime import Runtime, use_runtime
from postee.sim.parts import open_memory_store, open_sim_pool, sim_parts, sim_runtime
from postee.sim.recording import Call, Plan, Recordings, always_ok
from postee.store.sqlite import SqliteStore

__all__ = [
    "UNUSED_URL",
    "Deployment",
    "central_config",
    "events_json",
    "open_deployment",
    "outbox_empty",
    "received_numbers",
    "run_tenant",
    "runners_by_name",
    "settle",
    "sim_event",
    "submit",
]

UNUSED_URL = "http://127.0.0.1:9"
"""Where a configured HTTP action points: never reached, every action is a recorder."""

PATIENCE = 120.0
"""Virtual seconds a wait may take before the test fails: many heartbeats, no real time."""
LIFETIME = 600.0
"""Virtual seconds a whole deployment may run: a test that hangs (a runner that never bootstraps, a
drain that never ends) fails at once in real time, as virtual time jumps to this deadline."""


@attrs.define
class Deployment:
    """The shared parts of one test's nodes (see the module docstring) and what they recorded."""

    tmp_path: Path
    pool: RegoPool
    library: TemplateLibrary
    runtime: Runtime
    bus: InMemoryBus = attrs.field(factory=InMemoryBus)
    recordings: Recordings = attrs.field(factory=Recordings)
    plan: Plan = always_ok
    """How each attempt of a recording action behaves (succeed at once, by default)."""
    stores: dict[str, SqliteStore] = attrs.field(factory=dict)
    """Each node's store by node name: a node started again under its name finds what it committed."""

    async def parts(self, name: str) -> NodeParts:
        store = self.stores.get(name)
        if store is None:
            store = self.stores[name] = await open_memory_store()
        return sim_parts(name, store=store, pool=self.pool, library=self.library, recordings=self.recordings,
                         plan=self.plan, runtime=self.runtime)

    def options(self, cfgfile: str = "", *, environ: dict[str, str] | None = None, **extra: Any) -> NodeOptions:
        """A node's options: no listener, no TLS; `environ` is all the environment the node sees."""
        return NodeOptions(cfgfile=cfgfile, https_bind=None, db_path=":memory:",
                           environ={"PATH": os.environ.get("PATH", "")} | (environ or {}), **extra)

    @property
    def controller_config(self) -> Path:
        """The controller's configuration file: write it, then `reload` the controller's node."""
        return self.tmp_path / "controller.yaml"

    @asynccontextmanager
    async def controller(self, cfg_text: str, transport: Transport | None = None, *,
                         heartbeat_interval: float = HEARTBEAT_INTERVAL, environ: dict[str, str] | None = None,
                         ) -> AsyncIterator[Controller]:
        """The controller, ready, on `transport` (default: its own client of the bus, as `controller`)."""
        self.controller_config.write_text(cfg_text)
        options = ControllerOptions(self.options(str(self.controller_config), environ=environ),
                                    heartbeat_interval=heartbeat_interval)
        async with open_controller(options, transport or self.bus.connect("controller"),
                                   parts=await self.parts("controller")) as controller:
            yield controller

    @asynccontextmanager
    async def runner(self, name: str, transport: Transport | None = None, *,
                     heartbeat_interval: float = HEARTBEAT_INTERVAL, environ: dict[str, str] | None = None,
                     backoff: Backoff = DEFAULT_BACKOFF) -> AsyncIterator[Runner]:
        """Runner `name`, ready once bootstrapped (default transport: its own client of the bus)."""
        options = RunnerOptions(name, self.options(environ=environ), heartbeat_interval=heartbeat_interval,
                                backoff=backoff)
        async with open_runner(options, transport or self.bus.connect(name),
                               parts=await self.parts(name)) as runner:
            yield runner

    @asynccontextmanager
    async def standalone(self, name: str, cfg_text: str, **extra: Any) -> AsyncIterator[Node]:
        """A standalone node reading `<tmp_path>/<name>.yaml`; `extra` are `NodeOptions` fields."""
        cfg = self.tmp_path / f"{name}.yaml"
        cfg.write_text(cfg_text)
        async with open_standalone(self.options(str(cfg), **extra), parts=await self.parts(name)) as node:
            yield node

    def calls(self, *, node: str | None = None, action: str | None = None,
              route: str | None = None) -> list[Call]:
        """The recorded attempts, in the order they ended, of `node` / `action` / `route` (None: any)."""
        return [c for c in self.recordings.calls
                if (node is None or c.node == node) and (action is None or c.action == action)
                and (route is None or c.route == route)]


@asynccontextmanager
async def open_deployment(tmp_path: Path, *, plan: Plan = always_ok,
                          lifetime: float = LIFETIME) -> AsyncIterator[Deployment]:
    """The parts a test's nodes share, with the simulation runtime current for the test's body too
    (event ids drawn by `submit_event`, a reload called from the test); fails past `lifetime`."""
    runtime = sim_runtime()
    with trio.fail_after(lifetime), use_runtime(runtime):
        async with open_sim_pool() as pool:
            deployment = Deployment(tmp_path, pool, TemplateLibrary.load(), runtime, plan=plan)
            try:
                yield deployment
            finally:
                for store in deployment.stores.values():
                    await store.aclose()


def sim_event(n: int, **fields: Any) -> bytes:
    """An event carrying its number `n`, also as `sim#<n>`: the recordings read it back as `Call.items`."""
    return json.dumps({"n": n, "sim": f"sim#{n}"} | fields).encode()


async def submit(target: Node | Controller | Runner, body: bytes | str) -> Event:
    """`POST /` on `target`: the event is accepted (recorded and queued), or the test fails."""
    event = await submit_event(target, body)
    assert event is not None, "the node did not accept the event (intake full or stopping)"
    return event


async def run_tenant(node: Node | None, route: str, event: Event) -> dict[str, Any]:
    """`POST /tenant/{route}` without the API key (`event` parsed from its body by `parse_event`): the
    route runs now, and the answer says how it went."""
    assert node is not None and route in node.route_names()
    return await node.run_route(route, event, timeout=node.options.tenant_timeout)


def events_json(node: Node | None) -> list[dict[str, Any]]:
    """`GET /events`: the node's recent events."""
    assert node is not None
    return json.loads(node.recent_events_json())


def runners_by_name(controller: Controller) -> dict[str, dict[str, Any]]:
    """`GET /runners`, by runner name."""
    return {entry["name"]: entry for entry in json.loads(controller.registry.runners_json())}


async def outbox_empty(runner: Runner, *, timeout: float = PATIENCE) -> None:
    """Wait (virtual time) until the runner's outbox holds nothing: the controller acknowledged it all."""
    node = runner.node
    assert node is not None and node.store is not None
    with trio.fail_after(timeout):
        while await node.store.outbox_count():
            await trio.sleep(0.1)


async def settle(predicate: Callable[[], bool], *, timeout: float = PATIENCE) -> None:
    """Wait (virtual time, polled) until `predicate()` holds; fail after `timeout` virtual seconds."""
    await wait_until(predicate, timeout=timeout, interval=0.01)


def central_config(*, serialize: bool = False) -> str:
    """Every event goes to one controller-side action, `central-hook`: what it recorded reached the
    controller (in arrival order when `serialize`); `sim_event` numbers read back as `Call.items`."""
    return f"""
routes:
  - name: central
    serialize-actions: {"true" if serialize else "false"}
    actions: [central-hook]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
actions:
  - name: central-hook
    type: http
    enable: true
    url: {UNUSED_URL}/central
"""


def received_numbers(deployment: Deployment) -> list[int]:
    """The numbers `central-hook` (see `central_config`) was called with, in the order its calls ended."""
    return [n for call in deployment.calls(node="controller", action="central-hook") for n in call.items]
