"""Start the controller and runner roles with a real NATS link (the CLI's entry points).

The controller starts and supervises its own nats-server (or joins one with `--nats-url`) and
connects to it like any client; the runner connects to the controller's server, retrying while it
is not there yet, and gives up at once, with a clear message, when the server refuses its NKey or
TLS identity.

With TLS the controller does not dial its own server with the operator's files: those are a
*server* certificate (perhaps serverAuth only, named after the host runners dial) and the CA that
*remote* clients' certificates come from. It pins its server's certificate and, when client
certificates are required, presents an ephemeral one (`postee.bus.local_link`). The embedded
server's files live beside the store (`<PATH_TO_DB>.nats/`): its per-run directories and the pid
file by which a restarted controller stops a server left from its previous life.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import attrs
import structlog
import trio

from actors import TransportAuthError, TransportUnavailable, one_error
from postee.bus.local_link import LocalLinkTLS, local_link_tls
from postee.bus.nats_transport import connect_nats_transport, open_nats_transport
from postee.bus.server import DEFAULT_URL, NatsServer, NatsServerOptions, serve_nats_server
from postee.roles.controller import Controller, ControllerOptions
from postee.roles.node import NodeOptions
from postee.roles.runner import Runner, RunnerOptions
from postee.roles.upstream import DEFAULT_BACKOFF, Backoff, RunnerFatal

log = structlog.get_logger("postee.launch")

#: Beside the store, the embedded nats-server's directory: `<PATH_TO_DB>` + this suffix.
SERVER_DIR_SUFFIX = ".nats"
PID_FILE_NAME = "nats-server.pid"


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


def server_dir(node: NodeOptions) -> Path:
    """The embedded nats-server's directory, beside the controller's store."""
    db = Path(node.db_path)
    return db.with_name(db.name + SERVER_DIR_SUFFIX)


async def _local_link(link: LinkOptions, directory: Path) -> LocalLinkTLS | None:
    """The controller's TLS for its own server (None without TLS); key generation runs in a thread."""
    if not link.tls_cert:
        return None
    make = partial(local_link_tls, Path(link.tls_cert), client_certificate=bool(link.ca_root), scratch_dir=directory)
    return await trio.to_thread.run_sync(make)


async def run_controller(node: NodeOptions, link: LinkOptions, *,
                         task_status: trio.TaskStatus[Controller] = trio.TASK_STATUS_IGNORED) -> None:
    """Start (or join) the NATS server, connect to it, run the controller; one exception on failure."""
    with one_error():  # a single failure leaves as itself, never as a group
        async with trio.open_nursery() as nursery:
            server: NatsServer | None = None
            transport_tls: dict[str, object] = {"tls_ca": link.ca_root, "tls_cert": link.tls_cert,
                                                "tls_key": link.tls_key}
            if link.nats_url:
                client_url = link.nats_url
            else:
                directory = server_dir(node)
                server_options = NatsServerOptions(  # checks the flags before anything starts
                    url=link.url,
                    tls_cert=link.tls_cert,
                    tls_key=link.tls_key,
                    ca_root=link.ca_root,
                    seed_files=[link.seed_file] if link.seed_file else [],
                    work_dir=directory,
                    pid_file=directory / PID_FILE_NAME,
                )
                local = await _local_link(link, directory)
                if local is not None:
                    server_options = attrs.evolve(server_options, local_client_ca=local.client_ca_pem)
                    transport_tls = {"tls_context": local.context}
                server = NatsServer(server_options)
                client_url = await nursery.start(partial(serve_nats_server, server_options, server=server))
                log.info("nats-server ready", url=link.url)
            async with open_nats_transport(
                client_url, name="postee-controller", nkey_seed_file=link.seed_file, **transport_tls,
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
