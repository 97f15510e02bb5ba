"""The embedded nats-server's errors: one family, each with what an operator needs to act on it.

A process that dies or never becomes ready carries its exit status and the last lines it logged,
so the error message alone says why (a port in use, a bad TLS file); nothing here ever holds a
seed. Shared by the options, the binary lookup and the process supervision.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence

__all__ = [
    "NatsServerConfigError",
    "NatsServerDied",
    "NatsServerError",
    "NatsServerNotFound",
    "NatsServerPortInUse",
    "NatsServerStartTimeout",
    "PORT_IN_USE",
    "join_host_port",
]

#: How nats-server says its listen address is taken.
PORT_IN_USE = re.compile(r"address already in use|bind: .*in use", re.IGNORECASE)


def join_host_port(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NatsServerError(Exception):
    """Base class of the embedded nats-server's errors."""


class NatsServerNotFound(NatsServerError):
    """The `nats-server` binary is not installed."""


class NatsServerConfigError(NatsServerError, ValueError):
    """The options cannot make a working server (missing file, cert without key, bad seed, ...)."""


class NatsServerStartTimeout(NatsServerError):
    """The process runs but did not become ready in time."""

    def __init__(self, timeout: float, log_tail: Sequence[str] = ()) -> None:
        self.timeout = timeout
        self.log_tail = list(log_tail)
        super().__init__(f"nats-server was not ready within {timeout:g}s{_format_tail(self.log_tail)}")


class NatsServerDied(NatsServerError):
    """The process exited on its own (during startup or while serving)."""

    def __init__(self, returncode: int | None, log_tail: Sequence[str] = (), *, during_startup: bool = False) -> None:
        self.returncode = returncode
        self.log_tail = list(log_tail)
        self.during_startup = during_startup
        when = "during startup" if during_startup else "unexpectedly"
        super().__init__(f"nats-server exited {when} with {_describe_exit(returncode)}{_format_tail(self.log_tail)}")


class NatsServerPortInUse(NatsServerDied):
    """The listen address is taken by another process."""

    def __init__(self, host: str, port: int, returncode: int | None, log_tail: Sequence[str] = ()) -> None:
        self.host = host
        self.port = port
        self.returncode = returncode
        self.log_tail = list(log_tail)
        self.during_startup = True
        line = next((t for t in reversed(self.log_tail) if PORT_IN_USE.search(t)), "")
        NatsServerError.__init__(
            self, f"cannot listen on {join_host_port(host, port)}: address already in use (nats-server: {line})"
        )


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "unknown status"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name} (exit code {returncode})"
        except ValueError:
            return f"exit code {returncode}"
    return f"exit code {returncode}"


def _format_tail(lines: Sequence[str]) -> str:
    if not lines:
        return " (no output)"
    return "; last log lines:\n  " + "\n  ".join(lines)
