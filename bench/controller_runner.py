"""Controller/runner end to end, real processes on 127.0.0.1, against the pure-asyncio nats-py floor.

    python bench/controller_runner.py [--events 500] [--concurrency 4] [--paced 300] [--rates 50,25,10]

Starts, each in its own process: an HTTP sink (this file, `--serve-sink PORT`), a controller
(`postee --controller-mode`, which starts its own nats-server) and a runner (`postee --runner-name
bench-runner`), both `--tls off --rego-workers 1 --rego-engine regorus`, each with its own store
(`PATH_TO_DB` in a temporary directory). The config has one route matching every event, template
`postee.rawmessage.json`, with one controller action (`http` to the sink, body
`id=event.input.seq sent=event.input.sent_at`) and one runner action (`exec`, `true`, `runs-on:
bench-runner`) so that the runner has the route too. Every event posted to the RUNNER's webhook
travels: runner webhook -> runner pipeline (Rego, exec) and runner outbox (SQLite) -> NATS
(`postee.events`) -> controller -> controller route (Rego) -> http action -> sink. The sink stamps
each arrival with `time.monotonic()` (one clock for every process on Linux).

* **events/s**: `--events` events `{"seq": i, "sent_at": time.monotonic()}` posted with
  `--concurrency` connections (a 503 is retried); N / (first POST -> last sink arrival).
* **latency** p50/p99: `--paced` events at each of `--rates` events/s (default 50, 25 and 10) on one
  connection, `sent_at` -> sink arrival. Each phase starts once the controller has counted every
  execution report of the previous one (the runner's outbox, one FIFO, is then empty). Also
  printed: the CPU time each process (with its children) spent per event in the events/s run.
* **floor**: afterwards (the nodes stopped), the pure-asyncio nats-py publisher -> subscriber rate
  of `bench/bridge.py` (`--floor-messages` x `--floor-size` B, median of `--floor-repeat`) on a fresh
  nats-server. The end-to-end path has two HTTP hops, Rego on both nodes, an exec per event and an
  SQLite outbox, so the ratio to the floor is context, not the bridge's 0.6x goal.

Everything is bounded (`--timeout`); the nodes get SIGTERM and are waited for (the controller stops
its nats-server), the sink is killed. Logs of the nodes are kept in the temporary directory only on
failure (`--keep` keeps them always).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
RUNNER_NAME = "bench-runner"
PACED_BASE = 100_000
WARMUP_BASE = 900_000
SLOW = 0.25
"""Paced samples above this (seconds) are counted: a wake-up the runner's outbox missed costs up to 1 s."""
BODY_RE = re.compile(rb"id=(-?\d+) sent=([0-9.eE+-]+)")

CONFIG = """\
name: bench controller/runner
routes:
- name: everything
  actions: [to-sink, runner-noop]
  template: raw
templates:
- name: raw
  rego-package: postee.rawmessage.json
actions:
- name: to-sink
  type: http
  enable: true
  url: "http://127.0.0.1:{sink_port}/x"
  method: POST
  body-content: "id=event.input.seq sent=event.input.sent_at"
- name: runner-noop
  type: exec
  enable: true
  runs-on: {runner}
  exec-script: "true"
"""


# --------------------------------------------------------------------------- the sink (its own process)


def serve_sink(port: int) -> None:
    """A minimal HTTP/1.1 server (keep-alive): POST records `id -> (sent, arrival)`; GET /count, /results."""
    arrivals: dict[int, tuple[float, float]] = {}
    bad = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal bad
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method = lines[0].split(b" ", 1)[0]
                path = lines[0].split(b" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                now = time.monotonic()
                if method == b"POST":
                    match = BODY_RE.search(body)
                    if match:
                        arrivals.setdefault(int(match.group(1)), (float(match.group(2)), now))
                    else:
                        bad += 1
                    reply = b""
                elif path.startswith(b"/count"):
                    lo, hi = (int(x) for x in path.split(b"?", 1)[1].split(b"-"))
                    reply = str(sum(1 for i in arrivals if lo <= i < hi)).encode()
                else:
                    reply = json.dumps({"bad": bad, "arrivals": {str(k): v for k, v in arrivals.items()}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --------------------------------------------------------------------------- the driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its live descendants (reaped children, the runner's `exec`s, included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return own + sum(cpu_seconds(child) for child in children_of(pid))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def stop(proc: subprocess.Popen[bytes], name: str, timeout: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop within {timeout:g}s of SIGTERM: killed", file=sys.stderr)
        proc.kill()
        proc.wait()


class BenchError(Exception):
    """The run cannot go on (a node exited, events did not arrive in time, ...)."""


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.sink_port, self.nats_port = free_port(), free_port()
        self.controller_port, self.runner_port = free_port(), free_port()
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.nats_pids: list[int] = []
        self.retries_503 = 0
        self.child_cmds: dict[int, str] = {}
        self.lingering: list[str] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)
        log.close()
        self.procs.append((name, proc))
        return proc

    def start(self) -> None:
        cfg = self.tmp / "cfg.yaml"
        cfg.write_text(CONFIG.format(sink_port=self.sink_port, runner=RUNNER_NAME))
        self.spawn("sink", [PYTHON, __file__, "--serve-sink", str(self.sink_port)])
        common = ["--tls", "off", "--rego-workers", "1", "--rego-engine", "regorus"]
        nats_url = f"nats://127.0.0.1:{self.nats_port}"
        self.controller = self.spawn(
            "controller",
            [
                PYTHON,
                "-m",
                "postee",
                "--cfgfile",
                str(cfg),
                "--controller-mode",
                "--controller-url",
                nats_url,
                "--url",
                f"127.0.0.1:{self.controller_port}",
                *common,
            ],
            {"PATH_TO_DB": str(self.tmp / "controller.db")},
        )
        self.runner = self.spawn(
            "runner",
            [
                PYTHON,
                "-m",
                "postee",
                "--cfgfile",
                str(cfg),
                "--controller-url",
                nats_url,
                "--runner-name",
                RUNNER_NAME,
                "--url",
                f"127.0.0.1:{self.runner_port}",
                *common,
            ],
            {"PATH_TO_DB": str(self.tmp / "runner.db")},
        )

    def shutdown(self) -> None:
        """Runner first (SIGTERM, it drains), then the controller (SIGTERM: it stops its nats-server), then the sink."""
        for name, proc in self.procs:
            if name != "sink" and proc.poll() is None:
                pids = children_of(proc.pid)
                self.nats_pids += pids
                self.child_cmds.update({pid: f"{name}'s child {cmdline(pid)}" for pid in pids})
        for name, proc in reversed(self.procs):
            if name == "sink":
                proc.kill()
                proc.wait()
            else:
                stop(proc, name)
        deadline = time.monotonic() + 5  # the controller's children (its nats-server, Rego worker): must go
        while any(alive(pid) for pid in self.nats_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.nats_pids:
            if alive(pid):
                self.lingering.append(self.child_cmds.get(pid, "?"))
                print(f"{self.child_cmds.get(pid)} ({pid}) outlived its parent by 5 s: killed", file=sys.stderr)
                os.kill(pid, signal.SIGKILL)

    async def wait_ready(self, client, port: int, name: str, proc: subprocess.Popen[bytes]) -> None:
        import httpx

        deadline = time.monotonic() + self.args.ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode} before it was ready")
            try:
                reply = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if reply.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise BenchError(f"{name} not ready within {self.args.ready_timeout:g}s (GET /readyz)")

    async def post(self, client, seq: int) -> float:
        """POST one event to the runner (retrying 503); returns its `sent_at`."""
        url = f"http://127.0.0.1:{self.runner_port}/"
        sent = time.monotonic()
        body = json.dumps({"seq": seq, "sent_at": sent})
        while True:
            reply = await client.post(url, content=body, headers={"content-type": "application/json"})
            if reply.status_code == 200:
                return sent
            if reply.status_code != 503:
                raise BenchError(f"runner answered {reply.status_code}: {reply.text[:200]}")
            self.retries_503 += 1
            await asyncio.sleep(0.02)

    async def wait_sink(self, client, lo: int, hi: int) -> None:
        deadline = time.monotonic() + self.args.timeout
        want = hi - lo
        got = 0
        while time.monotonic() < deadline:
            got = int((await client.get(f"http://127.0.0.1:{self.sink_port}/count?{lo}-{hi}")).text)
            if got >= want:
                return
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise BenchError(f"{name} exited with {proc.returncode} during the run")
            await asyncio.sleep(0.02)
        raise BenchError(f"only {got}/{want} events reached the sink within {self.args.timeout:g}s")

    async def wait_outbox(self, client, executions: int) -> None:
        """Wait until the controller counted `executions` execution reports from the runner: the runner's outbox
        (events and execution reports, one FIFO) is then empty, and the next phase does not queue behind it."""
        deadline = time.monotonic() + self.args.timeout
        got = 0.0
        while time.monotonic() < deadline:
            text = (await client.get(f"http://127.0.0.1:{self.controller_port}/metrics")).text
            got = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("postee_runner_executions_total{")
            )
            if got >= executions:
                return
            await asyncio.sleep(0.05)
        raise BenchError(
            f"only {got:g}/{executions} execution reports reached the controller in {self.args.timeout:g}s"
        )

    async def results(self, client) -> dict[int, tuple[float, float]]:
        data = (await client.get(f"http://127.0.0.1:{self.sink_port}/results")).json()
        if data["bad"]:
            raise BenchError(f"the sink got {data['bad']} bodies it could not parse")
        return {int(k): (v[0], v[1]) for k, v in data["arrivals"].items()}

    async def run(self) -> dict[str, Any]:
        import httpx

        a = self.args
        limits = httpx.Limits(max_connections=a.concurrency + 4, max_keepalive_connections=a.concurrency + 4)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            await self.wait_ready(client, self.controller_port, "controller", self.controller)
            await self.wait_ready(client, self.runner_port, "runner", self.runner)

            # warm-up: Rego workers, the http action's connection, SQLite pages
            for i in range(a.warmup):
                await self.post(client, WARMUP_BASE + i)
            await self.wait_sink(client, WARMUP_BASE, WARMUP_BASE + a.warmup)
            await self.wait_outbox(client, a.warmup)
            executions = a.warmup
            self.retries_503 = 0

            # throughput: --events events over --concurrency connections
            queue = iter(range(a.events))
            posted_end = 0.0

            async def worker() -> None:
                nonlocal posted_end
                for seq in queue:
                    await self.post(client, seq)
                posted_end = max(posted_end, time.monotonic())

            cpu0 = {name: cpu_seconds(proc.pid) for name, proc in self.procs}
            start = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(a.concurrency)))
            await self.wait_sink(client, 0, a.events)
            arrivals = await self.results(client)
            drained = time.monotonic()
            await self.wait_outbox(client, executions := executions + a.events)
            outbox_tail = time.monotonic() - drained
            cpu = {name: (cpu_seconds(proc.pid) - cpu0[name]) / a.events * 1000 for name, proc in self.procs}
            burst = [arrivals[i] for i in range(a.events)]
            last = max(arrival for _, arrival in burst)
            retries_burst = self.retries_503

            # latency: --paced events at each of --rates events/s, one connection
            paced: dict[float, list[float]] = {}
            for n, rate in enumerate(a.rates):
                base = PACED_BASE * (n + 1)
                t0 = time.monotonic()
                for i in range(a.paced):
                    delay = t0 + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self.post(client, base + i)
                await self.wait_sink(client, base, base + a.paced)
                await self.wait_outbox(client, executions := executions + a.paced)
                arrivals = await self.results(client)
                paced[rate] = [arrivals[base + i][1] - arrivals[base + i][0] for i in range(a.paced)]
            burst_lat = [arrival - sent for sent, arrival in burst]

        return {
            "events_per_s": a.events / (last - start),
            "intake_per_s": a.events / (posted_end - start),
            "burst_seconds": last - start,
            "burst_p50_ms": statistics.median(burst_lat) * 1000,
            "burst_p99_ms": percentile(burst_lat, 0.99) * 1000,
            "paced": {
                rate: (
                    statistics.median(v) * 1000,
                    percentile(v, 0.99) * 1000,
                    max(v) * 1000,
                    sum(1 for x in v if x > SLOW),
                )
                for rate, v in paced.items()
            },
            "cpu_ms_per_event": cpu,
            "retries_503": retries_burst,
            "outbox_tail": outbox_tail,
            "retries_503_paced": self.retries_503 - retries_burst,
        }


def floor(args: argparse.Namespace) -> list[float]:
    sys.path.insert(0, str(REPO))
    from bench.bridge import floor_throughput, start_server

    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        proc, url = start_server(Path(tmp))
        try:
            payload = b"x" * args.floor_size
            return [asyncio.run(floor_throughput(url, args.floor_messages, payload)) for _ in range(args.floor_repeat)]
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=500, help="events for the events/s run")
    parser.add_argument("--concurrency", type=int, default=4, help="connections posting to the runner")
    parser.add_argument("--paced", type=int, default=300, help="paced events for the latency")
    parser.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[50.0, 25.0, 10.0],
        help="comma-separated paced rates (events/s) for the latency (default 50,25,10)",
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--floor-messages", type=int, default=20_000)
    parser.add_argument("--floor-size", type=int, default=1024)
    parser.add_argument("--floor-repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for a phase's events to reach the sink")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, stores)")
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-cr-"))
    ok = False
    bench = Bench(args, tmp)
    try:
        bench.start()
        result = asyncio.run(asyncio.wait_for(bench.run(), args.ready_timeout * 2 + args.timeout * 3 + 60))
        ok = True
    except (BenchError, TimeoutError) as exc:
        print(f"bench failed: {exc or 'timed out'}", file=sys.stderr)
    finally:
        bench.shutdown()
        codes = {name: proc.returncode for name, proc in bench.procs if name != "sink"}
        if not ok or args.keep:
            print(f"logs and stores kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not ok:
        raise SystemExit(1)
    floor_rates = floor(args)
    f_med = statistics.median(floor_rates)

    r = result
    rates = "/".join(f"{x:g}" for x in args.rates)
    print(
        f"{args.events} events over {args.concurrency} connections; {args.paced} paced events at {rates}/s; "
        f"runner webhook -> runner outbox -> NATS -> controller -> http action -> sink"
    )
    print(f"{'end-to-end events/s (first POST -> last sink arrival)':<58} {r['events_per_s']:>10,.0f}")
    print(f"{'  runner intake (first POST -> last 200)':<58} {r['intake_per_s']:>10,.0f}")
    print(
        f"{'  burst latency p50 / p99 (ms, queueing included)':<58} {r['burst_p50_ms']:>10.1f} / "
        f"{r['burst_p99_ms']:.1f}"
    )
    print(f"{'  then until the last execution report reached it (s)':<58} {r['outbox_tail']:>10.2f}")
    print(f"{'  503 retries (burst / paced)':<58} {r['retries_503']:>10} / {r['retries_503_paced']}")
    cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in r["cpu_ms_per_event"].items())
    print(f"{'  CPU ms per event, burst + outbox tail (with children)':<58} {cpu}")
    for rate, (p50, p99, worst, slow) in r["paced"].items():
        label = f"event -> controller action p50 / p99 / max (ms) at {rate:g}/s"
        print(f"{label:<58} {p50:>10.2f} / {p99:.2f} / {worst:.2f}  ({slow}/{args.paced} over {SLOW * 1000:g} ms)")
    print(
        f"{'floor: pure asyncio nats-py pub -> sub events/s (median)':<58} {f_med:>10,.0f}  "
        f"({args.floor_messages} x {args.floor_size} B; runs: {', '.join(f'{x:,.0f}' for x in floor_rates)})"
    )
    print(f"{'ratio end-to-end / floor':<58} {r['events_per_s'] / f_med:>10.4f}")
    print(
        "note: the end-to-end path includes two HTTP hops, Rego on both nodes, an exec per event on the runner and "
        "the runner's SQLite outbox; the ratio is not comparable to the bare bridge's 0.6x goal."
    )
    print(
        f"node exit codes after SIGTERM: {codes}; children of the nodes (nats-server, Rego workers): "
        f"{len(bench.nats_pids)}, still alive 5 s after their parent exited: {bench.lingering or 'none'}"
    )


if __name__ == "__main__":
    main()
