"""What durable intake costs: `bench/pipeline.py`'s daemon with accepted events recorded, and without.

    python bench/durability.py [--engine regorus|regopy] [--events 300] [--concurrency 16] [--rounds 3]

The daemon, config, sink and load generator are `bench/pipeline.py`'s (3 routes, each with its own
`http` action, one shared template; a 10 KB Aqua event). Each round starts a fresh daemon (new
store) twice: **durable**, the default, where every event is in the store before it is answered 200
and each action's outcome is recorded until the event is finished; and **volatile**, the same
binary with `POSTEE_BENCH_VOLATILE_INTAKE=1`, which records nothing (today's behaviour before
durable intake). The order alternates between rounds. Per daemon, after a warm-up:

- **events/s**: N events over `--concurrency` connections (a 503 is retried), N / (first POST ->
  last of the 3N sink arrivals): the whole pipeline;
- **intake/s**: N / (first POST -> last 200): how fast the webhook takes events in;
- **answer p50/p99**: POST -> 200, which now includes the group commit;
- **main CPU ms/event**: the daemon's main process over the phase (the store's thread included);
- **intake-only/s, p50**: N events of the same size that no route matches, as fast as possible: the
  webhook and the store alone (the pipeline only evaluates the 3 rules), i.e. the intake throughput;
- **paced answer p50/p99**: POST -> 200 for `--paced-events` events at `--paced-rate` per second over 4
  connections, well below capacity: what a client waits for in normal operation.

The headline is the median over rounds of the per-round ratio durable / volatile, because the
machines are shared and noisy: only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline import (  # noqa: E402 (after the path tweak, as a script)
    RULES,
    START_TIMEOUT,
    WARMUP_EVENTS,
    WORKERS,
    CpuMeter,
    Daemon,
    percentile,
    run_load,
    sink_main,
    wait_for_arrivals,
)

VOLATILE = {"POSTEE_BENCH_VOLATILE_INTAKE": "1"}
UNMATCHED = {"image": "none", "registry": "none", "vulnerability_summary": {"critical": 0}, "padding": "x" * 10_000}
"""An event of the same size that no route's rule matches: the intake-only phase measures intake alone."""
SETTLE_TIMEOUT = 120.0


def settle(daemon: Daemon, client: Any) -> None:
    """Wait until every mailbox of the daemon is empty."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while daemon.mailbox_depth(client) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"daemon did not drain in {SETTLE_TIMEOUT}s")
        time.sleep(0.05)
MODES = ("durable", "volatile")


def measure(mode: str, engine: str, args: argparse.Namespace, sink: str, sink_port: int, sink_pid: int,
            workdir: Path) -> dict[str, float]:
    import httpx

    workdir.mkdir(parents=True)
    daemon = Daemon(engine, workdir, sink_port, VOLATILE if mode == "volatile" else None)
    routes = len(RULES)
    try:
        with httpx.Client(timeout=10.0) as client:
            daemon.wait_ready(client)
            client.get(f"{sink}/_reset")
            run_load(daemon.url, events=WARMUP_EVENTS, seq0=-WARMUP_EVENTS, concurrency=WORKERS, rate=None, retry=True)
            wait_for_arrivals(client, sink, routes * WARMUP_EVENTS)
            client.get(f"{sink}/_reset")
            meter = CpuMeter(daemon.process.pid, sink_pid)
            load = run_load(daemon.url, events=args.events, seq0=0, concurrency=args.concurrency, rate=None,
                            retry=True)
            wait_for_arrivals(client, sink, routes * args.events)
            main_cpu, _, _ = meter.used()
            arrivals = client.get(f"{sink}/_records").json()
            last = max(a[0] for a in arrivals)
            meter = CpuMeter(daemon.process.pid, sink_pid)
            intake = run_load(daemon.url, events=args.events, seq0=2_000_000, concurrency=args.concurrency,
                              rate=None, retry=True, base=UNMATCHED)
            settle(daemon, client)
            intake_cpu, _, _ = meter.used()
            client.get(f"{sink}/_reset")
            paced = run_load(daemon.url, events=args.paced_events, seq0=1_000_000, concurrency=4,
                             rate=args.paced_rate, retry=True)
            wait_for_arrivals(client, sink, routes * args.paced_events)
    except Exception:
        print(f"[{mode}] daemon log tail:\n{daemon.tail()}", file=sys.stderr)
        raise
    finally:
        daemon.stop()
    return {
        "events/s": args.events / (last - load["first"]),
        "intake/s": args.events / (load["last"] - load["first"]),
        "answer p50 ms": percentile(load["answer_ms"], 0.50),
        "answer p99 ms": percentile(load["answer_ms"], 0.99),
        "main CPU ms/event": main_cpu * 1000 / args.events,
        "intake-only/s": args.events / (intake["last"] - intake["first"]),
        "intake-only p50 ms": percentile(intake["answer_ms"], 0.50),
        "intake-only CPU ms/ev": intake_cpu * 1000 / args.events,
        "503s": load["503"],
        "paced answer p50 ms": percentile(paced["answer_ms"], 0.50),
        "paced answer p99 ms": percentile(paced["answer_ms"], 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("regopy", "regorus"), default="regorus",
                        help="regorus: the daemon's main process is the limit, so intake costs show most")
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced-rate", type=float, default=20.0, help="events/s of the paced phase")
    parser.add_argument("--paced-events", type=int, default=100)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    sink_process = ctx.Process(target=sink_main, args=(port_queue,), daemon=True)
    sink_process.start()
    results: list[dict[str, dict[str, float]]] = []
    try:
        sink_port = port_queue.get(timeout=START_TIMEOUT)
        sink = f"http://127.0.0.1:{sink_port}"
        with tempfile.TemporaryDirectory(prefix="bench-durability-") as tmp:
            for round_ in range(args.rounds):
                order = MODES if round_ % 2 == 0 else MODES[::-1]
                result = {}
                for mode in order:
                    print(f"[round {round_ + 1}/{args.rounds}] {mode}: {args.events} events, {args.engine} ...",
                          flush=True)
                    result[mode] = measure(mode, args.engine, args, sink, sink_port, sink_process.pid,
                                           Path(tmp) / f"{round_}-{mode}")
                results.append(result)
    finally:
        sink_process.kill()
        sink_process.join(timeout=5)
    report(results)


def report(results: list[dict[str, dict[str, Any]]]) -> None:
    metrics = list(results[0]["durable"])
    print()
    print(f"{'':<20}" + "".join(f"{'round ' + str(i + 1):>24}" for i in range(len(results)))
          + f"{'median ratio':>16}")
    for metric in metrics:
        cells, ratios = [], []
        for result in results:
            durable, volatile = result["durable"][metric], result["volatile"][metric]
            cells.append(f"{durable:>10.1f} / {volatile:<10.1f}  ")
            if volatile:
                ratios.append(durable / volatile)
        ratio = f"{statistics.median(ratios):.3f}" if ratios else "-"
        print(f"{metric:<20}" + "".join(f"{c:>24}" for c in cells) + f"{ratio:>16}")
    print("(each cell: durable / volatile; ratio: durable / volatile, median over rounds)")


if __name__ == "__main__":
    main()
