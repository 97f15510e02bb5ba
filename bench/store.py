"""Throughput of `Store.dedup_seen` through the async API against raw sqlite3, measured in one run.

    python bench/store.py [--ops 20000] [--tasks 16] [--repeat 3]

The floor is the same UPSERT on an identically configured connection (same schema, WAL,
synchronous=NORMAL) called in a plain loop with no Trio and no threads. The async API adds a hop to
a worker thread per call (the price of never blocking the event loop), the per-store limiter and the
cancellation progress handler. It is measured with one task calling in sequence and with `--tasks`
tasks calling concurrently, as route actors do. Half the keys repeat, so half the calls are "seen".
The machines are shared and noisy: only the ratio within a run means anything; best of `--repeat`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postee.store import open_store
from postee.store.connection import open_connection
from postee.store.operations import DEDUP_SEEN

TTL = 3600.0
T0 = 1_700_000_000.0


def keys(ops: int) -> list[str]:
    return [f"sha256:{i % (ops // 2):08d}-CVE-2024-{i % 997:05d}" for i in range(ops)]


def raw(path: Path, ops: int) -> float:
    conn = open_connection(path)
    try:
        start = time.perf_counter()
        for i, key in enumerate(keys(ops)):
            now = T0 + i * 1e-3
            conn.execute(DEDUP_SEEN, ("route", key, now + TTL, now)).fetchall()
        return ops / (time.perf_counter() - start)
    finally:
        conn.close()


async def via_store(path: Path, ops: int, tasks: int) -> float:
    all_keys = keys(ops)
    async with open_store(path) as store:

        async def worker(first: int) -> None:
            for i in range(first, ops, tasks):
                await store.dedup_seen("route", all_keys[i], TTL, now=T0 + i * 1e-3)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for first in range(tasks):
                nursery.start_soon(worker, first)
        return ops / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    best = {"raw": 0.0, "seq": 0.0, "conc": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):
            base = Path(tmp) / str(run)
            best["raw"] = max(best["raw"], raw(base / "raw.db", args.ops))
            best["seq"] = max(best["seq"], trio.run(via_store, base / "seq.db", args.ops, 1))
            best["conc"] = max(best["conc"], trio.run(via_store, base / "conc.db", args.ops, args.tasks))
    floor = best["raw"]
    print(f"dedup_seen, {args.ops} ops, best of {args.repeat}")
    print(f"  raw sqlite3 loop (floor)        {floor:10,.0f} ops/s")
    print(f"  Store, 1 task                   {best['seq']:10,.0f} ops/s   ratio {best['seq'] / floor:.2f}")
    print(f"  Store, {args.tasks} concurrent tasks     {best['conc']:10,.0f} ops/s   ratio {best['conc'] / floor:.2f}")


if __name__ == "__main__":
    main()
