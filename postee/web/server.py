"""Serve the ASGI app over HTTP and HTTPS with hypercorn's Trio worker.

Addresses are written as Postee writes them: `0.0.0.0:8082`, `:8082` (Go's "all interfaces"),
`localhost:0` (any free port: tests). The `task_status` value is the list of URLs actually bound,
so a caller that asked for port 0 learns the port.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

DEFAULT_GRACEFUL_TIMEOUT = 10.0
DEFAULT_STUCK_CLIENT_TIMEOUT = 30.0


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


class _Config(HyperConfig):
    """Hypercorn's config, whose listening sockets carry a TCP user timeout (their connections inherit it).

    Hypercorn writes each response and WebSocket message with a shielded `send_all`: the application
    cannot cut it short. A client that stops reading (a `/feed` client with its window closed, a
    webhook client that never takes its answer) would hold that send, its connection and a graceful
    stop for ever. With `TCP_USER_TIMEOUT` the kernel aborts a connection whose data stays unsent or
    unacknowledged that long, the send fails, and hypercorn closes the connection.
    """

    user_timeout: float | None = None

    def create_sockets(self) -> Any:
        sockets = super().create_sockets()
        if self.user_timeout and hasattr(socket, "TCP_USER_TIMEOUT"):
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.user_timeout * 1000))
        return sockets


def _hypercorn_config(bind: str, certfile: str | None, keyfile: str | None, graceful_timeout: float,
                      user_timeout: float | None = None) -> HyperConfig:
    config = _Config()
    config.user_timeout = user_timeout
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
    stuck_client_timeout: float | None = DEFAULT_STUCK_CLIENT_TIMEOUT,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `bind` until `shutdown` is set, then finish in-flight requests and return.

    `stuck_client_timeout`: seconds a connection's data may wait for a client that takes nothing
    before the connection is aborted (see `_Config`)."""
    config = _hypercorn_config(bind, certfile, keyfile, graceful_timeout, stuck_client_timeout)
    await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status, mode="asgi")
