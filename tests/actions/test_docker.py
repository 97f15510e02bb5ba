"""The docker action against a local fake Docker daemon on a unix socket.

`FakeDocker` is an ASGI app served by hypercorn on `unix:<tmp>/docker.sock` (or TCP): it speaks the
Engine API endpoints the action uses (image pull with its JSON progress stream, container create,
start, wait, kill, logs as a multiplexed stream, delete) and records every call, so a test checks the
sequence and every field the action sent.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import pytest
import trio
import trustme
from hypercorn.config import Config
from hypercorn.trio import serve

from postee.actions.base import MAX_OUTPUT_CHARS, TRUNCATION_MARK, ActionConfigError, ActionError, ActionSpec, Delivery
from postee.actions.docker import RAW_STREAM, DockerAction, _Demultiplexer, split_image
from postee.actions.retry import send_with_retries

DESCRIPTION = 'CVE-2024-1 in "alpine:3.18" — ünïcode'
DELIVERY = Delivery(content={"title": "t", "description": DESCRIPTION}, route="trivy", event_id="ev-1")
CONTAINER_ID = "4f1c0ffee"
NAME_RE = re.compile(r"^postee-my-docker-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(autouse=True)
def no_docker_environment(monkeypatch):
    """Tests choose the daemon themselves: the machine's DOCKER_* variables must not leak in."""
    for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)


def frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


@attrs.define
class Call:
    method: str
    path: str
    params: dict[str, list[str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class FakeDocker:
    exit_code: int = 0
    logs: list[tuple[int, bytes]] = attrs.field(factory=lambda: [(1, b"hello\n"), (2, b"warn\n"), (1, b"bye\n")])
    raw_logs: bool = False
    chunk_size: int = 5
    """Log bytes per body chunk: small, so frames are split across chunks."""
    statuses: dict[str, list[int]] = attrs.field(factory=dict)
    """Scripted error statuses per endpoint ("pull", "create", "start", "wait", ...), used in order."""
    pull_stream_error: str | None = None
    hang: bool = False
    """`wait` answers only once the container is killed."""
    calls: list[Call] = attrs.field(factory=list)
    waiting: trio.Event = attrs.field(factory=trio.Event)
    killed: trio.Event = attrs.field(factory=trio.Event)

    def endpoints(self) -> list[str]:
        return [f"{call.method} {call.path}" for call in self.calls]

    def call(self, endpoint: str) -> Call:
        return next(call for call in self.calls if f"{call.method} {call.path}" == endpoint)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        call = Call(scope["method"], scope["path"], parse_qs(scope["query_string"].decode()), body)
        self.calls.append(call)
        status, content_type, chunks = await self.handle(call)
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def handle(self, call: Call) -> tuple[int, str, list[bytes]]:
        endpoint = self.endpoint(call)
        scripted = self.statuses.get(endpoint)
        if scripted:
            status = scripted.pop(0)
            return status, "application/json", [json.dumps({"message": f"scripted {endpoint} {status}"}).encode()]
        if endpoint == "pull":
            lines = [{"status": "Pulling from library/alpine", "id": "3.18"}, {"status": "Downloading", "id": "a1"}]
            if self.pull_stream_error:
                lines.append({"errorDetail": {"message": self.pull_stream_error}, "error": self.pull_stream_error})
            else:
                lines.append({"status": "Status: Downloaded newer image"})
            return 200, "application/json", [json.dumps(line).encode() + b"\r\n" for line in lines]
        if endpoint == "create":
            return 201, "application/json", [json.dumps({"Id": CONTAINER_ID, "Warnings": []}).encode()]
        if endpoint in ("start", "kill", "delete"):
            if endpoint == "kill":
                self.killed.set()
            return 204, "text/plain", []
        if endpoint == "wait":
            self.waiting.set()
            if self.hang:
                await self.killed.wait()
                return 200, "application/json", [b'{"StatusCode":137}\n']
            return 200, "application/json", [json.dumps({"StatusCode": self.exit_code, "Error": None}).encode()]
        if endpoint == "logs":
            if self.raw_logs:
                data, kind = b"".join(chunk for _, chunk in self.logs), RAW_STREAM
            else:
                data = b"".join(frame(stream, chunk) for stream, chunk in self.logs)
                kind = "application/vnd.docker.multiplexed-stream"
            return 200, kind, [data[i : i + self.chunk_size] for i in range(0, len(data), self.chunk_size)]
        return 404, "application/json", [b'{"message": "page not found"}']

    @staticmethod
    def endpoint(call: Call) -> str:
        if (call.method, call.path) == ("POST", "/images/create"):
            return "pull"
        if (call.method, call.path) == ("POST", "/containers/create"):
            return "create"
        parts = call.path.strip("/").split("/")
        if parts[0] == "containers" and len(parts) == 2 and call.method == "DELETE":
            return "delete"
        if parts[0] == "containers" and len(parts) == 3:
            return parts[2]
        return "unknown"


@asynccontextmanager
async def docker_daemon(fake: FakeDocker, *, tcp: bool = False, tls: trustme.CA | None = None) -> AsyncIterator[str]:
    """Serve `fake`; yields the DOCKER_HOST to reach it (unix:// by default, tcp:// with `tcp`).

    With `tls`, it serves TLS on TCP with a certificate from that CA and requires a client certificate from it.
    """
    directory = tempfile.mkdtemp(prefix="dk-")  # short: a unix socket path has a 108-byte limit
    try:
        config = Config()
        tcp = tcp or tls is not None
        config.bind = ["127.0.0.1:0"] if tcp else [f"unix:{directory}/docker.sock"]
        if tls is not None:
            tls.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(f"{directory}/server.pem")
            tls.cert_pem.write_to_path(f"{directory}/ca.pem")
            config.certfile = config.keyfile = f"{directory}/server.pem"
            config.ca_certs = f"{directory}/ca.pem"
            config.verify_mode = ssl.CERT_REQUIRED
        config.accesslog = None
        config.errorlog = logging.getLogger("tests.fake_docker")
        config.graceful_timeout = 0.1
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, fake, config, shutdown_trigger=trio.sleep_forever))
            try:
                address = binds[0].split("://", 1)[1]
                yield f"tcp://{address}" if tcp else f"unix://{directory}/docker.sock"
            finally:
                nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def docker_spec(host: str | None, **settings) -> ActionSpec:
    base: dict[str, Any] = {"docker-image-name": "alpine:3.18", "retry-backoff": "0.01s"}
    if host is not None:
        base["docker-host"] = host
    return ActionSpec(name="my docker", type="docker", settings={**base, **settings})


async def test_runs_a_container_and_removes_it():
    fake = FakeDocker()
    settings = {
        "docker-cmd": ["sh", "-c", 'echo "$POSTEE_EVENT"'],
        "docker-env": ["TEAM=sec", "EQ=a=b", "POSTEE_EVENT=overridden"],
        "docker-network": "host",
        "docker-volume-mounts": {"/var/log": "/host-logs", "/data": "/data:ro"},
    }
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host, **settings)) as action:
            result = await action.send(DELIVERY)
    assert fake.endpoints() == [
        "POST /images/create",
        "POST /containers/create",
        f"POST /containers/{CONTAINER_ID}/start",
        f"POST /containers/{CONTAINER_ID}/wait",
        f"GET /containers/{CONTAINER_ID}/logs",
        f"DELETE /containers/{CONTAINER_ID}",
    ]
    assert fake.calls[0].params == {"fromImage": ["alpine"], "tag": ["3.18"]}
    create = fake.calls[1]
    [name] = create.params["name"]
    assert NAME_RE.match(name), name
    body = create.json()
    assert body["Image"] == "alpine:3.18"
    assert body["Cmd"] == ["sh", "-c", 'echo "$POSTEE_EVENT"']
    assert body["Env"] == ["TEAM=sec", "EQ=a=b", f"POSTEE_EVENT={DESCRIPTION}"]
    assert body["HostConfig"] == {"NetworkMode": "host", "Binds": ["/var/log:/host-logs", "/data:/data:ro"]}
    assert body["Labels"] == {"postee.action": "my docker", "postee.route": "trivy", "postee.event": "ev-1"}
    assert body["Tty"] is False
    assert fake.calls[4].params == {"stdout": ["1"], "stderr": ["1"], "tail": ["1000"]}
    assert fake.calls[5].params == {"force": ["1"]}
    assert (result.status, result.output) == (0, "hello\nwarn\nbye\n")


async def test_each_run_gets_its_own_container_name():
    fake = FakeDocker()
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host)) as action:
            await action.send(DELIVERY)
            await action.send(DELIVERY)
    names = [call.params["name"][0] for call in fake.calls if call.path == "/containers/create"]
    assert len(set(names)) == 2


async def test_list_mounts_string_cmd_no_network_no_pull_and_docker_host_from_env(monkeypatch):
    fake = FakeDocker()
    settings = {
        "docker-cmd": "sh -c 'exit 0'",
        "docker-volume-mounts": ["/tmp:/scratch", "named-volume:/cache:rw"],
        "docker-pull": False,
    }
    async with docker_daemon(fake) as host:
        monkeypatch.setenv("DOCKER_HOST", host)
        async with DockerAction.from_spec(docker_spec(None, **settings)) as action:
            await action.send(DELIVERY)
    assert fake.endpoints()[0] == "POST /containers/create"
    body = fake.calls[0].json()
    assert body["Cmd"] == ["sh", "-c", "exit 0"]
    assert body["HostConfig"] == {"Binds": ["/tmp:/scratch", "named-volume:/cache:rw"]}
    assert body["Env"] == [f"POSTEE_EVENT={DESCRIPTION}"]


async def test_tcp_docker_host():
    fake = FakeDocker()
    async with docker_daemon(fake, tcp=True) as host:
        assert host.startswith("tcp://127.0.0.1:")
        async with DockerAction.from_spec(
            docker_spec(host, **{"docker-image-name": "registry:5000/team/tool"})
        ) as action:
            await action.send(DELIVERY)
    assert fake.calls[0].params == {"fromImage": ["registry:5000/team/tool"], "tag": ["latest"]}
    assert len(fake.calls) == 6


async def test_tls_with_client_certificate_from_docker_cert_path(tmp_path, monkeypatch):
    ca = trustme.CA()
    client = ca.issue_cert("postee")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    fake = FakeDocker()
    async with docker_daemon(fake, tls=ca) as host:
        async with DockerAction.from_spec(docker_spec(host)) as action:
            result = await action.send(DELIVERY)
    assert result.status == 0 and len(fake.calls) == 6
    (tmp_path / "ca.pem").unlink()
    with pytest.raises(ActionConfigError, match="DOCKER_TLS_VERIFY is set but .*ca.pem is missing"):
        DockerAction.from_spec(docker_spec("tcp://127.0.0.1:2376"))


async def test_non_zero_exit_is_a_final_failure_with_the_logs():
    fake = FakeDocker(exit_code=3, logs=[(1, b"scanning\n"), (2, b"error: quota exceeded\n")])
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host, retries=3)) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status, report.error.retryable) == (False, 1, 3, False)
    assert report.error.message == "container alpine:3.18 exited with status 3: scanning\nerror: quota exceeded\n"
    assert report.output == "scanning\nerror: quota exceeded\n"
    assert fake.endpoints()[-1] == f"DELETE /containers/{CONTAINER_ID}"


async def test_long_logs_keep_their_end():
    fake = FakeDocker(exit_code=1, logs=[(1, b"x" * 100_000), (2, b"THE REASON\n")], chunk_size=4096)
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host)) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
    assert info.value.output.startswith(TRUNCATION_MARK)
    assert info.value.output.endswith("THE REASON\n")
    assert len(info.value.output) == len(TRUNCATION_MARK) + MAX_OUTPUT_CHARS


async def test_raw_log_stream_is_not_demultiplexed():
    fake = FakeDocker(raw_logs=True, logs=[(1, b"plain tty output\n")])
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host)) as action:
            result = await action.send(DELIVERY)
    assert result.output == "plain tty output\n"


async def test_wait_timeout_kills_and_removes_the_container():
    fake = FakeDocker(hang=True, logs=[(1, b"still working\n")])
    async with docker_daemon(fake) as host:
        spec = docker_spec(host, timeout="0.8s", retries=0, **{"docker-pull": False})
        async with DockerAction.from_spec(spec) as action:
            with trio.fail_after(5):
                report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.error.retryable) == (False, 1, True)
    assert report.error.message == "timed out after 0.8s; the container was killed"
    assert report.output == "still working\n"
    assert fake.endpoints()[2:] == [
        f"POST /containers/{CONTAINER_ID}/wait",
        f"POST /containers/{CONTAINER_ID}/kill",
        f"GET /containers/{CONTAINER_ID}/logs",
        f"DELETE /containers/{CONTAINER_ID}",
    ]


async def test_a_cancelled_send_still_removes_the_container():
    fake = FakeDocker(hang=True)
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host)) as action:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(action.send, DELIVERY)
                with trio.fail_after(5):
                    await fake.waiting.wait()
                nursery.cancel_scope.cancel()
    assert fake.endpoints()[-3:] == [
        f"POST /containers/{CONTAINER_ID}/kill",
        f"GET /containers/{CONTAINER_ID}/logs",
        f"DELETE /containers/{CONTAINER_ID}",
    ]


async def test_pull_refused_is_final_and_creates_nothing():
    fake = FakeDocker(statuses={"pull": [404]})
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host)) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status, report.error.retryable) == (False, 1, 404, False)
    assert report.error.message == "POST /images/create: HTTP 404: scripted pull 404"
    assert fake.endpoints() == ["POST /images/create"]


async def test_pull_5xx_is_retried_per_policy():
    fake = FakeDocker(statuses={"pull": [500, 502]})
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host, retries=2)) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts) == (True, 3)
    assert fake.endpoints().count("POST /images/create") == 3
    assert fake.endpoints().count("POST /containers/create") == 1


async def test_an_error_in_the_pull_stream_fails_the_run():
    fake = FakeDocker(pull_stream_error="unexpected EOF")
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host, retries=1)) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.error.retryable) == (False, 2, True)
    assert report.error.message == "pull alpine:3.18: unexpected EOF"
    assert fake.endpoints() == ["POST /images/create"] * 2


async def test_a_failed_create_is_not_removed_and_a_failed_start_is():
    fake = FakeDocker(statuses={"create": [409], "start": [500]})
    async with docker_daemon(fake) as host:
        async with DockerAction.from_spec(docker_spec(host, **{"docker-pull": False})) as action:
            with pytest.raises(ActionError) as conflict:
                await action.send(DELIVERY)
            with pytest.raises(ActionError) as failed_start:
                await action.send(DELIVERY)
    assert (conflict.value.status, conflict.value.retryable) == (409, False)
    assert (failed_start.value.status, failed_start.value.retryable) == (500, True)
    assert fake.endpoints() == [
        "POST /containers/create",
        "POST /containers/create",
        f"POST /containers/{CONTAINER_ID}/start",
        f"DELETE /containers/{CONTAINER_ID}",
    ]


async def test_an_unreachable_daemon_is_retryable(tmp_path):
    action = DockerAction.from_spec(docker_spec(f"unix://{tmp_path}/absent.sock"))
    async with action:
        with pytest.raises(ActionError) as info:
            await action.send(DELIVERY)
    assert info.value.retryable
    assert f"cannot reach the Docker daemon at unix://{tmp_path}/absent.sock" in info.value.message


def test_missing_image_is_a_config_error():
    with pytest.raises(ActionConfigError) as info:
        DockerAction.from_spec(ActionSpec(name="d", type="docker", settings={"docker-host": "unix:///x.sock"}))
    assert info.value.problems == [("docker-image-name", "required")]
    assert str(info.value) == "actions[d].docker-image-name: required"


def test_bad_settings_are_all_reported():
    settings = {
        "docker-env": ["GOOD=1", "BAD"],
        "docker-volume-mounts": {"/host": "relative"},
        "docker-host": "ssh://me@host",
        "docker-cmd": "sh -c 'unbalanced",
        "docker-pull": "maybe",
    }
    with pytest.raises(ActionConfigError) as info:
        DockerAction.from_spec(docker_spec(None, **settings))
    assert [key for key, _ in info.value.problems] == [
        "docker-cmd",
        "docker-env[1]",
        "docker-volume-mounts./host",
        "docker-host",
        "docker-pull",
    ]


def test_bad_docker_host_from_the_environment(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "npipe:////./pipe/docker_engine")
    with pytest.raises(ActionConfigError, match="from DOCKER_HOST"):
        DockerAction.from_spec(docker_spec(None))


def test_default_docker_host():
    assert DockerAction.from_spec(docker_spec(None)).docker_host == "unix:///var/run/docker.sock"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("alpine", ("alpine", "latest")),
        ("alpine:3.18", ("alpine", "3.18")),
        ("registry:5000/team/tool", ("registry:5000/team/tool", "latest")),
        ("registry:5000/team/tool:v2", ("registry:5000/team/tool", "v2")),
        ("alpine@sha256:abc", ("alpine", "sha256:abc")),
    ],
)
def test_split_image(reference, expected):
    assert split_image(reference) == expected


def test_demultiplexer_handles_frames_split_anywhere():
    data = frame(1, b"out") + frame(2, b"") + frame(2, b"err\n") + frame(1, b"x" * 300)
    for size in (1, 3, 8, 9, len(data)):
        demux = _Demultiplexer()
        payload = b"".join(demux.feed(data[i : i + size]) for i in range(0, len(data), size))
        assert payload + demux.rest() == b"outerr\n" + b"x" * 300
    truncated = _Demultiplexer()
    assert truncated.feed(frame(1, b"complete") + frame(1, b"cut off")[:-3]) == b"complete"
    assert truncated.rest() == b"cut "
