import random

import trio

from actors import Lane, Supervisor
from actors.testing import open_supervisor


async def test_lane_preserves_arrival_order_under_concurrent_senders(autojump_clock):
    handled: list[tuple[int, int]] = []
    in_flight = 0
    max_in_flight = 0
    rng = random.Random(7)

    async def handler(message):
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        await trio.sleep(rng.random() / 10)  # handlers of varying length must not overtake
        handled.append(message)
        in_flight -= 1

    lane = Lane(handler, name="serial", capacity=3)
    senders, per_sender = 8, 25
    async with trio.open_nursery() as nursery:
        await nursery.start(lane.run)

        async def sender(sender_id):
            for seq in range(per_sender):
                await lane.address.send((sender_id, seq))
                await trio.sleep(rng.random() / 50)

        async with trio.open_nursery() as producers:
            for s in range(senders):
                producers.start_soon(sender, s)
        lane.begin_stop()

    assert max_in_flight == 1
    assert len(handled) == senders * per_sender
    for s in range(senders):  # each sender's messages in the order it sent them
        assert [seq for sid, seq in handled if sid == s] == list(range(per_sender))
    assert lane.handled == senders * per_sender


async def test_lane_accepted_order_is_handled_order():
    order: list[int] = []

    async def handler(message):
        order.append(message)

    lane = Lane(handler, capacity=100)
    for i in range(50):
        assert lane.address.try_send(i)
    async with trio.open_nursery() as nursery:
        await nursery.start(lane.run)
        lane.begin_stop()
    assert order == list(range(50))


async def test_lane_with_error_handler_reports_and_continues():
    errors = []
    done = []

    async def handler(message):
        if message == 2:
            raise ValueError("bad message")
        done.append(message)

    async def on_error(message, exc):
        errors.append((message, str(exc)))

    lane = Lane(handler, on_error=on_error)
    for i in range(4):
        await lane.address.send(i)
    lane.begin_stop()
    await lane.run()
    assert done == [0, 1, 3]
    assert errors == [(2, "bad message")]
    assert (lane.handled, lane.failed) == (3, 1)


async def test_crashing_lane_is_restarted_and_keeps_its_queue(autojump_clock):
    done = []
    crashed = []

    async def handler(message):
        if message == "poison" and not crashed:
            crashed.append(message)
            raise RuntimeError("poison")
        done.append(message)

    lane = Lane(handler, name="lane")
    for m in ["a", "poison", "b", "c"]:
        await lane.address.send(m)
    async with open_supervisor() as (sup, events):
        assert isinstance(sup, Supervisor)
        await sup.start(lane)
        with trio.fail_after(5):
            while len(done) < 3:
                await trio.sleep(0.05)
    assert done == ["a", "b", "c"]  # the crashing message is lost, the queue is not
    assert [e.kind.value for e in events][:2] == ["crashed", "restarted"]
