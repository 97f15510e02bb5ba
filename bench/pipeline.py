"""The whole daemon under load against the bare Rego engine doing the same work, measured in one run.

    python bench/pipeline.py [--engine regopy|regorus|both] [--events 300] [--concurrency 16]

For each engine a real daemon (`python -m postee --rego-workers 2`) runs a config of 3 routes, each
with its own inline rule that matches the event, all sharing one template (`postee.vuls.html`), each
with its own `http` action posting to a local sink. The sink (Trio + h11, in its own process) records
when each request arrives; the load generator (httpx, in its own process) stamps every event with a
unique `seq` and its `sent_at` (`time.monotonic()`, one clock for every process on Linux), which the
http action's `body-content` carries back to the sink. Phases, per engine:

- **floor**: the engine alone, 2 worker processes with compiled queries, the event JSON ready: for
  each event the 3 route rules and 1 render (the daemon renders once per event and template).
  Events/s = N / wall time. Runs before the daemon starts, so nothing else competes for the cores.
- **throughput**: N events as fast as `--concurrency` connections allow (a 503 is retried after a
  short pause and counted). Events/s = N / (first POST -> last of the 3N sink arrivals).
- **latency**: `--latency-events` events paced at `--latency-load` x the measured throughput:
  sent -> arrival at the sink, p50 and p99 over the 3 requests per event.
- **overload**: daemon VmRSS before, and after a burst at `--burst-factor` x the measured throughput
  for `--burst-seconds` over `--burst-connections` connections with no retry, once the daemon has
  drained (every mailbox empty in `/metrics`, every accepted event delivered); also VmHWM (peak), the
  503s, and how much of the growth is the `/events` ring of the last 1000 events filling up.
  `--bursts 2` repeats it: memory retained from the first peak is not a leak if the second adds none.

It also reports CPU ms per event over the throughput phase (from /proc) for the daemon's main
process, its Rego workers, the load generator and the sink: the cores are shared by all of them.
The daemon records every accepted event before answering (durable intake, the default);
`bench/durability.py` runs this daemon with and without that and compares.

The machines are shared and noisy: only ratios within one run mean anything. Everything waits with
a timeout, and every process started here is killed on the way out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVENT_FILE = ROOT / "tests" / "fixtures" / "compat" / "inputs" / "aqua-input.json"
TEMPLATE_PACKAGE = "postee.vuls.html"
RULES = {
    "image": 'contains(input.image, "all-in-one")',
    "registry": 'input.registry == "Aqua"',
    "critical": "input.vulnerability_summary.critical > 0",
}
BODY = "sent=event.input.sent_at id=event.input.seq"
WORKERS = 2
RECENT_EVENTS = 1000  # the daemon keeps the last 1000 events for GET /events (postee.pipeline.events)
WARMUP_EVENTS = 8
RETRY_PAUSE = 0.05  # seconds before re-sending an event answered 503 (throughput and latency phases)

START_TIMEOUT = 120.0  # daemon ready, sink and pool started
PHASE_TIMEOUT = 300.0  # one load phase, including the wait for every sink arrival
SETTLE_TIMEOUT = 180.0  # drain after the burst
STOP_TIMEOUT = 20.0

_SINK_BODY = re.compile(rb"sent=([0-9.eE+-]+) id=(-?\d+)")


# --- the sink: a tiny HTTP/1.1 server recording arrivals (runs in its own process) -----------------

def sink_main(port_queue: Any) -> None:
    import h11
    import trio

    records: list[tuple[float, float, int, str]] = []  # (arrival, sent, seq, path)

    def reply(conn: h11.Connection, status: int, body: bytes = b"") -> bytes:
        out = conn.send(h11.Response(status_code=status, headers=[("content-length", str(len(body)))]))
        if body:
            out += conn.send(h11.Data(data=body))
        return out + conn.send(h11.EndOfMessage())

    def answer(target: str, body: bytes, conn: h11.Connection) -> bytes:
        if target == "/_count":
            return reply(conn, 200, str(len(records)).encode())
        if target == "/_records":
            return reply(conn, 200, json.dumps(records).encode())
        if target == "/_reset":
            records.clear()
            return reply(conn, 200)
        match = _SINK_BODY.search(body)
        if match is None:
            return reply(conn, 400)
        records.append((time.monotonic(), float(match[1]), int(match[2]), target))
        return reply(conn, 200)

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        target, chunks = "", []
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    target, chunks = event.target.decode(), []
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    await stream.send_all(answer(target, b"".join(chunks), conn))
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        break
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    break
        except (h11.RemoteProtocolError, h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port_queue.put(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(handle, listeners)

    trio.run(main)


# --- the load generator (runs in its own process) -------------------------------------------------

class _Poster:
    """The load generator's HTTP/1.1 client: one keep-alive connection, a request written as one buffer,
    the answer's status and framing read by hand. httpx cost ~3.6 ms of CPU per event here, on the
    same 2 cores as the daemon it measures (the whole daemon spends ~3); this costs a fraction of it."""

    def __init__(self, url: str) -> None:
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.stream: Any = None
        self.buffer = b""

    async def post(self, body: bytes) -> int:
        """The answer's status; raises OSError (or a trio error) when the connection fails."""
        import trio

        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer = b""
        try:
            await self.stream.send_all(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
            while (end := self.buffer.find(b"\r\n\r\n")) < 0:
                self.buffer += await self._receive()
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
            lines = head.split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = dict((name.strip().lower(), value.strip()) for name, _, value in
                          (line.partition(":") for line in lines[1:]))
            length = int(fields.get("content-length", "0"))
            while len(self.buffer) < length:
                self.buffer += await self._receive()
            self.buffer = self.buffer[length:]
            if fields.get("connection", "").lower() == "close":
                await self.close()
            return status
        except BaseException:
            await self.close()
            raise

    async def _receive(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    async def close(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()


def load_main(url: str, plan: dict[str, Any], result_queue: Any) -> None:
    import trio

    base = plan.get("base") or json.loads(EVENT_FILE.read_text())
    count, seq0 = plan["events"], plan["seq0"]
    rate, retry, concurrency = plan["rate"], plan["retry"], plan["concurrency"]
    stats = {"200": 0, "503": 0, "other": 0, "errors": 0, "first": None, "last": None, "accepted": [],
             "answer_ms": []}
    # The event's JSON without `seq` and `sent_at`, which are spliced in before its closing brace.
    encoded = json.dumps({k: v for k, v in base.items() if k not in ("seq", "sent_at")}).rstrip()
    assert encoded.endswith("}")
    prefix = encoded[:-1] + ("," if len(encoded) > 2 else "")

    async def main() -> None:
        next_index = 0
        t0 = trio.current_time()  # trio's clock: sleep_until reads it (not time.monotonic)

        async def worker() -> None:
            nonlocal next_index
            poster = _Poster(url)
            try:
                while next_index < count:
                    i = next_index
                    next_index += 1
                    if rate:
                        await trio.sleep_until(t0 + i / rate)
                    while True:
                        sent_at = time.monotonic()
                        if stats["first"] is None:
                            stats["first"] = sent_at
                        body = f'{prefix}"seq":{seq0 + i},"sent_at":{sent_at!r}}}'.encode()
                        try:
                            with trio.fail_after(30.0):
                                status = await poster.post(body)
                        except (OSError, ValueError, IndexError, trio.TooSlowError, trio.BrokenResourceError):
                            stats["errors"] += 1
                            break
                        if status == 200:
                            stats["200"] += 1
                            stats["answer_ms"].append((time.monotonic() - sent_at) * 1000)
                            stats["accepted"].append(seq0 + i)
                        elif status == 503:
                            stats["503"] += 1
                            if retry:
                                await trio.sleep(RETRY_PAUSE)
                                continue
                        else:
                            stats["other"] += 1
                        break
                    stats["last"] = time.monotonic()
            finally:
                await poster.close()

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)

    trio.run(main)
    stats["cpu"] = sum(os.times()[:2])
    result_queue.put(stats)


def run_load(url: str, *, events: int, seq0: int, concurrency: int, rate: float | None, retry: bool,
             timeout: float = PHASE_TIMEOUT, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base`: the event to send (with `seq` and `sent_at` added), the Aqua fixture when None."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    plan = {"events": events, "seq0": seq0, "rate": rate, "retry": retry, "concurrency": concurrency,
            "base": base}
    process = ctx.Process(target=load_main, args=(url, plan, results), daemon=True)
    process.start()
    try:
        return results.get(timeout=timeout)
    finally:
        stop_process(process)


def stop_process(process: multiprocessing.process.BaseProcess) -> None:
    process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join(timeout=5)


# --- the floor: the Rego engine alone, same work, 2 worker processes -------------------------------

_floor: dict[str, Any] = {}


def floor_init(engine: str, rule_modules: list[dict[str, str]], template_modules: dict[str, str],
               sample: tuple[str, str], ready: Any) -> None:
    from postee.rego.backends import get_backend
    from postee.rego.rules import RULE_QUERY

    backend = get_backend(engine)
    _floor["rules"] = [backend.compile(modules, RULE_QUERY) for modules in rule_modules]
    _floor["template"] = backend.compile(template_modules, f"data.{TEMPLATE_PACKAGE}")
    floor_work([sample])  # warm up
    ready.put(os.getpid())


def floor_work(chunk: list[tuple[str, str]]) -> int:
    for event_json, augmented_json in chunk:
        for rule in _floor["rules"]:
            if rule.evaluate(event_json) is not True:
                raise AssertionError("a route rule does not match the event")
        _floor["template"].evaluate(augmented_json)
    return len(chunk)


def measure_floor(engine: str, events: int) -> float:
    """Floor events/s: 3 rules + 1 render per event, 2 worker processes, event JSON ready."""
    from postee.rego.library import TemplateLibrary
    from postee.rego.render import augment_event
    from postee.rego.rules import wrap_inline

    base = json.loads(EVENT_FILE.read_text())
    inputs = []
    for i in range(events):
        event = dict(base, seq=i, sent_at=time.monotonic())
        inputs.append((json.dumps(event), json.dumps(augment_event(event), ensure_ascii=False)))
    rule_modules = [{f"route-{name}.rego": wrap_inline(text)} for name, text in RULES.items()]
    template_modules = TemplateLibrary.load().modules_for(TEMPLATE_PACKAGE)
    chunks = [inputs[i::WORKERS * 4] for i in range(WORKERS * 4)]
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    pool = ctx.Pool(WORKERS, initializer=floor_init,
                    initargs=(engine, rule_modules, template_modules, inputs[0], ready))
    try:
        for _ in range(WORKERS):
            ready.get(timeout=START_TIMEOUT)
        start = time.perf_counter()
        done = pool.map_async(floor_work, chunks).get(timeout=PHASE_TIMEOUT)
        elapsed = time.perf_counter() - start
        assert sum(done) == events
    finally:
        pool.terminate()
        pool.join()
    return events / elapsed


# --- the daemon -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, sink_port: int, *, name: str = "bench-pipeline", rules: dict[str, str] = RULES,
                 package: str = TEMPLATE_PACKAGE) -> None:
    """One route per rule, all through `package`, each with its own `http` action posting to the sink."""
    lines = [f"name: {name}", 'aqua-server: ""', "routes:"]
    for name, rule in rules.items():
        lines += [f"  - name: route-{name}", f"    input: '{rule}'", f"    actions: [sink-{name}]",
                  "    template: bench"]
    lines += ["templates:", "  - name: bench", f"    rego-package: {package}", "actions:"]
    for name in rules:
        lines += [f"  - name: sink-{name}", "    type: http", "    enable: true",
                  f"    url: http://127.0.0.1:{sink_port}/sink/{name}", "    method: POST", "    timeout: 30s",
                  f'    body-content: "{BODY}"']
    path.write_text("\n".join(lines) + "\n")


class Daemon:
    def __init__(self, engine: str, workdir: Path, sink_port: int, env_extra: dict[str, str] | None = None,
                 config: Any = None) -> None:
        """`config(path, sink_port)` writes the daemon's config (default: `write_config`'s 3 routes)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = workdir / "cfg.yaml"
        (config or write_config)(cfg, sink_port)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("POSTEE_", "AQUAALERT_")) and k != "REGO_FILTERS_PATH"
               or k.startswith("POSTEE_BENCH_") or k == "POSTEE_HTTP_SERVER"}  # the comparison switches pass
        env["PATH_TO_DB"] = str(workdir / "webhooks.db")
        env.update(env_extra or {})
        self.log_path = workdir / f"daemon-{engine}.log"
        self.log = open(self.log_path, "wb")  # closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postee", "--cfgfile", str(cfg), "--url", f"127.0.0.1:{self.port}",
             "--tls", "off", "--rego-workers", str(WORKERS), "--rego-engine", engine],
            cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, client: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if client.get(f"{self.url}/readyz").status_code == 200:
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
        raise TimeoutError(f"daemon not ready after {START_TIMEOUT}s:\n{self.tail()}")

    def status(self, field: str) -> int:
        """A /proc/<pid>/status field in kB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def mailbox_depth(self, client: Any) -> float:
        text = client.get(f"{self.url}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("postee_mailbox_depth{"))

    def tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the daemon and its workers
                    self.process.wait(timeout=5)
        finally:
            self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_of(pid: int) -> list[int]:
    """The daemon's Rego worker processes (spawned children; not multiprocessing's resource tracker)."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(child) for child in task.read_text().split()]
    return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def ring_bytes_per_event() -> float:
    """Memory one event holds in the daemon's `/events` ring (its text and its parsed body)."""
    import tracemalloc

    from postee.pipeline.events import parse_event

    raw = EVENT_FILE.read_bytes()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [parse_event(raw) for _ in range(100)]
    size = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    tracemalloc.stop()
    return size


class CpuMeter:
    """CPU seconds used by the daemon's main process, by its Rego workers and by the sink over a phase."""

    def __init__(self, daemon_pid: int, sink_pid: int) -> None:
        self.daemon_pid, self.sink_pid = daemon_pid, sink_pid
        self.workers = workers_of(daemon_pid)
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return (cpu_seconds(self.daemon_pid), sum(cpu_seconds(pid) for pid in self.workers),
                cpu_seconds(self.sink_pid))

    def used(self) -> tuple[float, float, float]:
        end = self._sample()
        return tuple(b - a for a, b in zip(self.start, end, strict=True))  # type: ignore[return-value]


# --- phases ---------------------------------------------------------------------------------------

def wait_for_arrivals(client: Any, sink: str, expected: int, timeout: float = PHASE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(client.get(f"{sink}/_count").text) >= expected:
            return
        time.sleep(0.02)
    raise TimeoutError(f"sink got {client.get(f'{sink}/_count').text} of {expected} requests in {timeout}s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bench_engine(
    engine: str, args: argparse.Namespace, sink: str, sink_port: int, sink_pid: int, workdir: Path
) -> dict[str, Any]:
    import httpx

    result: dict[str, Any] = {"engine": engine}
    print(f"[{engine}] floor: {args.events} events, {WORKERS} engine processes ...", flush=True)
    result["floor"] = measure_floor(engine, args.events)

    daemon = Daemon(engine, workdir, sink_port)
    try:
        with httpx.Client(timeout=10.0) as client:
            daemon.wait_ready(client)
            routes = len(RULES)
            print(f"[{engine}] daemon pid {daemon.process.pid} ready; warm-up", flush=True)
            client.get(f"{sink}/_reset")
            run_load(daemon.url, events=WARMUP_EVENTS, seq0=-WARMUP_EVENTS, concurrency=WORKERS, rate=None,
                     retry=True)
            wait_for_arrivals(client, sink, routes * WARMUP_EVENTS)

            print(f"[{engine}] throughput: {args.events} events over {args.concurrency} connections ...",
                  flush=True)
            client.get(f"{sink}/_reset")
            meter = CpuMeter(daemon.process.pid, sink_pid)
            load = run_load(daemon.url, events=args.events, seq0=0, concurrency=args.concurrency, rate=None,
                            retry=True)
            wait_for_arrivals(client, sink, routes * args.events)
            main_cpu, workers_cpu, sink_cpu = meter.used()
            result["cpu_ms"] = {"daemon main": main_cpu, f"{len(meter.workers)} Rego workers": workers_cpu,
                                "load generator": load["cpu"], "sink": sink_cpu}
            result["cpu_ms"] = {k: v * 1000 / args.events for k, v in result["cpu_ms"].items()}
            arrivals = json.loads(client.get(f"{sink}/_records").text)
            last = max(a[0] for a in arrivals)
            result["throughput"] = args.events / (last - load["first"])
            result["throughput_503"] = load["503"]
            result["intake_rate"] = args.events / (load["last"] - load["first"])

            rate = args.latency_load * result["throughput"]
            print(f"[{engine}] latency: {args.latency_events} events at {rate:.1f}/s ...", flush=True)
            client.get(f"{sink}/_reset")
            seq0 = 1_000_000
            load = run_load(daemon.url, events=args.latency_events, seq0=seq0, concurrency=args.concurrency,
                            rate=rate, retry=True)
            wait_for_arrivals(client, sink, routes * args.latency_events)
            arrivals = json.loads(client.get(f"{sink}/_records").text)
            latencies = [(arrival - sent) * 1000 for arrival, sent, _, _ in arrivals]
            result["latency_rate"] = rate
            result["p50"] = percentile(latencies, 0.50)
            result["p99"] = percentile(latencies, 0.99)
            result["latency_503"] = load["503"]
            result["answer_p50"] = percentile(load["answer_ms"], 0.50)
            result["answer_p99"] = percentile(load["answer_ms"], 0.99)

            settle(daemon, client, sink, routes * args.latency_events)
            in_ring = min(RECENT_EVENTS, WARMUP_EVENTS + args.events + args.latency_events)
            if args.bursts and in_ring < RECENT_EVENTS:
                # The `/events` ring keeps the last 1000 events by design (~19 MB here): filled first, so
                # what a burst adds is measured apart from it (the ring's estimate is still reported).
                fill = RECENT_EVENTS - in_ring
                print(f"[{engine}] filling the /events ring: {fill} events ...", flush=True)
                client.get(f"{sink}/_reset")
                run_load(daemon.url, events=fill, seq0=3_000_000, concurrency=args.concurrency, rate=None, retry=True)
                settle(daemon, client, sink, routes * fill)
                result["ring_filled"] = fill
                in_ring = RECENT_EVENTS
            result["rss_before"] = daemon.status("VmRSS")
            burst_rate = args.burst_factor * result["throughput"]
            burst_events = max(1, round(burst_rate * args.burst_seconds))
            result["burst_rate"] = burst_rate
            result["burst_events"] = burst_events
            result["bursts"] = []
            for burst in range(args.bursts):
                print(f"[{engine}] overload {burst + 1}/{args.bursts}: {burst_events} events at {burst_rate:.0f}/s "
                      f"over {args.burst_connections} connections, no retry ...", flush=True)
                client.get(f"{sink}/_reset")
                load = run_load(daemon.url, events=burst_events, seq0=2_000_000 * (burst + 1),
                                concurrency=args.burst_connections, rate=burst_rate, retry=False)
                rss_end = daemon.status("VmRSS")
                drain_start = time.monotonic()
                settle(daemon, client, sink, routes * load["200"], SETTLE_TIMEOUT)
                new_in_ring = min(RECENT_EVENTS, in_ring + load["200"]) - in_ring
                in_ring += new_in_ring
                result["bursts"].append({
                    "sent_rate": burst_events / max(1e-9, load["last"] - load["first"]),
                    "200": load["200"], "503": load["503"], "errors": load["errors"] + load["other"],
                    "rss_end": rss_end, "drain": time.monotonic() - drain_start,
                    "rss_after": daemon.status("VmRSS"), "rss_peak": daemon.status("VmHWM"),
                    "ring_growth": new_in_ring * ring_bytes_per_event() / 1024,
                })
    except Exception:
        print(f"[{engine}] daemon log tail:\n{daemon.tail()}", file=sys.stderr)
        raise
    finally:
        daemon.stop()
    return result


def settle(daemon: Daemon, client: Any, sink: str, expected: int, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until every mailbox is empty and every expected request has reached the sink."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.mailbox_depth(client) == 0 and int(client.get(f"{sink}/_count").text) >= expected:
            time.sleep(0.5)  # let in-flight work finish and the allocator settle
            return
        time.sleep(0.2)
    raise TimeoutError(f"daemon did not drain in {timeout}s")


def report(result: dict[str, Any]) -> None:
    r = result
    ratio = r["throughput"] / r["floor"]
    rows = [
        ("pipeline events/s", f"{r['throughput']:.1f}",
         f"webhook intake {r['intake_rate']:.0f}/s, {r['throughput_503']} x 503 retried"),
        ("floor events/s (engine alone, 2 procs)", f"{r['floor']:.1f}", "3 rules + 1 render per event"),
        ("ratio pipeline / floor", f"{ratio:.2f}", "issue #15 goal: regorus >= 0.5, regopy >= 0.9"),
        ("floor CPU ms/event (2 procs x wall / N)", f"{2000 / r['floor']:.2f}", ""),
        *((f"CPU ms/event, {name}", f"{value:.2f}", "throughput phase") for name, value in r["cpu_ms"].items()),
        ("latency p50 ms", f"{r['p50']:.1f}", f"paced at {r['latency_rate']:.1f} events/s"),
        ("latency p99 ms", f"{r['p99']:.1f}", f"{r['latency_503']} x 503 while paced"),
        ("webhook answer p50 / p99 ms", f"{r['answer_p50']:.1f}", f"/ {r['answer_p99']:.1f} (POST -> 200, same phase)"),
        ("daemon VmRSS before the burst MB", f"{r['rss_before'] / 1024:.1f}",
         f"/events ring filled first ({r['ring_filled']} more events)" if r.get("ring_filled") else ""),
    ]
    for i, b in enumerate(r["bursts"], 1):
        change = (b["rss_after"] - r["rss_before"]) / r["rss_before"] * 100
        rows += [
            (f"burst {i}", f"{r['burst_events']} ev",
             f"asked {r['burst_rate']:.0f}/s, sent {b['sent_rate']:.0f}/s; "
             f"{b['200']} x 200, {b['503']} x 503, {b['errors']} errors"),
            (f"burst {i}: VmRSS at burst end MB", f"{b['rss_end'] / 1024:.1f}", ""),
            (f"burst {i}: VmRSS after drain MB", f"{b['rss_after'] / 1024:.1f}",
             f"{change:+.1f}% vs before (goal within 10%), drained in {b['drain']:.1f}s; "
             f"VmHWM {b['rss_peak'] / 1024:.1f}"),
            (f"burst {i}: /events ring growth MB (est.)", f"{b['ring_growth'] / 1024:.1f}",
             "accepted events newly kept in the ring of the last 1000"),
        ]
    print()
    print(f"== {r['engine']} ==")
    width = max(len(name) for name, _, _ in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>9}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("regopy", "regorus", "both"), default="regopy")
    parser.add_argument("--events", type=int, default=300, help="events for the floor and the throughput phase")
    parser.add_argument("--concurrency", type=int, default=16, help="load generator connections")
    parser.add_argument("--latency-events", type=int, default=100)
    parser.add_argument("--latency-load", type=float, default=0.5, help="pace of the latency phase x throughput")
    parser.add_argument("--burst-factor", type=float, default=10.0, help="burst rate x throughput")
    parser.add_argument("--burst-seconds", type=float, default=8.0,
                        help="at 10x usually more events than the intake queue (1000) and a route mailbox (256) hold")
    parser.add_argument("--burst-connections", type=int, default=64)
    parser.add_argument("--bursts", type=int, default=1, help="bursts in a row (RSS after each: a leak grows)")
    args = parser.parse_args()
    engines = ["regopy", "regorus"] if args.engine == "both" else [args.engine]

    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    sink_process = ctx.Process(target=sink_main, args=(port_queue,), daemon=True)
    sink_process.start()
    results = []
    try:
        sink_port = port_queue.get(timeout=START_TIMEOUT)
        sink = f"http://127.0.0.1:{sink_port}"
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            for engine in engines:
                workdir = Path(tmp) / engine
                workdir.mkdir()
                results.append(bench_engine(engine, args, sink, sink_port, sink_process.pid, workdir))
    finally:
        sink_process.kill()
        sink_process.join(timeout=5)
    for result in results:
        report(result)


if __name__ == "__main__":
    main()
