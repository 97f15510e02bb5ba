"""The live feed's back-pressure (issue #14): pipeline throughput with 20 `/feed` clients, one stuck, vs none.

    python bench/feed.py [--events 600] [--rounds 3] [--clients 20] [--concurrency 8] [--json]

The issue asks that "the pipeline's throughput with 20 connected clients, one of them never reading,
stays within 10% of its throughput with none". One real daemon (`python -m postee`, the API key in
`POSTEE_API_KEY`, regorus when installed, else regopy) runs a small fast config: 2 routes with inline
rules, the cheap `postee.rawmessage.json` template, and one `http` action each posting to a local sink.
The sink, the load generator (httpx, keep-alive connections) and the helpers are `bench/pipeline.py`'s.

Phases alternate in one run, `--rounds` of each, the order swapped every round (none, 20, 20, none,
none, 20, ...) so that a drift of the shared machine hits both modes alike; medians are compared:

- **none**: no feed client; the node builds no feed message at all (`Feed.wanted()` is false).
- **20 clients**: before the load starts, a separate process (so their CPU is not the daemon's)
  connects `--clients - 1` readers that read and count everything (every fourth asks `?bodies=1`, half
  authenticate by header, half by `?key=`), and one stuck client: a raw socket with
  `SO_RCVBUF` 4096 set before connecting, which completes the WebSocket handshake (wsproto, with
  `?bodies=1` so that its kernel buffers fill after a few messages) and then reads nothing. After the
  timed phase it reads what was kept for it: the messages, and the feed's `dropped` notice.

The readers are cheap, since their process shares the machine's cores with the daemon: a raw socket each,
the WebSocket handshake by hand, and a minimal parser of the server's frames that counts the text
messages, checks that each starts like a feed message (`{"type": "`), parses one in `SAMPLE_EVERY` as
JSON and every `dropped` notice (trio-websocket and a `json.loads` per message cost ~80 us a message).

Throughput = N / (first POST -> last of the 2N sink arrivals). Also per phase: the daemon main process's
CPU ms/event (from /proc; its Rego workers, the clients' process, the load generator, the sink
separately), what each reader received (the node does not export what it published: readers that all got
the same count and no `dropped` notice got everything, and that count is taken as what was published),
the stuck connection's bytes queued in the kernel (both ends, from /proc/net/tcp) at the end of the
phase, and what the stuck client got once it read: the messages kept for it plus the `dropped` notice
should add up to what was published.

The machines are shared and noisy: only the ratio within one run means anything. Every wait has a
timeout, and every process started here is killed on the way out.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import multiprocessing
import os
import secrets
import socket
import statistics
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline import (  # noqa: E402 (after the path tweak, as a script)
    Daemon,
    cpu_seconds,
    run_load,
    sink_main,
    stop_process,
    wait_for_arrivals,
    workers_of,
    write_config,
)

RULES = {"image": 'contains(input.image, "all-in-one")', "registry": 'input.registry == "Aqua"'}
TEMPLATE_PACKAGE = "postee.rawmessage.json"
WARMUP_EVENTS = 50
STUCK_RCVBUF = 4096
BODIES_EVERY = 4  # readers 0, 4, 8, ... ask `?bodies=1`
READ_SIZE = 65536
SAMPLE_EVERY = 100  # a reader parses one message in this many as JSON (and every `dropped` notice)
MESSAGE_PREFIX = b'{"type": "'  # what every feed message starts with (`json.dumps` of a dict, "type" first)
DROPPED_PREFIX = b'{"type": "dropped"'
FEED_TYPES = frozenset({"event", "execution", "runner"})

START_TIMEOUT = 60.0  # daemon ready, sink started, clients connected
PHASE_TIMEOUT = 60.0  # one load phase, and the wait for every sink arrival
READ_TIMEOUT = 30.0  # readers catching up after the phase
READ_QUIET = 0.5  # ... done once none of them received anything for this long
DRAIN_TIMEOUT = 20.0  # the stuck client reading what was kept for it
DRAIN_QUIET = 2.0  # ... until nothing more comes for this long

MODES = ("none", "clients")


# --- the feed clients (run in their own process) ----------------------------------------------------

def clients_main(host: str, port: int, key: str, readers: int, commands: Any, results: Any) -> None:
    """Connect the readers and the stuck client, say so, then when told (the phase is over) wait for the
    readers to receive everything, let the stuck client read what was kept for it, and report the counts."""
    import trio

    async def main() -> None:
        counts = [{"messages": 0, "dropped": 0, "bytes": 0, "bodies": i % BODIES_EVERY == 0} for i in range(readers)]
        async with trio.open_nursery() as nursery:
            with trio.fail_after(START_TIMEOUT):
                for i in range(readers):
                    await nursery.start(_reader, host, port, key, counts[i], i)
                stuck = await _StuckClient.connect(host, port, key)
            results.put({"ready": True, "stuck_port": stuck.local_port})
            await trio.to_thread.run_sync(commands.get, True, START_TIMEOUT + 2 * PHASE_TIMEOUT,
                                          abandon_on_cancel=True)
            readers_done = await _readers_quiet(counts)
            published = max((c["messages"] for c in counts), default=None)  # readers keep up: they get everything
            stuck_result = await stuck.drain(published)
            results.put({"readers": counts, "readers_done": readers_done, "published": published,
                         "stuck": stuck_result, "cpu": sum(os.times()[:2])})
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseException as exc:  # the parent waits on `results`: tell it instead of leaving it to time out
        results.put({"error": "".join(traceback.format_exception(exc))[-3000:]})
        raise


async def _readers_quiet(counts: list[dict[str, Any]]) -> bool:
    """Wait until no reader has received anything for `READ_QUIET` (False: still receiving at `READ_TIMEOUT`).
    The bench does not know how many messages a node publishes per event (that is the node's business):
    the readers, which keep up, got all of them once the node has finished the phase's events."""
    import trio

    with trio.move_on_after(READ_TIMEOUT):
        while True:
            before = [c["messages"] + c["dropped"] for c in counts]
            await trio.sleep(READ_QUIET)
            if before == [c["messages"] + c["dropped"] for c in counts]:
                return True
    return False


async def _reader(host: str, port: int, key: str, count: dict[str, Any], index: int, task_status: Any) -> None:
    """A client that keeps up: counts every message (and the `dropped` notices, which it should not get).

    A raw socket and `_FrameCounter`, not a WebSocket library: 19 trio-websocket readers cost ~80 us of
    CPU per message (the library and `json.loads`) on the cores the daemon runs on, which throttled it."""
    import trio

    query = "?bodies=1" if count["bodies"] else ""
    headers: list[str] = []
    if index % 2:
        headers = [f"Authorization: Bearer {key}"]
    else:
        query = f"{query}{'&' if query else '?'}key={key}"
    sock = trio.socket.socket()
    try:
        await sock.connect((host, port))
        counter = _FrameCounter(count)
        counter.receive(await _handshake(sock, f"{host}:{port}", f"/feed{query}", headers))
        task_status.started()
        while counter.open:
            data = await sock.recv(READ_SIZE)
            if not data:
                count.setdefault("closed", "end of stream")
                return
            counter.receive(data)
    finally:
        sock.close()


async def _handshake(sock: Any, host: str, target: str, headers: list[str]) -> bytes:
    """The client's side of the WebSocket upgrade, by hand (the request, then the 101 and its accept token
    checked); what came after the answer's headers is returned: the first frames, already."""
    from wsproto.utilities import generate_accept_token

    nonce = base64.b64encode(secrets.token_bytes(16))
    request = [f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
               f"Sec-WebSocket-Key: {nonce.decode()}", "Sec-WebSocket-Version: 13", *headers, "", ""]
    await sock.send("\r\n".join(request).encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = await sock.recv(READ_SIZE)
        if not data or len(answer) > 65536:
            raise ConnectionError(f"no WebSocket handshake answer from the node: {answer[:200]!r}")
        answer += data
    head, rest = answer.split(b"\r\n\r\n", 1)
    status, *lines = head.split(b"\r\n")
    fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}
    if not status.startswith(b"HTTP/1.1 101") or fields.get(b"sec-websocket-accept") != generate_accept_token(nonce):
        raise ConnectionError(f"the node refused a reader: {head[:300]!r}")
    return rest


class _FrameCounter:
    """Counts the text messages in a server's WebSocket byte stream, cheaply (a few us each).

    The server's frames are unmasked and, from this node, never fragmented: anything else is a protocol
    error here. Pings and pongs are ignored, a close frame ends the count. No message is decoded, only
    checked to look like one of the feed's (`{"type": "...`); one in `SAMPLE_EVERY` is parsed as JSON,
    and every `dropped` notice (its count is what this reader lost)."""

    def __init__(self, count: dict[str, Any]) -> None:
        self.count = count
        count.update(sampled=0, malformed=0)
        self.open = True
        self._buffer = bytearray()

    def receive(self, data: bytes) -> None:
        """Take `data`; count the complete messages in what was received so far."""
        buffer = self._buffer
        buffer += data
        pos, end = 0, len(buffer)
        while self.open and end - pos >= 2:
            frame = self._frame(buffer, pos, end)
            if frame is None:
                break
            first, start, pos = frame
            self._handle(buffer, first & 0x0F, start, pos, bool(first & 0x80))
        del buffer[:pos]

    @staticmethod
    def _frame(buffer: bytearray, pos: int, end: int) -> tuple[int, int, int] | None:
        """(first header byte, payload start, payload end) of the frame at `pos`; None: not all received."""
        first, second = buffer[pos], buffer[pos + 1]
        if second & 0x80:
            raise ConnectionError("the node sent a masked frame")
        size, start = second & 0x7F, pos + 2
        if size >= 126:
            width = 2 if size == 126 else 8
            if end - start < width:
                return None
            size, start = int.from_bytes(buffer[start:start + width], "big"), start + width
        return None if end - start < size else (first, start, start + size)

    def _handle(self, buffer: bytearray, opcode: int, start: int, end: int, final: bool) -> None:
        count = self.count
        if opcode == 0x1 and final:
            count["bytes"] += end - start
            if buffer.startswith(DROPPED_PREFIX, start):
                count["dropped"] += json.loads(buffer[start:end])["count"]
                return
            count["messages"] += 1
            if not buffer.startswith(MESSAGE_PREFIX, start):
                count["malformed"] += 1
            elif count["messages"] % SAMPLE_EVERY == 0:
                self._sample(bytes(buffer[start:end]))
        elif opcode == 0x8:
            count["closed"] = int.from_bytes(buffer[start:start + 2], "big") if end - start >= 2 else 1005
            self.open = False
        elif opcode not in (0x9, 0xA):
            raise ConnectionError(f"unexpected frame from the node: opcode {opcode}, final {final}")

    def _sample(self, payload: bytes) -> None:
        """Parse one message in full: a JSON object of one of the feed's types."""
        self.count["sampled"] += 1
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("type") not in FEED_TYPES:
            self.count["malformed"] += 1


class _StuckClient:
    """A WebSocket client that never reads until told to: its kernel buffer is kept small (`SO_RCVBUF` set
    before connecting, so the window is small from the start) so that the server's sends block soon."""

    def __init__(self, sock: Any, ws: Any, local_port: int) -> None:
        self.sock, self.ws, self.local_port = sock, ws, local_port
        self.messages = 0  # the messages parsed with the handshake's answer, then while draining
        self.dropped = 0
        self.notices = 0
        self.close_code: int | None = None
        self._text: list[str] = []  # the fragments of the message being received

    @classmethod
    async def connect(cls, host: str, port: int, key: str) -> _StuckClient:
        import trio
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, RejectConnection, Request

        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STUCK_RCVBUF)
        await sock.connect((host, port))
        ws = WSConnection(ConnectionType.CLIENT)
        await sock.send(ws.send(Request(host=f"{host}:{port}", target=f"/feed?bodies=1&key={key}")))
        client = cls(sock, ws, sock.getsockname()[1])
        while True:
            data = await sock.recv(STUCK_RCVBUF)
            if not data:
                raise ConnectionError("the node closed the stuck client's connection during the handshake")
            ws.receive_data(data)
            events = list(ws.events())
            if any(isinstance(e, RejectConnection) for e in events):
                raise ConnectionError("the node refused the stuck client")
            if any(isinstance(e, AcceptConnection) for e in events):
                client._count(events)
                return client

    def _count(self, events: list[Any]) -> None:
        from wsproto.events import CloseConnection, TextMessage

        for event in events:
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    self._message("".join(self._text))
                    self._text = []
            elif isinstance(event, CloseConnection):
                self.close_code = event.code

    def _message(self, text: str) -> None:
        if text.startswith('{"type": "dropped"'):
            self.notices += 1
            self.dropped += json.loads(text)["count"]
        else:
            self.messages += 1

    async def drain(self, published: int | None) -> dict[str, Any]:
        """Read what the node kept for this client: until every published message is accounted for (received
        or announced as dropped; unknown without readers), the connection closes, nothing comes for a
        while, or the time is up."""
        import trio

        with trio.move_on_after(DRAIN_TIMEOUT):
            while (published is None or self.messages + self.dropped < published) and self.close_code is None:
                with trio.move_on_after(DRAIN_QUIET) as quiet:
                    data = await self.sock.recv(65536)
                if quiet.cancelled_caught or not data:
                    break
                self.ws.receive_data(data)
                self._count(list(self.ws.events()))
        self.sock.close()
        return {"messages": self.messages, "dropped": self.dropped, "notices": self.notices,
                "close_code": self.close_code}


class Clients:
    """The clients' process, seen from the bench: start (connected), finish (counts), stop."""

    def __init__(self, port: int, key: str, readers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.commands, self.results = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=clients_main, daemon=True,
                                   args=("127.0.0.1", port, key, readers, self.commands, self.results))
        self.process.start()
        self.pid = self.process.pid
        self.stuck_port = self._answer(START_TIMEOUT + 10)["stuck_port"]

    def _answer(self, timeout: float) -> dict[str, Any]:
        answer = self.results.get(timeout=timeout)
        if "error" in answer:
            raise RuntimeError(f"feed clients failed: {answer['error']}")
        return answer

    def finish(self) -> dict[str, Any]:
        self.commands.put("finish")
        return self._answer(READ_TIMEOUT + DRAIN_TIMEOUT + 10)

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        stop_process(self.process)


def tcp_queue(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(send queue, receive queue) in bytes of the loopback TCP connection local_port -> remote_port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local, remote) == (local_port, remote_port):
            tx, rx = fields[4].split(":")
            return int(tx, 16), int(rx, 16)
    return None


# --- the daemon -----------------------------------------------------------------------------------

def feed_daemon(engine: str, workdir: Path, sink_port: int, key: str) -> Daemon:
    """`bench/pipeline.py`'s daemon (readiness, log tail, stop) with this bench's config and an API key:
    2 routes with inline rules that match the Aqua fixture, the cheap raw-message template, one http
    action each."""
    config = functools.partial(write_config, name="bench-feed", rules=RULES, package=TEMPLATE_PACKAGE)
    return Daemon(engine, workdir, sink_port, env_extra={"POSTEE_API_KEY": key}, config=config)


def pick_engine() -> str:
    """regorus when installed (the engine cost then hides less of the feed's), else regopy."""
    try:
        import regorus  # noqa: F401
    except ImportError:
        return "regopy"
    return "regorus"


# --- one phase ------------------------------------------------------------------------------------

def run_phase(mode: str, index: int, daemon: Daemon, key: str, sink: str, sink_pid: int,
              client: Any, args: argparse.Namespace) -> dict[str, Any]:
    """N events with (`clients`) or without (`none`) feed clients connected; the measures of the phase."""
    client.get(f"{sink}/_reset")
    clients = Clients(daemon.port, key, args.clients - 1) if mode == "clients" else None
    try:
        workers = workers_of(daemon.process.pid)
        pids = {"main": daemon.process.pid, "sink": sink_pid, **({"clients": clients.pid} if clients else {})}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        before["workers"] = sum(cpu_seconds(pid) for pid in workers)
        load = run_load(daemon.url, events=args.events, seq0=1_000_000 * (index + 1), concurrency=args.concurrency,
                        rate=None, retry=True, timeout=PHASE_TIMEOUT)
        wait_for_arrivals(client, sink, len(RULES) * args.events, PHASE_TIMEOUT)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        after["workers"] = sum(cpu_seconds(pid) for pid in workers)
        last = max(arrival[0] for arrival in json.loads(client.get(f"{sink}/_records").text))
        cpu = {name: (after[name] - before[name]) * 1000 / args.events for name in after}
        cpu["load generator"] = load["cpu"] * 1000 / args.events
        result: dict[str, Any] = {"mode": mode, "events": args.events,
                                  "throughput": args.events / (last - load["first"]), "cpu_ms": cpu,
                                  "503": load["503"], "errors": load["errors"] + load["other"]}
        if clients is not None:
            result["kernel"] = {"server_send_q": tcp_queue(daemon.port, clients.stuck_port),
                                "stuck_recv_q": tcp_queue(clients.stuck_port, daemon.port)}
            result["feed"] = clients.finish()
            result["published"] = result["feed"]["published"]
        return result
    finally:
        if clients is not None:
            clients.stop()


# --- report ---------------------------------------------------------------------------------------

def summarize(phases: list[dict[str, Any]]) -> dict[str, Any]:
    by_mode = {mode: [p for p in phases if p["mode"] == mode] for mode in MODES}
    median = {mode: statistics.median(p["throughput"] for p in ps) for mode, ps in by_mode.items()}
    cpu = {mode: {name: statistics.median(p["cpu_ms"][name] for p in ps) for name in ps[0]["cpu_ms"]}
           for mode, ps in by_mode.items()}
    sent = statistics.median(_sent(p) / p["events"] for p in by_mode["clients"])
    extra_ms = cpu["clients"]["main"] - cpu["none"]["main"]
    return {"throughput_median": median, "ratio": median["clients"] / median["none"], "cpu_ms_median": cpu,
            "sent_per_event": sent, "main_us_per_sent_message": extra_ms * 1000 / sent if sent else None}


def _sent(phase: dict[str, Any]) -> int:
    """WebSocket messages the node sent during a phase: what the readers got. (The stuck client's are left
    out: during the phase only the few that fit in the kernel's buffers went out, the rest after it.)"""
    return sum(r["messages"] for r in phase["feed"]["readers"])


def _notes(phase: dict[str, Any]) -> str:
    intake = f"{phase['503']} x 503 retried; " if phase["503"] else ""
    intake += f"{phase['errors']} failed POSTs; " if phase["errors"] else ""
    return intake + ("" if phase["mode"] == "none" else _feed_cell(phase))


def _feed_cell(phase: dict[str, Any]) -> str:
    feed, kernel = phase["feed"], phase["kernel"]
    got = [r["messages"] for r in feed["readers"]] or [0]
    reader_drops = sum(r["dropped"] for r in feed["readers"])
    malformed = sum(r["malformed"] for r in feed["readers"])
    stuck = feed["stuck"]
    send_q = kernel["server_send_q"][0] if kernel["server_send_q"] else "?"
    recv_q = kernel["stuck_recv_q"][1] if kernel["stuck_recv_q"] else "?"
    published = "? (no reader)" if phase["published"] is None else \
        f"{phase['published']} ({phase['published'] / phase['events']:.2f}/event)"
    return (f"published {published}; readers got {min(got)}..{max(got)}, dropped {reader_drops}"
            + (f", MALFORMED {malformed}" if malformed else "") + "; "
            f"stuck: kernel send-q {send_q} B / recv-q {recv_q} B, then read {stuck['messages']} "
            f"+ dropped {stuck['dropped']}" + (f", closed {stuck['close_code']}" if stuck["close_code"] else "")
            + ("" if feed["readers_done"] else "; READERS STILL RECEIVING at the timeout"))


def report(result: dict[str, Any]) -> None:
    summary = result["summary"]
    print(f"\nengine {result['engine']}, {result['events']} events per phase over {result['concurrency']} "
          f"connections, {result['clients']} feed clients ({result['clients'] - 1} readers + 1 stuck)\n")
    print(f"{'#':>2}  {'mode':<10} {'events/s':>9} {'main ms/ev':>10} {'workers':>8} {'clients':>8}  feed")
    for i, phase in enumerate(result["phases"], 1):
        cpu = phase["cpu_ms"]
        print(f"{i:>2}  {phase['mode']:<10} {phase['throughput']:>9.1f} {cpu['main']:>10.2f} {cpu['workers']:>8.2f} "
              f"{cpu.get('clients', 0.0):>8.2f}  {_notes(phase)}")
    none, clients = summary["throughput_median"]["none"], summary["throughput_median"]["clients"]
    main = summary["cpu_ms_median"]
    print(f"\nmedian events/s: none {none:.1f}, {result['clients']} clients {clients:.1f}; "
          f"ratio {summary['ratio']:.3f} (target >= 0.90: {'met' if summary['ratio'] >= 0.9 else 'MISSED'})")
    print(f"median daemon main CPU ms/event: none {main['none']['main']:.2f}, "
          f"{result['clients']} clients {main['clients']['main']:.2f}; "
          f"clients' process {main['clients'].get('clients', 0.0):.2f} ms/event")
    if summary["main_us_per_sent_message"] is not None:
        print(f"feed messages sent per event {summary['sent_per_event']:.1f}: the daemon main process spends "
              f"{summary['main_us_per_sent_message']:.0f} us of CPU more per message sent")


# --- main -----------------------------------------------------------------------------------------

def schedule(rounds: int) -> list[str]:
    """none, clients, clients, none, none, clients, ...: each mode first every other round."""
    return [mode for r in range(rounds) for mode in (MODES if r % 2 == 0 else MODES[::-1])]


def bench(args: argparse.Namespace, sink: str, sink_port: int, sink_pid: int, workdir: Path) -> dict[str, Any]:
    import httpx

    engine, key = pick_engine(), secrets.token_urlsafe(24)
    daemon = feed_daemon(engine, workdir, sink_port, key)
    try:
        with httpx.Client(timeout=10.0) as client:
            daemon.wait_ready(client)
            print(f"daemon pid {daemon.process.pid} ready ({engine}); warm-up", file=sys.stderr, flush=True)
            client.get(f"{sink}/_reset")
            run_load(daemon.url, events=WARMUP_EVENTS, seq0=0, concurrency=args.concurrency, rate=None,
                     retry=True, timeout=PHASE_TIMEOUT)
            wait_for_arrivals(client, sink, len(RULES) * WARMUP_EVENTS, PHASE_TIMEOUT)
            phases = []
            for index, mode in enumerate(schedule(args.rounds)):
                print(f"phase {index + 1}: {mode}, {args.events} events ...", file=sys.stderr, flush=True)
                phases.append(run_phase(mode, index, daemon, key, sink, sink_pid, client, args))
    except Exception:
        print(f"daemon log tail:\n{daemon.tail()}", file=sys.stderr)
        raise
    finally:
        daemon.stop()
    return {"engine": engine, "events": args.events, "concurrency": args.concurrency, "clients": args.clients,
            "phases": phases, "summary": summarize(phases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600, help="events per phase")
    parser.add_argument("--rounds", type=int, default=3, help="phases of each mode")
    parser.add_argument("--clients", type=int, default=20, help="feed clients in the loaded mode (one of them stuck)")
    parser.add_argument("--concurrency", type=int, default=8, help="load generator keep-alive connections")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.clients < 1 or args.rounds < 1 or args.events < 1:
        parser.error("--clients, --rounds and --events must be at least 1")

    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    sink_process = ctx.Process(target=sink_main, args=(port_queue,), daemon=True)
    sink_process.start()
    try:
        sink_port = port_queue.get(timeout=START_TIMEOUT)
        with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
            result = bench(args, f"http://127.0.0.1:{sink_port}", sink_port, sink_process.pid, Path(tmp))
    finally:
        sink_process.kill()
        sink_process.join(timeout=5)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)


if __name__ == "__main__":
    main()
