"""Serve the ASGI app over HTTP and HTTPS with hypercorn's Trio worker.

Addresses are written as Postee writes them: `0.0.0.0:8082`, `:8082` (Go's "all interfaces"),
`localhost:0` (any free port: tests). The `task_status` value is the list of URLs actually bound,
so a caller that asked for port 0 learns the port.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

DEFAULT_GRACEFUL_TIMEOUT = 10.0


def normalize_bind(address: str) -> str:
    """`:8082` → `0.0.0.0:8082`; `http://host:port` → `host:port`; anything else unchanged."""
    address = address.strip()
    for scheme in ("http://", "https://"):
        if address.startswith(scheme):
            address = address[len(scheme):]
    address = address.rstrip("/")
    if address.startswith(":"):
        return "0.0.0.0" + address
    if ":" not in address:
        raise ValueError(f"listen address {address!r} has no port (expected host:port, e.g. 0.0.0.0:8082)")
    return address


def _hypercorn_config(bind: str, certfile: str | None, keyfile: str | None, graceful_timeout: float) -> HyperConfig:
    config = HyperConfig()
    config.bind = [normalize_bind(bind)]
    if certfile and keyfile:
        config.certfile = certfile
        config.keyfile = keyfile
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("postee.http")
    config.include_server_header = False
    return config


async def serve_app(
    app: Any,
    bind: str,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    shutdown: trio.Event,
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `bind` until `shutdown` is set, then finish in-flight requests and return."""
    config = _hypercorn_config(bind, certfile, keyfile, graceful_timeout)
    await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status, mode="asgi")
