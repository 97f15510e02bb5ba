"""Throughput of the actors runtime against bare Trio memory channels, measured in one run.

    python bench/actors.py [--messages 200000] [--chain 5] [--repeat 3]

For each topology the bare version (tasks forwarding over `trio.open_memory_channel`) is the
floor and the actor version (Address.send -> Mailbox -> Actor.handle) is compared with it. The
machines are shared and noisy, so only the ratio measured in the same run means anything; each
case is run `--repeat` times and the best run is kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors import Actor, Address, Lane

CAPACITY = 100


async def bare_chain(messages: int, hops: int) -> None:
    """Producer -> `hops` forwarding tasks over memory channels -> consumer."""
    channels = [trio.open_memory_channel[int](CAPACITY) for _ in range(hops)]
    done = trio.Event()

    async def forward(receive, send):
        async with receive, send:
            async for msg in receive:
                await send.send(msg)

    async def consume(receive):
        count = 0
        async with receive:
            async for _ in receive:
                count += 1
        assert count == messages
        done.set()

    async with trio.open_nursery() as nursery:
        for i in range(hops - 1):
            nursery.start_soon(forward, channels[i][1], channels[i + 1][0])
        nursery.start_soon(consume, channels[-1][1])
        async with channels[0][0] as first:
            for i in range(messages):
                await first.send(i)
        await done.wait()


class Forwarder(Actor[int]):
    def __init__(self, next_hop: Address[int] | None, name: str) -> None:
        super().__init__(name=name, capacity=CAPACITY)
        self.next_hop = next_hop
        self.downstream: Forwarder | None = None
        self.count = 0

    async def handle(self, message: int) -> None:
        if self.next_hop is None:
            self.count += 1
        else:
            await self.next_hop.send(message)

    async def on_stop(self) -> None:
        if self.downstream is not None:
            # Stop downstream once everything upstream of it has been forwarded.
            self.downstream.begin_stop()


async def actor_chain(messages: int, hops: int) -> None:
    """Producer -> `hops` actors, each forwarding to the next; the last one counts."""
    last = Forwarder(None, name=f"hop{hops - 1}")
    actors_ = [last]
    for i in range(hops - 2, -1, -1):
        actor = Forwarder(actors_[0].address, name=f"hop{i}")
        actor.downstream = actors_[0]
        actors_.insert(0, actor)
    async with trio.open_nursery() as nursery:
        for actor in reversed(actors_):
            await nursery.start(actor.run)
        first = actors_[0].address
        for i in range(messages):
            await first.send(i)
        actors_[0].begin_stop()
    assert last.count == messages


async def lane(messages: int, hops: int) -> None:
    count = 0

    async def handler(message: int) -> None:
        nonlocal count
        count += 1

    the_lane = Lane(handler, capacity=CAPACITY)
    async with trio.open_nursery() as nursery:
        await nursery.start(the_lane.run)
        address = the_lane.address
        for i in range(messages):
            await address.send(i)
        the_lane.begin_stop()
    assert count == messages


def measure(fn, messages: int, hops: int, repeat: int) -> float:
    """Best messages/s over `repeat` runs."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        trio.run(fn, messages, hops)
        best = max(best, messages / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--chain", type=int, default=5, help="actors in the chain")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    rows = []
    pair_floor = measure(bare_chain, args.messages, 1, args.repeat)
    pair_actor = measure(actor_chain, args.messages, 1, args.repeat)
    rows.append(("1 actor vs bare channel pair", pair_actor, pair_floor))
    chain_floor = measure(bare_chain, args.messages, args.chain, args.repeat)
    chain_actor = measure(actor_chain, args.messages, args.chain, args.repeat)
    rows.append((f"chain of {args.chain} actors vs {args.chain} bare hops", chain_actor, chain_floor))
    lane_rate = measure(lane, args.messages, 1, args.repeat)
    rows.append(("Lane vs bare channel pair", lane_rate, pair_floor))

    print(f"messages={args.messages} repeat={args.repeat} (best run), python {sys.version.split()[0]}")
    print(f"{'case':44} {'actors msg/s':>14} {'floor msg/s':>14} {'ratio':>7}")
    worst = 1.0
    for name, rate, floor in rows:
        ratio = rate / floor
        worst = min(worst, ratio)
        print(f"{name:44} {rate:14,.0f} {floor:14,.0f} {ratio:7.2f}")
    print(f"worst ratio {worst:.2f} (goal >= 0.70)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
