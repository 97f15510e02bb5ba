"""Real nodes on the real clock (HTTP listeners on port 0, SQLite files, Rego in threads), and what
both kinds of role tests share.

The tests of the NATS bus (`tests/bus`), the entry points and the HTTP edge run real nodes with these;
a controller and runners in one process on virtual time are `tests/roles/sim_helpers.py`'s.
"""

from __future__ import annotations

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
from postee.roles.runner import Runner
from postee.roles.upstream import Backoff

FAST_BACKOFF = Backoff(initial=0.05, maximum=0.5)
"""Runner retries in tests on the real clock: short waits."""


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


async def eventually(predicate, timeout: float = 30.0, interval: float = 0.02) -> None:
    """Poll `predicate` on the real clock (real nodes, a real bus); on virtual time see `sim_helpers.settle`."""
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
