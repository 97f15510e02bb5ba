"""Controller and runners in one process over the in-memory bus (or any Transport)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.transport import Message, Subscription, Transport
from postee.roles.controller import Controller, ControllerOptions
from postee.roles.node import NodeOptions
from postee.roles.runner import Runner, RunnerOptions
from postee.roles.upstream import Backoff

FAST_BACKOFF = Backoff(initial=0.05, maximum=0.5)
"""Runner retries in tests: the real clock, short waits."""


def node_options(tmp_path: Path, name: str, cfgfile: str = "", **extra) -> NodeOptions:
    return NodeOptions(
        cfgfile=cfgfile,
        http_bind="127.0.0.1:0",
        https_bind=None,
        db_path=str(tmp_path / name / "webhooks.db"),
        rego_engine="regorus",
        rego_isolation="thread",
        rego_workers=1,
        stop_grace=extra.pop("stop_grace", 3.0),
        environ={"PATH": os.environ.get("PATH", "")} | extra.pop("environ", {}),
        **extra,
    )


@asynccontextmanager
async def running_controller(tmp_path: Path, cfg_text: str, transport: Transport, *, heartbeat_interval: float = 5.0,
                             environ: dict[str, str] | None = None,
                             ) -> AsyncIterator[tuple[Controller, httpx.AsyncClient]]:
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(cfg_text)
    options = node_options(tmp_path, "controller", str(cfg), environ=environ or {})
    controller = Controller(ControllerOptions(options, heartbeat_interval=heartbeat_interval), transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(controller.run)
        async with httpx.AsyncClient(base_url=controller.node.urls[0], timeout=10) as client:
            try:
                yield controller, client
            finally:
                controller.request_stop()
                await controller.node.stopped.wait()


@asynccontextmanager
async def running_runner(tmp_path: Path, name: str, transport: Transport, *, heartbeat_interval: float = 5.0,
                         task_status_timeout: float = 60, environ: dict[str, str] | None = None,
                         ) -> AsyncIterator[tuple[Runner, httpx.AsyncClient]]:
    options = node_options(tmp_path, name, environ=environ or {})
    runner = Runner(RunnerOptions(name, options, heartbeat_interval=heartbeat_interval, backoff=FAST_BACKOFF),
                    transport)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(task_status_timeout):
            await nursery.start(runner.run)
        async with httpx.AsyncClient(base_url=runner.node.urls[0], timeout=10) as client:
            try:
                yield runner, client
            finally:
                runner.request_stop()
                await runner.node.stopped.wait()
                nursery.cancel_scope.cancel()


async def eventually(predicate, timeout: float = 30.0, interval: float = 0.02) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(interval)


def acknowledged(runner: Runner, events: int, executions: int) -> bool:
    """The runner reported at least `events` events and `executions` executions, and the controller
    acknowledged every report: its outbox holds nothing more to send (or to resend)."""
    upstream = runner.upstream
    return (
        upstream.events_reported >= events
        and upstream.executions_reported >= executions
        and upstream.sent == upstream.events_reported + upstream.executions_reported
    )


def central_config(sink_url: str, *, serialize: bool = False) -> str:
    """Every event goes to one controller-side HTTP action posting its number: what reaches the sink
    reached the controller (in arrival order when `serialize`)."""
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
    url: {sink_url}/central
    body-content: "n=event.input.n"
"""


def numbered(n: int) -> bytes:
    """A small event carrying its number `n`."""
    return json.dumps({"image": "alpine", "n": n}).encode()


def received_numbers(sink) -> list[int]:
    """The numbers a sink fed by `central_config` received, in arrival order."""
    return [int(r.body.decode().strip().removeprefix("n=")) for r in sink.requests]


def secrets_config(sink_url: str) -> str:
    """Two actions on runner-1, one of them with secrets only runner-1 has; one action on the controller."""
    return f"""
routes:
  - name: findings
    input: contains(input.SigMetadata.ID, "TRC-")
    actions: [with-secret, plain-runner-hook, central]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
actions:
  - name: with-secret
    type: http
    enable: true
    runs-on: runner-1
    url: $RUNNER_HOOK_URL
    headers:
      Authorization: ["$RUNNER_TOKEN"]
    body-content: "secret event.input.n"
  - name: plain-runner-hook
    type: http
    enable: true
    runs-on: runner-1
    url: {sink_url}/plain
    body-content: "plain event.input.n"
  - name: central
    type: http
    enable: true
    url: {sink_url}/central
    body-content: "central event.input.n"
"""


class DelegatingTransport:
    """A `Transport` that forwards everything to `inner`: the base of the tests' fault-injecting transports,
    which override only the calls they tamper with."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def publish(self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        await self.inner.publish(subject, data, headers=headers)

    async def request(self, subject: str, data: bytes, **options: Any) -> Message:
        return await self.inner.request(subject, data, **options)

    async def respond(self, message: Message, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        await self.inner.respond(message, data, headers=headers)

    @asynccontextmanager
    async def subscribe(self, subject: str, **options: Any) -> AsyncIterator[Subscription]:
        async with self.inner.subscribe(subject, **options) as subscription:
            yield subscription


#: A one-route config whose only action writes to stdout.
STDOUT_CONFIG = """
routes:
  - name: r
    actions: [out]
    template: t
templates:
  - name: t
    rego-package: postee.rawmessage.json
actions:
  - name: out
    type: stdout
    enable: true
"""
