"""SimBus (`postee.sim.bus`): the in-memory bus with seeded faults does what its docstring promises.

Every test uses real `InMemoryTransport` clients from `bus.connect(name)` and runs `bus.serve` first, under
the autojump clock, so "later" means virtual time and nothing waits for real. Fault shares are checked as
ranges (the exact numbers are what one seed happens to draw, not a property of the bus), and determinism
is checked by running the same scenario twice.
"""

from __future__ import annotations

import collections
import random

import pytest
import trio
import trio.testing

from actors.errors import TransportTimeout, TransportUnavailable
from actors.memory_transport import InMemoryTransport
from actors.transport import Message
from postee.sim.bus import NO_FAULTS, BusFaults, SimBus
from postee.sim.trace import Trace

SUBJECT = "sim.events"
SETTLE_STEP = 0.05
SETTLE_STEPS = 2000
"""`settle` gives the network at most 100 s of virtual time to go quiet."""


def make_bus(seed: int = 0, faults: BusFaults = NO_FAULTS) -> tuple[SimBus, Trace]:
    trace = Trace()
    return SimBus(random.Random(seed), trace, faults), trace


def payload(sender: str, i: int) -> bytes:
    return f"{sender}:{i}".encode()


def parse(msg: Message) -> tuple[str, int]:
    sender, i = msg.data.decode().split(":")
    return sender, int(i)


async def collect(transport: InMemoryTransport, subject: str, got: list[tuple[float, Message]], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Subscribe (then say started, so publishes after `nursery.start` reach it) and record each arrival."""
    async with transport.subscribe(subject) as sub:
        task_status.started()
        async for msg in sub:
            got.append((trio.current_time(), msg))


async def settle(bus: SimBus) -> None:
    """Wait (virtual time) until nothing is scheduled or backlogged, then let receivers take what arrived."""
    for _ in range(SETTLE_STEPS):
        if bus.in_flight() == 0:
            break
        await trio.sleep(SETTLE_STEP)
    else:
        raise AssertionError(f"the bus never went quiet: {bus.in_flight()} in flight")
    await trio.sleep(SETTLE_STEP)


async def one_stream(seed: int, faults: BusFaults, count: int) -> tuple[list[Message], SimBus, Trace]:
    """`count` messages from "a" to "b" on a fresh bus; what b received, in order."""
    bus, trace = make_bus(seed, faults)
    got: list[tuple[float, Message]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        await nursery.start(collect, bus.connect("b"), SUBJECT, got)
        a = bus.connect("a")
        for i in range(count):
            await a.publish(SUBJECT, payload("a", i))
        await settle(bus)
        nursery.cancel_scope.cancel()
    return [msg for _, msg in got], bus, trace


# -- no faults -------------------------------------------------------------------------------------


async def test_without_faults_every_message_arrives_once_in_publish_order_at_once(autojump_clock):
    """No faults: each subscriber gets every message exactly once, in publish order, with no delay."""
    bus, trace = make_bus()
    got_b: list[tuple[float, Message]] = []
    got_c: list[tuple[float, Message]] = []
    published: list[tuple[float, bytes]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        await nursery.start(collect, bus.connect("b"), SUBJECT, got_b)
        await nursery.start(collect, bus.connect("c"), "sim.*", got_c)
        a = bus.connect("a")
        for i in range(50):
            published.append((trio.current_time(), payload("a", i)))
            await a.publish(SUBJECT, payload("a", i))
            await trio.sleep(0.01 * (i % 3))
        await settle(bus)
        nursery.cancel_scope.cancel()
    for got in (got_b, got_c):
        assert [msg.data for _, msg in got] == [data for _, data in published]
        assert [at for at, _ in got] == pytest.approx([at for at, _ in published])
    assert trace.counts["deliver"] == bus.delivered == 100
    assert bus.lost == bus.duplicated == bus.delayed == 0
    assert not {"lose", "duplicate", "cut", "gone"} & set(trace.counts)


async def test_a_publish_never_waits_for_a_subscriber_whose_buffer_is_full(autojump_clock):
    """The bus buffers for a slow subscriber (as a NATS server does): publishing more than its capacity
    returns at once, and the subscriber later reads everything, in order."""
    bus, _ = make_bus()
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        a, b = bus.connect("a"), bus.connect("b")
        async with b.subscribe(SUBJECT, capacity=2) as sub:
            before = trio.current_time()
            with trio.fail_after(1):  # the base InMemoryBus would block here forever (the clock jumps to 1)
                for i in range(10):
                    await a.publish(SUBJECT, payload("a", i))
            assert trio.current_time() == before
            assert bus.in_flight() == 8  # 2 in the subscription's buffer, 8 waiting for it
            received = [parse(await sub.next(timeout=1)) for _ in range(10)]
            assert received == [("a", i) for i in range(10)]
            assert bus.in_flight() == 0
            with pytest.raises(TransportTimeout):
                await sub.next(timeout=1)
        nursery.cancel_scope.cancel()
    assert bus.delivered == 10


# -- delays and reordering --------------------------------------------------------------------------


async def interleaved(seed: int, delay: float) -> tuple[list[tuple[float, Message]], dict[bytes, float]]:
    """Publishers a and b take turns sending 10 messages each to c, every delivery delayed up to `delay`."""
    bus, _ = make_bus(seed, BusFaults(delayed=1.0, delay=delay))
    got: list[tuple[float, Message]] = []
    published: dict[bytes, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        await nursery.start(collect, bus.connect("c"), SUBJECT, got)
        a, b = bus.connect("a"), bus.connect("b")
        for i in range(10):
            for sender, client in (("a", a), ("b", b)):
                published[payload(sender, i)] = trio.current_time()
                await client.publish(SUBJECT, payload(sender, i))
                await trio.sleep(0.05)
        await settle(bus)
        nursery.cancel_scope.cancel()
    assert bus.delayed == 20
    return got, published


async def test_delays_keep_each_publishers_order_and_reorder_across_publishers(autojump_clock):
    """NATS order: one publisher's messages to one subscriber stay in order; two publishers' messages may
    interleave differently from publish order (found for some seed); no message is later than `delay`."""
    delay = 1.0
    reordered_seeds = []
    for seed in range(20):
        got, published = await interleaved(seed, delay)
        arrived = [parse(msg) for _, msg in got]
        assert sorted(arrived) == sorted(parse(Message(SUBJECT, data)) for data in published)
        for sender in ("a", "b"):
            assert [i for s, i in arrived if s == sender] == list(range(10)), f"seed {seed}: {sender} reordered"
        lateness = [at - published[msg.data] for at, msg in got]
        assert all(0 <= late <= delay + 1e-9 for late in lateness), f"seed {seed}: {max(lateness)}"
        assert max(lateness) > 0
        if [msg.data for _, msg in got] != list(published):
            reordered_seeds.append(seed)
    assert reordered_seeds, "no seed in 0..19 reordered messages from two publishers"


# -- loss and duplicates ------------------------------------------------------------------------------


async def test_loss_drops_about_its_share_and_the_same_seed_drops_the_same_messages(autojump_clock):
    """loss=0.5 over 400 messages loses roughly half (a wide range: the exact number is the seed's draw),
    each loss counted and traced; the same seed loses exactly the same messages, another seed others."""
    faults = BusFaults(loss=0.5)
    received, bus, trace = await one_stream(7, faults, 400)
    lost = 400 - len(received)
    assert 140 <= lost <= 260
    assert bus.lost == trace.counts["lose"] == lost
    assert trace.counts["deliver"] == len(received)
    numbers = [parse(msg)[1] for msg in received]
    assert numbers == sorted(set(numbers))  # the survivors arrive once each, in order

    again, _, _ = await one_stream(7, faults, 400)
    assert [msg.data for msg in again] == [msg.data for msg in received]
    other, _, _ = await one_stream(8, faults, 400)
    assert [msg.data for msg in other] != [msg.data for msg in received]


async def test_duplicates_deliver_some_messages_twice_and_the_same_seed_the_same_ones(autojump_clock):
    """duplicate=0.25: some messages (not all) arrive exactly twice, the rest once, order kept; the same
    seed doubles the same messages."""
    faults = BusFaults(duplicate=0.25)

    async def doubled(seed: int) -> set[int]:
        received, bus, trace = await one_stream(seed, faults, 200)
        times = collections.Counter(parse(msg)[1] for msg in received)
        assert set(times) == set(range(200))
        assert set(times.values()) <= {1, 2}
        twice = {n for n, k in times.items() if k == 2}
        assert bus.duplicated == trace.counts["duplicate"] == len(twice)
        assert trace.counts["deliver"] == 200 + len(twice)
        assert [parse(msg)[1] for msg in received] == sorted(times.elements())
        return twice

    first = await doubled(3)
    assert 10 <= len(first) <= 90
    assert await doubled(3) == first
    assert await doubled(4) != first


# -- partitions and disconnects ----------------------------------------------------------------------


async def test_a_partition_cuts_both_directions_between_two_nodes_only_and_heal_restores(autojump_clock):
    """partition(a, b): nothing passes a→b nor b→a, a↔c and b↔c still do; heal(a, b) restores a↔b."""
    bus, trace = make_bus()
    got: dict[str, list[tuple[float, Message]]] = {name: [] for name in "abc"}
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        clients = {name: bus.connect(name) for name in "abc"}
        for name, client in clients.items():
            await nursery.start(collect, client, SUBJECT, got[name])

        async def round_(i: int) -> dict[str, set[str]]:
            for lst in got.values():
                lst.clear()
            for name, client in clients.items():
                await client.publish(SUBJECT, payload(name, i))
            await settle(bus)
            return {name: {parse(msg)[0] for _, msg in lst} for name, lst in got.items()}

        bus.partition("a", "b")
        assert await round_(1) == {"a": {"a", "c"}, "b": {"b", "c"}, "c": {"a", "b", "c"}}
        assert trace.counts["cut"] == bus.lost == 2
        bus.heal("a", "b")
        assert await round_(2) == {"a": {"a", "b", "c"}, "b": {"a", "b", "c"}, "c": {"a", "b", "c"}}
        assert trace.counts["cut"] == 2
        nursery.cancel_scope.cancel()
    assert trace.counts["partition"] == trace.counts["heal"] == 1


async def test_a_disconnected_client_cannot_publish_and_receives_nothing_until_it_reconnects(autojump_clock):
    """disconnect(b): b's publish raises TransportUnavailable and what a publishes meanwhile never reaches
    b (not even after it reconnects); connect(b) restores both directions on the same subscription."""
    bus, trace = make_bus()
    got_a: list[tuple[float, Message]] = []
    got_b: list[tuple[float, Message]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        a, b = bus.connect("a"), bus.connect("b")
        await nursery.start(collect, a, "from.b", got_a)
        await nursery.start(collect, b, SUBJECT, got_b)
        bus.disconnect("b")
        with pytest.raises(TransportUnavailable):
            await b.publish("from.b", b"b:0")
        await a.publish(SUBJECT, payload("a", 1))
        await settle(bus)
        assert got_b == [] and got_a == []
        assert bus.connect("b") is b
        await b.publish("from.b", b"b:2")
        await a.publish(SUBJECT, payload("a", 3))
        await settle(bus)
        nursery.cancel_scope.cancel()
    assert [parse(msg) for _, msg in got_b] == [("a", 3)]
    assert [parse(msg) for _, msg in got_a] == [("b", 2)]
    assert trace.counts["disconnect"] == 1


async def test_a_delayed_message_to_a_node_that_disconnects_meanwhile_is_gone(autojump_clock):
    """A delivery in flight when its receiver is cut off is lost (traced as "gone"), not held for later."""
    bus, trace = make_bus(1, BusFaults(delayed=1.0, delay=1.0))
    got: list[tuple[float, Message]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        await nursery.start(collect, bus.connect("b"), SUBJECT, got)
        await bus.connect("a").publish(SUBJECT, payload("a", 0))
        assert bus.in_flight() == 1
        bus.disconnect("b")
        await settle(bus)
        bus.connect("b")
        await settle(bus)
        nursery.cancel_scope.cancel()
    assert got == []
    assert trace.counts["gone"] == bus.lost == 1
    assert trace.counts["deliver"] == 0


# -- request / respond ------------------------------------------------------------------------------


async def respond_on(bus: SimBus, name: str, subject: str, seen: list[Message], on_request=None, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """A responder node: answers each request with "re:" + its data (after `on_request`, if given)."""
    transport = bus.connect(name)
    async with transport.subscribe(subject) as sub:
        task_status.started()
        async for msg in sub:
            seen.append(msg)
            if on_request is not None:
                on_request(msg)
            await transport.respond(msg, b"re:" + msg.data)


async def test_request_and_respond_work_through_the_bus_even_with_delays(autojump_clock):
    """A request reaches the responder and its reply comes back on the requester's inbox; with delays
    it takes (virtual) time but still arrives within the two legs' worst case."""
    bus, trace = make_bus(5, BusFaults(delayed=1.0, delay=0.5))
    seen: list[Message] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        await nursery.start(respond_on, bus, "server", "svc.echo", seen)
        client = bus.connect("client")
        for i in range(5):
            start = trio.current_time()
            reply = await client.request("svc.echo", b"q%d" % i, timeout=5)
            assert reply.data == b"re:q%d" % i
            assert 0 < trio.current_time() - start <= 1.0 + 1e-9
        nursery.cancel_scope.cancel()
    assert [msg.data for msg in seen] == [b"q%d" % i for i in range(5)]
    assert trace.counts["deliver"] == 10


def cut_reply_by_partition(bus: SimBus):
    return lambda msg: bus.partition("client", "server")


def cut_reply_by_loss(bus: SimBus):
    def lose_everything(msg: Message) -> None:
        bus.faults = BusFaults(loss=1.0)
    return lose_everything


@pytest.mark.parametrize("cut", [cut_reply_by_partition, cut_reply_by_loss], ids=["partition", "loss"])
async def test_a_lost_reply_makes_the_request_time_out(autojump_clock, cut):
    """The request reached the responder, its reply is lost on the way back: TransportTimeout after the
    request's timeout (virtual time), and the trace says which leg was dropped."""
    bus, trace = make_bus()
    seen: list[Message] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        await nursery.start(respond_on, bus, "server", "svc.echo", seen, cut(bus))
        client = bus.connect("client")
        start = trio.current_time()
        with pytest.raises(TransportTimeout):
            await client.request("svc.echo", b"q", timeout=2)
        assert trio.current_time() - start == pytest.approx(2)
        nursery.cancel_scope.cancel()
    assert [msg.data for msg in seen] == [b"q"]
    assert bus.lost == 1 and trace.counts["deliver"] == 1
    dropped = [line for line in trace.last if line.split()[0] in ("cut", "lose")]
    assert len(dropped) == 1
    assert "'frm': 'server', 'to': 'client', 's': '_INBOX'" in dropped[0]


# -- the trace ----------------------------------------------------------------------------------------


async def faulty_scenario(seed: int) -> tuple[Trace, SimBus, int]:
    """Three nodes, every kind of fault: seeded loss, duplicates and delays, a partition, a disconnect."""
    bus, trace = make_bus(seed, BusFaults(loss=0.1, duplicate=0.1, delayed=0.5, delay=0.3))
    got: list[tuple[float, Message]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        await nursery.start(collect, bus.connect("c"), SUBJECT, got)
        a, b = bus.connect("a"), bus.connect("b")
        for i in range(60):
            if i == 20:
                bus.partition("a", "c")
            if i == 30:
                bus.heal("a", "c")
                bus.disconnect("c")
            if i == 40:
                bus.connect("c")
            await a.publish(SUBJECT, payload("a", i))
            await b.publish(SUBJECT, payload("b", i))
            await trio.sleep(0.02)
        await settle(bus)
        nursery.cancel_scope.cancel()
    return trace, bus, len(got)


async def test_every_delivery_and_fault_is_in_the_trace(autojump_clock):
    """Each delivery, loss, cut, duplicate and topology change is one trace entry of its kind."""
    trace, bus, received = await faulty_scenario(11)
    assert trace.counts["deliver"] == bus.delivered == received
    assert trace.counts["lose"] + trace.counts["cut"] + trace.counts["gone"] == bus.lost
    assert trace.counts["lose"] > 0 and trace.counts["cut"] > 0
    assert trace.counts["duplicate"] == bus.duplicated > 0
    assert trace.counts["partition"] == trace.counts["heal"] == trace.counts["disconnect"] == 1
    assert trace.counts["connect"] == 4  # a, b, c at the start, c again
    assert trace.entries == sum(trace.counts.values())
    # While c was cut off (messages 30..39) nothing reached it: 120 published, 20 never routed to c.
    assert bus.delivered + bus.lost - bus.duplicated == 100


def test_the_same_seed_gives_the_same_trace_hash_and_another_seed_another():
    """Determinism: the same scenario on the same seed, in two fresh Trio runs (virtual time from 0),
    gives the same SHA-256; a different rng seed gives a different one."""

    def run(seed: int) -> str:
        trace, _, _ = trio.run(faulty_scenario, seed, clock=trio.testing.MockClock(autojump_threshold=0))
        return trace.sha256

    first = run(11)
    assert run(11) == first
    assert run(12) != first
