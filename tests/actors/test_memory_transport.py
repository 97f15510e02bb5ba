import pytest
import trio

from actors import NoResponders, TransportError, TransportTimeout, TransportUnavailable
from actors.testing import InMemoryBus, run_deterministic
from actors.transport import subject_matches


async def test_delivers_in_order_with_headers():
    bus = InMemoryBus()
    controller, runner = bus.connect("controller"), bus.connect("runner-1")
    async with controller.subscribe("postee.events", capacity=4) as sub:
        async with trio.open_nursery() as nursery:

            async def produce():
                for i in range(100):
                    await runner.publish("postee.events", str(i).encode(), headers={"runner": "runner-1"})

            nursery.start_soon(produce)
            received = []
            for _ in range(100):
                msg = await sub.next(timeout=5)
                received.append(int(msg.data))
                assert msg.headers["runner"] == "runner-1"
    assert received == list(range(100))


async def test_request_reply():
    bus = InMemoryBus()
    controller, runner = bus.connect("controller"), bus.connect("runner")

    async def serve_config(task_status=trio.TASK_STATUS_IGNORED):
        async with controller.subscribe("postee.config") as sub:
            task_status.started()
            async for msg in sub:
                await controller.respond(msg, b"config for " + msg.data, headers={"version": "3"})

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_config)
        reply = await runner.request("postee.config", b"runner", timeout=1)
        assert reply.data == b"config for runner"
        assert reply.headers == {"version": "3"}
        nursery.cancel_scope.cancel()


async def test_request_without_responders_and_timeout(autojump_clock):
    bus = InMemoryBus()
    client = bus.connect("a")
    with pytest.raises(NoResponders):
        await client.request("nobody.home", b"", timeout=1)
    async with client.subscribe("silent"):
        with pytest.raises(TransportTimeout):
            await client.request("silent", b"?", timeout=2)


async def test_queue_group_delivers_each_message_once():
    bus = InMemoryBus()
    a, b, pub = bus.connect("a"), bus.connect("b"), bus.connect("pub")
    async with a.subscribe("work.>", queue="workers") as sa, b.subscribe("work.>", queue="workers") as sb:
        for i in range(10):
            await pub.publish(f"work.item.{i}", b"x")
        got_a = [await sa.next(timeout=1) for _ in range(5)]
        got_b = [await sb.next(timeout=1) for _ in range(5)]
    subjects = sorted(m.subject for m in got_a + got_b)
    assert subjects == sorted(f"work.item.{i}" for i in range(10))


async def test_disconnected_client_cannot_publish_and_receives_nothing(autojump_clock):
    bus = InMemoryBus()
    a, b = bus.connect("a"), bus.connect("b")
    async with b.subscribe("x") as sub:
        bus.disconnect("b")
        await a.publish("x", b"lost while b is cut off")
        with pytest.raises(TransportUnavailable):
            await b.publish("x", b"")
        bus.connect("b")
        await a.publish("x", b"after reconnect")
        assert (await sub.next(timeout=1)).data == b"after reconnect"


def test_subject_rules():
    assert subject_matches("postee.*", "postee.events")
    assert not subject_matches("postee.*", "postee.events.x")
    assert subject_matches("postee.>", "postee.events.x")
    assert not subject_matches("postee.>", "postee")
    assert subject_matches("a.b", "a.b") and not subject_matches("a.b", "a.c")


async def test_invalid_subjects_are_rejected():
    client = InMemoryBus().connect("a")
    for bad in ["", "a..b", "a.*", "a b"]:
        with pytest.raises(TransportError):
            await client.publish(bad, b"")


def test_run_deterministic_uses_virtual_time():
    async def main():
        await trio.sleep(3600)
        return trio.current_time()

    assert run_deterministic(main) == 3600
