"""Client CPU per request of the HTTP clients the URL actions could use, measured in one run (issue #15).

    python bench/http_client.py [--requests 2000] [--rounds 3] [--concurrency 8] [--body 8192] [--json]

A py-spy profile of `bench/pipeline.py` put the webhook/http actions (httpx) at ~47% of the daemon's main
thread. This measures what one POST of an 8 KB JSON body costs the *client* process, nothing else:

- the sink is a keep-alive HTTP/1.1 server in its own process (a `selectors` loop with a hand-made
  parser answering `200` with a 2-byte body), so its CPU is not counted;
- each client runs in this process, under Trio: `--requests` sequential POSTs, then as many with
  `--concurrency` in flight; CPU is `time.process_time()` over the phase (this process only), so
  µs/request is what the client spent, and req/s is what it achieved on a shared machine.

Clients, each through the same shape of call (send, read the reply bounded at 64 KiB, check the status):

- **httpx**: `httpx.AsyncClient` as `open_http_client` builds it, through `send_request` (the URL
  actions' path before #15, still that of the other HTTP actions);
- **httpcore**: `httpcore.AsyncConnectionPool` used directly (httpx's own transport, without httpx);
- **h11**: a minimal keep-alive client on h11 over Trio streams (idle connections in a list; no limits,
  TLS, redirects or cookies): what a client built on h11 costs at least;
- **lean**: `LeanClient` (`postee.actions.lean_http`) as `open_lean_client` builds it, through
  `send_request`: what the URL actions (webhook, http, slack, teams) use now.

Clients take turns within each round (order rotated every round); the median over rounds is reported,
and every row's ratio to httpx. Only ratios within one run mean anything on the shared machines.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_REQUESTS = 2000
DEFAULT_ROUNDS = 3
DEFAULT_CONCURRENCY = 8
DEFAULT_BODY = 8192
LIMIT = 64 * 1024
START_TIMEOUT = 30.0
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


# --- the sink: a keep-alive HTTP/1.1 server, in its own process ------------------------------------

def sink_main(port_queue: Any) -> None:
    """Answer every request with `REPLY`, on as many keep-alive connections as clients open.

    A `selectors` loop with a parser that knows just enough (the head's end, Content-Length): the
    sink must cost little, the machine's other core is the client's.
    """
    import selectors

    selector = selectors.DefaultSelector()
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytearray] = {}
    port_queue.put(listener.getsockname()[1])

    def serve(conn: socket.socket) -> None:
        try:
            data = conn.recv(1 << 20)
        except ConnectionError:
            data = b""
        if not data:
            selector.unregister(conn)
            buffers.pop(conn, None)
            conn.close()
            return
        buffer = buffers[conn]
        buffer += data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            match = _CONTENT_LENGTH.search(buffer, 0, end + 2)
            size = end + 4 + (int(match[1]) if match else 0)
            if len(buffer) < size:
                break
            del buffer[:size]
            answers += 1
        if answers:
            conn.sendall(REPLY * answers)

    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.setblocking(True)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffers[conn] = bytearray()
                selector.register(conn, selectors.EVENT_READ)
            else:
                serve(key.fileobj)  # type: ignore[arg-type]


def start_sink() -> tuple[Any, int]:
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    process = context.Process(target=sink_main, args=(ports,), daemon=True)
    process.start()
    return process, ports.get(timeout=START_TIMEOUT)


# --- the clients --------------------------------------------------------------------------------------

Post = Callable[[], Awaitable[None]]
"""One POST of the body, reply read and checked."""


async def httpx_client(url: str, body: bytes) -> tuple[Post, Callable[[], Awaitable[None]]]:
    from postee.actions.httpclient import open_http_client, send_request

    client = await open_http_client(timeout=30.0)
    headers = {"Content-Type": "application/json"}

    async def post() -> None:
        await send_request(client, "POST", url, content=body, headers=headers)

    return post, client.aclose


async def httpcore_client(url: str, body: bytes) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import httpcore

    from postee.actions.httpclient import USER_AGENT, check_response

    pool = httpcore.AsyncConnectionPool(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
    extensions = {"timeout": {"connect": 30.0, "read": 30.0, "write": 30.0, "pool": 30.0}}

    async def post() -> None:
        headers = [(b"Accept", b"*/*"), (b"Accept-Encoding", b"gzip, deflate"), (b"Connection", b"keep-alive"),
                   (b"User-Agent", USER_AGENT.encode()), (b"Content-Type", b"application/json")]
        async with pool.stream("POST", url, headers=headers, content=body, extensions=extensions) as response:
            chunks, size = [], 0
            async for chunk in response.aiter_stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > LIMIT:
                    break
        check_response("POST", response.status, b"".join(chunks)[:LIMIT], {})

    return post, pool.aclose


async def h11_client(url: str, body: bytes) -> tuple[Post, Callable[[], Awaitable[None]]]:
    """Keep-alive h11 connections in a list (no pool limits, no TLS, no redirects): h11's own floor."""
    from urllib.parse import urlsplit

    import h11
    import trio

    from postee.actions.httpclient import USER_AGENT, check_response

    parts = urlsplit(url)
    host, port, target = parts.hostname or "", parts.port or 80, parts.path or "/"
    idle: list[tuple[trio.SocketStream, h11.Connection]] = []
    headers = [("Host", parts.netloc), ("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate"),
               ("Connection", "keep-alive"), ("User-Agent", USER_AGENT), ("Content-Type", "application/json"),
               ("Content-Length", str(len(body)))]

    async def post() -> None:
        if idle:
            stream, conn = idle.pop()
        else:
            stream, conn = await trio.open_tcp_stream(host, port), h11.Connection(h11.CLIENT)
        data = conn.send(h11.Request(method="POST", target=target, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        with trio.fail_after(30.0):
            await stream.send_all(data)
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with trio.fail_after(30.0):
                    conn.receive_data(await stream.receive_some(LIMIT))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        conn.start_next_cycle()
        idle.append((stream, conn))
        check_response("POST", status, b"".join(chunks), {})

    async def close() -> None:
        for stream, _ in idle:
            await stream.aclose()

    return post, close


async def lean_client(url: str, body: bytes) -> tuple[Post, Callable[[], Awaitable[None]]]:
    from postee.actions.httpclient import open_lean_client, send_request

    client = await open_lean_client(timeout=30.0)
    headers = {"Content-Type": "application/json"}

    async def post() -> None:
        await send_request(client, "POST", url, content=body, headers=headers)

    return post, client.aclose


CLIENTS: dict[str, Callable[[str, bytes], Awaitable[tuple[Post, Callable[[], Awaitable[None]]]]]] = {
    "httpx": httpx_client,
    "httpcore": httpcore_client,
    "h11": h11_client,
    "lean": lean_client,
}


# --- measuring --------------------------------------------------------------------------------------

async def measure(make: Callable[..., Any], url: str, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    """µs of this process's CPU per request and req/s, sequential and with `concurrency` in flight."""
    import trio

    post, close = await make(url, body)
    try:
        for _ in range(20):  # connect, warm caches
            await post()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(requests):
            await post()
        seq_cpu, seq_wall = time.process_time() - cpu, time.perf_counter() - wall

        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await post()

        cpu, wall = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        con_cpu, con_wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await close()
    return {
        "seq_us": seq_cpu / requests * 1e6, "seq_rps": requests / seq_wall,
        "con_us": con_cpu / requests * 1e6, "con_rps": requests / con_wall,
    }


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import trio

    sink, port = start_sink()
    url = f"http://127.0.0.1:{port}/hook?k=v"
    body = json.dumps({"pad": "x" * max(0, args.body - 11)}).encode()
    names = [name for name in CLIENTS if name in args.clients]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[: round_ % len(names)]
            for name in order:
                result = trio.run(measure, CLIENTS[name], url, body, args.requests, args.concurrency)
                samples[name].append(result)
                print(f"  round {round_ + 1} {name:9} " + "  ".join(f"{k} {v:9.1f}" for k, v in result.items()),
                      file=sys.stderr)
    finally:
        sink.kill()
        sink.join(5)
    return {name: {key: statistics.median(s[key] for s in runs) for key in runs[0]} for name, runs in samples.items()}


def table(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    base = results.get("httpx")
    lines = [
        f"{args.requests} POSTs of {args.body} B per phase, median of {args.rounds} rounds; "
        f"concurrent = {args.concurrency} in flight",
        "",
        "| client | seq µs/req | seq req/s | conc µs/req | conc req/s | CPU ratio to httpx (seq / conc) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ratio = (f"{r['seq_us'] / base['seq_us']:.2f} / {r['con_us'] / base['con_us']:.2f}" if base else "-")
        lines.append(f"| {name} | {r['seq_us']:.0f} | {r['seq_rps']:,.0f} | {r['con_us']:.0f} | "
                     f"{r['con_rps']:,.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--body", type=int, default=DEFAULT_BODY, help="bytes of JSON per request")
    parser.add_argument("--clients", nargs="+", default=list(CLIENTS), choices=list(CLIENTS))
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    results = run(args)
    print(json.dumps(results, indent=2) if args.json else table(results, args))


if __name__ == "__main__":
    main()
