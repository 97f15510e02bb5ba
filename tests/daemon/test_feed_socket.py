"""`/feed`, the live feed as a WebSocket, on a real listener with a real client (trio-websocket).

A standalone node (real HTTP on port 0, SQLite file, Rego in a thread) whose action is a recorder:
the client receives exactly the events and executions that happened, in order; filters and bodies
work; the upgrade is refused without the API key (401) and on any other path (404, not 500).
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from postee.embed import NodeOptions, NodeParts, open_standalone
from postee.sim.recording import Conduct, Recordings, always_ok, recording_factory
from tests.daemon.helpers import webhook_route


@asynccontextmanager
async def running_node(tmp_path, plan=always_ok, recordings=None, environ=None, **options_given):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(webhook_route("https://hooks.example.com/x", route="all") + "    retries: 0\n")
    options = NodeOptions(cfgfile=str(cfg), http_bind="127.0.0.1:0", https_bind=None, db_path=str(tmp_path / "db"),
                          rego_isolation="thread", rego_workers=1, environ=environ or {}, **options_given)
    parts = NodeParts(actions=recording_factory("node", recordings or Recordings(), plan))
    async with open_standalone(options, parts=parts) as running:
        yield running


@pytest.fixture
async def node(tmp_path):
    async with running_node(tmp_path) as running:
        yield running


def failing_the_second_event():
    """A plan under which the second event's action fails (each event's send starts in arrival order)."""
    seen: list[str] = []

    def plan(node: str, action: str, event_id: str, attempt: int) -> Conduct:
        if event_id not in seen:
            seen.append(event_id)
        return Conduct("fail") if seen.index(event_id) == 1 else Conduct()

    return plan


def ws_url(node, query: str = "") -> str:
    return node.urls[0].replace("http://", "ws://") + "/feed" + (f"?{query}" if query else "")


def bearer(node) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {node.api_key()}".encode())]


async def post_events(node, count: int) -> None:
    async with httpx.AsyncClient(base_url=node.urls[0], timeout=10) as client:
        for n in range(count):
            assert (await client.post("/", content=json.dumps({"image": f"img-{n}"}))).status_code == 200


async def read(ws, count: int) -> list[dict]:
    with trio.fail_after(10):
        return [json.loads(await ws.get_message()) for _ in range(count)]


async def test_a_client_receives_every_event_and_execution_in_order(node):
    async with open_websocket_url(ws_url(node), extra_headers=bearer(node)) as ws:
        await post_events(node, 3)
        messages = await read(ws, 9)
    events = [m for m in messages if m["type"] == "event" and m["stage"] == "accepted"]
    routed = [m for m in messages if m["type"] == "event" and m["stage"] == "routed"]
    executions = [m for m in messages if m["type"] == "execution"]
    assert len(events) == 3 and len(executions) == 3
    assert [e["source"] for e in events] == ["webhook"] * 3 and all("body" not in e for e in events)
    # once its one route decided, each event says which routes it matched
    assert [(r["id"], r["routes"], r["failed"]) for r in routed] == [(e["id"], ["all"], []) for e in events]
    for event in events:  # accepted before routed
        assert messages.index(event) < next(i for i, m in enumerate(messages) if m in routed and m["id"] == event["id"])
    assert [x["event_id"] for x in executions] == [e["id"] for e in events]  # one route, in arrival order
    assert {(x["node"], x["route"], x["action"], x["status"], x["attempts"]) for x in executions} == {
        ("standalone", "all", "hook", "ok", 1)}


async def test_filters_and_bodies(tmp_path):
    async with running_node(tmp_path, failing_the_second_event()) as node, \
            open_websocket_url(ws_url(node, "types=event&bodies=1"), extra_headers=bearer(node)) as events, \
            open_websocket_url(ws_url(node, f"types=execution&status=failed&key={node.api_key()}")) as failures:
        await post_events(node, 2)
        got = [m for m in await read(events, 4) if m["stage"] == "accepted"]
        assert [m["body"] for m in got] == [{"image": "img-0"}, {"image": "img-1"}]
        # the first event's (successful) execution came first: the filter let only the failed one through
        [failed] = await read(failures, 1)
        assert (failed["type"], failed["status"], failed["event_id"]) == ("execution", "failed", got[1]["id"])


@pytest.mark.parametrize("headers", [[], [(b"authorization", b"Bearer wrong")]])
async def test_without_the_api_key_the_upgrade_is_refused(node, headers):
    with pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(ws_url(node), extra_headers=headers):
            pass
    assert refused.value.status_code == 401


async def test_an_upgrade_on_another_path_is_a_404_not_a_500(node):
    with pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(node.urls[0].replace("http://", "ws://") + "/events", extra_headers=bearer(node)):
            pass
    assert refused.value.status_code == 404


def restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_postee_events_follow_prints_the_feed_and_exits_cleanly_on_ctrl_c(node):
    """The CLI client: one readable line per message, reconnecting; SIGINT ends it with status 0."""
    command = [sys.executable, "-m", "postee", "events", "--follow", "--url", node.urls[0], "--key", node.api_key(),
               "--types", "execution"]
    async with trio.open_nursery() as nursery:
        # SIGINT's default disposition: a suite run in a background job (as CI may) inherits it ignored
        process = await nursery.start(functools.partial(trio.run_process, command, stdout=subprocess.PIPE,
                                                        stderr=subprocess.PIPE, check=False,
                                                        preexec_fn=restore_sigint))
        stderr = bytearray()  # read all along: a full pipe would block the process

        async def drain_stderr() -> None:
            async for chunk in process.stderr:
                stderr.extend(chunk)

        nursery.start_soon(drain_stderr)
        lines: list[str] = []
        with trio.fail_after(30):
            while not node.feed.wanted():  # connected: the node's feed has its subscriber
                await trio.sleep(0.05)
            await post_events(node, 2)
            buffer = b""
            while len(lines) < 2:
                buffer += await process.stdout.receive_some(4096)
                *complete, buffer = buffer.split(b"\n")
                lines += [line.decode() for line in complete]
        process.send_signal(signal.SIGINT)
        with trio.move_on_after(30):
            await process.wait()
        if process.returncode is None:  # say what it was doing instead of hanging the suite
            process.kill()
            await process.wait()
            raise AssertionError(f"postee events did not exit on SIGINT; stderr: {stderr.decode(errors='replace')}")
    assert process.returncode == 0
    assert all(line.startswith("execution ok") and " standalone all/hook event " in line for line in lines[:2])


async def test_postee_events_without_follow_prints_the_recent_events_once(node):
    await post_events(node, 2)
    done = await trio.run_process([sys.executable, "-m", "postee", "events", "--json", "--url", node.urls[0],
                                   "--key", node.api_key()], capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [e["event"]["image"] for e in events] == ["img-0", "img-1"]
    refused = await trio.run_process([sys.executable, "-m", "postee", "events", "--url", node.urls[0], "--key", "no"],
                                     capture_stdout=True, capture_stderr=True, check=False)
    assert refused.returncode == 1 and b"401" in refused.stderr


def test_a_refused_connection_is_said_in_words_not_as_an_empty_handshake_error():
    """trio-websocket raises a bare `HandshakeError` from the `OSError`: `postee events` printed
    "HandshakeError: " while the node was down."""
    from trio_websocket import HandshakeError

    from postee.cli_events import _reason

    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise HandshakeError from exc
    except HandshakeError as exc:
        assert _reason(exc) == "connection refused"


async def stuck_client(node, query: str) -> trio.SocketStream:
    """A client that completes the WebSocket handshake, then never reads (a tiny receive buffer, so the
    node's sends back up at once instead of filling megabytes of kernel buffers first)."""
    host, port = node.urls[0].removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all((f"GET /feed?{query} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await stream.receive_some(1)  # the handshake's answer, byte by byte: nothing of the feed
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return stream


async def test_a_client_that_stops_reading_is_disconnected_and_the_pipeline_keeps_its_pace(tmp_path):
    """The node gives one message `feed_send_timeout` seconds, then closes the connection; meanwhile
    every event ran, and a client that reads got every message."""
    recordings = Recordings()
    async with running_node(tmp_path, recordings=recordings, stuck_client_timeout=1) as node, \
            open_websocket_url(ws_url(node, "types=event&bodies=1"), extra_headers=bearer(node)) as reader:
        stuck = await stuck_client(node, f"bodies=1&key={node.api_key()}")
        with trio.fail_after(10):
            while node.feed.subscribers < 2:
                await trio.sleep(0.01)
        big = "x" * 100_000
        received: list[dict] = []

        async def read_all() -> None:
            while len(received) < 2 * 60:
                received.append(json.loads(await reader.get_message()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            async with httpx.AsyncClient(base_url=node.urls[0], timeout=10) as client:
                for n in range(60):  # 6 MB of bodies for the stuck client: more than loopback buffers hold
                    answer = await client.post("/", content=json.dumps({"image": f"img-{n}", "pad": big}))
                    assert answer.status_code == 200
            with trio.fail_after(20):
                while node.feed.subscribers > 1:  # the stuck client was let go
                    await trio.sleep(0.05)
                while len(recordings.calls) < 60:
                    await trio.sleep(0.05)
        await stuck.aclose()
    assert sorted(c.event_id for c in recordings.calls) == sorted(
        m["id"] for m in received if m["stage"] == "accepted")  # every event ran, the reader heard each
    assert [m["type"] for m in received].count("dropped") == 0


async def test_a_stopping_node_tells_its_feed_clients_at_once(tmp_path):
    """The feed closes before the listeners wait for their connections: a connected client hears "node
    stopping" (1001) at once, instead of holding the stop for the listeners' 10 s grace."""
    async with running_node(tmp_path) as node, \
            open_websocket_url(ws_url(node), extra_headers=bearer(node)) as client:
        with trio.fail_after(10):
            while not node.feed.wanted():
                await trio.sleep(0.01)
        node.request_stop()
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            await client.get_message()
    assert (closed.value.reason.code, closed.value.reason.reason) == (1001, "node stopping")
