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

Identity on the embedded server (`postee.bus.permissions`): when the bus has NKey users (a shared
seed, runner keys), the controller connects with a key of its own, made fresh at every start and held
in memory only, and it alone may answer config requests, read runners' reports and announce changes;
each runner of the runner keys file may act only as itself. A bus without any authentication is
refused on an address other than loopback unless the operator says `--insecure-bus`.
"""

from __future__ import annotations

import ipaddress
import os
from functools import partial
from pathlib import Path

import attrs
import structlog
import trio

from actors import TransportAuthError, TransportUnavailable, one_error
from postee.bus.local_link import LocalLinkTLS, local_link_tls
from postee.bus.nats_transport import connect_nats_transport, open_nats_transport
from postee.bus.nkeys_util import new_user_seed, public_key_from_seed
from postee.bus.protocol import runner_inbox_prefix
from postee.bus.runner_keys import RunnerKeysError, read_runner_keys
from postee.bus.server import DEFAULT_URL, NatsServer, NatsServerConfigError, NatsServerOptions, serve_nats_server
from postee.bus.server_options import parse_listen_url
from postee.config import ConfigError, Problem
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
    runner_keys: str | None = attrs.field(default=None, converter=_file)
    """Controller only: the runner keys file (`postee.bus.runner_keys`): each runner's own NKey."""
    insecure_bus: bool = False
    """Controller only: allow a bus without authentication on an address other than loopback."""


SHARED_SEED_WARNING = (
    "runners share one NKey seed (--controller-seed-file): any holder of it can fetch any runner's "
    "configuration (with that runner's secrets), report events and executions under any runner's name "
    "and read the replies sent to other shared-seed runners; it cannot answer configuration requests or "
    "announce changes. Give each runner its own key (postee nkey --name NAME FILE; "
    "--controller-runner-keys) to close this"
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bus_security(link: LinkOptions, runner_keys: tuple[tuple[str, str], ...] = ()) -> None:
    """Refuse an embedded bus that anyone on the network could use; warn about what weaker modes allow.

    `runner_keys` are the keys read from the keys file; given and empty, it still turns authentication on
    (the controller alone may connect until runners are added)."""
    if link.nats_url:
        log.warning("joining an existing NATS server: who may publish or subscribe where is that server's "
                    "configuration (see the README's security model for the permissions to give)",
                    runner_keys_ignored=bool(link.runner_keys))
        return
    host, _ = parse_listen_url(link.url)
    if link.runner_keys and not runner_keys:
        log.warning("the runner keys file names no runner: only the controller may use the bus until runners "
                    "are added to it (then reload)", path=link.runner_keys)
    # a keys file, even an empty one, turns authentication on: the controller has its own key
    authenticated = bool(link.seed_file or link.runner_keys or link.ca_root)
    if not authenticated:
        if not _is_loopback(host):
            if not link.insecure_bus:
                raise NatsServerConfigError(
                    f"the controller's bus would listen on {host} with no authentication: anyone who can reach "
                    "it could fetch every runner's configuration and secrets, and send runners configurations "
                    "that run commands. Give runners keys (--controller-runner-keys, made with 'postee nkey'), "
                    "a shared seed (--controller-seed-file) or client certificates (--controller-ca-root), "
                    "listen on 127.0.0.1, or pass --insecure-bus to run it open anyway"
                )
            log.warning("the controller's bus has no authentication (--insecure-bus): anyone who can reach it "
                        "can act as the controller or as any runner", host=host)
        else:
            log.warning("the controller's bus has no authentication: any local process can act as the "
                        "controller or as any runner", host=host)
    elif link.seed_file:
        log.warning(SHARED_SEED_WARNING)
    elif not link.runner_keys:
        log.warning("runners are authenticated by client certificate only: every certificate from the CA root "
                    "may act as the controller or as any runner; give runners keys (--controller-runner-keys)")


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


@attrs.frozen
class RunnerKeysReload:
    """The runner keys file, re-read at every reload of the controller's configuration: a runner added
    to it may connect, one removed may not (nats-server reloads its users, `NatsServer.reload`)."""

    path: str
    server: NatsServer

    async def read(self) -> tuple[tuple[str, str], ...]:
        try:
            return await trio.to_thread.run_sync(read_runner_keys, self.path)
        except RunnerKeysError as exc:
            raise ConfigError(self.path, [Problem("", str(exc))]) from None

    async def apply(self, users: tuple[tuple[str, str], ...]) -> frozenset[str]:
        if users != self.server.options.runner_nkeys:
            try:
                await self.server.reload(attrs.evolve(self.server.options, runner_nkeys=users))
            except NatsServerConfigError as exc:  # e.g. a runner given the shared seed's key: keep the old ones
                log.error("runner keys not reloaded; the previous ones stay", path=self.path, error=str(exc))
            else:
                log.info("runners with their own key", runners=sorted(name for name, _ in users))
        return frozenset(name for name, _ in self.server.options.runner_nkeys)


async def _runner_keys(link: LinkOptions) -> tuple[tuple[str, str], ...]:
    if not link.runner_keys:
        return ()
    try:
        keys = await trio.to_thread.run_sync(read_runner_keys, link.runner_keys)
    except RunnerKeysError as exc:
        raise NatsServerConfigError(str(exc)) from None
    log.info("runners with their own key", runners=[name for name, _ in keys])
    return keys


async def run_controller(node: NodeOptions, link: LinkOptions, *,
                         task_status: trio.TaskStatus[Controller] = trio.TASK_STATUS_IGNORED) -> None:
    """Start (or join) the NATS server, connect to it, run the controller; one exception on failure."""
    with one_error():  # a single failure leaves as itself, never as a group
        async with trio.open_nursery() as nursery:
            server: NatsServer | None = None
            transport_tls: dict[str, object] = {"tls_ca": link.ca_root, "tls_cert": link.tls_cert,
                                                "tls_key": link.tls_key}
            nkey_seed: bytes | None = None
            verified: frozenset[str] = frozenset()
            runner_keys = await _runner_keys(link) if not link.nats_url else ()
            check_bus_security(link, runner_keys)  # before anything starts
            if link.nats_url:
                client_url = link.nats_url
            else:
                controller_keys: tuple[str, ...] = ()
                if link.seed_file or link.runner_keys:
                    # the controller's own identity: made now, held in memory, the only full-permission user
                    nkey_seed = new_user_seed()
                    controller_keys = (public_key_from_seed(nkey_seed),)
                    verified = frozenset(name for name, _ in runner_keys)
                directory = server_dir(node)
                server_options = NatsServerOptions(  # checks the flags before anything starts
                    url=link.url,
                    tls_cert=link.tls_cert,
                    tls_key=link.tls_key,
                    ca_root=link.ca_root,
                    seed_files=[link.seed_file] if link.seed_file else [],
                    controller_nkeys=controller_keys,
                    runner_nkeys=runner_keys,
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
            seed_options: dict[str, object] = (
                {"nkey_seed": nkey_seed} if nkey_seed is not None else {"nkey_seed_file": link.seed_file}
            )
            async with open_nats_transport(
                client_url, name="postee-controller", **seed_options, **transport_tls,
            ) as transport:
                controller = Controller(ControllerOptions(node, verified_runners=verified), transport)
                controller.nats_server = server
                if server is not None and link.runner_keys:
                    controller.bus_users = RunnerKeysReload(link.runner_keys, server)
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
                        tls_key=link.tls_key, nkey_seed_file=link.seed_file, inbox_prefix=runner_inbox_prefix(name),
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
