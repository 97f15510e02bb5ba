"""The `docker` action: run a container per delivery, as Postee's docker action.

Settings: `docker-image-name` (required), `docker-cmd` (a list, or a string split as a shell would),
`docker-env` (a list of `NAME=value`), `docker-network` (the HostConfig NetworkMode),
`docker-volume-mounts` (a map of host path → container path, or a list of `host:container[:options]`),
`docker-host` (new: the daemon's address, else `DOCKER_HOST`, else `unix:///var/run/docker.sock`;
a `tcp://` host is spoken to over TLS when `DOCKER_TLS_VERIFY` is set, with `ca.pem`, `cert.pem` and
`key.pem` from `DOCKER_CERT_PATH`, as the docker CLI does),
`docker-pull` (new: pull the image before each run, default true) and `timeout` (default 300s).

Each run talks to the Docker Engine API over its socket (httpx, no docker SDK, nothing blocking the
loop): pull the image (the progress stream is read to its end, as an error may arrive in it with a
200), create a container named `postee-<action>-<uuid>` with the description in `POSTEE_EVENT`,
start it, wait for it, read its logs (stdout and stderr, demultiplexed) and remove it, whatever
happened: a failed, timed-out or cancelled run leaves no container behind (Postee never removes
them). The whole run shares one `timeout`; a container still running then is killed, and the
failure is retryable like any timeout. A non-zero exit is a failure retrying will not fix, reported
with the end of the container's output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import ssl
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import trio

from postee.actions.base import (
    MAX_OUTPUT_CHARS,
    NOT_OPENED,
    TRUNCATION_MARK,
    ActionError,
    Delivery,
    SendResult,
    define_action,
)
from postee.actions.httpclient import HttpClientAction, check_response, read_bounded, stream
from postee.actions.registry import register
from postee.actions.settings import Kind, SettingsReader, setting

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
"""Seconds for a whole run: pull, create, start and the container's work (Postee has no limit)."""

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKER_HOST_VARIABLE = "DOCKER_HOST"
DEFAULT_TCP_PORT = 2375
"""The daemon's plain-HTTP port, for a `tcp://host` without one."""

DEFAULT_TLS_PORT = 2376
"""The daemon's TLS port, for a `tcp://host` without one when TLS is on."""

TLS_VERIFY_VARIABLE = "DOCKER_TLS_VERIFY"
"""Set (to anything non-empty), as for the docker CLI: talk TLS to a `tcp://` host, verified with `ca.pem`."""

CERT_PATH_VARIABLE = "DOCKER_CERT_PATH"
DEFAULT_CERT_PATH = "~/.docker"
"""Where `ca.pem`, `cert.pem` and `key.pem` are looked for, as the docker CLI does."""

SOCKET_BASE_URL = "http://docker"
"""The URL requests over a unix socket carry (the host part is not used to connect)."""

CLEANUP_TIMEOUT = 10.0
"""Seconds the kill, log read and removal get after a run ended, even when the send was cancelled."""

LOG_TAIL_LINES = 1000
"""Lines of the container's output asked for; the end of the output says the most about a failure."""

MAX_LOG_BYTES = 64 * 1024
"""Bytes of output kept (the last ones)."""

MAX_ERROR_BYTES = 16 * 1024
"""Bytes of an error reply read, for its message."""

EVENT_VARIABLE = "POSTEE_EVENT"
CONTAINER_PREFIX = "postee"
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
"""Characters a container name cannot hold (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), replaced by "-"."""

_STREAM_HEADER_SIZE = 8
RAW_STREAM = "application/vnd.docker.raw-stream"
"""The log content type of a container with a TTY; others are multiplexed in frames."""


def _load_tls_context(settings: SettingsReader, key: str, *, required: bool) -> ssl.SSLContext | None:
    """The TLS context for a daemon on `https`: `ca.pem` (else the system CAs unless `required`) and
    the client certificate `cert.pem` + `key.pem` when present, all from DOCKER_CERT_PATH.

    Built at load time, so missing or broken files are config errors.
    """
    directory = os.path.expanduser(os.environ.get(CERT_PATH_VARIABLE) or DEFAULT_CERT_PATH)
    ca, cert, private_key = (os.path.join(directory, name) for name in ("ca.pem", "cert.pem", "key.pem"))
    if required and not os.path.isfile(ca):
        settings.problem(key, f"{TLS_VERIFY_VARIABLE} is set but {ca} is missing (set {CERT_PATH_VARIABLE})")
        return None
    try:
        context = ssl.create_default_context(cafile=ca if os.path.isfile(ca) else None)
        if os.path.isfile(cert) and os.path.isfile(private_key):
            context.load_cert_chain(cert, private_key)
    except (ssl.SSLError, OSError) as exc:
        settings.problem(key, f"unusable TLS files in {directory}: {exc}")
        return None
    return context


def _read_image(settings: SettingsReader, key: str) -> str:
    image = settings.string(key, required=True)
    if image and (image != image.strip() or " " in image):
        settings.problem(key, f"not an image reference: {image!r}")
    return image


def _read_cmd(settings: SettingsReader, key: str) -> list[str]:
    value = settings.raw(key)
    if isinstance(value, str) and value.strip():
        try:
            return shlex.split(value)
        except ValueError as exc:
            settings.problem(key, f"cannot split {value!r} into words: {exc}")
            return []
    return settings.string_list(key)


def _read_binds(settings: SettingsReader, key: str) -> list[str]:
    """`docker-volume-mounts` as Binds: `{host: container}` (Postee's form) or `["host:container[:ro]"]`."""
    value = settings.raw(key)
    if value is None or value == "":
        return []
    if isinstance(value, Mapping):
        pairs = [(f"{key}.{host}", f"{host}:{target}") for host, target in value.items()]
    elif isinstance(value, list | tuple):
        pairs = [(f"{key}[{index}]", item) for index, item in enumerate(value)]
    else:
        settings.problem(key, f"expected a map of host path to container path, or a list, not {type(value).__name__}")
        return []
    binds = []
    for where, bind in pairs:
        host, _, rest = str(bind).partition(":") if isinstance(bind, str) else ("", "", "")
        target = rest.partition(":")[0]
        if not host or not target.startswith("/"):
            settings.problem(where, f"expected host:/container/path[:options], not {bind!r}")
        else:
            binds.append(bind)
    return binds


def _read_host(settings: SettingsReader, key: str) -> str:
    """`docker-host`, else DOCKER_HOST, else the default socket; a problem when it is no usable address."""
    host = settings.string(key) or os.environ.get(DOCKER_HOST_VARIABLE) or DEFAULT_DOCKER_HOST
    if _connection(host) is None:
        settings.problem(_host_key(settings), f"expected unix:///path/to/docker.sock or tcp://host:port, not {host!r}")
    return host


def _host_key(settings: SettingsReader) -> str:
    """The key problems with the daemon's address are reported under: where the address came from."""
    return "docker-host" if settings.has("docker-host") else "docker-host (from DOCKER_HOST)"


@register
@define_action
class DockerAction(HttpClientAction):
    type_name: ClassVar[str] = "docker"
    default_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    image: str = setting("docker-image-name", read=_read_image)
    cmd: list[str] = setting("docker-cmd", read=_read_cmd)
    env: dict[str, str] = setting("docker-env", kind=Kind.ENVIRONMENT)
    network: str = setting("docker-network")
    binds: list[str] = setting("docker-volume-mounts", read=_read_binds)
    docker_host: str = setting("docker-host", read=_read_host)
    pull: bool = setting("docker-pull", kind=Kind.BOOLEAN, default=True)
    tls: bool = False
    """Talk TLS to a `tcp://` host: DOCKER_TLS_VERIFY was set (read in `check_settings`)."""

    @classmethod
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        """DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as the docker CLI reads them; the TLS context built now."""
        if not reader.local:
            return  # that environment and those files are on the host that runs the action
        tls = bool(os.environ.get(TLS_VERIFY_VARIABLE))
        values["tls"] = tls
        connection = _connection(values["docker_host"], tls=tls)
        if connection is not None and connection[0].startswith("https://"):
            values["verify"] = _load_tls_context(reader, _host_key(reader), required=tls) or True

    def client_options(self) -> dict[str, Any]:
        connection = _connection(self.docker_host, tls=self.tls)
        assert connection is not None
        base_url, socket_path = connection
        options: dict[str, Any] = {"base_url": base_url}
        if socket_path is not None:
            options["transport"] = httpx.AsyncHTTPTransport(uds=socket_path)
        return options

    def container_name(self) -> str:
        return f"{CONTAINER_PREFIX}-{_NAME_UNSAFE.sub('-', self.name).strip('-.') or 'action'}-{uuid.uuid4()}"

    def create_body(self, delivery: Delivery) -> dict[str, Any]:
        """The `POST /containers/create` body: the description goes in `POSTEE_EVENT`, which wins over `docker-env`."""
        env = {**self.env, EVENT_VARIABLE: delivery.description}
        host_config: dict[str, Any] = {}
        if self.network:
            host_config["NetworkMode"] = self.network
        if self.binds:
            host_config["Binds"] = list(self.binds)
        body: dict[str, Any] = {
            "Image": self.image,
            "Env": [f"{name}={value}" for name, value in env.items()],
            "Labels": {"postee.action": self.name, "postee.route": delivery.route, "postee.event": delivery.event_id},
            "Tty": False,
            "HostConfig": host_config,
        }
        if self.cmd:
            body["Cmd"] = list(self.cmd)
        return body

    async def send(self, delivery: Delivery) -> SendResult:
        if self.client is None:
            raise RuntimeError(NOT_OPENED)
        container = self.container_name()  # its name until the daemon gives its id
        created = started = False
        code: int | None = None
        logs = _LogTail(MAX_LOG_BYTES)
        try:
            with trio.move_on_after(self.timeout) as deadline:
                if self.pull:
                    await self._pull()
                created = True  # from here on, a cut-off create may have created it: remove it by name
                try:
                    body = self.create_body(delivery)
                    reply = await self._json("POST", "/containers/create", params={"name": container}, json=body)
                except ActionError as exc:
                    created = exc.status is None  # the daemon answered with an error: nothing was created
                    raise
                if isinstance(reply, dict) and isinstance(reply.get("Id"), str) and reply["Id"]:
                    container = reply["Id"]
                await self._json("POST", f"/containers/{container}/start")
                started = True
                code = await self._wait(container)
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_TIMEOUT):
                await self._cleanup(container, created=created, started=started, running=code is None, logs=logs)
        output = logs.text()
        if deadline.cancelled_caught:
            stage = "the container was killed" if started else "before the container started"
            raise ActionError(f"timed out after {self.timeout:g}s; {stage}", retryable=True, output=output)
        assert code is not None
        if code != 0:
            raise ActionError(
                f"container {self.image} exited with status {code}" + (f": {_tail(output, 200)}" if output else ""),
                retryable=False,
                status=code,
                output=output,
            )
        return SendResult(output=output, status=code)

    async def _pull(self) -> None:
        from_image, tag = split_image(self.image)
        where = f"pull {self.image}"
        async with self._stream("POST", "/images/create", params={"fromImage": from_image, "tag": tag}) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("error"):
                    # The daemon refuses unknown images before streaming (404), so an error here is the
                    # registry or the network failing half-way: worth another attempt.
                    raise ActionError(f"{where}: {message['error']}", retryable=True)

    async def _wait(self, name: str) -> int:
        reply = await self._json("POST", f"/containers/{name}/wait", timeout=httpx.Timeout(self.timeout, read=None))
        if not isinstance(reply, dict):
            raise ActionError(f"unexpected reply to wait: {reply!r}", retryable=False)
        error = reply.get("Error")
        if isinstance(error, dict) and error.get("Message"):
            raise ActionError(f"waiting for the container failed: {error['Message']}", retryable=True)
        code = reply.get("StatusCode")
        if isinstance(code, bool) or not isinstance(code, int):
            raise ActionError(f"unexpected reply to wait: {reply!r}", retryable=False)
        return code

    async def _cleanup(self, name: str, *, created: bool, started: bool, running: bool, logs: _LogTail) -> None:
        """Kill a container still running, keep its output, remove it. Failures are logged, not raised."""
        if not created:
            return
        try:
            if started and running:
                await self._json("POST", f"/containers/{name}/kill", accept={404, 409})
            if started:
                await self._read_logs(name, logs)
        except ActionError as exc:
            log.warning("docker action %s: container %s: %s", self.name, name, exc.message)
        try:
            await self._json("DELETE", f"/containers/{name}", params={"force": "1"}, accept={404})
        except ActionError as exc:
            log.warning("docker action %s: could not remove container %s: %s", self.name, name, exc.message)

    async def _read_logs(self, name: str, logs: _LogTail) -> None:
        params = {"stdout": "1", "stderr": "1", "tail": str(LOG_TAIL_LINES)}
        async with self._stream("GET", f"/containers/{name}/logs", params=params) as response:
            raw = response.headers.get("content-type", "").startswith(RAW_STREAM)
            frames = _Demultiplexer()
            async for chunk in response.aiter_bytes():
                logs.add(chunk if raw else frames.feed(chunk))
            logs.add(frames.rest())

    async def _json(self, method: str, path: str, *, accept: Collection[int] = (), **kwargs: Any) -> Any:
        """One request; its JSON reply (None when empty or when its status is in `accept`)."""
        async with self._stream(method, path, accept=accept, **kwargs) as response:
            body = await response.aread()
        if response.status_code in accept or not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    @asynccontextmanager
    async def _stream(
        self, method: str, path: str, *, accept: Collection[int] = (), **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """A streamed request; an error reply or a transport failure becomes a classified `ActionError`."""
        where = f"{method} {path}"
        unreachable = f"cannot reach the Docker daemon at {self.docker_host}: "
        async with stream(self.client, method, path, where=where, unreachable=unreachable, **kwargs) as response:
            if not response.is_success and response.status_code not in accept:
                body = await read_bounded(response, MAX_ERROR_BYTES)
                check_response(where, response.status_code, _docker_message(body), response.headers)
            yield response


def split_image(reference: str) -> tuple[str, str]:
    """(`fromImage`, `tag`) for the pull API: a digest or a tag after the last `/`, else `latest`."""
    name, at, digest = reference.partition("@")
    if at:
        return name, digest
    slash, colon = reference.rfind("/"), reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, "latest"


def _connection(host: str, *, tls: bool = False) -> tuple[str, str | None] | None:
    """(base URL, unix socket path or None) for a Docker host address; None when unusable.

    `tcp://` means plain HTTP, or HTTPS when `tls` (DOCKER_TLS_VERIFY is set), as for the docker CLI.
    """
    parts = urlsplit(host)
    if parts.scheme == "unix" and parts.path:
        return SOCKET_BASE_URL, parts.path
    if parts.scheme in ("tcp", "http", "https") and parts.hostname:
        secure = parts.scheme == "https" or (parts.scheme == "tcp" and tls)
        try:
            port = parts.port or (DEFAULT_TLS_PORT if secure else DEFAULT_TCP_PORT)
        except ValueError:
            return None
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{'https' if secure else 'http'}://{hostname}:{port}", None
    return None


def _docker_message(body: bytes) -> bytes:
    """The daemon's error `{"message": "..."}` as its text; other bodies as they are."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        return body
    return message.encode("utf-8") if isinstance(message, str) else body


def _tail(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """The last `limit` characters of `text`, marked when cut: a failing container says why at the end."""
    return text if len(text) <= limit else TRUNCATION_MARK + text[-limit:]


class _Demultiplexer:
    """Payloads of the log stream's frames: an 8-byte header (stream, 0, 0, 0, big-endian size), then data.

    Frames may be split anywhere across chunks; the incomplete part waits for the next one.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        payload = bytearray()
        while len(self._buffer) >= _STREAM_HEADER_SIZE:
            size = int.from_bytes(self._buffer[4:_STREAM_HEADER_SIZE], "big")
            end = _STREAM_HEADER_SIZE + size
            if len(self._buffer) < end:
                break
            payload += self._buffer[_STREAM_HEADER_SIZE:end]
            del self._buffer[:end]
        return bytes(payload)

    def rest(self) -> bytes:
        """What is left of a truncated last frame (its data, without the header)."""
        rest = bytes(self._buffer[_STREAM_HEADER_SIZE:])
        self._buffer.clear()
        return rest


class _LogTail:
    """The last `limit` bytes of the container's output."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()

    def add(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > self.limit:
            del self._data[: len(self._data) - self.limit]

    def text(self) -> str:
        return _tail(self._data.decode("utf-8", errors="replace"))
