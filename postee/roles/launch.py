"""Start the controller and runner roles with a real NATS link (the CLI's entry points).

The controller starts and supervises its own nats-server (or joins one with `--nats-url`) and
connects to it like any client; the runner connects to the controller's server, retrying while it
is not there yet, and gives up at once, with a clear message, when the server refuses its NKey or
TLS identity.
"""

from __future__ import annotations

import os
from functools import partial

import attrs
import structlog
import trio

from actors import TransportAuthError, TransportUnavailable, one_error
from postee.bus.nats_transport import connect_nats_transport, open_nats_transport
from postee.bus.server import DEFAULT_URL, NatsServer, NatsServerOptions, serve_nats_server
from postee.roles.controller import Controller, ControllerOptions
from postee.roles.node import NodeOptions
from postee.roles.runner import Runner, RunnerOptions
from postee.roles.upstream import DEFAULT_BACKOFF, Backoff, RunnerFatal

log = structlog.get_logger("postee.launch")


def _file(value: str | None) -> str | None:
    """A file flag's value; a trailing comma (as in the seed document's example command) is dropped."""
    if not value:
        return None
    if not os.path.exists(value) and value.endswith(","):
        value = value.rstrip(",")
    return value


@attrs.frozen
class LinkOptions:
    """The NATS side of a role: where, and with which TLS material and NKeys seed."""

    url: str = DEFAULT_URL
    ca_root: str | None = attrs.field(default=None, converter=_file)
    tls_cert: str | None = attrs.field(default=None, converter=_file)
    tls_key: str | None = attrs.field(default=None, converter=_file)
    seed_file: str | None = attrs.field(default=None, converter=_file)
    nats_url: str | None = None
    """Controller only: join this existing NATS server/cluster instead of starting one."""


async def run_controller(node: NodeOptions, link: LinkOptions, *,
                         task_status: trio.TaskStatus[Controller] = trio.TASK_STATUS_IGNORED) -> None:
    """Start (or join) the NATS server, connect to it, run the controller; one exception on failure."""
    with one_error():  # a single failure leaves as itself, never as a group
        async with trio.open_nursery() as nursery:
            server: NatsServer | None = None
            if link.nats_url:
                client_url = link.nats_url
            else:
                server_options = NatsServerOptions(
                    url=link.url,
                    tls_cert=link.tls_cert,
                    tls_key=link.tls_key,
                    ca_root=link.ca_root,
                    seed_files=[link.seed_file] if link.seed_file else [],
                )
                server = NatsServer(server_options)
                client_url = await nursery.start(partial(serve_nats_server, server_options, server=server))
                log.info("nats-server ready", url=link.url)
            async with open_nats_transport(
                client_url, name="postee-controller", tls_ca=link.ca_root, tls_cert=link.tls_cert,
                tls_key=link.tls_key, nkey_seed_file=link.seed_file,
            ) as transport:
                controller = Controller(ControllerOptions(node), transport)
                controller.nats_server = server
                await controller.run(task_status=task_status)
            nursery.cancel_scope.cancel()


async def run_runner(node: NodeOptions, link: LinkOptions, name: str, *, backoff: Backoff = DEFAULT_BACKOFF,
                     task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
    """Connect (waiting for the controller's server as long as it takes), bootstrap, serve."""
    with one_error():  # a single failure leaves as itself, never as a group
        async with trio.open_nursery() as nursery:
            delay = backoff.initial
            while True:
                try:
                    transport = await connect_nats_transport(
                        nursery, link.url, name=f"postee-runner-{name}", tls_ca=link.ca_root, tls_cert=link.tls_cert,
                        tls_key=link.tls_key, nkey_seed_file=link.seed_file,
                    )
                    break
                except TransportAuthError as exc:
                    reason = f"the controller's NATS server at {link.url} refused this runner: {exc}"
                    raise RunnerFatal(reason) from None
                except TransportUnavailable as exc:
                    log.warning("controller not reachable; retrying", url=link.url, error=str(exc), retry_in=delay)
                    await trio.sleep(delay)
                    delay = backoff.next(delay)
            runner = Runner(RunnerOptions(name, node, backoff=backoff), transport)
            await runner.run(task_status=task_status)
            await transport.aclose()
            nursery.cancel_scope.cancel()
