"""Run a real Node (HTTP on 127.0.0.1 port 0, SQLite in tmp_path) inside the test's Trio run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from postee.roles.node import Node, NodeOptions

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COMPAT = FIXTURES / "compat"


#: One route sending every event, as raw JSON, to stdout.
STDOUT_ONLY = """
routes:
  - name: all
    actions: [out]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: out
    type: stdout
    enable: true
"""


def event_bytes(name: str) -> bytes:
    """A fixture event: `compat/inputs/<name>` or `events/<name>`."""
    for folder in (COMPAT / "inputs", FIXTURES / "events"):
        path = folder / name
        if path.exists():
            return path.read_bytes()
    raise FileNotFoundError(name)


def webhook_route(url: str, *, route: str = "r", serialize: bool = False, rule: str | None = None) -> str:
    """A config with one route sending every event (or those `rule` matches), rendered raw, to a
    `webhook` action at `url`."""
    rule_line = f"\n    input: {rule}" if rule else ""
    return f"""
routes:
  - name: {route}{rule_line}
    serialize-actions: {"true" if serialize else "false"}
    actions: [hook]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: hook
    type: webhook
    enable: true
    url: {url}
"""


async def wait_until_ready(process: subprocess.Popen, client: httpx.AsyncClient, url: str, *, timeout: float,
                           log: Callable[[], str]) -> None:
    """Poll `url`/readyz until it answers 200; fail at once (showing `log()`) if `process` exits first."""
    with trio.fail_after(timeout):
        while True:
            assert process.poll() is None, f"exited with {process.returncode}:\n{log()}"
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)


def pipeline_settled(node: Node, events: int) -> bool:
    """True once at least `events` events were accepted and the pipeline finished all of them.

    Finished means: the router handed every accepted event to every route (or decided that the route's
    rule does not match it: skipped), every route's finishing lane handled each of the others (so
    every delivery it will ever make for them is made), and every action completed every job it was
    given. Tests wait for this positive signal before asserting
    that nothing more happened: after it nothing is queued or in flight anywhere in the pipeline,
    and an extra delivery has already shown up instead of arriving after the assertion.
    """
    pipeline = node.pipeline
    if pipeline is None:
        return False
    accepted = pipeline.router.mailbox.stats().sent
    return (
        accepted >= events
        and pipeline.router.routed == accepted
        and all(route.lane is not None and route.lane.handled + route.skipped == accepted
                for route in pipeline.routes.values())
        and all(action.sent_ok + action.sent_failed == action.mailbox.stats().sent
                for action in pipeline.actions.values())
    )


@asynccontextmanager
async def running_node(
    tmp_path: Path,
    cfg_text: str,
    *,
    engine: str = "regorus",
    isolation: str = "thread",
    environ: dict[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    """A started Node and an HTTP client pointed at it; stopped (gracefully) on exit."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(cfg_text)
    env = {"PATH": os.environ.get("PATH", "")} | (environ or {})
    node = Node(
        NodeOptions(
            cfgfile=str(cfg),
            http_bind="127.0.0.1:0",
            https_bind=options.pop("https_bind", None),
            db_path=str(tmp_path / "db" / "webhooks.db"),
            rego_engine=engine,
            rego_isolation=isolation,
            rego_workers=2,
            stop_grace=options.pop("stop_grace", 5.0),
            environ=env,
            **options,
        )
    )
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(node.run)
        base = node.urls[0]
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            try:
                yield node, client
            finally:
                node.request_stop()
                with trio.fail_after(30):
                    await node.stopped.wait()


def admin_headers(node: Node) -> dict[str, str]:
    """The node's API key as a bearer token: what the reading endpoints and `/reload` require."""
    return {"authorization": f"Bearer {node.api_key()}"}


async def admin_get(client: httpx.AsyncClient, node: Node, path: str) -> httpx.Response:
    """GET `path` with the node's API key."""
    return await client.get(path, headers=admin_headers(node))
